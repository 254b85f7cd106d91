package iptables

import (
	"crypto/sha256"
	"encoding/base32"
	"strings"

	"github.com/svcnet/svcnet/internal/proxy"
)

// Tables and chains. The names are upstream kube-proxy's (k/k
// pkg/proxy/iptables) so operators can read both; KUBE-DST-* (the
// destination dispatch tree, see dispatch.go) is svcnet's own.
const (
	tableFilter = "filter"
	tableNAT    = "nat"

	kubeServicesChain         = "KUBE-SERVICES"
	kubeExternalServicesChain = "KUBE-EXTERNAL-SERVICES"
	kubeNodePortsChain        = "KUBE-NODEPORTS"
	kubePostroutingChain      = "KUBE-POSTROUTING"
	kubeMarkMasqChain         = "KUBE-MARK-MASQ"
	kubeForwardChain          = "KUBE-FORWARD"
	kubeProxyFirewallChain    = "KUBE-PROXY-FIREWALL"

	svcChainPrefix      = "KUBE-SVC-"
	svlChainPrefix      = "KUBE-SVL-"
	extChainPrefix      = "KUBE-EXT-"
	fwChainPrefix       = "KUBE-FW-"
	sepChainPrefix      = "KUBE-SEP-"
	dispatchChainPrefix = "KUBE-DST-"

	// masqueradeMark is bit 14, as kube-proxy.
	masqueradeMark = "0x4000"
)

// hash16 is upstream's chain-name hash: 16 characters of the base32
// SHA-256 (iptables chain names are at most 28 characters).
func hash16(s string) string {
	sum := sha256.Sum256([]byte(s))
	return base32.StdEncoding.EncodeToString(sum[:])[:16]
}

// portProtoHash hashes a service port name as upstream does
// (servicePortName.String() + lower-case protocol), so chain names are the
// ones kube-proxy would use for the same service.
func portProtoHash(n proxy.ServicePortName) string {
	return hash16(n.String() + strings.ToLower(string(n.Protocol)))
}

func svcChain(n proxy.ServicePortName) string { return svcChainPrefix + portProtoHash(n) }
func svlChain(n proxy.ServicePortName) string { return svlChainPrefix + portProtoHash(n) }
func extChain(n proxy.ServicePortName) string { return extChainPrefix + portProtoHash(n) }
func fwChain(n proxy.ServicePortName) string  { return fwChainPrefix + portProtoHash(n) }

// sepChain is the KUBE-SEP chain of endpoint ep of n (upstream hashes
// name + protocol + "ip:port").
func sepChain(n proxy.ServicePortName, ep proxy.Endpoint) string {
	return sepChainPrefix + hash16(n.String()+strings.ToLower(string(n.Protocol))+ep.String())
}

// isOwnedChain reports whether chain is a per-service, per-endpoint or
// dispatch chain this backend creates and deletes on its own.
func isOwnedChain(chain string) bool {
	for _, p := range []string{svcChainPrefix, svlChainPrefix, extChainPrefix, fwChainPrefix, sepChainPrefix, dispatchChainPrefix} {
		if strings.HasPrefix(chain, p) {
			return true
		}
	}
	return false
}
