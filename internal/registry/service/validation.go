package service

import (
	"fmt"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	netutils "k8s.io/utils/net"
)

// This file ports upstream's Service validation (KK v1.37.2
// pkg/apis/core/validation: ValidateServiceCreate, ValidateServiceUpdate,
// ValidateServiceStatusUpdate and their helpers) to the v1 types, keeping
// upstream's field paths, messages and order. Feature gates are taken at their
// 1.37 defaults: RelaxedServiceNameValidation (names are DNS-1123 labels),
// StrictIPCIDRValidation (strict legacy IP/CIDR parsing) and
// PreferSameTrafficDistribution are on.

// maxClientIPServiceAffinitySeconds is core.MaxClientIPServiceAffinitySeconds.
const maxClientIPServiceAffinitySeconds = 86400

// strictIPCIDR is the StrictIPCIDRValidation gate (beta, on, in 1.37).
const strictIPCIDR = true

var (
	supportedSessionAffinityType = sets.New(v1.ServiceAffinityClientIP, v1.ServiceAffinityNone)
	supportedServiceType         = sets.New(v1.ServiceTypeClusterIP, v1.ServiceTypeNodePort,
		v1.ServiceTypeLoadBalancer, v1.ServiceTypeExternalName)
	supportedInternalTrafficPolicy = sets.New(v1.ServiceInternalTrafficPolicyCluster, v1.ServiceInternalTrafficPolicyLocal)
	supportedExternalTrafficPolicy = sets.New(v1.ServiceExternalTrafficPolicyCluster, v1.ServiceExternalTrafficPolicyLocal)
	supportedIPFamily              = sets.New(v1.IPv4Protocol, v1.IPv6Protocol)
	supportedIPFamilyPolicy        = sets.New(v1.IPFamilyPolicySingleStack, v1.IPFamilyPolicyPreferDualStack, v1.IPFamilyPolicyRequireDualStack)
	supportedPortProtocols         = sets.New(v1.ProtocolTCP, v1.ProtocolUDP, v1.ProtocolSCTP)
	supportedLoadBalancerIPMode    = sets.New(v1.LoadBalancerIPModeVIP, v1.LoadBalancerIPModeProxy)
	supportedTrafficDistribution   = []string{
		v1.ServiceTrafficDistributionPreferClose,
		v1.ServiceTrafficDistributionPreferSameZone,
		v1.ServiceTrafficDistributionPreferSameNode,
	}
	standardFinalizers = sets.New(string(v1.FinalizerKubernetes), metav1.FinalizerOrphanDependents, metav1.FinalizerDeleteDependents)
)

// ValidateCreate returns the problems with a new Service (upstream
// ValidateServiceCreate).
func ValidateCreate(svc *v1.Service) field.ErrorList {
	allErrs := validateObjectMeta(&svc.ObjectMeta)
	return append(allErrs, validateService(svc, nil)...)
}

// ValidateUpdate returns the problems with changing old into svc (upstream
// ValidateServiceUpdate).
func ValidateUpdate(svc, old *v1.Service) field.ErrorList {
	allErrs := validateObjectMetaUpdate(&svc.ObjectMeta, &old.ObjectMeta)
	allErrs = append(allErrs, validateUpgradeDowngradeClusterIPs(old, svc)...)
	allErrs = append(allErrs, validateUpgradeDowngradeIPFamilies(old, svc)...)
	allErrs = append(allErrs, validateLoadBalancerClassField(old, svc)...)
	if needsHealthCheck(old) && needsHealthCheck(svc) && svc.Spec.HealthCheckNodePort != old.Spec.HealthCheckNodePort {
		allErrs = append(allErrs, field.Forbidden(field.NewPath("spec", "healthCheckNodePort"), "field is immutable"))
	}
	return append(allErrs, validateService(svc, old)...)
}

// ValidateStatusUpdate returns the problems with a /status write (upstream
// ValidateServiceStatusUpdate).
func ValidateStatusUpdate(svc, old *v1.Service) field.ErrorList {
	allErrs := validateObjectMetaUpdate(&svc.ObjectMeta, &old.ObjectMeta)
	return append(allErrs, validateLoadBalancerStatus(&svc.Status.LoadBalancer, &old.Status.LoadBalancer,
		field.NewPath("status", "loadBalancer"), &svc.Spec)...)
}

