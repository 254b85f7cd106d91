package endpoints

import (
	"bytes"
	"fmt"
	"net"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// RepackSubsets returns subsets in canonical form (what KK's
// pkg/api/v1/endpoints.RepackSubsets does): every address (keyed by IP and
// targetRef UID, "not ready" winning over "ready" per port) is expanded to
// one entry per port, addresses offering exactly the same ports with the
// same readiness are grouped into one subset, and addresses, ports and
// subsets are sorted. Two Endpoints with the same meaning repack to equal
// slices, so the result can be compared to decide whether to write.
//
// Upstream orders ports and subsets by a hash of their dump; this orders
// them by their text, which is just as deterministic and easier to read.
// The input is not modified.
func RepackSubsets(subsets []corev1.EndpointSubset) []corev1.EndpointSubset {
	type addrKey struct {
		ip  string
		uid types.UID
	}
	// noPort stands for "no ports" (headless Services without ports), so
	// such addresses are not dropped.
	const noPort = "\x00"

	addrs := map[addrKey]*corev1.EndpointAddress{}
	ports := map[string]corev1.EndpointPort{}
	// readyByPort[port][addr] = ready
	readyByPort := map[string]map[addrKey]bool{}

	add := func(a *corev1.EndpointAddress, port string, ready bool) {
		k := addrKey{ip: a.IP}
		if a.TargetRef != nil {
			k.uid = a.TargetRef.UID
		}
		if _, ok := addrs[k]; !ok {
			cp := *a
			addrs[k] = &cp
		}
		m := readyByPort[port]
		if m == nil {
			m = map[addrKey]bool{}
			readyByPort[port] = m
		}
		if was, ok := m[k]; !ok || was {
			m[k] = ready
		}
	}
	for i := range subsets {
		ss := &subsets[i]
		keys := []string{noPort}
		if len(ss.Ports) > 0 {
			keys = keys[:0]
			for _, p := range ss.Ports {
				pk := portKey(p)
				ports[pk] = p
				keys = append(keys, pk)
			}
		}
		for _, pk := range keys {
			for j := range ss.Addresses {
				add(&ss.Addresses[j], pk, true)
			}
			for j := range ss.NotReadyAddresses {
				add(&ss.NotReadyAddresses[j], pk, false)
			}
		}
	}

	// Group ports by their exact (address, readiness) set.
	type group struct {
		set   map[addrKey]bool
		ports []corev1.EndpointPort
	}
	groups := map[string]*group{}
	for pk, set := range readyByPort {
		members := make([]string, 0, len(set))
		for k, ready := range set {
			members = append(members, fmt.Sprintf("%s|%s|%t", k.ip, k.uid, ready))
		}
		sort.Strings(members)
		gk := strings.Join(members, ",")
		g := groups[gk]
		if g == nil {
			g = &group{set: set}
			groups[gk] = g
		}
		if pk != noPort {
			g.ports = append(g.ports, ports[pk])
		}
	}

	out := make([]corev1.EndpointSubset, 0, len(groups))
	for _, g := range groups {
		var ss corev1.EndpointSubset
		for k, ready := range g.set {
			if ready {
				ss.Addresses = append(ss.Addresses, *addrs[k])
			} else {
				ss.NotReadyAddresses = append(ss.NotReadyAddresses, *addrs[k])
			}
		}
		ss.Ports = g.ports
		sortSubset(&ss)
		out = append(out, ss)
	}
	sort.Slice(out, func(i, j int) bool { return subsetKey(&out[i]) < subsetKey(&out[j]) })
	return out
}

func portKey(p corev1.EndpointPort) string {
	app := ""
	if p.AppProtocol != nil {
		app = "=" + *p.AppProtocol
	}
	return fmt.Sprintf("%s/%d/%s%s", p.Name, p.Port, p.Protocol, app)
}

func sortSubset(ss *corev1.EndpointSubset) {
	sort.Slice(ss.Addresses, func(i, j int) bool { return lessAddress(&ss.Addresses[i], &ss.Addresses[j]) })
	sort.Slice(ss.NotReadyAddresses, func(i, j int) bool {
		return lessAddress(&ss.NotReadyAddresses[i], &ss.NotReadyAddresses[j])
	})
	sort.Slice(ss.Ports, func(i, j int) bool { return portKey(ss.Ports[i]) < portKey(ss.Ports[j]) })
}

// lessAddress orders by IP (numerically when both parse) then targetRef UID.
func lessAddress(a, b *corev1.EndpointAddress) bool {
	if a.IP != b.IP {
		ia, ib := net.ParseIP(a.IP), net.ParseIP(b.IP)
		if ia != nil && ib != nil {
			if c := bytes.Compare(ia.To16(), ib.To16()); c != 0 {
				return c < 0
			}
		}
		return a.IP < b.IP
	}
	var ua, ub types.UID
	if a.TargetRef != nil {
		ua = a.TargetRef.UID
	}
	if b.TargetRef != nil {
		ub = b.TargetRef.UID
	}
	return ua < ub
}

// subsetKey is the sort key of a sorted subset: its ports, then addresses.
func subsetKey(ss *corev1.EndpointSubset) string {
	var b strings.Builder
	for _, p := range ss.Ports {
		b.WriteString(portKey(p))
		b.WriteByte(';')
	}
	b.WriteByte('#')
	for _, a := range ss.Addresses {
		b.WriteString(a.IP)
		b.WriteByte(';')
	}
	b.WriteByte('#')
	for _, a := range ss.NotReadyAddresses {
		b.WriteString(a.IP)
		b.WriteByte(';')
	}
	return b.String()
}
