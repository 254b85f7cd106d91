package service

import (
	"slices"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// setDefaults is upstream's SetObjectDefaults_Service (SetDefaults_Service
// plus the generated protocol default) on the v1 type.
func setDefaults(svc *v1.Service) {
	spec := &svc.Spec
	if spec.SessionAffinity == "" {
		spec.SessionAffinity = v1.ServiceAffinityNone
	}
	if spec.SessionAffinity == v1.ServiceAffinityNone {
		spec.SessionAffinityConfig = nil
	}
	if spec.SessionAffinity == v1.ServiceAffinityClientIP {
		c := spec.SessionAffinityConfig
		if c == nil || c.ClientIP == nil || c.ClientIP.TimeoutSeconds == nil {
			timeout := v1.DefaultClientIPServiceAffinitySeconds
			spec.SessionAffinityConfig = &v1.SessionAffinityConfig{
				ClientIP: &v1.ClientIPConfig{TimeoutSeconds: &timeout},
			}
		}
	}
	if spec.Type == "" {
		spec.Type = v1.ServiceTypeClusterIP
	}
	for i := range spec.Ports {
		sp := &spec.Ports[i]
		if sp.Protocol == "" {
			sp.Protocol = v1.ProtocolTCP
		}
		if sp.TargetPort == intstr.FromInt32(0) || sp.TargetPort == intstr.FromString("") {
			sp.TargetPort = intstr.FromInt32(sp.Port)
		}
	}
	if externallyAccessible(svc) && spec.ExternalTrafficPolicy == "" {
		spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyCluster
	}
	if spec.InternalTrafficPolicy == nil {
		switch spec.Type {
		case v1.ServiceTypeNodePort, v1.ServiceTypeLoadBalancer, v1.ServiceTypeClusterIP:
			p := v1.ServiceInternalTrafficPolicyCluster
			spec.InternalTrafficPolicy = &p
		}
	}
	if spec.Type == v1.ServiceTypeLoadBalancer {
		if spec.AllocateLoadBalancerNodePorts == nil {
			t := true
			spec.AllocateLoadBalancerNodePorts = &t
		}
		for i, ing := range svc.Status.LoadBalancer.Ingress {
			if ing.IP != "" && ing.IPMode == nil {
				vip := v1.LoadBalancerIPModeVIP
				svc.Status.LoadBalancer.Ingress[i].IPMode = &vip
			}
		}
	}
}

// externallyAccessible is upstream's service.ExternallyAccessible.
func externallyAccessible(svc *v1.Service) bool {
	return svc.Spec.Type == v1.ServiceTypeLoadBalancer ||
		svc.Spec.Type == v1.ServiceTypeNodePort ||
		(svc.Spec.Type == v1.ServiceTypeClusterIP && len(svc.Spec.ExternalIPs) > 0)
}

// needsHealthCheck is upstream's service.NeedsHealthCheck: a LoadBalancer
// with externalTrafficPolicy Local gets a healthCheckNodePort.
func needsHealthCheck(svc *v1.Service) bool {
	return svc.Spec.Type == v1.ServiceTypeLoadBalancer &&
		svc.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal
}

func isHeadless(svc *v1.Service) bool {
	return svc != nil && len(svc.Spec.ClusterIPs) == 1 && svc.Spec.ClusterIPs[0] == v1.ClusterIPNone
}

func needsClusterIP(svc *v1.Service) bool {
	return svc.Spec.Type != v1.ServiceTypeExternalName
}

// needsNodePort is the registry storage's notion, used when patching
// allocated values: NodePort, and LoadBalancer unless
// allocateLoadBalancerNodePorts is false. Zero nodePorts of such a Service get
// a dynamic value.
func needsNodePort(svc *v1.Service) bool {
	switch svc.Spec.Type {
	case v1.ServiceTypeNodePort:
		return true
	case v1.ServiceTypeLoadBalancer:
		a := svc.Spec.AllocateLoadBalancerNodePorts
		return a == nil || *a
	}
	return false
}

// hasNodePorts is the strategy's notion, used on type changes: the types whose
// ports may carry nodePorts at all.
func hasNodePorts(svc *v1.Service) bool {
	return svc.Spec.Type == v1.ServiceTypeNodePort || svc.Spec.Type == v1.ServiceTypeLoadBalancer
}

// normalizeClusterIPs keeps clusterIP and clusterIPs in step for clients that
// only know the singular field (upstream storage.normalizeClusterIPs). old is
// nil on create.
func normalizeClusterIPs(svc, old *v1.Service) {
	if old == nil {
		if svc.Spec.ClusterIP != "" && len(svc.Spec.ClusterIPs) == 0 {
			svc.Spec.ClusterIPs = []string{svc.Spec.ClusterIP}
		}
		return
	}
	// An old client patched some other field and did not send clusterIPs.
	if len(old.Spec.ClusterIPs) > 0 && len(svc.Spec.ClusterIPs) == 0 && old.Spec.ClusterIP == svc.Spec.ClusterIP {
		svc.Spec.ClusterIPs = old.Spec.ClusterIPs
	}
	if old.Spec.ClusterIP != svc.Spec.ClusterIP {
		if old.Spec.ClusterIP != "" && svc.Spec.ClusterIP == "" {
			// Clearing the singular field clears the plural one on the
			// client's behalf when that one was left as it was.
			if slices.Equal(old.Spec.ClusterIPs, svc.Spec.ClusterIPs) {
				svc.Spec.ClusterIPs = nil
			}
		} else if slices.Equal(old.Spec.ClusterIPs, svc.Spec.ClusterIPs) {
			svc.Spec.ClusterIPs = []string{svc.Spec.ClusterIP}
		}
	}
}

// patchAllocatedValues copies allocated values the client left out from old,
// so that re-submitting the manifest a Service was created from (kubectl
// replace, apply) does not try to change them (upstream
// storage.patchAllocatedValues).
func patchAllocatedValues(svc, old *v1.Service) {
	if needsClusterIP(old) && needsClusterIP(svc) {
		if svc.Spec.ClusterIP == "" {
			svc.Spec.ClusterIP = old.Spec.ClusterIP
		}
		if len(svc.Spec.ClusterIPs) == 0 && len(old.Spec.ClusterIPs) > 0 {
			svc.Spec.ClusterIPs = old.Spec.ClusterIPs
		}
	}
	if needsNodePort(old) && needsNodePort(svc) {
		usedByBoth := map[int32]bool{}
		oldUsed := map[int32]bool{}
		for _, p := range old.Spec.Ports {
			if p.NodePort != 0 {
				oldUsed[p.NodePort] = true
			}
		}
		for _, p := range svc.Spec.Ports {
			if p.NodePort != 0 && oldUsed[p.NodePort] {
				usedByBoth[p.NodePort] = true
			}
		}
		// NodePorts are matched by port name: other properties of the port
		// may have changed.
		byName := map[string]int32{}
		for _, p := range old.Spec.Ports {
			byName[p.Name] = p.NodePort
		}
		for i := range svc.Spec.Ports {
			p := &svc.Spec.Ports[i]
			if p.NodePort == 0 {
				if v := byName[p.Name]; !usedByBoth[v] {
					p.NodePort = v
				}
			}
		}
	}
	if needsHealthCheck(old) && needsHealthCheck(svc) && svc.Spec.HealthCheckNodePort == 0 {
		svc.Spec.HealthCheckNodePort = old.Spec.HealthCheckNodePort
	}
}

// dropTypeDependentFields clears, on a type change, the fields the new type
// does not use, provided the client left them as they were (upstream
// service.dropTypeDependentFields). The allocator then releases what they held.
func dropTypeDependentFields(svc, old *v1.Service) {
	if needsClusterIP(old) && !needsClusterIP(svc) {
		if svc.Spec.ClusterIP == old.Spec.ClusterIP && slices.Equal(svc.Spec.ClusterIPs, old.Spec.ClusterIPs) {
			svc.Spec.ClusterIP = ""
			svc.Spec.ClusterIPs = nil
		}
		if slices.Equal(svc.Spec.IPFamilies, old.Spec.IPFamilies) {
			svc.Spec.IPFamilies = nil
		}
		if policyString(svc) == policyString(old) {
			svc.Spec.IPFamilyPolicy = nil
		}
	}
	if hasNodePorts(old) && !hasNodePorts(svc) && nodePortsSubset(svc, old) {
		for i := range svc.Spec.Ports {
			svc.Spec.Ports[i].NodePort = 0
		}
	}
	if needsHealthCheck(old) && !needsHealthCheck(svc) && svc.Spec.HealthCheckNodePort == old.Spec.HealthCheckNodePort {
		svc.Spec.HealthCheckNodePort = 0
	}
	if old.Spec.Type == v1.ServiceTypeLoadBalancer && svc.Spec.Type != v1.ServiceTypeLoadBalancer {
		a, b := old.Spec.AllocateLoadBalancerNodePorts, svc.Spec.AllocateLoadBalancerNodePorts
		if a != nil && b != nil && *a == *b {
			svc.Spec.AllocateLoadBalancerNodePorts = nil
		}
	}
	if old.Spec.Type == v1.ServiceTypeLoadBalancer && svc.Spec.Type != v1.ServiceTypeLoadBalancer && sameLoadBalancerClass(old, svc) {
		svc.Spec.LoadBalancerClass = nil
	}
	if externallyAccessible(old) && !externallyAccessible(svc) && old.Spec.ExternalTrafficPolicy == svc.Spec.ExternalTrafficPolicy {
		svc.Spec.ExternalTrafficPolicy = ""
	}
	if svc.Spec.Type != v1.ServiceTypeLoadBalancer {
		svc.Status.LoadBalancer = v1.LoadBalancerStatus{}
	}
}

// nodePortsSubset reports whether svc adds no nodePort old did not have.
func nodePortsSubset(svc, old *v1.Service) bool {
	had := map[int32]bool{}
	for _, p := range old.Spec.Ports {
		if p.NodePort != 0 {
			had[p.NodePort] = true
		}
	}
	for _, p := range svc.Spec.Ports {
		if p.NodePort != 0 && !had[p.NodePort] {
			return false
		}
	}
	return true
}

func policyString(svc *v1.Service) v1.IPFamilyPolicy {
	if svc.Spec.IPFamilyPolicy == nil {
		return ""
	}
	return *svc.Spec.IPFamilyPolicy
}

func sameLoadBalancerClass(a, b *v1.Service) bool {
	x, y := a.Spec.LoadBalancerClass, b.Spec.LoadBalancerClass
	if x == nil || y == nil {
		return x == nil && y == nil
	}
	return *x == *y
}