func validateObjectMeta(meta *metav1.ObjectMeta) field.ErrorList {
	path := field.NewPath("metadata")
	allErrs := apivalidation.ValidateObjectMeta(meta, true, apivalidation.NameIsDNSLabel, path)
	return append(allErrs, validateFinalizerNames(meta.Finalizers, path)...)
}

func validateObjectMetaUpdate(meta, old *metav1.ObjectMeta) field.ErrorList {
	path := field.NewPath("metadata")
	allErrs := apivalidation.ValidateObjectMetaUpdate(meta, old, path)
	return append(allErrs, validateFinalizerNames(meta.Finalizers, path)...)
}

// validateFinalizerNames is core validation's validateKubeFinalizerName.
func validateFinalizerNames(finalizers []string, path *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	for i, f := range finalizers {
		if !strings.Contains(f, "/") && !standardFinalizers.Has(f) {
			allErrs = append(allErrs, field.Invalid(path.Child("finalizers").Index(i), f,
				"name is neither a standard finalizer name nor is it fully qualified"))
		}
	}
	return allErrs
}

// validateService is upstream's validateService: the rules shared by create
// and update (old is nil on create).
func validateService(svc, old *v1.Service) field.ErrorList {
	var allErrs field.ErrorList
	metaPath := field.NewPath("metadata")
	specPath := field.NewPath("spec")
	spec := &svc.Spec

	hintsVal, hintsSet := svc.Annotations[v1.DeprecatedAnnotationTopologyAwareHints]
	modeVal, modeSet := svc.Annotations[v1.AnnotationTopologyMode]
	if modeSet && hintsSet && modeVal != hintsVal {
		allErrs = append(allErrs, field.Invalid(metaPath.Child("annotations").Key(v1.AnnotationTopologyMode), modeVal,
			fmt.Sprintf("must match annotations[%s] when both are specified", v1.DeprecatedAnnotationTopologyAwareHints)))
	}

	headless := isHeadless(svc)
	if len(spec.Ports) == 0 && !headless && spec.Type != v1.ServiceTypeExternalName {
		allErrs = append(allErrs, field.Required(specPath.Child("ports"), ""))
	}
	switch spec.Type {
	case v1.ServiceTypeLoadBalancer:
		if headless {
			allErrs = append(allErrs, field.Invalid(specPath.Child("clusterIPs").Index(0), spec.ClusterIPs[0], "may not be set to 'None' for LoadBalancer services"))
		}
	case v1.ServiceTypeNodePort:
		if headless {
			allErrs = append(allErrs, field.Invalid(specPath.Child("clusterIPs").Index(0), spec.ClusterIPs[0], "may not be set to 'None' for NodePort services"))
		}
	case v1.ServiceTypeExternalName:
		// The strategy keeps clusterIPs in step with clusterIP.
		if len(spec.ClusterIPs) > 0 {
			allErrs = append(allErrs, field.Forbidden(specPath.Child("clusterIPs"), "may not be set for ExternalName services"))
		}
		if len(spec.IPFamilies) > 0 {
			allErrs = append(allErrs, field.Forbidden(specPath.Child("ipFamilies"), "may not be set for ExternalName services"))
		}
		if spec.IPFamilyPolicy != nil {
			allErrs = append(allErrs, field.Forbidden(specPath.Child("ipFamilyPolicy"), "may not be set for ExternalName services"))
		}
		// The value (a CNAME) may end in a dot to mark it fully qualified.
		if cname := strings.TrimSuffix(spec.ExternalName, "."); cname != "" {
			for _, msg := range validation.IsDNS1123Subdomain(cname) {
				allErrs = append(allErrs, field.Invalid(specPath.Child("externalName"), cname, msg))
			}
		} else {
			allErrs = append(allErrs, field.Required(specPath.Child("externalName"), ""))
		}
	}

	allPortNames := sets.Set[string]{}
	portsPath := specPath.Child("ports")
	for i := range spec.Ports {
		allErrs = append(allErrs, validateServicePort(&spec.Ports[i], len(spec.Ports) > 1, allPortNames, portsPath.Index(i))...)
	}

	if spec.Selector != nil {
		allErrs = append(allErrs, metav1validation.ValidateLabels(spec.Selector, specPath.Child("selector"))...)
	}

	if spec.SessionAffinity == "" {
		allErrs = append(allErrs, field.Required(specPath.Child("sessionAffinity"), ""))
	} else if !supportedSessionAffinityType.Has(spec.SessionAffinity) {
		allErrs = append(allErrs, field.NotSupported(specPath.Child("sessionAffinity"), spec.SessionAffinity, sets.List(supportedSessionAffinityType)))
	}
	switch spec.SessionAffinity {
	case v1.ServiceAffinityClientIP:
		allErrs = append(allErrs, validateClientIPAffinityConfig(spec.SessionAffinityConfig, specPath.Child("sessionAffinityConfig"))...)
	case v1.ServiceAffinityNone:
		if spec.SessionAffinityConfig != nil {
			allErrs = append(allErrs, field.Forbidden(specPath.Child("sessionAffinityConfig"), fmt.Sprintf("must not be set when session affinity is %s", v1.ServiceAffinityNone)))
		}
	}

	allErrs = append(allErrs, validateClusterIPsRelatedFields(svc, old)...)

	// New externalIPs must be valid, non-special IPs; values the old object
	// already had are accepted as they are.
	ipPath := specPath.Child("externalIPs")
	var existingExternalIPs []string
	if old != nil {
		existingExternalIPs = old.Spec.ExternalIPs
	}
	for i, ip := range spec.ExternalIPs {
		idxPath := ipPath.Index(i)
		if errs := validation.IsValidIPForLegacyField(idxPath, ip, strictIPCIDR, existingExternalIPs); len(errs) != 0 {
			allErrs = append(allErrs, errs...)
		} else {
			allErrs = append(allErrs, validateEndpointIP(ip, idxPath)...)
		}
	}

	if spec.Type == "" {
		allErrs = append(allErrs, field.Required(specPath.Child("type"), ""))
	} else if !supportedServiceType.Has(spec.Type) {
		allErrs = append(allErrs, field.NotSupported(specPath.Child("type"), spec.Type, sets.List(supportedServiceType)))
	}

	if spec.Type == v1.ServiceTypeClusterIP {
		for i := range spec.Ports {
			if spec.Ports[i].NodePort != 0 {
				allErrs = append(allErrs, field.Forbidden(portsPath.Index(i).Child("nodePort"), "may not be used when `type` is 'ClusterIP'"))
			}
		}
	}

	// No two ports may share a (protocol, nodePort) or a (protocol, port).
	type protoPort struct {
		Protocol v1.Protocol
		Port     int32
	}
	nodePorts := map[protoPort]bool{}
	for i := range spec.Ports {
		p := &spec.Ports[i]
		if p.NodePort == 0 {
			continue
		}
		key := protoPort{p.Protocol, p.NodePort}
		if nodePorts[key] {
			allErrs = append(allErrs, field.Duplicate(portsPath.Index(i).Child("nodePort"), p.NodePort))
		}
		nodePorts[key] = true
	}
	ports := map[protoPort]bool{}
	for i, p := range spec.Ports {
		key := protoPort{p.Protocol, p.Port}
		if ports[key] {
			// Upstream reports the internal ServicePort used as the key.
			allErrs = append(allErrs, field.Duplicate(portsPath.Index(i), duplicatePortValue{Protocol: p.Protocol, Port: p.Port}))
		}
		ports[key] = true
	}

	allErrs = append(allErrs, validateSourceRanges(svc, old)...)

	if spec.AllocateLoadBalancerNodePorts != nil && spec.Type != v1.ServiceTypeLoadBalancer {
		allErrs = append(allErrs, field.Forbidden(specPath.Child("allocateLoadBalancerNodePorts"), "may only be used when `type` is 'LoadBalancer'"))
	}
	if spec.Type == v1.ServiceTypeLoadBalancer && spec.AllocateLoadBalancerNodePorts == nil {
		allErrs = append(allErrs, field.Required(field.NewPath("allocateLoadBalancerNodePorts"), ""))
	}

	allErrs = append(allErrs, validateLoadBalancerClassField(nil, svc)...)
	allErrs = append(allErrs, validateExternalTrafficPolicy(svc)...)
	allErrs = append(allErrs, validateInternalTrafficPolicy(svc)...)
	if td := spec.TrafficDistribution; td != nil && !slices.Contains(supportedTrafficDistribution, *td) {
		allErrs = append(allErrs, field.NotSupported(specPath.Child("trafficDistribution"), *td, supportedTrafficDistribution))
	}
	return allErrs
}

