package openapi

import (
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/svcnet/svcnet/internal/registry"
)

// testKinds stands in for the real registry kinds: the kinds svcnet serves,
// with kube-apiserver's scopes and subresources.
func testKinds() []*registry.Kind {
	scale := &registry.ScaleAccess{}
	shortNames := map[string][]string{
		"namespaces": {"ns"}, "services": {"svc"}, "endpoints": {"ep"}, "pods": {"po"}, "nodes": {"no"},
		"configmaps": {"cm"}, "events": {"ev"}, "deployments": {"deploy"}, "replicasets": {"rs"},
	}
	k := func(gvr schema.GroupVersionResource, kind string, namespaced, status bool, obj, list runtime.Object) *registry.Kind {
		return &registry.Kind{
			Resource: gvr, Kind: kind, SingularName: strings.ToLower(kind), ShortNames: shortNames[gvr.Resource],
			Namespaced: namespaced, Status: status,
			New: func() runtime.Object { return obj.DeepCopyObject() }, NewList: func() runtime.Object { return list.DeepCopyObject() },
		}
	}
	core := corev1.SchemeGroupVersion.WithResource
	apps := appsv1.SchemeGroupVersion.WithResource
	deploy := k(apps("deployments"), "Deployment", true, true, &appsv1.Deployment{}, &appsv1.DeploymentList{})
	deploy.Scale = scale
	rs := k(apps("replicasets"), "ReplicaSet", true, true, &appsv1.ReplicaSet{}, &appsv1.ReplicaSetList{})
	rs.Scale = scale
	return []*registry.Kind{
		k(core("namespaces"), "Namespace", false, true, &corev1.Namespace{}, &corev1.NamespaceList{}),
		k(core("services"), "Service", true, true, &corev1.Service{}, &corev1.ServiceList{}),
		//lint:ignore SA1019 svcnet serves the deprecated Endpoints API, as kube-apiserver does
		k(core("endpoints"), "Endpoints", true, false, &corev1.Endpoints{}, &corev1.EndpointsList{}),
		k(core("pods"), "Pod", true, true, &corev1.Pod{}, &corev1.PodList{}),
		k(core("nodes"), "Node", false, true, &corev1.Node{}, &corev1.NodeList{}),
		k(core("configmaps"), "ConfigMap", true, false, &corev1.ConfigMap{}, &corev1.ConfigMapList{}),
		k(core("events"), "Event", true, false, &corev1.Event{}, &corev1.EventList{}),
		k(discoveryv1.SchemeGroupVersion.WithResource("endpointslices"), "EndpointSlice", true, false,
			&discoveryv1.EndpointSlice{}, &discoveryv1.EndpointSliceList{}),
		deploy, rs,
		k(coordinationv1.SchemeGroupVersion.WithResource("leases"), "Lease", true, false,
			&coordinationv1.Lease{}, &coordinationv1.LeaseList{}),
		k(networkingv1.SchemeGroupVersion.WithResource("ipaddresses"), "IPAddress", false, false,
			&networkingv1.IPAddress{}, &networkingv1.IPAddressList{}),
		k(networkingv1.SchemeGroupVersion.WithResource("servicecidrs"), "ServiceCIDR", false, true,
			&networkingv1.ServiceCIDR{}, &networkingv1.ServiceCIDRList{}),
	}
}
