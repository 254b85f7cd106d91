package apiserver

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/pager"
)

func TestListPaging(t *testing.T) { testListPaging(t, newTestEnv(t)) }

// testListPaging checks limit/continue: pages in key order, one revision
// for all pages, remainingItemCount, selectors, bad tokens, and 410 once the
// revision is compacted.
func testListPaging(t *testing.T, env *testEnv) {
	ctx := context.Background()
	const ns = "paging"
	if _, err := env.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := 0; i < 7; i++ {
		svc := webService(fmt.Sprintf("s%d", i))
		svc.Labels = map[string]string{"parity": strconv.Itoa(i % 2)}
		if _, err := env.cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		want = append(want, svc.Name)
	}
	svcs := env.cs.CoreV1().Services(ns)

	t.Run("pages", func(t *testing.T) {
		var got []string
		var rvs []string
		var remaining []string
		opts := metav1.ListOptions{Limit: 3}
		for page := 0; ; page++ {
			l, err := svcs.List(ctx, opts)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range l.Items {
				got = append(got, s.Name)
			}
			rvs = append(rvs, l.ResourceVersion)
			if l.RemainingItemCount != nil {
				remaining = append(remaining, strconv.FormatInt(*l.RemainingItemCount, 10))
			} else {
				remaining = append(remaining, "-")
			}
			if page == 0 {
				// Written after the first page: not in the later ones.
				if _, err := svcs.Create(ctx, webService("s9"), metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
				defer svcs.Delete(ctx, "s9", metav1.DeleteOptions{})
			}
			if l.Continue == "" {
				break
			}
			opts.Continue = l.Continue
		}
		if !slices.Equal(got, want) {
			t.Errorf("items = %v, want %v", got, want)
		}
		if len(rvs) != 3 || rvs[0] != rvs[1] || rvs[1] != rvs[2] {
			t.Errorf("page resourceVersions = %v, want 3 equal", rvs)
		}
		if w := []string{"4", "1", "-"}; !slices.Equal(remaining, w) {
			t.Errorf("remainingItemCount = %v, want %v", remaining, w)
		}
	})

	t.Run("selector", func(t *testing.T) {
		var got []string
		opts := metav1.ListOptions{Limit: 2, LabelSelector: "parity=1"}
		for {
			l, err := svcs.List(ctx, opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(l.Items) > 2 {
				t.Errorf("page of %d items, limit 2", len(l.Items))
			}
			if l.RemainingItemCount != nil {
				t.Errorf("remainingItemCount set with a selector")
			}
			for _, s := range l.Items {
				got = append(got, s.Name)
			}
			if l.Continue == "" {
				break
			}
			opts.Continue = l.Continue
		}
		if w := []string{"s1", "s3", "s5"}; !slices.Equal(got, w) {
			t.Errorf("items = %v, want %v", got, w)
		}
	})

	t.Run("table pages (kubectl get)", func(t *testing.T) {
		var got []string
		q := "?limit=3"
		for pages := 0; ; pages++ {
			code, _, body := getWithAccept(t, env, "/api/v1/namespaces/"+ns+"/services"+q, tableAccept)
			if code != http.StatusOK {
				t.Fatalf("status %d: %s", code, body)
			}
			table := &metav1.Table{}
			decodeRaw(t, env, body, table)
			for _, r := range table.Rows {
				got = append(got, r.Cells[0].(string))
			}
			if table.Continue == "" {
				break
			}
			if pages == 0 && (table.RemainingItemCount == nil || *table.RemainingItemCount != 4) {
				t.Errorf("first table page remainingItemCount = %v, want 4", table.RemainingItemCount)
			}
			q = "?limit=3&continue=" + url.QueryEscape(table.Continue)
		}
		if !slices.Equal(got, want) {
			t.Errorf("rows = %v, want %v", got, want)
		}
	})

	t.Run("client-go pager", func(t *testing.T) {
		p := pager.New(func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			return svcs.List(ctx, opts)
		})
		p.PageSize = 2
		var got []string
		err := p.EachListItem(ctx, metav1.ListOptions{}, func(obj runtime.Object) error {
			got = append(got, obj.(*corev1.Service).Name)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("items = %v, want %v", got, want)
		}
	})

	for _, tc := range []struct {
		name string
		opts metav1.ListOptions
	}{
		{"garbage token", metav1.ListOptions{Continue: "!!!"}},
		{"escaping token", metav1.ListOptions{Continue: mustContinue(t, "../secrets/x", 5)}},
		{"token and resourceVersion", metav1.ListOptions{Continue: mustContinue(t, "s1", 5), ResourceVersion: "5"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := svcs.List(ctx, tc.opts); !apierrors.IsBadRequest(err) {
				t.Errorf("List: %v, want BadRequest", err)
			}
		})
	}

	t.Run("compacted", func(t *testing.T) {
		l, err := svcs.List(ctx, metav1.ListOptions{Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		if l.Continue == "" {
			t.Fatal("no continue token")
		}
		if _, err := svcs.Create(ctx, webService("s8"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		rev, err := env.store.CurrentRevision(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := env.store.Compact(ctx, rev); err != nil {
			t.Fatal(err)
		}
		if _, err := svcs.List(ctx, metav1.ListOptions{Limit: 2, Continue: l.Continue}); !apierrors.IsResourceExpired(err) {
			t.Errorf("List after compaction: %v, want 410 Expired", err)
		}
	})
}

func mustContinue(t *testing.T, start string, rev int64) string {
	t.Helper()
	tok, err := encodeContinue(start, rev)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