// duplicatePortValue renders like upstream's internal core.ServicePort (which
// has no json tags) in the "Duplicate value" message:
// {"Name":"","Protocol":"TCP","AppProtocol":null,"Port":80,"TargetPort":0,"NodePort":0}.
type duplicatePortValue struct {
	Name        string
	Protocol    v1.Protocol
	AppProtocol *string
	Port        int32
	TargetPort  intstr.IntOrString
	NodePort    int32
}

func validateServicePort(sp *v1.ServicePort, requireName bool, allNames sets.Set[string], path *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	if requireName && sp.Name == "" {
		allErrs = append(allErrs, field.Required(path.Child("name"), ""))
	} else if sp.Name != "" {
		for _, msg := range validation.IsDNS1123Label(sp.Name) {
			allErrs = append(allErrs, field.Invalid(path.Child("name"), sp.Name, msg))
		}
		if allNames.Has(sp.Name) {
			allErrs = append(allErrs, field.Duplicate(path.Child("name"), sp.Name))
		} else {
			allNames.Insert(sp.Name)
		}
	}
	for _, msg := range validation.IsValidPortNum(int(sp.Port)) {
		allErrs = append(allErrs, field.Invalid(path.Child("port"), sp.Port, msg))
	}
	if sp.Protocol == "" {
		allErrs = append(allErrs, field.Required(path.Child("protocol"), ""))
	} else if !supportedPortProtocols.Has(sp.Protocol) {
		allErrs = append(allErrs, field.NotSupported(path.Child("protocol"), sp.Protocol, sets.List(supportedPortProtocols)))
	}
	allErrs = append(allErrs, validatePortNumOrName(sp.TargetPort, path.Child("targetPort"))...)
	if sp.AppProtocol != nil {
		for _, msg := range validation.IsQualifiedName(*sp.AppProtocol) {
			allErrs = append(allErrs, field.Invalid(path.Child("appProtocol"), *sp.AppProtocol, msg))
		}
	}
	return allErrs
}

