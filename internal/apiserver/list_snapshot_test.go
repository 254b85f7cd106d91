package apiserver

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcnet/svcnet/internal/storage"
	"github.com/svcnet/svcnet/internal/storage/etcdtest"
)

func TestPageSnapshotCut(t *testing.T) {
	kvs := func(keys ...string) []storage.KV {
		var out []storage.KV
		for _, k := range keys {
			out = append(out, storage.KV{Key: k})
		}
		return out
	}
	keys := func(kvs []storage.KV) []string {
		var out []string
		for _, kv := range kvs {
			out = append(out, kv.Key)
		}
		return out
	}
	complete := &pageSnapshot{rev: 9, from: "p/b", kvs: kvs("p/b", "p/c", "p/d", "p/e"), count: 4}
	partial := &pageSnapshot{rev: 9, from: "p/b", kvs: kvs("p/b", "p/c", "p/d", "p/e"), more: true, count: 10}
	for _, tc := range []struct {
		name      string
		snap      *pageSnapshot
		from      string
		limit     int64
		wantKeys  []string
		wantMore  bool
		wantCount int64
		wantOK    bool
	}{
		{"first page", complete, "p/b", 2, []string{"p/b", "p/c"}, true, 4, true},
		{"middle, start between keys", complete, "p/c\x00", 2, []string{"p/d", "p/e"}, false, 2, true},
		{"last page exactly the rest", complete, "p/d", 2, []string{"p/d", "p/e"}, false, 2, true},
		{"last page shorter", complete, "p/e", 3, []string{"p/e"}, false, 1, true},
		{"past the end", complete, "p/e\x00", 3, nil, false, 0, true},
		{"partial, inside", partial, "p/b", 3, []string{"p/b", "p/c", "p/d"}, true, 10, true},
		{"partial, page runs past the held keys", partial, "p/c", 3, nil, false, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, rev, more, count, ok := tc.snap.pageOK(tc.from, tc.limit)
			if ok != tc.wantOK {
				t.Fatalf("ok = %v, want %v", ok, tc.wantOK)
			}
			if !ok {
				return
			}
			if !slices.Equal(keys(got), tc.wantKeys) || rev != 9 || more != tc.wantMore || count != tc.wantCount {
				t.Errorf("page = %v rev %d more %v count %d, want %v rev 9 more %v count %d",
					keys(got), rev, more, count, tc.wantKeys, tc.wantMore, tc.wantCount)
			}
		})
	}
}

// TestListPagesFromSnapshot pages through a list on etcd, where the
// continuation pages come from a snapshot, and checks every page against
// what a direct read of storage at the list's revision gives; then that a
// compacted revision is still 410 when the snapshot holds it.
func TestListPagesFromSnapshot(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an embedded etcd")
	}
	store, _ := etcdtest.Start(t)
	env := newTestEnv(t, withStore(store))
	ctx := context.Background()
	cms := env.cs.CoreV1().ConfigMaps("default")
	var want []string
	for i := range 23 {
		name := fmt.Sprintf("cm-%02d", i)
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"odd": strconv.FormatBool(i%2 == 1)}}}
		if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		want = append(want, name)
	}
	res := env.s.byGR[corev1.Resource("configmaps")]
	prefix := res.listPrefix("default")

	for _, tc := range []struct {
		name     string
		selector string
		want     []string
	}{
		{"all", "", want},
		{"selector", "odd=true", func() (w []string) {
			for i, n := range want {
				if i%2 == 1 {
					w = append(w, n)
				}
			}
			return w
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			opts := metav1.ListOptions{Limit: 4, LabelSelector: tc.selector}
			var rev string
			for page := 0; page < 20; page++ {
				l, err := cms.List(ctx, opts)
				if err != nil {
					t.Fatalf("page %d: %v", page, err)
				}
				if page == 0 {
					rev = l.ResourceVersion
					// Written after the first page: in none of the later ones.
					if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm-05a-" + tc.name}}, metav1.CreateOptions{}); err != nil {
						t.Fatal(err)
					}
					if err := cms.Delete(ctx, "cm-10", metav1.DeleteOptions{}); err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() {
						_ = cms.Delete(ctx, "cm-05a-"+tc.name, metav1.DeleteOptions{})
						_, _ = cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm-10", Labels: map[string]string{"odd": "false"}}}, metav1.CreateOptions{})
					})
				}
				if l.ResourceVersion != rev {
					t.Errorf("page %d at resourceVersion %s, want %s", page, l.ResourceVersion, rev)
				}
				var names []string
				for _, cm := range l.Items {
					names = append(names, cm.Name)
				}
				got = append(got, names...)
				// What storage itself holds after the page, at that revision.
				r, _ := strconv.ParseInt(rev, 10, 64)
				kvs, _, err := store.List(ctx, prefix, r)
				if err != nil {
					t.Fatal(err)
				}
				var after int64
				for _, kv := range kvs {
					if len(names) > 0 && kv.Key > prefix+names[len(names)-1] {
						after++
					}
				}
				switch {
				case tc.selector != "" && l.RemainingItemCount != nil:
					t.Errorf("page %d: remainingItemCount with a selector", page)
				case tc.selector == "" && l.Continue != "" && (l.RemainingItemCount == nil || *l.RemainingItemCount != after):
					t.Errorf("page %d: remainingItemCount %v, want %d", page, l.RemainingItemCount, after)
				case tc.selector == "" && l.Continue == "" && (l.RemainingItemCount != nil || after != 0):
					t.Errorf("page %d: last page with remainingItemCount %v and %d keys after it", page, l.RemainingItemCount, after)
				}
				if l.Continue == "" {
					break
				}
				opts.Continue = l.Continue
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("items %v\nwant %v", got, tc.want)
			}
		})
	}

	t.Run("compacted", func(t *testing.T) {
		l1, err := cms.List(ctx, metav1.ListOptions{Limit: 3})
		if err != nil {
			t.Fatal(err)
		}
		l2, err := cms.List(ctx, metav1.ListOptions{Limit: 3, Continue: l1.Continue}) // reads the snapshot
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "zz"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		cur, _ := store.CurrentRevision(ctx)
		if err := store.Compact(ctx, cur); err != nil {
			t.Fatal(err)
		}
		_, err = cms.List(ctx, metav1.ListOptions{Limit: 3, Continue: l2.Continue})
		if !apierrors.IsResourceExpired(err) && !apierrors.IsGone(err) {
			t.Errorf("page after compaction: %v, want 410", err)
		}
	})
}
