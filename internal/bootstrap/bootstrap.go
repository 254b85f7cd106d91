// Package bootstrap creates the objects every Kubernetes cluster starts
// with, through the API like any other client:
//
//   - the namespaces default, kube-system, kube-public and kube-node-lease;
//   - the Service default/kubernetes (ClusterIP = first address of the
//     service CIDR, port "https" 443 → the API server's port, no selector,
//     labels component=apiserver, provider=kubernetes), as kube-apiserver's
//     kubernetesservice controller creates it;
//   - the Endpoints and EndpointSlice default/kubernetes pointing at the API
//     server, shaped as kube-apiserver's endpoint reconciler and
//     EndpointsAdapter write them: the Endpoints carry
//     endpointslice.kubernetes.io/skip-mirror=true (so the mirroring
//     controller leaves them alone) and the EndpointSlice only the
//     kubernetes.io/service-name label;
//   - (EnsureServiceCIDR) the ServiceCIDR "kubernetes" holding the service
//     CIDR, with its Ready condition, as kube-apiserver's default ServiceCIDR
//     controller writes it;
//   - (EnsureKubeDNS, EnsureKubeProxyConfigMap) Service kube-system/kube-dns
//     and ConfigMap kube-system/kube-proxy.
//
// Ensure is idempotent: run it at every server start. Missing objects are
// created, the Endpoints and EndpointSlice are rewritten when the API
// server's address or port changed, and the Service's ports are put back
// if they drifted. A Service with a different ClusterIP is left alone
// (ClusterIPs are immutable) and reported in the log.
//
// One API server address is published. Several servers sharing one etcd
// would each rewrite it with their own address; upstream solves that with
// per-server leases, which svcnet does not have yet.
package bootstrap

//lint:file-ignore SA1019 core/v1 Endpoints are deprecated, not removed: svcnet serves them and the kubernetes Service needs them

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/svcnet/svcnet/internal/registry/generic"
)

const (
	// ServiceName is the name of the API server's Service, Endpoints and
	// EndpointSlice in the default namespace.
	ServiceName = "kubernetes"
	// ServicePort is the Service port clients in pods connect to.
	ServicePort = 443
	// PortName names the port in the Service, Endpoints and EndpointSlice.
	PortName = "https"
)

// Namespaces are the namespaces Ensure creates, in order.
var Namespaces = []string{
	metav1.NamespaceDefault,
	metav1.NamespaceSystem,
	metav1.NamespacePublic,
	corev1.NamespaceNodeLease,
}

// Ensure creates or repairs the bootstrap objects. kubernetesServiceIP is
// the ClusterIP of default/kubernetes (the first address of the service
// CIDR, 10.96.0.1 by default); apiServerIP and apiServerPort are where
// pods reach the API server. apiServerIP must be usable as an endpoint: not
// loopback, link-local or unspecified (the API rejects those).
func Ensure(ctx context.Context, c kubernetes.Interface, kubernetesServiceIP, apiServerIP net.IP, apiServerPort int32, logger *slog.Logger) error {
	logger = logger.With("component", "bootstrap")
	if kubernetesServiceIP == nil {
		return errors.New("bootstrap: no kubernetes Service IP")
	}
	if apiServerIP == nil {
		return errors.New("bootstrap: no API server IP")
	}
	if errs := generic.ValidateEndpointIP(apiServerIP.String(), field.NewPath("apiServerIP")); len(errs) > 0 {
		return fmt.Errorf("bootstrap: API server address cannot be an endpoint: %w", errs.ToAggregate())
	}
	if apiServerPort < 1 || apiServerPort > 65535 {
		return fmt.Errorf("bootstrap: API server port %d out of range", apiServerPort)
	}
	for _, ns := range Namespaces {
		if err := ensureNamespace(ctx, c, ns, logger); err != nil {
			return err
		}
	}
	if err := ensureService(ctx, c, kubernetesServiceIP, apiServerPort, logger); err != nil {
		return err
	}
	if err := ensureEndpoints(ctx, c, apiServerIP, apiServerPort, logger); err != nil {
		return err
	}
	return ensureEndpointSlice(ctx, c, apiServerIP, apiServerPort, logger)
}

