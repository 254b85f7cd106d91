package iptables

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"

	v1 "k8s.io/api/core/v1"
)

// Interface is the exec boundary of the backend: one IP family's
// iptables-restore and iptables-save. Exec runs the binaries; Fake
// interprets the payloads in memory.
type Interface interface {
	// Restore feeds payload to "iptables-restore --noflush" (or
	// ip6tables-restore): every table in it is committed atomically, and
	// chains and rules it does not mention are left alone.
	Restore(ctx context.Context, payload []byte) error
	// Save returns "iptables-save -t table" output.
	Save(ctx context.Context, table string) ([]byte, error)
}

// Variant is the iptables implementation the binaries drive.
type Variant string

const (
	// VariantNFT is iptables-nft: the iptables rules live in nf_tables
	// tables "ip filter", "ip nat" … (xtables matches through nft_compat).
	VariantNFT Variant = "nft"
	// VariantLegacy is iptables-legacy: the x_tables kernel interface.
	VariantLegacy Variant = "legacy"
)

// Exec runs the iptables binaries of one family and variant.
type Exec struct {
	IPv6    bool
	Variant Variant
}

var _ Interface = (*Exec)(nil)

// NewExec returns an Exec for family f and variant v (DetectVariant when
// empty is the caller's job).
func NewExec(f v1.IPFamily, v Variant) *Exec {
	return &Exec{IPv6: f == v1.IPv6Protocol, Variant: v}
}

// binary returns the variant's "iptables-restore"-like binary (tool is
// "restore" or "save"), falling back to the unsuffixed name when the
// variant-specific one is not installed.
func (e *Exec) binary(tool string) string {
	base := "iptables"
	if e.IPv6 {
		base = "ip6tables"
	}
	if e.Variant != "" {
		name := fmt.Sprintf("%s-%s-%s", base, e.Variant, tool)
		if _, err := exec.LookPath(name); err == nil {
			return name
		}
	}
	return base + "-" + tool
}

// Restore implements Interface.
func (e *Exec) Restore(ctx context.Context, payload []byte) error {
	args := []string{"--noflush"}
	if e.Variant == VariantLegacy {
		// Wait for the xtables lock rather than fail when another writer
		// (kubelet, a firewall) holds it.
		args = append(args, "-w", "5")
	}
	bin := e.binary("restore")
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = bytes.NewReader(payload)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables: %s: %w: %s", bin, err, bytes.TrimSpace(out))
	}
	return nil
}

// Save implements Interface.
func (e *Exec) Save(ctx context.Context, table string) ([]byte, error) {
	bin := e.binary("save")
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "-t", table)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("iptables: %s -t %s: %w: %s", bin, table, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// DetectVariant finds which iptables the system uses, as the upstream
// iptables-wrapper does: the variant that already holds rules wins (a
// system whose kubelet or firewall writes legacy rules must get legacy
// rules from us too, or the two sets would be evaluated separately);
// with no rules anywhere, the variant "iptables -V" reports; when only
// one variant is installed, that one.
func DetectVariant(ctx context.Context) (Variant, error) {
	count := func(v Variant) (int, bool) {
		n, found := 0, false
		for _, base := range []string{"iptables", "ip6tables"} {
			out, err := exec.CommandContext(ctx, fmt.Sprintf("%s-%s-save", base, v)).Output()
			if err != nil {
				continue
			}
			found = true
			for _, l := range strings.Split(string(out), "\n") {
				if strings.HasPrefix(l, "-A ") {
					n++
				}
			}
		}
		return n, found
	}
	nLegacy, okLegacy := count(VariantLegacy)
	if nLegacy == 0 && nftWorks(ctx) {
		// With no legacy rule, the nft rules are only counted against
		// what "iptables -V" reports (below); when that is nf_tables the
		// answer is nft either way, so the dump of every nft table (over a
		// second with 10k Services' rules, on every agent start and every
		// switch to this mode) is skipped.
		if v, err := reportedVariant(ctx); err == nil && v == VariantNFT {
			return VariantNFT, nil
		}
	}
	nNFT, okNFT := count(VariantNFT)
	switch {
	case !okNFT && !okLegacy:
		v, err := reportedVariant(ctx)
		if err != nil {
			return "", fmt.Errorf("iptables: no iptables binaries found: %w", err)
		}
		return v, nil
	case !okLegacy:
		return VariantNFT, nil
	case !okNFT:
		return VariantLegacy, nil
	case nLegacy > nNFT:
		return VariantLegacy, nil
	case nNFT > nLegacy:
		return VariantNFT, nil
	}
	if v, err := reportedVariant(ctx); err == nil {
		return v, nil
	}
	return VariantNFT, nil
}

// reportedVariant is the variant "iptables -V" names.
func reportedVariant(ctx context.Context) (Variant, error) {
	out, err := exec.CommandContext(ctx, "iptables", "-V").Output()
	if err != nil {
		return "", err
	}
	return versionVariant(string(out)), nil
}

// nftWorks reports whether an nft-based iptables binary can read the
// kernel's rules in at least one family (what a successful
// iptables-nft-save shows), by listing one built-in chain: that reads one
// chain, not the whole ruleset.
func nftWorks(ctx context.Context) bool {
	for _, base := range []string{"iptables", "ip6tables"} {
		if exec.CommandContext(ctx, base+"-nft", "-t", "filter", "-S", "INPUT").Run() == nil {
			return true
		}
	}
	return false
}

// versionVariant parses "iptables v1.8.9 (nf_tables)" / "(legacy)".
func versionVariant(v string) Variant {
	if strings.Contains(v, "legacy") {
		return VariantLegacy
	}
	return VariantNFT
}