func validatePortNumOrName(port intstr.IntOrString, path *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	switch port.Type {
	case intstr.Int:
		for _, msg := range validation.IsValidPortNum(port.IntValue()) {
			allErrs = append(allErrs, field.Invalid(path, port.IntValue(), msg))
		}
	case intstr.String:
		for _, msg := range validation.IsValidPortName(port.StrVal) {
			allErrs = append(allErrs, field.Invalid(path, port.StrVal, msg))
		}
	default:
		allErrs = append(allErrs, field.InternalError(path, fmt.Errorf("unknown type: %v", port.Type)))
	}
	return allErrs
}

func validateClientIPAffinityConfig(config *v1.SessionAffinityConfig, path *field.Path) field.ErrorList {
	msg := fmt.Sprintf("when session affinity type is %s", v1.ServiceAffinityClientIP)
	if config == nil {
		return field.ErrorList{field.Required(path, msg)}
	}
	if config.ClientIP == nil {
		return field.ErrorList{field.Required(path.Child("clientIP"), msg)}
	}
	timeout := config.ClientIP.TimeoutSeconds
	timeoutPath := path.Child("clientIP").Child("timeoutSeconds")
	if timeout == nil {
		return field.ErrorList{field.Required(timeoutPath, msg)}
	}
	if *timeout <= 0 || *timeout > maxClientIPServiceAffinitySeconds {
		return field.ErrorList{field.Invalid(timeoutPath, timeout, fmt.Sprintf("must be greater than 0 and less than %d", maxClientIPServiceAffinitySeconds))}
	}
	return nil
}