func ensureNamespace(ctx context.Context, c kubernetes.Interface, name string, logger *slog.Logger) error {
	_, err := c.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err == nil {
		return nil
	}
	if !apierrors.IsNotFound(err) {
		return fmt.Errorf("bootstrap: get namespace %s: %w", name, err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := c.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("bootstrap: create namespace %s: %w", name, err)
	}
	logger.Info("created namespace", "namespace", name)
	return nil
}

// servicePorts is the kubernetes Service's port list.
func servicePorts(apiServerPort int32) []corev1.ServicePort {
	return []corev1.ServicePort{{
		Name:       PortName,
		Protocol:   corev1.ProtocolTCP,
		Port:       ServicePort,
		TargetPort: intstr.FromInt32(apiServerPort),
	}}
}

func ensureService(ctx context.Context, c kubernetes.Interface, ip net.IP, apiServerPort int32, logger *slog.Logger) error {
	svcs := c.CoreV1().Services(metav1.NamespaceDefault)
	want := servicePorts(apiServerPort)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		svc, err := svcs.Get(ctx, ServiceName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			singleStack := corev1.IPFamilyPolicySingleStack
			svc = &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{
					Name:      ServiceName,
					Namespace: metav1.NamespaceDefault,
					Labels:    map[string]string{"provider": "kubernetes", "component": "apiserver"},
				},
				Spec: corev1.ServiceSpec{
					Ports:           want,
					ClusterIP:       ip.String(),
					IPFamilyPolicy:  &singleStack,
					SessionAffinity: corev1.ServiceAffinityNone,
					Type:            corev1.ServiceTypeClusterIP,
				},
			}
			if _, err := svcs.Create(ctx, svc, metav1.CreateOptions{}); err != nil {
				if apierrors.IsAlreadyExists(err) {
					return conflictRetry() // created meanwhile: look again
				}
				return fmt.Errorf("bootstrap: create service %s: %w", ServiceName, err)
			}
			logger.Info("created service", "service", ServiceName, "clusterIP", ip.String())
			return nil
		}
		if err != nil {
			return fmt.Errorf("bootstrap: get service %s: %w", ServiceName, err)
		}
		if svc.Spec.ClusterIP != ip.String() {
			logger.Warn("kubernetes service has a different ClusterIP than configured; leaving it",
				"have", svc.Spec.ClusterIP, "want", ip.String())
		}
		if svc.Spec.Type == corev1.ServiceTypeClusterIP && apiequality.Semantic.DeepEqual(svc.Spec.Ports, want) {
			return nil
		}
		svc.Spec.Type = corev1.ServiceTypeClusterIP
		svc.Spec.Ports = want
		if _, err := svcs.Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("bootstrap: update service %s: %w", ServiceName, err)
		}
		logger.Info("reset service ports", "service", ServiceName, "targetPort", apiServerPort)
		return nil
	})
}

// conflictRetry returns a Conflict error so RetryOnConflict runs the
// get-create-or-update step again.
func conflictRetry() error {
	return apierrors.NewConflict(corev1.Resource("services"), ServiceName, errors.New("created concurrently"))
}

func desiredEndpoints(ip net.IP, port int32) *corev1.Endpoints {
	return &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{
			Name:      ServiceName,
			Namespace: metav1.NamespaceDefault,
			Labels:    map[string]string{discoveryv1.LabelSkipMirror: "true"},
		},
		Subsets: []corev1.EndpointSubset{{
			Addresses: []corev1.EndpointAddress{{IP: ip.String()}},
			Ports:     []corev1.EndpointPort{{Name: PortName, Port: port, Protocol: corev1.ProtocolTCP}},
		}},
	}
}

