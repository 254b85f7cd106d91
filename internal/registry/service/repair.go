package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/svcnet/svcnet/internal/storage"
)

// repairPasses bounds how often Repair starts over after racing a write.
const repairPasses = 3

// holder is a stored Service holding an allocation key.
type holder struct {
	svc *v1.Service
	kv  storage.KV
}

// Repair reconciles the allocation keys with the stored Services, as
// upstream's repair controllers do for ClusterIPs and NodePorts. Run it at
// server start. It
//
//   - creates the key of every value a Service holds but has no key,
//   - deletes keys no Service holds (leaked) and rewrites keys naming a
//     Service that does not hold the value,
//   - logs (at Warn) what it cannot fix: a value held by more than one
//     Service, a stored Service it cannot decode (whose keys it leaves alone),
//     a ClusterIP outside the service CIDR. Like upstream, which reports these
//     as events, it does not fail for them: the server must still start.
//
// Every fix is a transaction conditioned on what Repair read (the key's
// revision; for a created key, the holding Service's revision — the Service
// is rewritten unchanged, as storage.Interface has no read-only compare), so
// Repair is safe against concurrent writes: a fix that races one is retried
// from a fresh read, up to three passes. The error is nil unless storage
// failed.
func (a *Allocations) Repair(ctx context.Context) error {
	_, err := a.repair(ctx)
	return err
}

// repair runs up to repairPasses passes and returns the unfixable problems
// of the last one.
func (a *Allocations) repair(ctx context.Context) (problems []string, err error) {
	for pass := 1; pass <= repairPasses; pass++ {
		var retry bool
		problems, retry, err = a.repairOnce(ctx)
		if err != nil || !retry {
			break
		}
		if pass == repairPasses {
			problems = append(problems, "service: repair kept racing concurrent writes; some allocations may be left for the next repair")
			break
		}
		a.log.Info("allocation repair raced a write; repairing again", "pass", pass)
	}
	for _, p := range problems {
		a.log.Warn("allocation repair: " + p)
	}
	return problems, err
}

// repairOnce does one pass. retry says a fix lost a race with a write; err
// is a storage failure.
func (a *Allocations) repairOnce(ctx context.Context) (problems []string, retry bool, err error) {
	svcKVs, rev, err := a.store.List(ctx, ServicesPrefix, 0)
	if err != nil {
		return nil, false, fmt.Errorf("service: repair: list services: %w", err)
	}
	allocKVs, _, err := a.store.List(ctx, AllocationsPrefix, rev)
	if err != nil {
		return nil, false, fmt.Errorf("service: repair: list allocations: %w", err)
	}

	var failures []error
	decoder := scheme.Codecs.UniversalDeserializer()
	holders := map[string][]holder{}
	undecodable := map[string]bool{} // "namespace/name" of Services we could not read
	for _, kv := range svcKVs {
		obj, _, err := decoder.Decode(kv.Value, nil, nil)
		svc, ok := obj.(*v1.Service)
		if err != nil || !ok {
			name := strings.TrimPrefix(kv.Key, ServicesPrefix)
			undecodable[name] = true
			problems = append(problems, fmt.Sprintf("cannot decode %s (its allocations are left alone): %v", kv.Key, err))
			continue
		}
		for _, key := range keysOf(svc) {
			holders[key] = append(holders[key], holder{svc: svc, kv: kv})
		}
	}

	existing := map[string]storage.KV{}
	for _, kv := range allocKVs {
		existing[kv.Key] = kv
	}

	fix := func(what string, args []any, ops ...storage.Op) {
		_, err := a.store.Txn(ctx, ops...)
		if _, ok := storage.AsPrecondition(err); ok {
			retry = true
			return
		}
		if err != nil {
			failures = append(failures, fmt.Errorf("service: repair: %s: %w", what, err))
			return
		}
		a.log.Info("allocation repair: "+what, args...)
	}

	// Keys nobody (or somebody else) holds.
	for _, key := range sortedKeys(existing) {
		kv := existing[key]
		var owner Owner
		_ = json.Unmarshal(kv.Value, &owner)
		hs := holders[key]
		if _, _, ok := parseKey(key); !ok {
			fix("deleted malformed allocation key", []any{"key", key}, storage.Delete(key, kv.ModRevision))
			continue
		}
		if len(hs) == 0 {
			if undecodable[owner.Namespace+"/"+owner.Name] {
				continue
			}
			fix("released leaked allocation", []any{"key", key, "owner", owner.Namespace + "/" + owner.Name},
				storage.Delete(key, kv.ModRevision))
			continue
		}
		if !slices.ContainsFunc(hs, func(h holder) bool { return sameOwner(owner, ownerOf(h.svc)) }) {
			want := ownerOf(hs[0].svc)
			fix("reassigned allocation", []any{"key", key, "from", owner.Namespace + "/" + owner.Name, "to", want.Namespace + "/" + want.Name},
				storage.Put(key, want.value(), kv.ModRevision))
		}
	}

	// Values held without a key, and values held twice.
	for _, key := range sortedKeys(holders) {
		hs := holders[key]
		if len(hs) > 1 {
			names := make([]string, len(hs))
			for i, h := range hs {
				names[i] = h.svc.Namespace + "/" + h.svc.Name
			}
			problems = append(problems, fmt.Sprintf("%s is held by several Services: %s", valueOf(key), strings.Join(names, ", ")))
		}
		if ip, _, _ := parseKey(key); ip.IsValid() && !a.prefix.Contains(ip) {
			problems = append(problems, fmt.Sprintf("ClusterIP %s of %s/%s is not within the service CIDR %s",
				ip, hs[0].svc.Namespace, hs[0].svc.Name, a.prefix))
		}
		if _, ok := existing[key]; ok {
			continue
		}
		h := hs[0]
		fix("recreated missing allocation", []any{"key", key, "service", h.svc.Namespace + "/" + h.svc.Name},
			storage.Put(key, ownerOf(h.svc).value(), 0),
			storage.Put(h.kv.Key, h.kv.Value, h.kv.ModRevision))
	}
	return problems, retry, errors.Join(failures...)
}

// sameOwner compares namespace and name, and the UIDs when both are known.
func sameOwner(a, b Owner) bool {
	return a.Namespace == b.Namespace && a.Name == b.Name && (a.UID == "" || b.UID == "" || a.UID == b.UID)
}

func valueOf(key string) string {
	if ip, port, ok := parseKey(key); ok {
		if ip.IsValid() {
			return "ClusterIP " + ip.String()
		}
		return fmt.Sprintf("NodePort %d", port)
	}
	return key
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