// validateEndpointIP is upstream's ValidateEndpointIP, which externalIPs use
// for historical reasons.
func validateEndpointIP(ipAddress string, path *field.Path) field.ErrorList {
	ip := netutils.ParseIPSloppy(ipAddress)
	if ip == nil {
		return field.ErrorList{field.Invalid(path, ipAddress, "must be a valid IP address")}
	}
	var allErrs field.ErrorList
	if ip.IsUnspecified() {
		allErrs = append(allErrs, field.Invalid(path, ipAddress, fmt.Sprintf("may not be unspecified (%v)", ipAddress)))
	}
	if ip.IsLoopback() {
		allErrs = append(allErrs, field.Invalid(path, ipAddress, "may not be in the loopback range (127.0.0.0/8, ::1/128)"))
	}
	if ip.IsLinkLocalUnicast() {
		allErrs = append(allErrs, field.Invalid(path, ipAddress, "may not be in the link-local range (169.254.0.0/16, fe80::/10)"))
	}
	if ip.IsLinkLocalMulticast() {
		allErrs = append(allErrs, field.Invalid(path, ipAddress, "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"))
	}
	return allErrs
}

// validateSourceRanges checks spec.loadBalancerSourceRanges, or the older
// annotation when the field is empty. Existing invalid values need not be
// fixed, and the values may be space-padded (a historical accident).
func validateSourceRanges(svc, old *v1.Service) field.ErrorList {
	var allErrs field.ErrorList
	if len(svc.Spec.LoadBalancerSourceRanges) > 0 {
		path := field.NewPath("spec").Child("LoadBalancerSourceRanges") // sic: upstream's capital L
		if svc.Spec.Type != v1.ServiceTypeLoadBalancer {
			allErrs = append(allErrs, field.Forbidden(path, "may only be used when `type` is 'LoadBalancer'"))
		}
		var existing []string
		if old != nil {
			for _, v := range old.Spec.LoadBalancerSourceRanges {
				existing = append(existing, strings.TrimSpace(v))
			}
		}
		for i, v := range svc.Spec.LoadBalancerSourceRanges {
			allErrs = append(allErrs, validation.IsValidCIDRForLegacyField(path.Index(i), strings.TrimSpace(v), strictIPCIDR, existing)...)
		}
	} else if val, ok := svc.Annotations[v1.AnnotationLoadBalancerSourceRangesKey]; ok {
		path := field.NewPath("metadata", "annotations").Key(v1.AnnotationLoadBalancerSourceRangesKey)
		if svc.Spec.Type != v1.ServiceTypeLoadBalancer {
			allErrs = append(allErrs, field.Forbidden(path, "may only be used when `type` is 'LoadBalancer'"))
		}
		if old == nil || old.Annotations[v1.AnnotationLoadBalancerSourceRangesKey] != val {
			if val = strings.TrimSpace(val); val != "" {
				for _, v := range strings.Split(val, ",") {
					allErrs = append(allErrs, validation.IsValidCIDRForLegacyField(path, strings.TrimSpace(v), strictIPCIDR, nil)...)
				}
			}
		}
	}
	return allErrs
}

func validateExternalTrafficPolicy(svc *v1.Service) field.ErrorList {
	var allErrs field.ErrorList
	path := field.NewPath("spec")
	etp := svc.Spec.ExternalTrafficPolicy
	if !externallyAccessible(svc) {
		if etp != "" {
			allErrs = append(allErrs, field.Invalid(path.Child("externalTrafficPolicy"), etp,
				"may only be set for externally-accessible services"))
		}
	} else if etp == "" {
		allErrs = append(allErrs, field.Required(path.Child("externalTrafficPolicy"), ""))
	} else if !supportedExternalTrafficPolicy.Has(etp) {
		allErrs = append(allErrs, field.NotSupported(path.Child("externalTrafficPolicy"), etp, sets.List(supportedExternalTrafficPolicy)))
	}

	hc := svc.Spec.HealthCheckNodePort
	if !needsHealthCheck(svc) {
		if hc != 0 {
			allErrs = append(allErrs, field.Invalid(path.Child("healthCheckNodePort"), hc,
				"may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"))
		}
	} else if hc != 0 {
		// Upstream also requires the field here. The allocator always fills
		// it in (or fails the write), so that error can never reach a
		// client; leaving it out lets validation run before allocation.
		for _, msg := range validation.IsValidPortNum(int(hc)) {
			allErrs = append(allErrs, field.Invalid(path.Child("healthCheckNodePort"), hc, msg))
		}
	}
	return allErrs
}

