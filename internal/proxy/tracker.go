package proxy

import (
	"cmp"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Tracker accumulates Service, EndpointSlice and Node changes (from
// informer handlers, any goroutine) and builds State snapshots for the sync
// runner. It records which service ports changed since the last snapshot and
// when the oldest unprogrammed change happened (for the network programming
// latency metric).
type Tracker struct {
	nodeName string

	mu sync.Mutex // guards the fields below
	// services holds the current proxied ports of every Service, sorted by
	// name. (Slices, not maps: a one-entry Go map costs ~600 bytes, and
	// there is one per Service.)
	services map[types.NamespacedName][]*ServicePort
	// slices holds the current EndpointSlices by Service.
	slices map[types.NamespacedName][]*discovery.EndpointSlice
	// dirty lists Services changed since the last snapshot, with the time
	// of their first unprogrammed change.
	dirty map[types.NamespacedName]time.Time
	// lastPorts is the set of port names of each Service in the last
	// snapshot, so deleted ports appear in State.Changed.
	lastPorts map[types.NamespacedName][]ServicePortName
	// flatServices and flatEndpoints are the Services and Endpoints of the
	// last snapshot, kept up to date for dirty Services only. A snapshot
	// hands them out as its maps and marks them shared; the next snapshot
	// copies them (a bulk copy) before changing them, unless the holder
	// released that State (Release), which makes a snapshot O(changes).
	flatServices  map[ServicePortName]*ServicePort
	flatEndpoints map[ServicePortName][]Endpoint
	flatShared    bool
	lastState     *State

	nodeIPs  []netip.Addr
	nodeZone string
	// serviceCIDRs are the cluster's ServiceCIDRs (nil: not known).
	serviceCIDRs []netip.Prefix
	// globalChanged is set when something every service depends on changed
	// (node addresses or zone, service CIDRs): the next snapshot is full.
	globalChanged bool
	generation    uint64
	// synced flags are set once each informer has delivered its initial list.
	servicesSynced, slicesSynced bool
}

// NewTracker returns an empty Tracker for node nodeName.
func NewTracker(nodeName string) *Tracker {
	return &Tracker{
		nodeName:  nodeName,
		services:  map[types.NamespacedName][]*ServicePort{},
		slices:    map[types.NamespacedName][]*discovery.EndpointSlice{},
		dirty:     map[types.NamespacedName]time.Time{},
		lastPorts: map[types.NamespacedName][]ServicePortName{},

		flatServices:  map[ServicePortName]*ServicePort{},
		flatEndpoints: map[ServicePortName][]Endpoint{},
	}
}

func (t *Tracker) markLocked(nn types.NamespacedName, at time.Time) {
	if _, ok := t.dirty[nn]; !ok {
		t.dirty[nn] = at
	}
}

// UpdateService records svc (added or changed). It returns whether the
// proxied state changed.
func (t *Tracker) UpdateService(svc *v1.Service) bool {
	nn := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
	ports := sortedPorts(ServicePorts(svc))
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.services[nn]
	if reflect.DeepEqual(old, ports) || (len(old) == 0 && len(ports) == 0) {
		return false
	}
	if len(ports) == 0 {
		delete(t.services, nn)
	} else {
		t.services[nn] = ports
	}
	t.markLocked(nn, time.Now())
	return true
}

// DeleteService records the deletion of a Service.
func (t *Tracker) DeleteService(nn types.NamespacedName) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.services[nn]; !ok {
		return false
	}
	delete(t.services, nn)
	t.markLocked(nn, time.Now())
	return true
}

// UpdateSlice records an EndpointSlice (added or changed). It returns
// whether anything changed.
func (t *Tracker) UpdateSlice(s *discovery.EndpointSlice) bool {
	nn, ok := SliceService(s)
	if !ok {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	list := t.slices[nn]
	i := slices.IndexFunc(list, func(x *discovery.EndpointSlice) bool { return x.Name == s.Name })
	switch {
	case i < 0:
		t.slices[nn] = append(list, s)
	case reflect.DeepEqual(list[i].Endpoints, s.Endpoints) && reflect.DeepEqual(list[i].Ports, s.Ports):
		list[i] = s // keep the newest object, not its equal predecessor
		return false
	default:
		list[i] = s
	}
	t.markLocked(nn, changeTime(s))
	return true
}

// DeleteSlice records the deletion of an EndpointSlice.
func (t *Tracker) DeleteSlice(s *discovery.EndpointSlice) bool {
	nn, ok := SliceService(s)
	if !ok {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	list := t.slices[nn]
	i := slices.IndexFunc(list, func(x *discovery.EndpointSlice) bool { return x.Name == s.Name })
	if i < 0 {
		return false
	}
	list = slices.Delete(list, i, i+1)
	if len(list) == 0 {
		delete(t.slices, nn)
	} else {
		t.slices[nn] = list
	}
	t.markLocked(nn, time.Now())
	return true
}

// changeTime is the EndpointSlice's last-change-trigger-time annotation
// (set by the EndpointSlice controller to the time of the Pod/Service
// change), or now.
func changeTime(s *discovery.EndpointSlice) time.Time {
	if v := s.Annotations[v1.EndpointsLastChangeTriggerTime]; v != "" {
		if ts, err := time.Parse(time.RFC3339Nano, v); err == nil {
			return ts
		}
	}
	return time.Now()
}

// UpdateNode records this node's addresses and zone. It returns whether
// they changed.
func (t *Tracker) UpdateNode(node *v1.Node) bool {
	var ips []netip.Addr
	for _, a := range node.Status.Addresses {
		if a.Type == v1.NodeInternalIP || a.Type == v1.NodeExternalIP {
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				ips = append(ips, ip.Unmap())
			}
		}
	}
	zone := node.Labels[v1.LabelTopologyZone]
	t.mu.Lock()
	defer t.mu.Unlock()
	if reflect.DeepEqual(ips, t.nodeIPs) && zone == t.nodeZone {
		return false
	}
	t.nodeIPs, t.nodeZone, t.globalChanged = ips, zone, true
	return true
}

// SetServiceCIDRs records the spec.cidrs of every ServiceCIDR object and
// reports whether they changed; a change makes the next snapshot full.
// cidrs nil means "not known" (backends fall back to their configuration);
// an empty, non-nil slice means there are none.
func (t *Tracker) SetServiceCIDRs(cidrs []netip.Prefix) bool {
	var norm []netip.Prefix
	if cidrs != nil {
		norm = []netip.Prefix{}
		for _, p := range cidrs {
			if !slices.Contains(norm, p.Masked()) {
				norm = append(norm, p.Masked())
			}
		}
		slices.SortFunc(norm, func(a, b netip.Prefix) int {
			return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
		})
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if (norm == nil) == (t.serviceCIDRs == nil) && slices.Equal(norm, t.serviceCIDRs) {
		return false
	}
	t.serviceCIDRs, t.globalChanged = norm, true
	return true
}

// SetSynced marks the initial lists as delivered.
func (t *Tracker) SetSynced(services, slices bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.servicesSynced = t.servicesSynced || services
	t.slicesSynced = t.slicesSynced || slices
}

// Ready reports whether both initial lists were delivered, so a snapshot
// will not wrongly remove every service.
func (t *Tracker) Ready() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.servicesSynced && t.slicesSynced
}

// Pending reports whether there are changes not yet in a snapshot.
func (t *Tracker) Pending() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.dirty) > 0 || t.globalChanged
}

