package nftables

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"strconv"
	"strings"

	"github.com/svcnet/svcnet/internal/proxy"
)

// Fixed object names. Base chains are "${type}-${hook}"; regular chains and
// maps follow upstream kube-proxy's nftables mode so operators can read both.
const (
	tableName = "svcnet"

	filterPreroutingPreDNATChain = "filter-prerouting-pre-dnat"
	filterOutputPreDNATChain     = "filter-output-pre-dnat"
	filterInputChain             = "filter-input"
	filterForwardChain           = "filter-forward"
	filterOutputChain            = "filter-output"
	natPreroutingChain           = "nat-prerouting"
	natOutputChain               = "nat-output"
	natPostroutingChain          = "nat-postrouting"

	servicesChain               = "services"
	masqueradingChain           = "masquerading"
	serviceEndpointsCheckChain  = "service-endpoints-check"
	nodePortEndpointsCheckChain = "nodeport-endpoints-check"
	firewallCheckChain          = "firewall-check"
	clusterIPsCheckChain        = "cluster-ips-check"
	rejectChain                 = "reject-chain"

	clusterIPsSet          = "cluster-ips"
	nodePortIPsSet         = "nodeport-ips"
	hairpinSet             = "hairpin-connections"
	serviceIPsMap          = "service-ips"
	serviceNodePortsMap    = "service-nodeports"
	noEndpointServicesMap  = "no-endpoint-services"
	noEndpointNodePortsMap = "no-endpoint-nodeports"
	firewallIPsMap         = "firewall-ips"
	endpointSlotsMap       = "endpoint-slots"
	endpointPortsMap       = "endpoint-ports"
	singleEndpointMap      = "single-endpoint"

	// pickChainPrefix names the shared endpoint-choice chains pick-1,
	// pick-2, …: one per endpoint count in use.
	pickChainPrefix = "pick-"

	// Per-service chain and set prefixes.
	clusterChainPrefix  = "service-"
	localChainPrefix    = "local-"
	externalChainPrefix = "external-"
	firewallChainPrefix = "firewall-"
	endpointChainPrefix = "endpoint-"
	affinitySetPrefix   = "affinity-"

	// masqueradeMark is bit 14, as kube-proxy.
	masqueradeMark = "0x4000"
)

// chainNameBaseMax keeps names under nftables' 256-byte limit with a prefix.
const chainNameBaseMax = 240

// hashAndTruncate prefixes name with 8 characters of its base32 SHA-256 so
// names stay unique after truncation, e.g. "ULMVA6XW-ns1/svc1/tcp/p80".
func hashAndTruncate(name string) string {
	sum := sha256.Sum256([]byte(name))
	h := base32.StdEncoding.EncodeToString(sum[:])[:8]
	name = h + "-" + name
	if len(name) > chainNameBaseMax {
		name = name[:chainNameBaseMax-3] + "..."
	}
	return name
}

// serviceChainBase is "HASH-ns/name/proto/port".
func serviceChainBase(n proxy.ServicePortName) string {
	return hashAndTruncate(fmt.Sprintf("%s/%s/%s/%s", n.Namespace, n.Name, strings.ToLower(string(n.Protocol)), n.Port))
}

// endpointChainBase is "HASH-ns/name/proto/port__ip/port" (IPv6 colons become dots).
func endpointChainBase(n proxy.ServicePortName, ep proxy.Endpoint) string {
	ip := strings.ReplaceAll(ep.IP.String(), ":", ".")
	return hashAndTruncate(fmt.Sprintf("%s/%s/%s/%s__%s/%d", n.Namespace, n.Name, strings.ToLower(string(n.Protocol)), n.Port, ip, ep.Port))
}

// isServiceChain reports whether chain is a per-service or per-endpoint chain
// (only those contain '/').
func isServiceChain(chain string) bool { return strings.Contains(chain, "/") }

func pickChainName(n int) string { return pickChainPrefix + strconv.Itoa(n) }

// isPickChain reports whether chain is a shared pick-N chain.
func isPickChain(chain string) bool { return strings.HasPrefix(chain, pickChainPrefix) }

func isAffinitySet(set string) bool { return strings.HasPrefix(set, affinitySetPrefix) }