func validateInternalTrafficPolicy(svc *v1.Service) field.ErrorList {
	path := field.NewPath("spec").Child("internalTrafficPolicy")
	itp := svc.Spec.InternalTrafficPolicy
	if itp == nil {
		// Not required for ExternalName, for historical reasons.
		switch svc.Spec.Type {
		case v1.ServiceTypeNodePort, v1.ServiceTypeLoadBalancer, v1.ServiceTypeClusterIP:
			return field.ErrorList{field.Required(path, "")}
		}
		return nil
	}
	if !supportedInternalTrafficPolicy.Has(*itp) {
		return field.ErrorList{field.NotSupported(path, *itp, sets.List(supportedInternalTrafficPolicy))}
	}
	return nil
}

func validateLoadBalancerClassField(old, svc *v1.Service) field.ErrorList {
	var allErrs field.ErrorList
	path := field.NewPath("spec", "loadBalancerClass")
	isLB := svc.Spec.Type == v1.ServiceTypeLoadBalancer
	if old != nil && old.Spec.Type == v1.ServiceTypeLoadBalancer && isLB && !sameLoadBalancerClass(old, svc) {
		allErrs = append(allErrs, field.Invalid(path, svc.Spec.LoadBalancerClass, "may not change once set"))
	}
	if isLB {
		if c := svc.Spec.LoadBalancerClass; c != nil {
			for _, msg := range validation.IsQualifiedName(*c) {
				allErrs = append(allErrs, field.Invalid(path, *c, msg))
			}
		}
	} else if svc.Spec.LoadBalancerClass != nil {
		allErrs = append(allErrs, field.Forbidden(path, "may only be used when `type` is 'LoadBalancer'"))
	}
	return allErrs
}

func validateLoadBalancerStatus(status, oldStatus *v1.LoadBalancerStatus, path *field.Path, spec *v1.ServiceSpec) field.ErrorList {
	var allErrs field.ErrorList
	ingPath := path.Child("ingress")
	if spec.Type != v1.ServiceTypeLoadBalancer && len(status.Ingress) != 0 {
		return field.ErrorList{field.Forbidden(ingPath, "may only be used when `spec.type` is 'LoadBalancer'")}
	}
	var existing []string
	if oldStatus != nil {
		for _, ing := range oldStatus.Ingress {
			if ing.IP != "" {
				existing = append(existing, ing.IP)
			}
		}
	}
	for i, ing := range status.Ingress {
		idxPath := ingPath.Index(i)
		if ing.IP != "" {
			allErrs = append(allErrs, validation.IsValidIPForLegacyField(idxPath.Child("ip"), ing.IP, strictIPCIDR, existing)...)
		}
		switch {
		case ing.IPMode == nil:
			if ing.IP != "" {
				allErrs = append(allErrs, field.Required(idxPath.Child("ipMode"), "must be specified when `ip` is set"))
			}
		case ing.IP == "":
			allErrs = append(allErrs, field.Forbidden(idxPath.Child("ipMode"), "may not be specified when `ip` is not set"))
		case !supportedLoadBalancerIPMode.Has(*ing.IPMode):
			allErrs = append(allErrs, field.NotSupported(idxPath.Child("ipMode"), ing.IPMode, sets.List(supportedLoadBalancerIPMode)))
		}
		if ing.Hostname != "" {
			for _, msg := range validation.IsDNS1123Subdomain(ing.Hostname) {
				allErrs = append(allErrs, field.Invalid(idxPath.Child("hostname"), ing.Hostname, msg))
			}
			if netutils.ParseIPSloppy(ing.Hostname) != nil {
				allErrs = append(allErrs, field.Invalid(idxPath.Child("hostname"), ing.Hostname, "must be a DNS name, not an IP address"))
			}
		}
	}
	return allErrs
}

