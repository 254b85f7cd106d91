package nftables

import (
	"slices"
	"strings"

	"sigs.k8s.io/knftables"
)

// elemKey identifies one element of one set or map.
type elemKey struct {
	container string // set or map name
	key       string // "a . b . c"
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
	refs  int
}

// elementStore is the in-memory record of every set/map element written,
// so a partial sync can emit only the element deltas of changed services
// without listing the kernel. It is rebuilt from scratch on a full sync.
type elementStore struct {
	elems map[elemKey]*elemState
	// dirty collects keys touched during the current sync with the value
	// that was in the kernel before it (nil = absent).
	dirty map[elemKey]*string
}

func newElementStore() *elementStore {
	return &elementStore{elems: map[elemKey]*elemState{}, dirty: map[elemKey]*string{}}
}

func (s *elementStore) reset() {
	clear(s.elems)
	clear(s.dirty)
}

func (s *elementStore) markDirty(k elemKey) {
	if _, ok := s.dirty[k]; ok {
		return
	}
	if e, ok := s.elems[k]; ok {
		v := e.value
		s.dirty[k] = &v
		return
	}
	s.dirty[k] = nil
}

// add records one more owner for w (the last writer's value wins).
func (s *elementStore) add(w elemWant) {
	s.markDirty(w.elemKey)
	e, ok := s.elems[w.elemKey]
	if !ok {
		e = &elemState{}
		s.elems[w.elemKey] = e
	}
	e.value = w.value
	e.refs++
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
	}
}

// isMap tells element containers apart: sets have no value.
var mapContainers = map[string]bool{
	serviceIPsMap: true, serviceNodePortsMap: true, noEndpointServicesMap: true,
	noEndpointNodePortsMap: true, firewallIPsMap: true, endpointSlotsMap: true, endpointPortsMap: true,
}

func newElement(k elemKey, value string) *knftables.Element {
	e := &knftables.Element{Key: strings.Split(k.key, " . ")}
	if mapContainers[k.container] {
		e.Map = k.container
		e.Value = strings.Split(value, " . ")
	} else {
		e.Set = k.container
	}
	return e
}

// delta returns the element deletions (with the value they had) and
// additions of this sync, in a stable order, and forgets them. An element
// whose value changed is in both lists. Deletions must be applied before
// the chains they point at are deleted, additions after the chains they
// point at are created.
func (s *elementStore) delta() (dels, adds []elemWant) {
	for _, k := range s.sortedDirty() {
		before := s.dirty[k]
		now, ok := s.elems[k]
		if before != nil && (!ok || now.value != *before) {
			dels = append(dels, elemWant{elemKey: k, value: *before})
		}
		if ok && (before == nil || now.value != *before) {
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
	slices.SortFunc(keys, func(a, b elemKey) int {
		if c := strings.Compare(a.container, b.container); c != 0 {
			return c
		}
		return strings.Compare(a.key, b.key)
	})
	return keys
}
