package generic

import (
	"fmt"
	"net"
	"net/netip"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// ValidateEndpointIP rejects the addresses that make no sense as a
// Service backend (upstream's ValidateEndpointIP, shared by Endpoints and
// EndpointSlices): unspecified, loopback, link-local and link-local
// multicast.
func ValidateEndpointIP(ip string, p *field.Path) field.ErrorList {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		if parsed := net.ParseIP(ip); parsed != nil {
			addr, _ = netip.AddrFromSlice(parsed)
		} else {
			return field.ErrorList{field.Invalid(p, ip, "must be a valid IP address")}
		}
	}
	addr = addr.Unmap()
	var errs field.ErrorList
	if addr.IsUnspecified() {
		errs = append(errs, field.Invalid(p, ip, fmt.Sprintf("may not be unspecified (%v)", ip)))
	}
	if addr.IsLoopback() {
		errs = append(errs, field.Invalid(p, ip, "may not be in the loopback range (127.0.0.0/8, ::1/128)"))
	}
	if addr.IsLinkLocalUnicast() {
		errs = append(errs, field.Invalid(p, ip, "may not be in the link-local range (169.254.0.0/16, fe80::/10)"))
	}
	if addr.IsLinkLocalMulticast() {
		errs = append(errs, field.Invalid(p, ip, "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"))
	}
	return errs
}
