package proxy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// fakeBackend records every State it is given.
type fakeBackend struct {
	mu     sync.Mutex // guards the fields below
	states []*State
	fail   int // fail this many next syncs
	synced chan *State
}

func newFakeBackend() *fakeBackend { return &fakeBackend{synced: make(chan *State, 10000)} }

func (f *fakeBackend) Name() string                  { return "fake" }
func (f *fakeBackend) Cleanup(context.Context) error { return nil }
func (f *fakeBackend) Sync(_ context.Context, st *State) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail > 0 {
		f.fail--
		f.states = append(f.states, nil)
		return errors.New("injected")
	}
	f.states = append(f.states, st)
	f.synced <- st
	return nil
}

func (f *fakeBackend) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.states)
}

// waitFor waits until a synced state satisfies ok.
func (f *fakeBackend) waitFor(t *testing.T, what string, ok func(*State) bool) *State {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case st := <-f.synced:
			if ok(st) {
				return st
			}
		case <-timeout:
			t.Fatalf("timed out waiting for a sync with %s", what)
		}
	}
}

func testSlice(ns, svc, name string, ips ...string) *discovery.EndpointSlice {
	s := &discovery.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discovery.LabelServiceName: svc}},
		AddressType: discovery.AddressTypeIPv4,
		Ports:       []discovery.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(v1.ProtocolTCP)}},
	}
	for _, ip := range ips {
		s.Endpoints = append(s.Endpoints, discovery.Endpoint{Addresses: []string{ip}, NodeName: ptr.To("node-b")})
	}
	return s
}

func testService(ns, name, ip string) *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1.ServiceSpec{Type: v1.ServiceTypeClusterIP, ClusterIP: ip, ClusterIPs: []string{ip},
			Ports: []v1.ServicePort{{Name: "http", Port: 80, Protocol: v1.ProtocolTCP}}},
	}
}

// TestBurstCoalesces is acceptance 4 (first half): 1000 endpoint changes in
// a burst produce a handful of syncs, and the last one has every change.
func TestBurstCoalesces(t *testing.T) {
	tr := NewTracker("node-a")
	tr.SetSynced(true, true)
	be := newFakeBackend()
	r := NewRunner(func(ctx context.Context, full bool) error {
		st, _ := tr.Snapshot(full)
		return be.Sync(ctx, st)
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	be.waitFor(t, "the initial sync", func(*State) bool { return true })
	before := be.count()

	const n = 1000
	tr.UpdateService(testService("ns", "web", "10.96.0.10"))
	for i := range n {
		// Each change rewrites the slice with one more endpoint.
		ips := make([]string, 0, i+1)
		for j := 0; j <= i%250; j++ {
			ips = append(ips, fmt.Sprintf("10.244.%d.%d", j/250, j%250+1))
		}
		s := testSlice("ns", "web", "web-1", ips...)
		s.Generation = int64(i)
		if tr.UpdateSlice(s) {
			r.Trigger()
		}
	}
	last := be.waitFor(t, "the last change", func(st *State) bool {
		for _, eps := range st.Endpoints {
			if len(eps) == (n-1)%250+1 {
				return true
			}
		}
		return false
	})
	syncs := be.count() - before
	t.Logf("%d changes -> %d syncs (last generation %d)", n, syncs, last.Generation)
	if syncs > 10 {
		t.Errorf("%d changes produced %d syncs, want a handful (<= 10)", n, syncs)
	}
	cancel()
	<-done
}

// TestRunnerFailureForcesFullResync: a failed sync is retried, as a full
// sync, without any new trigger.
func TestRunnerFailureForcesFullResync(t *testing.T) {
	var mu sync.Mutex
	var fulls []bool
	fail := 2
	r := NewRunner(func(_ context.Context, full bool) error {
		mu.Lock()
		defer mu.Unlock()
		fulls = append(fulls, full)
		if len(fulls) >= 2 && fail > 0 {
			fail--
			return errors.New("injected")
		}
		return nil
	})
	r.MinBackoff = time.Millisecond
	r.BurstInterval = time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	deadline := time.After(30 * time.Second)
	triggered := false
	for {
		mu.Lock()
		n := len(fulls)
		mu.Unlock()
		if n >= 4 {
			break
		}
		if n == 1 && !triggered {
			triggered = true
			r.Trigger()
		}
		select {
		case <-deadline:
			t.Fatal("timed out")
		case <-time.After(time.Millisecond):
		}
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	// 1: initial full; 2: partial (fails); 3: retry full (fails); 4: retry full (ok).
	want := []bool{true, false, true, true}
	for i, w := range want {
		if fulls[i] != w {
			t.Errorf("sync %d full=%v, want %v (all: %v)", i, fulls[i], w, fulls)
		}
	}
}

// TestRunnerPeriodicFullResync: untriggered periodic syncs are full when
// FullPeriod has passed (0 here: always).
func TestRunnerPeriodicFullResync(t *testing.T) {
	var mu sync.Mutex
	var fulls []bool
	r := NewRunner(func(_ context.Context, full bool) error {
		mu.Lock()
		defer mu.Unlock()
		fulls = append(fulls, full)
		return nil
	})
	r.Period = 5 * time.Millisecond
	r.FullPeriod = 0
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	for {
		mu.Lock()
		n := len(fulls)
		mu.Unlock()
		if n >= 3 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	for i, f := range fulls {
		if !f {
			t.Errorf("untriggered sync %d was partial; periodic syncs must be full", i)
		}
	}
}
