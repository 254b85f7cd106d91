package dns

import (
	"fmt"
	"runtime"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// benchSnapshot is n Services (one in ten headless with 3 endpoints).
func benchSnapshot(n int) Snapshot {
	var svcs []*corev1.Service
	var slices []*discoveryv1.EndpointSlice
	tcp := corev1.ProtocolTCP
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("svc-%05d", i)
		if i%10 == 0 {
			svcs = append(svcs, svc("bench", name, corev1.ServiceTypeClusterIP, []string{"None"}, port("http", tcp, 80)))
			slices = append(slices, slice("bench", name, name+"-1", discoveryv1.AddressTypeIPv4,
				[]discoveryv1.EndpointPort{epPort("http", tcp, 8080)},
				ep{ip: fmt.Sprintf("10.200.%d.%d", i/256%256, i%256)}, ep{ip: fmt.Sprintf("10.201.%d.%d", i/256%256, i%256)},
				ep{ip: fmt.Sprintf("10.202.%d.%d", i/256%256, i%256)}))
			continue
		}
		svcs = append(svcs, svc("bench", name, corev1.ServiceTypeClusterIP, []string{fmt.Sprintf("10.%d.%d.%d", 96+i/65536, i/256%256, i%256)}, port("http", tcp, 80)))
	}
	return snapshot(svcs, slices...)
}

// BenchmarkBuildIndex10k builds the index of 10000 Services and reports the
// live heap that the owner's state and the published index hold (index-MB)
// and what the compact informer objects hold (objects-MB).
func BenchmarkBuildIndex10k(b *testing.B) {
	snap := benchSnapshot(10000)
	rc := RecordConfig{Zone: "cluster.local", TTL: 5}
	for i := 0; i < b.N; i++ {
		_ = buildIndex(rc, snap, 1)
	}
	b.StopTimer()
	var m0, m1, m2 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	inputs := make(map[string]serviceInput, len(snap.Services))
	for _, s := range snap.Services {
		k := s.Namespace + "/" + s.Name
		inputs[k] = inputOf(s, snap.Slices[k])
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	st := newIndexState(rc)
	x := st.apply(inputs, nil, 1)
	runtime.GC()
	runtime.ReadMemStats(&m2)
	b.ReportMetric(float64(m1.HeapAlloc-m0.HeapAlloc)/(1<<20), "objects-MB")
	b.ReportMetric(float64(m2.HeapAlloc-m1.HeapAlloc)/(1<<20), "index-MB")
	b.ReportMetric(float64(len(x.names)), "names")
	runtime.KeepAlive(snap)
	runtime.KeepAlive(inputs)
	runtime.KeepAlive(st)
	runtime.KeepAlive(x)
}

// BenchmarkApplyOneService10k is the cost of publishing one new Service
// with 10000 in the index (what a create costs the owner goroutine).
func BenchmarkApplyOneService10k(b *testing.B) {
	snap := benchSnapshot(10000)
	rc := RecordConfig{Zone: "cluster.local", TTL: 5}
	st := newIndexState(rc)
	all := map[string]serviceInput{}
	for _, s := range snap.Services {
		all[s.Namespace+"/"+s.Name] = inputOf(s, snap.Slices[s.Namespace+"/"+s.Name])
	}
	st.apply(all, nil, 1)
	s := svc("bench", "new", corev1.ServiceTypeClusterIP, []string{"10.99.0.1"}, port("http", corev1.ProtocolTCP, 80))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		st.apply(map[string]serviceInput{"bench/new": inputOf(s, nil)}, nil, 1)
	}
}
