package service

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"weak"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/util/validation/field"
	netutils "k8s.io/utils/net"

	"github.com/svcnet/svcnet/internal/allocator"
	"github.com/svcnet/svcnet/internal/registry"
	"github.com/svcnet/svcnet/internal/storage"
)

// reservationTTL bounds how long a value picked for a write that never
// committed stays unavailable in this process's mirror.
const reservationTTL = 30 * time.Second

var serviceKind = schema.GroupKind{Kind: "Service"}

// Owner is the value stored at an allocation key.
type Owner struct {
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	UID       types.UID `json:"uid,omitempty"`
}

func ownerOf(svc *v1.Service) Owner {
	return Owner{Namespace: svc.Namespace, Name: svc.Name, UID: svc.UID}
}

func (o Owner) value() []byte {
	b, _ := json.Marshal(o) // cannot fail: three strings
	return b
}

// ClusterIPKey returns the allocation key of ip.
func ClusterIPKey(ip netip.Addr) string { return ClusterIPKeyPrefix + ip.String() }

// NodePortKey returns the allocation key of port.
func NodePortKey(port int) string { return NodePortKeyPrefix + strconv.Itoa(port) }

// parseKey splits an allocation key into its value: an IP or a port.
func parseKey(key string) (ip netip.Addr, port int, ok bool) {
	if s, found := strings.CutPrefix(key, ClusterIPKeyPrefix); found {
		ip, err := netip.ParseAddr(s)
		return ip, 0, err == nil && ip.String() == s
	}
	if s, found := strings.CutPrefix(key, NodePortKeyPrefix); found {
		p, err := strconv.Atoi(s)
		return netip.Addr{}, p, err == nil && p > 0 && p < 65536 && strconv.Itoa(p) == s
	}
	return netip.Addr{}, 0, false
}

// parseServiceIP parses a clusterIP as upstream does (leading zeros allowed
// in stored values) and returns its canonical form.
func parseServiceIP(s string) (netip.Addr, bool) {
	ip := netutils.ParseIPSloppy(s)
	if ip == nil {
		return netip.Addr{}, false
	}
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}