func ensureEndpoints(ctx context.Context, c kubernetes.Interface, ip net.IP, port int32, logger *slog.Logger) error {
	eps := c.CoreV1().Endpoints(metav1.NamespaceDefault)
	want := desiredEndpoints(ip, port)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := eps.Get(ctx, ServiceName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			if _, err := eps.Create(ctx, want.DeepCopy(), metav1.CreateOptions{}); err != nil {
				if apierrors.IsAlreadyExists(err) {
					return conflictRetry()
				}
				return fmt.Errorf("bootstrap: create endpoints %s: %w", ServiceName, err)
			}
			logger.Info("created endpoints", "endpoints", ServiceName, "address", net.JoinHostPort(ip.String(), fmt.Sprint(port)))
			return nil
		}
		if err != nil {
			return fmt.Errorf("bootstrap: get endpoints %s: %w", ServiceName, err)
		}
		if cur.Labels[discoveryv1.LabelSkipMirror] == "true" && apiequality.Semantic.DeepEqual(cur.Subsets, want.Subsets) {
			return nil
		}
		if cur.Labels == nil {
			cur.Labels = map[string]string{}
		}
		cur.Labels[discoveryv1.LabelSkipMirror] = "true"
		cur.Subsets = want.Subsets
		if _, err := eps.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("bootstrap: update endpoints %s: %w", ServiceName, err)
		}
		logger.Info("updated endpoints", "endpoints", ServiceName, "address", net.JoinHostPort(ip.String(), fmt.Sprint(port)))
		return nil
	})
}

func desiredEndpointSlice(ip net.IP, port int32) *discoveryv1.EndpointSlice {
	addrType := discoveryv1.AddressTypeIPv4
	if ip.To4() == nil {
		addrType = discoveryv1.AddressTypeIPv6
	}
	name, proto, ready := PortName, corev1.ProtocolTCP, true
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:      ServiceName,
			Namespace: metav1.NamespaceDefault,
			Labels:    map[string]string{discoveryv1.LabelServiceName: ServiceName},
		},
		AddressType: addrType,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{ip.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
		}},
		Ports: []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
	}
}

func ensureEndpointSlice(ctx context.Context, c kubernetes.Interface, ip net.IP, port int32, logger *slog.Logger) error {
	sliceClient := c.DiscoveryV1().EndpointSlices(metav1.NamespaceDefault)
	want := desiredEndpointSlice(ip, port)
	create := func() error {
		if _, err := sliceClient.Create(ctx, want.DeepCopy(), metav1.CreateOptions{}); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return conflictRetry()
			}
			return fmt.Errorf("bootstrap: create endpointslice %s: %w", ServiceName, err)
		}
		logger.Info("created endpointslice", "endpointslice", ServiceName, "address", net.JoinHostPort(ip.String(), fmt.Sprint(port)))
		return nil
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := sliceClient.Get(ctx, ServiceName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return create()
		}
		if err != nil {
			return fmt.Errorf("bootstrap: get endpointslice %s: %w", ServiceName, err)
		}
		if cur.AddressType != want.AddressType {
			// addressType is immutable: replace the slice.
			err := sliceClient.Delete(ctx, ServiceName, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &cur.UID}})
			if err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("bootstrap: delete endpointslice %s: %w", ServiceName, err)
			}
			return create()
		}
		if apiequality.Semantic.DeepEqual(cur.Endpoints, want.Endpoints) &&
			apiequality.Semantic.DeepEqual(cur.Ports, want.Ports) &&
			apiequality.Semantic.DeepEqual(cur.Labels, want.Labels) {
			return nil
		}
		cur.Labels = want.Labels
		cur.Endpoints = want.Endpoints
		cur.Ports = want.Ports
		if _, err := sliceClient.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("bootstrap: update endpointslice %s: %w", ServiceName, err)
		}
		logger.Info("updated endpointslice", "endpointslice", ServiceName, "address", net.JoinHostPort(ip.String(), fmt.Sprint(port)))
		return nil
	})
}