// validateClusterIPsRelatedFields is upstream's
// ValidateServiceClusterIPsRelatedFields: clusterIP/clusterIPs agreement,
// ipFamilies and ipFamilyPolicy values, and IP validity. The allocator runs it
// before allocating too, as upstream does.
func validateClusterIPsRelatedFields(svc, old *v1.Service) field.ErrorList {
	if svc.Spec.Type == v1.ServiceTypeExternalName {
		return nil // checked by validateService
	}
	var allErrs field.ErrorList
	spec := &svc.Spec
	specPath := field.NewPath("spec")
	clusterIPsPath := specPath.Child("clusterIPs")
	ipFamiliesPath := specPath.Child("ipFamilies")

	if spec.ClusterIP != "" {
		if len(spec.ClusterIPs) == 0 {
			allErrs = append(allErrs, field.Required(clusterIPsPath, ""))
		} else if spec.ClusterIPs[0] != spec.ClusterIP {
			allErrs = append(allErrs, field.Invalid(clusterIPsPath, spec.ClusterIPs, "first value must match `clusterIP`"))
		}
	} else if len(spec.ClusterIPs) != 0 {
		allErrs = append(allErrs, field.Invalid(clusterIPsPath, spec.ClusterIPs, "must be empty when `clusterIP` is not specified"))
	}

	seen := sets.Set[v1.IPFamily]{}
	for i, fam := range spec.IPFamilies {
		if !supportedIPFamily.Has(fam) {
			allErrs = append(allErrs, field.NotSupported(ipFamiliesPath.Index(i), fam, sets.List(supportedIPFamily)))
		}
		if seen.Has(fam) {
			allErrs = append(allErrs, field.Duplicate(ipFamiliesPath.Index(i), fam))
		}
		seen.Insert(fam)
	}
	if spec.IPFamilyPolicy != nil && !supportedIPFamilyPolicy.Has(*spec.IPFamilyPolicy) {
		allErrs = append(allErrs, field.NotSupported(specPath.Child("ipFamilyPolicy"), spec.IPFamilyPolicy, sets.List(supportedIPFamilyPolicy)))
	}

	var existing []string
	if old != nil {
		existing = old.Spec.ClusterIPs
	}
	hasInvalidIPs := false
	for i, ip := range spec.ClusterIPs {
		if i == 0 && ip == v1.ClusterIPNone {
			if len(spec.ClusterIPs) > 1 {
				hasInvalidIPs = true
				allErrs = append(allErrs, field.Invalid(clusterIPsPath, spec.ClusterIPs, "'None' must be the first and only value"))
			}
			continue
		}
		errs := validation.IsValidIPForLegacyField(clusterIPsPath.Index(i), ip, strictIPCIDR, existing)
		hasInvalidIPs = hasInvalidIPs || len(errs) != 0
		allErrs = append(allErrs, errs...)
	}
	if len(spec.ClusterIPs) > 2 {
		allErrs = append(allErrs, field.Invalid(clusterIPsPath, spec.ClusterIPs, "may only hold up to 2 values"))
	}
	// Bad IPs would skew the checks below.
	if hasInvalidIPs {
		return allErrs
	}
	if len(spec.ClusterIPs) > 1 {
		dual, err := netutils.IsDualStackIPStrings(spec.ClusterIPs)
		if err != nil {
			allErrs = append(allErrs, field.InternalError(clusterIPsPath, fmt.Errorf("failed to check for dual stack with error:%v", err)))
		}
		if !dual {
			allErrs = append(allErrs, field.Invalid(clusterIPsPath, spec.ClusterIPs, "may specify no more than one IP for each IP family"))
		}
	}
	if !isHeadless(svc) && len(spec.ClusterIPs) > 0 && len(spec.IPFamilies) > 0 {
		for i, ip := range spec.ClusterIPs {
			if i > len(spec.IPFamilies)-1 {
				break
			}
			if spec.IPFamilies[i] == v1.IPv4Protocol && netutils.IsIPv6String(ip) {
				allErrs = append(allErrs, field.Invalid(clusterIPsPath.Index(i), ip, fmt.Sprintf("expected an IPv4 value as indicated by `ipFamilies[%v]`", i)))
			}
			if spec.IPFamilies[i] == v1.IPv6Protocol && !netutils.IsIPv6String(ip) {
				allErrs = append(allErrs, field.Invalid(clusterIPsPath.Index(i), ip, fmt.Sprintf("expected an IPv6 value as indicated by `ipFamilies[%v]`", i)))
			}
		}
	}
	return allErrs
}

