// Temporary smoke server (not committed): real kinds on a memstore over plain HTTP.
package main

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcnet/svcnet/internal/apiserver"
	"github.com/svcnet/svcnet/internal/apiserver/discovery"
	"github.com/svcnet/svcnet/internal/apiserver/internal/memstore"
	"github.com/svcnet/svcnet/internal/apiserver/openapi"
	"github.com/svcnet/svcnet/internal/registry/kinds"
	"github.com/svcnet/svcnet/internal/registry/service"
	"github.com/svcnet/svcnet/internal/storage"
)

func main() {
	ctx := context.Background()
	store := memstore.New()
	_, cidr, _ := net.ParseCIDR("10.96.0.0/12")
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	svcKind, alloc, err := service.NewKind(service.Config{ServiceCIDR: cidr, Store: store, Logger: log})
	if err != nil {
		panic(err)
	}
	go alloc.Run(ctx)
	ks := kinds.All(svcKind)
	oa, err := openapi.NewHandler(ks)
	if err != nil {
		panic(err)
	}
	h, err := apiserver.New(apiserver.Config{Store: store, Kinds: ks, Logger: log, OpenAPI: oa, Discovery: discovery.NewHandler(ks)})
	if err != nil {
		panic(err)
	}
	go h.(*apiserver.Server).Run(ctx)
	// bootstrap namespaces by direct HTTP create
	srv := &http.Server{Addr: os.Args[1], Handler: h}
	go func() {
		for _, ns := range []string{"default", "kube-system"} {
			_ = ns
		}
	}()
	_ = corev1.Namespace{}
	_ = metav1.ObjectMeta{}
	var _ storage.Interface = store
	panic(srv.ListenAndServe())
}
