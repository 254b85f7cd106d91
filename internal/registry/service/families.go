package service

import (
	"fmt"
	"slices"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	netutils "k8s.io/utils/net"
)

// initIPFamilyFields is upstream's: default ipFamilyPolicy and ipFamilies,
// and refuse families and dual-stack requests this cluster cannot serve. The
// cluster is single-stack (one ServiceCIDR).
func (a *Allocations) initIPFamilyFields(svc, old *v1.Service) error {
	spec := &svc.Spec
	if spec.Type == v1.ServiceTypeExternalName {
		return nil
	}
	if matchingPreferDualStack(svc, old) {
		return nil
	}
	if spec.IPFamilyPolicy == nil {
		var p v1.IPFamilyPolicy
		switch {
		case old != nil && old.Spec.IPFamilyPolicy != nil:
			p = *old.Spec.IPFamilyPolicy
		case spec.ClusterIP == v1.ClusterIPNone && len(spec.Selector) == 0:
			p = v1.IPFamilyPolicyRequireDualStack // headless and selectorless
		default:
			p = v1.IPFamilyPolicySingleStack
		}
		spec.IPFamilyPolicy = &p
	}
	if el := validateClusterIPsRelatedFields(svc, old); len(el) != 0 {
		return apierrors.NewInvalid(serviceKind, svc.Name, el)
	}
	policyPath := field.NewPath("spec", "ipFamilyPolicy")
	policy := *spec.IPFamilyPolicy
	var el field.ErrorList
	if old != nil {
		if policy == v1.IPFamilyPolicySingleStack {
			if slices.Equal(old.Spec.ClusterIPs, spec.ClusterIPs) && len(spec.ClusterIPs) > 1 {
				spec.ClusterIPs = spec.ClusterIPs[:1]
			}
			if slices.Equal(old.Spec.IPFamilies, spec.IPFamilies) && len(spec.IPFamilies) > 1 {
				spec.IPFamilies = spec.IPFamilies[:1]
			}
		} else {
			if len(spec.ClusterIPs) != 0 && len(spec.ClusterIPs) < len(old.Spec.ClusterIPs) {
				el = append(el, field.Invalid(policyPath, spec.IPFamilyPolicy, "must be 'SingleStack' to release the secondary cluster IP"))
			}
			if len(spec.IPFamilies) != 0 && len(spec.IPFamilies) < len(old.Spec.IPFamilies) {
				el = append(el, field.Invalid(policyPath, spec.IPFamilyPolicy, "must be 'SingleStack' to release the secondary IP family"))
			}
		}
	}
	if policy == v1.IPFamilyPolicySingleStack {
		if len(spec.ClusterIPs) == 2 {
			el = append(el, field.Invalid(policyPath, spec.IPFamilyPolicy, "must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified"))
		}
		if len(spec.IPFamilies) == 2 {
			el = append(el, field.Invalid(policyPath, spec.IPFamilyPolicy, "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified"))
		}
	}
	for i, s := range spec.ClusterIPs {
		if s == v1.ClusterIPNone {
			break
		}
		if i < len(spec.IPFamilies) {
			continue
		}
		fam := familyOf(s)
		if fam != a.family {
			el = append(el, field.Invalid(field.NewPath("spec", "clusterIPs").Index(i), spec.ClusterIPs,
				fmt.Sprintf("%s is not configured on this cluster", fam)))
		} else {
			spec.IPFamilies = append(spec.IPFamilies, fam)
		}
	}
	if len(el) > 0 {
		return apierrors.NewInvalid(serviceKind, svc.Name, el)
	}

	if spec.ClusterIP == v1.ClusterIPNone && len(spec.Selector) == 0 {
		// Headless and selectorless: families are only a hint for the
		// endpoints, so both may be listed even on a single-stack cluster.
		if len(spec.IPFamilies) == 0 {
			spec.IPFamilies = []v1.IPFamily{a.family}
		}
		if len(spec.IPFamilies) < 2 && policy != v1.IPFamilyPolicySingleStack {
			if spec.IPFamilies[0] == v1.IPv4Protocol {
				spec.IPFamilies = append(spec.IPFamilies, v1.IPv6Protocol)
			} else {
				spec.IPFamilies = append(spec.IPFamilies, v1.IPv4Protocol)
			}
		}
		return nil
	}
	if policy == v1.IPFamilyPolicyRequireDualStack {
		el = append(el, field.Invalid(policyPath, spec.IPFamilyPolicy, "this cluster is not configured for dual-stack services"))
	}
	for i, fam := range spec.IPFamilies {
		if fam != a.family {
			el = append(el, field.Invalid(field.NewPath("spec", "ipFamilies").Index(i), fam, "not configured on this cluster"))
		}
	}
	if len(el) > 0 {
		return apierrors.NewInvalid(serviceKind, svc.Name, el)
	}
	if len(spec.IPFamilies) == 0 {
		spec.IPFamilies = []v1.IPFamily{a.family}
	}
	return nil
}

// matchingPreferDualStack is upstream isMatchingPreferDualStackClusterIPFields:
// a PreferDualStack Service whose IP fields did not change is left alone.
func matchingPreferDualStack(svc, old *v1.Service) bool {
	if old == nil || svc.Spec.IPFamilyPolicy == nil || old.Spec.Type != svc.Spec.Type {
		return false
	}
	switch svc.Spec.Type {
	case v1.ServiceTypeClusterIP, v1.ServiceTypeNodePort, v1.ServiceTypeLoadBalancer:
	default:
		return false
	}
	if *svc.Spec.IPFamilyPolicy != v1.IPFamilyPolicyPreferDualStack {
		return false
	}
	if old.Spec.IPFamilyPolicy != nil && *old.Spec.IPFamilyPolicy != v1.IPFamilyPolicyPreferDualStack {
		return false
	}
	return slices.Equal(old.Spec.ClusterIPs, svc.Spec.ClusterIPs) && slices.Equal(old.Spec.IPFamilies, svc.Spec.IPFamilies)
}

func familyOf(ip string) v1.IPFamily {
	switch {
	case netutils.IsIPv4String(ip):
		return v1.IPv4Protocol
	case netutils.IsIPv6String(ip):
		return v1.IPv6Protocol
	}
	return "unknown"
}
