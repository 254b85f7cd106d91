package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"k8s.io/client-go/kubernetes"
)

// listMode is one way a client lists Services.
type listMode struct {
	name   string
	accept string
	// chunk > 0 pages with limit=chunk and follows metadata.continue, as
	// kubectl get does (--chunk-size=500 by default).
	chunk int
}

var (
	acceptJSON     = "application/json"
	acceptProtobuf = "application/vnd.kubernetes.protobuf"
	// acceptTable is what kubectl get sends for human-readable output.
	acceptTable = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)

var listModes = []listMode{
	{name: "JSON", accept: acceptJSON},
	{name: "protobuf", accept: acceptProtobuf},
	{name: "Table (one request)", accept: acceptTable},
	{name: "Table, limit=500 pages (kubectl get)", accept: acceptTable, chunk: 500},
}

// listResult is the latency of n lists in one mode.
type listResult struct {
	mode     listMode
	lat      []time.Duration
	bytes    int // body bytes of one whole list (sum over pages)
	pages    int // requests per list
	failed   int
	firstErr error
}

// measureLists lists ns n times in each mode. Latency is from sending the
// request to having read the whole body (all pages for chunked modes),
// without decoding it: the server's cost plus transfer on loopback.
func measureLists(ctx context.Context, cs kubernetes.Interface, ns string, n int, budget time.Duration) []listResult {
	var out []listResult
	for _, m := range listModes {
		res := listResult{mode: m}
		deadline := time.Now().Add(budget)
		for i := 0; i < n && time.Now().Before(deadline); i++ {
			d, size, pages, err := listOnce(ctx, cs, ns, m)
			if err != nil {
				res.failed++
				if res.firstErr == nil {
					res.firstErr = err
				}
				if res.failed > 3 {
					break
				}
				continue
			}
			res.lat = append(res.lat, d)
			res.bytes, res.pages = size, pages
		}
		out = append(out, res)
	}
	return out
}

// listOnce does one whole list; for chunked modes it decodes only
// metadata.continue between pages, outside the timed part.
func listOnce(ctx context.Context, cs kubernetes.Interface, ns string, m listMode) (time.Duration, int, int, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var total time.Duration
	size, pages := 0, 0
	cont := ""
	for pages < 200 {
		req := cs.CoreV1().RESTClient().Get().Namespace(ns).Resource("services").SetHeader("Accept", m.accept)
		if m.chunk > 0 {
			req = req.Param("limit", strconv.Itoa(m.chunk))
			if cont != "" {
				req = req.Param("continue", cont)
			}
		}
		t0 := time.Now()
		body, err := req.DoRaw(ctx)
		total += time.Since(t0)
		if err != nil {
			return 0, 0, 0, fmt.Errorf("list %s (%s): %w", ns, m.name, err)
		}
		size += len(body)
		pages++
		if m.chunk == 0 {
			break
		}
		var meta struct {
			Metadata struct {
				Continue string `json:"continue"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(body, &meta); err != nil {
			return 0, 0, 0, fmt.Errorf("list %s (%s): decode continue: %w", ns, m.name, err)
		}
		if cont = meta.Metadata.Continue; cont == "" {
			break
		}
	}
	return total, size, pages, nil
}
