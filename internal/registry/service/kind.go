package service

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
	utilnet "k8s.io/apimachinery/pkg/util/net"

	"github.com/svcnet/svcnet/internal/registry"
	"github.com/svcnet/svcnet/internal/storage"
)

// Storage key prefixes. ServicesPrefix is where the apiserver stores Services
// (apiserver.KeyPrefix + "core/services/"); Repair reads it.
const (
	ServicesPrefix     = "/registry/core/services/"
	AllocationsPrefix  = "/registry/allocations/"
	ClusterIPKeyPrefix = AllocationsPrefix + "clusterips/"
	NodePortKeyPrefix  = AllocationsPrefix + "nodeports/"
)

// maxServiceCIDRBits is kube-apiserver's limit on --service-cluster-ip-range
// host bits.
const maxServiceCIDRBits = 20

// DefaultNodePortRange is 30000-32767.
var DefaultNodePortRange = utilnet.PortRange{Base: 30000, Size: 2768}

// Config configures the Service kind.
type Config struct {
	// ServiceCIDR is the ClusterIP range (--service-cluster-ip-range). Required.
	ServiceCIDR *net.IPNet
	// NodePortRange is --service-node-port-range; zero means 30000-32767.
	NodePortRange utilnet.PortRange
	// Store holds the allocation keys and the Services. Required.
	Store storage.Interface
	// Logger gets a component=service-allocator attribute; nil discards.
	Logger *slog.Logger
}

// NewKind returns the Service kind and its allocator. Start
// (*Allocations).Run before serving writes (Allocate waits for its first
// list) and call Repair once at start.
func NewKind(cfg Config) (*registry.Kind, *Allocations, error) {
	if cfg.ServiceCIDR == nil {
		return nil, nil, errors.New("service: Config.ServiceCIDR is required")
	}
	if cfg.Store == nil {
		return nil, nil, errors.New("service: Config.Store is required")
	}
	ones, bits := cfg.ServiceCIDR.Mask.Size()
	if bits == 0 {
		return nil, nil, fmt.Errorf("service: service CIDR %v has a non-canonical mask", cfg.ServiceCIDR)
	}
	if bits-ones > maxServiceCIDRBits {
		return nil, nil, fmt.Errorf("service: specified service CIDR %v is too large; for %d-bit addresses, the mask must be >= %d",
			cfg.ServiceCIDR, bits, bits-maxServiceCIDRBits)
	}
	if cfg.NodePortRange.Size == 0 {
		cfg.NodePortRange = DefaultNodePortRange
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	alloc, err := newAllocations(cfg.Store, cfg.ServiceCIDR, cfg.NodePortRange, log.With("component", "service-allocator"))
	if err != nil {
		return nil, nil, err
	}
	kind := &registry.Kind{
		Resource:     v1.SchemeGroupVersion.WithResource("services"),
		Kind:         "Service",
		SingularName: "service",
		ShortNames:   []string{"svc"},
		Categories:   []string{"all"},
		Namespaced:   true,
		New:          func() runtime.Object { return &v1.Service{} },
		NewList:      func() runtime.Object { return &v1.ServiceList{} },
		Strategy:     Strategy{},
		Status:       true,
		Table:        Table(),
		Fields:       Fields,
		Allocator:    alloc,
	}
	return kind, alloc, nil
}

// Fields returns the Service field-selector fields beyond metadata.
func Fields(obj runtime.Object) fields.Set {
	svc, ok := obj.(*v1.Service)
	if !ok {
		return nil
	}
	return fields.Set{
		"spec.clusterIP": svc.Spec.ClusterIP,
		"spec.type":      string(svc.Spec.Type),
	}
}

// Table returns the `kubectl get services` columns of kube-apiserver
// (pkg/printers/internalversion printService).
func Table() *registry.TableConvertor {
	spec := v1.ServiceSpec{}.SwaggerDoc()
	meta := metav1.ObjectMeta{}.SwaggerDoc()
	return &registry.TableConvertor{
		Columns: []metav1.TableColumnDefinition{
			{Name: "Name", Type: "string", Format: "name", Description: meta["name"]},
			{Name: "Type", Type: "string", Description: spec["type"]},
			{Name: "Cluster-IP", Type: "string", Description: spec["clusterIP"]},
			{Name: "External-IP", Type: "string", Description: spec["externalIPs"]},
			{Name: "Port(s)", Type: "string", Description: spec["ports"]},
			{Name: "Age", Type: "string", Description: meta["creationTimestamp"]},
			{Name: "Selector", Type: "string", Priority: 1, Description: spec["selector"]},
		},
		Cells: func(obj runtime.Object) []interface{} {
			svc, ok := obj.(*v1.Service)
			if !ok {
				return nil
			}
			return Cells(svc, time.Now())
		},
	}
}

// Cells returns one row of the services table as of now.
func Cells(svc *v1.Service, now time.Time) []interface{} {
	clusterIP := "<none>"
	if len(svc.Spec.ClusterIPs) > 0 {
		clusterIP = svc.Spec.ClusterIPs[0]
	}
	ports := portString(svc.Spec.Ports)
	if ports == "" {
		ports = "<none>"
	}
	age := "<unknown>"
	if !svc.CreationTimestamp.IsZero() {
		age = duration.HumanDuration(now.Sub(svc.CreationTimestamp.Time))
	}
	// The server always builds the wide table, so EXTERNAL-IP is not clipped.
	return []interface{}{svc.Name, string(svc.Spec.Type), clusterIP, externalIPString(svc), ports, age,
		labels.FormatLabels(svc.Spec.Selector)}
}

func portString(ports []v1.ServicePort) string {
	pieces := make([]string, len(ports))
	for i, p := range ports {
		if p.NodePort > 0 {
			pieces[i] = fmt.Sprintf("%d:%d/%s", p.Port, p.NodePort, p.Protocol)
		} else {
			pieces[i] = fmt.Sprintf("%d/%s", p.Port, p.Protocol)
		}
	}
	return strings.Join(pieces, ",")
}

func externalIPString(svc *v1.Service) string {
	switch svc.Spec.Type {
	case v1.ServiceTypeClusterIP, v1.ServiceTypeNodePort:
		if len(svc.Spec.ExternalIPs) > 0 {
			return strings.Join(svc.Spec.ExternalIPs, ",")
		}
		return "<none>"
	case v1.ServiceTypeLoadBalancer:
		var results []string
		if lb := loadBalancerString(svc.Status.LoadBalancer); lb != "" {
			results = strings.Split(lb, ",")
		}
		results = append(results, svc.Spec.ExternalIPs...)
		if len(results) == 0 {
			return "<pending>"
		}
		return strings.Join(results, ",")
	case v1.ServiceTypeExternalName:
		return svc.Spec.ExternalName
	}
	return "<unknown>"
}

// loadBalancerString lists the ingress IPs (or hostnames), sorted and unique.
func loadBalancerString(s v1.LoadBalancerStatus) string {
	set := map[string]bool{}
	for _, ing := range s.Ingress {
		if ing.IP != "" {
			set[ing.IP] = true
		} else if ing.Hostname != "" {
			set[ing.Hostname] = true
		}
	}
	out := make([]string, 0, len(set))
	for v := range set {
		out = append(out, v)
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}
