package nftables

import (
	"slices"
	"strings"

	"sigs.k8s.io/knftables"
)

// elemKey identifies one element of one set or map.
type elemKey struct {
	container container
	key       string // "a . b . c"
}

// container is a set or map that holds elements, by its index in
// containerNames (one byte instead of a string in each of the ~130k keys
// the element record holds at 10k services).
type container uint8

var containerNames = []string{
	clusterIPsSet, nodePortIPsSet, hairpinSet, serviceIPsMap, serviceNodePortsMap,
	noEndpointServicesMap, noEndpointNodePortsMap, firewallIPsMap, endpointSlotsMap, endpointPortsMap,
	singleEndpointMap,
}

func (c container) String() string { return containerNames[c] }

// containerOf returns the container named name, one of containerNames.
func containerOf(name string) container {
	i := slices.Index(containerNames, name)
	if i < 0 {
		panic("nftables: unknown element container " + name)
	}
	return container(i)
}

// elemWant is one element a service (or the global setup) wants present.
type elemWant struct {
	elemKey
	value string // "" for sets
}

// elemState is what the kernel holds for one element, with the number of
// owners (services) that want it: cluster-ips and hairpin elements can be
// shared between service ports.
type elemState struct {
	value string
	refs  int32
}

// before is an element's value in the kernel before the current sync.
type before struct {
	value   string
	present bool
}

// elementStore is the in-memory record of every set/map element written,
// so a partial sync can emit only the element deltas of changed services
// without listing the kernel. It is rebuilt from scratch on a full sync,
// which writes every element (setup empties the containers), so only
// partial syncs track what they touch. Entries are values, not pointers: at
// 10k services the store holds ~130k elements.
type elementStore struct {
	elems map[elemKey]elemState
	// rebuilding is set from reset to the next delta: every element is new.
	rebuilding bool
	// dirty collects the keys a partial sync touched, with what the kernel
	// held before.
	dirty map[elemKey]before
}

func newElementStore() *elementStore {
	return &elementStore{elems: map[elemKey]elemState{}, dirty: map[elemKey]before{}}
}

// reset forgets everything: the containers are being emptied in the kernel.
func (s *elementStore) reset() {
	clear(s.elems)
	clear(s.dirty)
	s.rebuilding = true
}

func (s *elementStore) markDirty(k elemKey) {
	if s.rebuilding {
		return
	}
	if _, ok := s.dirty[k]; ok {
		return
	}
	e, ok := s.elems[k]
	s.dirty[k] = before{value: e.value, present: ok}
}

// add records one more owner for w (the last writer's value wins).
func (s *elementStore) add(w elemWant) {
	s.markDirty(w.elemKey)
	e := s.elems[w.elemKey]
	e.value = w.value
	e.refs++
	s.elems[w.elemKey] = e
}

// remove drops one owner of w; the element goes when nobody wants it.
func (s *elementStore) remove(w elemKey) {
	e, ok := s.elems[w]
	if !ok {
		return
	}
	s.markDirty(w)
	e.refs--
	if e.refs <= 0 {
		delete(s.elems, w)
	} else {
		s.elems[w] = e
	}
}

// isMap tells element containers apart: sets have no value.
var mapContainers = map[string]bool{
	serviceIPsMap: true, serviceNodePortsMap: true, noEndpointServicesMap: true,
	noEndpointNodePortsMap: true, firewallIPsMap: true, endpointSlotsMap: true, endpointPortsMap: true,
	singleEndpointMap: true,
}

func newElement(k elemKey, value string) *knftables.Element {
	e := &knftables.Element{Key: strings.Split(k.key, " . ")}
	if mapContainers[k.container.String()] {
		e.Map = k.container.String()
		e.Value = strings.Split(value, " . ")
	} else {
		e.Set = k.container.String()
	}
	return e
}

// delta returns the element deletions (with the value they had) and
// additions of this sync, in a stable order, and forgets them. An element
// whose value changed is in both lists. Deletions must be applied before
// the chains they point at are deleted, additions after the chains they
// point at are created.
func (s *elementStore) delta() (dels, adds []elemWant) {
	if s.rebuilding {
		s.rebuilding = false
		adds = make([]elemWant, 0, len(s.elems))
		for k, e := range s.elems {
			adds = append(adds, elemWant{elemKey: k, value: e.value})
		}
		slices.SortFunc(adds, func(a, b elemWant) int { return compareKeys(a.elemKey, b.elemKey) })
		return nil, adds
	}
	for _, k := range s.sortedDirty() {
		was := s.dirty[k]
		now, ok := s.elems[k]
		if was.present && (!ok || now.value != was.value) {
			dels = append(dels, elemWant{elemKey: k, value: was.value})
		}
		if ok && (!was.present || now.value != was.value) {
			adds = append(adds, elemWant{elemKey: k, value: now.value})
		}
	}
	clear(s.dirty)
	return dels, adds
}

// count returns the number of elements held.
func (s *elementStore) count() int { return len(s.elems) }

// sortedDirty returns the dirty keys in a stable order, so transactions (and
// golden dumps) are deterministic.
func (s *elementStore) sortedDirty() []elemKey {
	keys := make([]elemKey, 0, len(s.dirty))
	for k := range s.dirty {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareKeys)
	return keys
}

func compareKeys(a, b elemKey) int {
	if c := strings.Compare(a.container.String(), b.container.String()); c != 0 {
		return c
	}
	return strings.Compare(a.key, b.key)
}