// keysOf returns the allocation keys a stored Service holds: its ClusterIPs
// unless it is ExternalName or headless, the nodePorts of a NodePort or
// LoadBalancer Service, and the healthCheckNodePort of a LoadBalancer with
// externalTrafficPolicy Local. Allocate and Release keep exactly these keys
// in storage; Repair restores them.
func keysOf(svc *v1.Service) []string {
	if svc == nil {
		return nil
	}
	var keys []string
	if needsClusterIP(svc) && !isHeadless(svc) {
		for _, s := range svc.Spec.ClusterIPs {
			if ip, ok := parseServiceIP(s); ok {
				keys = append(keys, ClusterIPKey(ip))
			}
		}
	}
	if hasNodePorts(svc) {
		for _, p := range svc.Spec.Ports {
			if p.NodePort > 0 {
				keys = append(keys, NodePortKey(int(p.NodePort)))
			}
		}
	}
	if needsHealthCheck(svc) && svc.Spec.HealthCheckNodePort > 0 {
		keys = append(keys, NodePortKey(int(svc.Spec.HealthCheckNodePort)))
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

// Allocations assigns ClusterIPs and NodePorts to Services. It implements
// registry.Allocator; see the package doc for the protocol.
type Allocations struct {
	store     storage.Interface
	log       *slog.Logger
	cidr      *net.IPNet
	prefix    netip.Prefix
	family    v1.IPFamily
	portRange utilnet.PortRange
	now       func() time.Time // for tests

	synced   chan struct{} // closed after the first list
	syncOnce sync.Once

	mu sync.Mutex // guards the fields below
	// ips and ports mirror the stored keys plus the reservations.
	ips   *allocator.IPRange
	ports *allocator.PortRange
	// reserved holds, by key, the values in-flight writes of this process
	// took in the mirror that the watch has not reported as stored yet.
	// The value is the reservation's sequence number.
	reserved map[string]uint64
	// attempts remembers, per object passed to Allocate, the keys the call
	// took and which of them were dynamic picks, for Conflict; keyed weakly
	// so a finished write's object can be freed.
	attempts map[weak.Pointer[v1.Service]]attempt
	// expiry lists reservations and attempts in deadline order from
	// expiryHead on.
	expiry     []expiryEntry
	expiryHead int
	seq        uint64
}

// attempt is what one Allocate call took in the mirror: the reservation
// sequence number of each key, and which keys were dynamic picks.
type attempt struct {
	seq     uint64
	taken   map[string]uint64
	dynamic []string
}

type expiryEntry struct {
	deadline time.Time
	seq      uint64
	key      string                   // a reservation, or
	attempt  weak.Pointer[v1.Service] // an attempt when key is ""
}

var _ registry.Allocator = (*Allocations)(nil)

func newAllocations(store storage.Interface, cidr *net.IPNet, pr utilnet.PortRange, log *slog.Logger) (*Allocations, error) {
	ips, err := allocator.NewIPRange(cidr)
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	ports, err := allocator.NewPortRange(pr.Base, pr.Size)
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	family := v1.IPv4Protocol
	if ips.Prefix().Addr().Is6() {
		family = v1.IPv6Protocol
	}
	return &Allocations{
		store:     store,
		log:       log,
		cidr:      cidr,
		prefix:    ips.Prefix(),
		family:    family,
		portRange: pr,
		now:       time.Now,
		synced:    make(chan struct{}),
		ips:       ips,
		ports:     ports,
		reserved:  map[string]uint64{},
		attempts:  map[weak.Pointer[v1.Service]]attempt{},
	}, nil
}

func invalid(svc *v1.Service, errs ...*field.Error) error {
	return apierrors.NewInvalid(serviceKind, svc.Name, field.ErrorList(errs))
}

func errNotService(obj runtime.Object) error {
	return fmt.Errorf("service: expected *v1.Service, got %T", obj)
}

// Allocate implements registry.Allocator. The strategy's PrepareForCreate or
// PrepareForUpdate must have run on obj. It fills in ipFamilies,
// ipFamilyPolicy, clusterIP(s), nodePorts and healthCheckNodePort as upstream
// does and returns the ops creating the keys of values obj newly holds and
// deleting those old held that obj does not. Errors are *apierrors.StatusError
// (422 for a bad requested value, 500 for a full range).
func (a *Allocations) Allocate(ctx context.Context, obj, old runtime.Object) ([]storage.Op, error) {
	svc, ok := obj.(*v1.Service)
	if !ok {
		return nil, errNotService(obj)
	}
	var oldSvc *v1.Service
	if old != nil {
		if oldSvc, ok = old.(*v1.Service); !ok {
			return nil, errNotService(old)
		}
	}
	select {
	case <-a.synced:
	case <-ctx.Done():
		return nil, fmt.Errorf("service: waiting for the allocation mirror: %w", ctx.Err())
	}
	if err := a.initIPFamilyFields(svc, oldSvc); err != nil {
		return nil, err
	}

	a.mu.Lock()
	tx := &allocTx{a: a, svc: svc, held: map[string]bool{}}
	for _, k := range keysOf(oldSvc) {
		tx.held[k] = true
	}
	a.expireLocked()
	err := tx.run(oldSvc)
	if err != nil {
		tx.undoLocked()
	} else if len(tx.taken) > 0 {
		a.recordAttemptLocked(svc, tx)
	}
	a.mu.Unlock()
	if err != nil {
		return nil, err
	}

	desired := keysOf(svc)
	var ops []storage.Op
	val := ownerOf(svc).value()
	for _, k := range desired {
		if !tx.held[k] {
			ops = append(ops, storage.Put(k, val, 0))
		}
	}
	for _, k := range keysOf(oldSvc) {
		if !slices.Contains(desired, k) {
			ops = append(ops, storage.Delete(k, storage.Any))
		}
	}
	return ops, nil
}

// Conflict implements registry.Allocator. obj must be the object passed to
// Allocate. For a value Allocate picked it marks the value taken and returns
// nil (the apiserver retries and a new value is picked); for a value the
// client asked for it returns upstream's "already allocated" error.
func (a *Allocations) Conflict(obj runtime.Object, key string) error {
	svc, ok := obj.(*v1.Service)
	if !ok {
		return errNotService(obj)
	}
	ip, port, ok := parseKey(key)
	if !ok {
		return apierrors.NewInternalError(fmt.Errorf("service: unexpected conflict on %q", key))
	}
	dynamic := a.forgetAttempt(svc, key)
	if dynamic {
		return nil
	}

	if ip.IsValid() {
		for _, s := range svc.Spec.ClusterIPs {
			if c, ok := parseServiceIP(s); ok && c == ip {
				return invalid(svc, field.Invalid(field.NewPath("spec", "clusterIPs"), svc.Spec.ClusterIPs,
					fmt.Sprintf("failed to allocate IP %s: %v", s, allocator.ErrIPAllocated)))
			}
		}
		return invalid(svc, field.Invalid(field.NewPath("spec", "clusterIPs"), svc.Spec.ClusterIPs,
			fmt.Sprintf("failed to allocate IP %s: %v", ip, allocator.ErrIPAllocated)))
	}
	for i, p := range svc.Spec.Ports {
		if int(p.NodePort) == port {
			return invalid(svc, field.Invalid(field.NewPath("spec", "ports").Index(i).Child("nodePort"), p.NodePort,
				allocator.ErrPortAllocated.Error()))
		}
	}
	return apierrors.NewInternalError(fmt.Errorf("failed to allocate requested HealthCheck NodePort %d: %v", port, allocator.ErrPortAllocated))
}

// forgetAttempt forgets the failed write's reservations and reports
// whether key was a dynamic pick. The transaction failed as a whole, so none
// of the values the attempt took was stored by it: they are free again in the
// mirror, except key, which someone else holds.
func (a *Allocations) forgetAttempt(svc *v1.Service, key string) (dynamic bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	wp := weak.Make(svc)
	att, found := a.attempts[wp]
	if !found {
		return false
	}
	delete(a.attempts, wp)
	for k, seq := range att.taken {
		if cur, ok := a.reserved[k]; ok && cur == seq {
			delete(a.reserved, k)
			a.setLocked(k, false)
		}
	}
	if !slices.Contains(att.dynamic, key) {
		return false
	}
	// Keep the value out of our picks until the watch reports it stored
	// (or, should it be gone again by then, for a TTL).
	a.takeLocked(key)
	return true
}

// Release implements registry.Allocator: the ops deleting obj's keys.
func (a *Allocations) Release(obj runtime.Object) []storage.Op {
	svc, ok := obj.(*v1.Service)
	if !ok {
		return nil
	}
	var ops []storage.Op
	for _, k := range keysOf(svc) {
		ops = append(ops, storage.Delete(k, storage.Any))
	}
	return ops
}

// Allocated returns how many ClusterIPs and NodePorts of the configured
// ranges are stored, as far as the mirror knows (reservations excluded).
func (a *Allocations) Allocated() (clusterIPs, nodePorts int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	clusterIPs, nodePorts = a.ips.Used(), a.ports.Used()
	for k := range a.reserved {
		if strings.HasPrefix(k, ClusterIPKeyPrefix) {
			clusterIPs--
		} else {
			nodePorts--
		}
	}
	return clusterIPs, nodePorts
}

// allocTx is one Allocate call's work on the mirror, under a.mu.
type allocTx struct {
	a       *Allocations
	svc     *v1.Service
	held    map[string]bool // keys old holds
	taken   []string        // keys this call took in the mirror (for undo)
	dynamic []string        // keys this call picked
}

func (t *allocTx) run(old *v1.Service) error {
	svc := t.svc
	// Take every requested nodePort first, so that a dynamic pick for one
	// port cannot land on a value another port of the same request asks for.
	if hasNodePorts(svc) {
		for _, p := range svc.Spec.Ports {
			if k := NodePortKey(int(p.NodePort)); p.NodePort > 0 && !t.held[k] {
				t.static(k)
			}
		}
	}
	if hc := svc.Spec.HealthCheckNodePort; hc > 0 && needsHealthCheck(svc) {
		if k := NodePortKey(int(hc)); !t.held[k] {
			t.static(k)
		}
	}
	// ClusterIPs: on create, and on a change from ExternalName (upstream
	// allocClusterIPs / updateClusterIPs case A). Other updates keep the IPs;
	// validation rejects changes to them.
	if needsClusterIP(svc) && !isHeadless(svc) && (old == nil || old.Spec.Type == v1.ServiceTypeExternalName) {
		if err := t.clusterIPs(); err != nil {
			return err
		}
	}
	if hasNodePorts(svc) {
		var err error
		if old == nil {
			err = t.nodePortsCreate()
		} else {
			err = t.nodePortsUpdate()
		}
		if err != nil {
			return err
		}
	}
	if needsHealthCheck(svc) && (old == nil || !needsHealthCheck(old)) {
		return t.healthCheckNodePort()
	}
	return nil
}

func (t *allocTx) clusterIPs() error {
	spec := &t.svc.Spec
	if spec.ClusterIPs == nil {
		spec.ClusterIPs = make([]string, 0, len(spec.IPFamilies))
	}
	for i := range spec.IPFamilies {
		if i >= len(spec.ClusterIPs) {
			spec.ClusterIPs = append(spec.ClusterIPs, "")
		}
		s := spec.ClusterIPs[i]
		if s == "" {
			ip, err := t.a.ips.AllocateNext()
			if err != nil {
				return apierrors.NewInternalError(fmt.Errorf("failed to allocate a serviceIP for Service %q: %w", t.svc.Name, err))
			}
			key := ClusterIPKey(ip)
			t.a.reserveLocked(key)
			t.taken = append(t.taken, key)
			t.dynamic = append(t.dynamic, key)
			spec.ClusterIPs[i] = ip.String()
		} else {
			ip, ok := parseServiceIP(s)
			if !ok {
				return apierrors.NewInternalError(fmt.Errorf("failed to parse service IP %q", s))
			}
			key := ClusterIPKey(ip)
			if t.held[key] {
				continue
			}
			if !t.a.ips.Contains(ip) {
				err := &allocator.IPNotInRangeError{IP: ip, ValidRange: t.a.ips.CIDR()}
				return invalid(t.svc, field.Invalid(field.NewPath("spec", "clusterIPs"), spec.ClusterIPs,
					fmt.Sprintf("failed to allocate IP %s: %v", s, err)))
			}
			t.static(key)
		}
		if i == 0 {
			spec.ClusterIP = spec.ClusterIPs[0]
		}
	}
	return nil
}

// static reserves a requested value in the mirror if the mirror thinks it is
// free. Whether it really is free is for the transaction to say.
func (t *allocTx) static(key string) {
	if t.a.takeLocked(key) {
		t.taken = append(t.taken, key)
	}
}

// nextPort picks a dynamic port.
func (t *allocTx) nextPort() (int32, error) {
	p, err := t.a.ports.AllocateNext()
	if err != nil {
		return 0, err
	}
	key := NodePortKey(p)
	t.a.reserveLocked(key)
	t.taken = append(t.taken, key)
	t.dynamic = append(t.dynamic, key)
	return int32(p), nil
}

// staticPort checks a requested nodePort of port i against the range.
func (t *allocTx) staticPort(i int, np int32) error {
	if !t.a.ports.Contains(int(np)) {
		return invalid(t.svc, field.Invalid(field.NewPath("spec", "ports").Index(i).Child("nodePort"), np,
			(&allocator.PortNotInRangeError{ValidPorts: t.a.ports.String()}).Error()))
	}
	t.static(NodePortKey(int(np)))
	return nil
}

// nodePortsCreate is upstream initNodePorts: ports sharing a port number
// (53/TCP and 53/UDP) share a nodePort, a requested nodePort of one of them
// serves all, and asking for one nodePort on two port numbers fails.
func (t *allocTx) nodePortsCreate() error {
	ports := t.svc.Spec.Ports
	byPort := map[int32]int32{}
	used := map[int32]bool{}
	for i := range ports {
		sp := &ports[i]
		if sp.NodePort == 0 && !needsNodePort(t.svc) {
			continue // LoadBalancer without node ports: only honour requests
		}
		np := byPort[sp.Port]
		switch {
		case np == 0:
			if req := findRequestedNodePort(sp.Port, ports); req != 0 {
				if used[req] {
					return invalid(t.svc, field.Invalid(field.NewPath("spec", "ports").Index(i).Child("nodePort"), req, allocator.ErrPortAllocated.Error()))
				}
				if err := t.staticPort(i, req); err != nil {
					return err
				}
				np = req
			} else {
				p, err := t.nextPort()
				if err != nil {
					return apierrors.NewInternalError(fmt.Errorf("failed to allocate a nodePort: %w", err))
				}
				np = p
			}
			used[np] = true
			byPort[sp.Port] = np
			sp.NodePort = np
		case sp.NodePort == 0:
			sp.NodePort = np
		case sp.NodePort != np:
			if used[sp.NodePort] {
				return invalid(t.svc, field.Invalid(field.NewPath("spec", "ports").Index(i).Child("nodePort"), sp.NodePort, allocator.ErrPortAllocated.Error()))
			}
			if err := t.staticPort(i, sp.NodePort); err != nil {
				return err
			}
			used[sp.NodePort] = true
		}
	}
	return nil
}

// nodePortsUpdate is upstream updateNodePorts: values old held are kept,
// new requested values are checked, zero values get a dynamic pick.
func (t *allocTx) nodePortsUpdate() error {
	ports := t.svc.Spec.Ports
	seen := map[int32]bool{}
	for i := range ports {
		sp := &ports[i]
		if sp.NodePort == 0 && !needsNodePort(t.svc) {
			continue
		}
		if sp.NodePort != 0 {
			if !t.held[NodePortKey(int(sp.NodePort))] && !seen[sp.NodePort] {
				if err := t.staticPort(i, sp.NodePort); err != nil {
					return err
				}
				seen[sp.NodePort] = true
			}
			continue
		}
		p, err := t.nextPort()
		if err != nil {
			return apierrors.NewInternalError(fmt.Errorf("failed to allocate a nodePort: %w", err))
		}
		sp.NodePort = p
	}
	return nil
}

// healthCheckNodePort allocates the healthCheckNodePort when the Service
// starts needing one. Upstream reports these failures as internal errors.
func (t *allocTx) healthCheckNodePort() error {
	spec := &t.svc.Spec
	hc := spec.HealthCheckNodePort
	if hc == 0 {
		p, err := t.nextPort()
		if err != nil {
			return apierrors.NewInternalError(fmt.Errorf("failed to allocate a HealthCheck NodePort %v: %v", 0, err))
		}
		spec.HealthCheckNodePort = p
		return nil
	}
	if t.held[NodePortKey(int(hc))] {
		return nil
	}
	var err error
	switch {
	case !t.a.ports.Contains(int(hc)):
		err = &allocator.PortNotInRangeError{ValidPorts: t.a.ports.String()}
	case slices.ContainsFunc(spec.Ports, func(p v1.ServicePort) bool { return p.NodePort == hc }):
		err = allocator.ErrPortAllocated
	}
	if err != nil {
		return apierrors.NewInternalError(fmt.Errorf("failed to allocate requested HealthCheck NodePort %v: %v", hc, err))
	}
	t.static(NodePortKey(int(hc)))
	return nil
}

func findRequestedNodePort(port int32, ports []v1.ServicePort) int32 {
	for _, p := range ports {
		if p.Port == port && p.NodePort != 0 {
			return p.NodePort
		}
	}
	return 0
}

// undoLocked gives back what a failed Allocate call took in the mirror.
func (t *allocTx) undoLocked() {
	for _, k := range t.taken {
		delete(t.a.reserved, k)
		t.a.setLocked(k, false)
	}
}
