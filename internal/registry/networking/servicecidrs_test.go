package networking_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcnet/svcnet/internal/registry/networking"
	"github.com/svcnet/svcnet/internal/testutil/apitest"
)

func TestServiceCIDRs(t *testing.T) {
	srv := apitest.Start(t, apitest.Options{})
	ctx := context.Background()
	api := srv.Client.NetworkingV1().ServiceCIDRs()

	// The server bootstraps the default range, Ready.
	def, err := api.Get(ctx, networking.DefaultServiceCIDRName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(def.Spec.CIDRs) != 1 || !meta.IsStatusConditionTrue(def.Status.Conditions, networkingv1.ServiceCIDRConditionReady) {
		t.Fatalf("default ServiceCIDR: %+v", def)
	}

	// Invalid specs: upstream's field paths and messages; nothing stored.
	for _, tc := range []struct {
		name  string
		cidrs []string
		field string
		msg   string
	}{
		{"none", nil, "spec.cidrs", "at least one CIDR required"},
		{"three", []string{"10.1.0.0/24", "fd00::/64", "10.2.0.0/24"}, "spec.cidrs", "may only hold up to 2 values"},
		{"not-a-cidr", []string{"10.1.0.0"}, "spec.cidrs[0]", "must be a valid CIDR value"},
		{"not-canonical", []string{"10.1.0.1/24"}, "spec.cidrs[0]", "must not have bits set beyond the prefix length"},
		{"same-family", []string{"10.1.0.0/24", "10.2.0.0/24"}, "spec.cidrs", "may specify no more than one IP for each IP family"},
	} {
		_, err := api.Create(ctx, &networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: tc.name},
			Spec: networkingv1.ServiceCIDRSpec{CIDRs: tc.cidrs}}, metav1.CreateOptions{})
		if !apierrors.IsInvalid(err) {
			t.Errorf("%s: err %v, want 422 Invalid", tc.name, err)
			continue
		}
		var found bool
		for _, c := range err.(apierrors.APIStatus).Status().Details.Causes {
			found = found || (c.Field == tc.field && strings.Contains(c.Message, tc.msg))
		}
		if !found {
			t.Errorf("%s: causes %+v, want %s: %q", tc.name, err.(apierrors.APIStatus).Status().Details.Causes, tc.field, tc.msg)
		}
		if _, err := api.Get(ctx, tc.name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("%s: stored after a failed create (%v)", tc.name, err)
		}
	}

	// Create drops a client's status; spec.cidrs is immutable except that
	// one family may gain the other.
	extra, err := api.Create(ctx, &networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "extra"},
		Spec:   networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.100.0.0/24"}},
		Status: networkingv1.ServiceCIDRStatus{Conditions: []metav1.Condition{{Type: "Ready", Status: "True", Reason: "Mine", LastTransitionTime: metav1.Now()}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(extra.Status.Conditions) != 0 {
		t.Errorf("create kept the client's status: %+v", extra.Status)
	}
	changed := extra.DeepCopy()
	changed.Spec.CIDRs = []string{"10.101.0.0/24"}
	if _, err := api.Update(ctx, changed, metav1.UpdateOptions{}); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "field is immutable") {
		t.Errorf("changing spec.cidrs: %v, want 422 field is immutable", err)
	}
	dual := extra.DeepCopy()
	dual.Spec.CIDRs = append(dual.Spec.CIDRs, "fd00:100::/112")
	if _, err := api.Update(ctx, dual, metav1.UpdateOptions{}); err != nil {
		t.Errorf("adding the second family: %v", err)
	}

	// kubectl get servicecidrs: the server-side table has NAME CIDRs AGE.
	raw, err := srv.Client.NetworkingV1().RESTClient().Get().Resource("servicecidrs").
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var tbl metav1.Table
	if err := json.Unmarshal(raw, &tbl); err != nil {
		t.Fatal(err)
	}
	var cols []string
	for _, c := range tbl.ColumnDefinitions {
		cols = append(cols, c.Name)
	}
	if strings.Join(cols, " ") != "Name CIDRs Age" {
		t.Errorf("columns %v", cols)
	}
	var rows []string
	for _, r := range tbl.Rows {
		rows = append(rows, fmt.Sprint(r.Cells[:2]))
	}
	if !slices.Contains(rows, "[extra 10.100.0.0/24,fd00:100::/112]") {
		t.Errorf("rows %v", rows)
	}
}
