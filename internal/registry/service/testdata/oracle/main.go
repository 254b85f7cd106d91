// Command oracle checks testdata/invalid_services.yaml against kube-apiserver
// itself: it runs k8s.io/kubernetes v1.37.2's v1 defaulting, conversion,
// Service strategy and validation on every case and reports any case whose
// errors differ from its `want` list. It is a separate module (under testdata,
// so the svcnet module never builds it) because importing k8s.io/kubernetes
// needs the replace lines in its go.mod. Run from this directory:
//
//	GOFLAGS=-mod=mod go run . ../invalid_services.yaml
package main

import (
	"context"
	"fmt"
	"os"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/kubernetes/pkg/api/legacyscheme"
	api "k8s.io/kubernetes/pkg/apis/core"
	_ "k8s.io/kubernetes/pkg/apis/core/install"
	"k8s.io/kubernetes/pkg/apis/core/validation"
	svcreg "k8s.io/kubernetes/pkg/registry/core/service"
	"sigs.k8s.io/yaml"
)

type tc struct {
	Name    string      `json:"name"`
	Op      string      `json:"op"`
	Old     *v1.Service `json:"old"`
	Service v1.Service  `json:"service"`
	Want    []string    `json:"want"`
}

func toInternal(s *v1.Service) *api.Service {
	legacyscheme.Scheme.Default(s)
	if s.Namespace == "" {
		s.Namespace = "default"
	}
	out := &api.Service{}
	if err := legacyscheme.Scheme.Convert(s, out, nil); err != nil {
		panic(err)
	}
	return out
}

func main() {
	data, err := os.ReadFile(os.Args[1])
	if err != nil {
		panic(err)
	}
	var cases []tc
	if err := yaml.Unmarshal(data, &cases); err != nil {
		panic(err)
	}
	ctx := genericapirequest.WithNamespace(context.Background(), "default")
	bad := 0
	for _, c := range cases {
		svc := toInternal(&c.Service)
		var errs field.ErrorList
		switch c.Op {
		case "", "create":
			if svc.Spec.ClusterIP != "" && len(svc.Spec.ClusterIPs) == 0 {
				svc.Spec.ClusterIPs = []string{svc.Spec.ClusterIP}
			}
			svcreg.Strategy.PrepareForCreate(ctx, svc)
			errs = validation.ValidateServiceCreate(svc)
		case "update":
			old := toInternal(c.Old)
			svcreg.Strategy.PrepareForUpdate(ctx, svc, old)
			errs = validation.ValidateServiceUpdate(svc, old)
		case "status":
			old := toInternal(c.Old)
			svcreg.StatusStrategy.PrepareForUpdate(ctx, svc, old)
			errs = validation.ValidateServiceStatusUpdate(svc, old)
		}
		var got []string
		for _, e := range errs {
			got = append(got, e.Error())
		}
		same := len(got) == len(c.Want)
		for i := range got {
			if same && got[i] != c.Want[i] {
				same = false
			}
		}
		if !same {
			bad++
			fmt.Printf("MISMATCH %s\n", c.Name)
			for _, g := range got {
				fmt.Printf("  got:  %s\n", g)
			}
			for _, w := range c.Want {
				fmt.Printf("  want: %s\n", w)
			}
		}
	}
	fmt.Printf("%d cases, %d mismatches\n", len(cases), bad)
}