// Snapshot builds a State with every current service and endpoint, the
// changes since the previous snapshot in Changed, and full as State.Full.
// It returns the change times of the included changes; the caller observes
// them as programming latency once the backend has synced.
func (t *Tracker) Snapshot(full bool) (*State, []time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.generation++
	if t.flatShared && len(t.dirty) > 0 { // only dirty Services change them
		t.flatServices = maps.Clone(t.flatServices)
		t.flatEndpoints = maps.Clone(t.flatEndpoints)
		t.flatShared = false
	}
	st := &State{
		NodeName: t.nodeName,
		NodeZone: t.nodeZone,
		NodeIPs:  append([]netip.Addr(nil), t.nodeIPs...),
		// SetServiceCIDRs replaces the slice, never mutates it.
		ServiceCIDRs: t.serviceCIDRs,
		Changed:      make(map[ServicePortName]struct{}, len(t.dirty)),
		Full:         full || t.globalChanged,
		Generation:   t.generation,
	}
	times := make([]time.Time, 0, len(t.dirty))
	for nn, at := range t.dirty {
		times = append(times, at)
		for _, n := range t.lastPorts[nn] {
			st.Changed[n] = struct{}{}
			delete(t.flatServices, n)
			delete(t.flatEndpoints, n)
		}
		ports := t.services[nn]
		var eps map[ServicePortName][]Endpoint
		if ss := t.slices[nn]; len(ss) > 0 && len(ports) > 0 {
			eps = MergeEndpoints(nn, ss, t.nodeName)
		}
		names := make([]ServicePortName, 0, len(ports))
		for _, sp := range ports {
			n := sp.Name
			st.Changed[n] = struct{}{}
			names = append(names, n)
			t.flatServices[n] = sp
			if e := eps[n]; len(e) > 0 {
				t.flatEndpoints[n] = e
			}
		}
		if len(names) == 0 {
			delete(t.lastPorts, nn)
		} else {
			t.lastPorts[nn] = names
		}
	}
	clear(t.dirty)
	t.globalChanged = false
	st.Services, st.Endpoints = t.flatServices, t.flatEndpoints
	t.flatShared, t.lastState = true, st
	return st, times
}

// Release tells the tracker that st (the latest snapshot) will not be read
// any more, so the next snapshot may update its maps in place instead of
// copying them. Releasing an older State does nothing.
func (t *Tracker) Release(st *State) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if st != nil && st == t.lastState {
		t.flatShared, t.lastState = false, nil
	}
}

// Requeue marks every Service dirty again with the given change times
// lost; used when a snapshot could not be programmed. (The next snapshot is
// full anyway; this keeps Changed a superset.)
func (t *Tracker) Requeue(st *State) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	for n := range st.Changed {
		t.markLocked(n.NamespacedName, now)
	}
}

// sortedPorts returns the ports of a ServicePorts result sorted by name.
func sortedPorts(m map[ServicePortName]*ServicePort) []*ServicePort {
	if len(m) == 0 {
		return nil
	}
	out := make([]*ServicePort, 0, len(m))
	for _, sp := range m {
		out = append(out, sp)
	}
	slices.SortFunc(out, func(a, b *ServicePort) int { return strings.Compare(a.Name.String(), b.Name.String()) })
	return out
}
