package gc

import (
	"slices"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

// Finalizers the garbage collector acts on (metav1.FinalizerOrphanDependents
// and metav1.FinalizerDeleteDependents).
const (
	finalizerOrphan     = metav1.FinalizerOrphanDependents
	finalizerForeground = metav1.FinalizerDeleteDependents
)

// node is one object the collector has seen: where it lives, who owns it,
// and whether it is being deleted.
type node struct {
	gvr        schema.GroupVersionResource
	namespace  string
	name       string
	uid        types.UID
	owners     []metav1.OwnerReference
	deleting   bool
	orphan     bool // deleting with the orphan finalizer
	foreground bool // deleting with the foregroundDeletion finalizer
}

func (n *node) String() string {
	if n.namespace == "" {
		return n.gvr.Resource + "/" + n.name
	}
	return n.gvr.Resource + "/" + n.namespace + "/" + n.name
}

func newNode(gvr schema.GroupVersionResource, m metav1.Object) *node {
	n := &node{
		gvr:       gvr,
		namespace: m.GetNamespace(),
		name:      m.GetName(),
		uid:       m.GetUID(),
		owners:    slices.Clone(m.GetOwnerReferences()),
		deleting:  m.GetDeletionTimestamp() != nil,
	}
	if n.deleting {
		n.orphan = slices.Contains(m.GetFinalizers(), finalizerOrphan)
		n.foreground = slices.Contains(m.GetFinalizers(), finalizerForeground)
	}
	return n
}

// graph is the ownership graph: objects by uid, and the reverse edges from
// an owner uid to its dependents' uids. Owners need not be present (that is
// what the collector looks for). Safe for concurrent use.
type graph struct {
	mu         sync.RWMutex // guards the fields below
	nodes      map[types.UID]*node
	dependents map[types.UID]map[types.UID]bool
}

func newGraph() *graph {
	return &graph{nodes: map[types.UID]*node{}, dependents: map[types.UID]map[types.UID]bool{}}
}

// upsert records n, replacing the previous version's edges.
func (g *graph) upsert(n *node) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if old, ok := g.nodes[n.uid]; ok {
		g.unlinkLocked(old)
	}
	g.nodes[n.uid] = n
	for _, o := range n.owners {
		d := g.dependents[o.UID]
		if d == nil {
			d = map[types.UID]bool{}
			g.dependents[o.UID] = d
		}
		d[n.uid] = true
	}
}

// remove forgets uid and returns the dependents that pointed at it and the
// owners it pointed at.
func (g *graph) remove(uid types.UID) (dependents []types.UID, owners []metav1.OwnerReference) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if old, ok := g.nodes[uid]; ok {
		g.unlinkLocked(old)
		delete(g.nodes, uid)
		owners = old.owners
	}
	for d := range g.dependents[uid] {
		dependents = append(dependents, d)
	}
	return dependents, owners
}

func (g *graph) unlinkLocked(n *node) {
	for _, o := range n.owners {
		if d := g.dependents[o.UID]; d != nil {
			delete(d, n.uid)
			if len(d) == 0 {
				delete(g.dependents, o.UID)
			}
		}
	}
}

func (g *graph) get(uid types.UID) *node {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.nodes[uid]
}

// dependentsOf returns the nodes that name uid as an owner.
func (g *graph) dependentsOf(uid types.UID) []*node {
	g.mu.RLock()
	defer g.mu.RUnlock()
	var out []*node
	for d := range g.dependents[uid] {
		if n := g.nodes[d]; n != nil {
			out = append(out, n)
		}
	}
	return out
}

// size returns the number of objects (for logs and tests).
func (g *graph) size() int {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return len(g.nodes)
}