// validateUpgradeDowngradeClusterIPs: clusterIPs are immutable except for
// adding or removing the secondary IP, and changes to/from ExternalName or
// headless.
func validateUpgradeDowngradeClusterIPs(old, svc *v1.Service) field.ErrorList {
	var allErrs field.ErrorList
	if svc.Spec.Type == v1.ServiceTypeExternalName || old.Spec.Type == v1.ServiceTypeExternalName {
		return nil
	}
	if isHeadless(old) && isHeadless(svc) {
		return nil
	}
	path := field.NewPath("spec", "clusterIPs")
	oldIPs, newIPs := old.Spec.ClusterIPs, svc.Spec.ClusterIPs
	switch {
	case len(oldIPs) == len(newIPs):
		for i, ip := range oldIPs {
			if ip != newIPs[i] {
				allErrs = append(allErrs, field.Invalid(path.Index(i), newIPs, "may not change once set"))
			}
		}
	case len(oldIPs) > len(newIPs):
		if len(newIPs) == 0 {
			allErrs = append(allErrs, field.Invalid(path.Index(0), newIPs, "primary clusterIP can not be unset"))
		}
		if len(oldIPs) > 0 && len(newIPs) > 0 && newIPs[0] != oldIPs[0] {
			allErrs = append(allErrs, field.Invalid(path.Index(0), newIPs, "may not change once set"))
		}
		if len(newIPs) == 1 && policyString(svc) != v1.IPFamilyPolicySingleStack {
			allErrs = append(allErrs, field.Invalid(field.NewPath("spec", "ipFamilyPolicy"), svc.Spec.IPFamilyPolicy, "must be set to 'SingleStack' when releasing the secondary clusterIP"))
		}
	default:
		if len(oldIPs) > 0 && newIPs[0] != oldIPs[0] {
			allErrs = append(allErrs, field.Invalid(path.Index(0), newIPs, "may not change once set"))
		}
	}
	return allErrs
}

// validateUpgradeDowngradeIPFamilies is the same for ipFamilies.
func validateUpgradeDowngradeIPFamilies(old, svc *v1.Service) field.ErrorList {
	var allErrs field.ErrorList
	if svc.Spec.Type == v1.ServiceTypeExternalName || old.Spec.Type == v1.ServiceTypeExternalName {
		return nil
	}
	if isHeadless(old) || isHeadless(svc) {
		return nil // to/from headless, or headless (which may change families)
	}
	path := field.NewPath("spec", "ipFamilies")
	oldF, newF := old.Spec.IPFamilies, svc.Spec.IPFamilies
	switch {
	case len(oldF) == len(newF):
		for i, f := range oldF {
			if f != newF[i] {
				allErrs = append(allErrs, field.Invalid(path.Index(0), newF, "may not change once set"))
			}
		}
	case len(oldF) > len(newF):
		if len(svc.Spec.ClusterIPs) == 0 {
			allErrs = append(allErrs, field.Invalid(path.Index(0), newF, "primary ipFamily can not be unset"))
		}
		if len(newF) > 0 && newF[0] != oldF[0] {
			allErrs = append(allErrs, field.Invalid(path.Index(0), svc.Spec.ClusterIPs, "may not change once set"))
		}
		if len(newF) == 1 && policyString(svc) != v1.IPFamilyPolicySingleStack {
			allErrs = append(allErrs, field.Invalid(field.NewPath("spec", "ipFamilyPolicy"), svc.Spec.IPFamilyPolicy, "must be set to 'SingleStack' when releasing the secondary ipFamily"))
		}
	default:
		if len(oldF) > 0 && len(newF) > 0 && newF[0] != oldF[0] {
			allErrs = append(allErrs, field.Invalid(path.Index(0), svc.Spec.ClusterIPs, "may not change once set"))
		}
	}
	return allErrs
}
