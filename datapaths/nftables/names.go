package nftables

import (
	"crypto/sha256"
	"encoding/base32"
	"net/netip"
	"strconv"
	"strings"

	"sigs.k8s.io/knftables"

	"proxyrig/model"
)

// Table, chain, set and map names are kube-proxy's own
// (pkg/proxy/nftables/proxier.go), so `nft list table ip kube-proxy` on a
// proxyrig node reads like one on a real node.
const (
	// kubeProxyTable holds everything, once per family (ip and ip6). Names
	// inside it need no "kube-" prefix of their own.
	kubeProxyTable = "kube-proxy"

	// Base chains, named "${type}-${hook}[-pre-dnat]", attached to
	// netfilter hooks.
	filterPreroutingPreDNATChain = "filter-prerouting-pre-dnat"
	filterOutputPreDNATChain     = "filter-output-pre-dnat"
	filterInputChain             = "filter-input"
	filterForwardChain           = "filter-forward"
	filterOutputChain            = "filter-output"
	natPreroutingChain           = "nat-prerouting"
	natOutputChain               = "nat-output"
	natPostroutingChain          = "nat-postrouting"

	// Service dispatch: one verdict-map lookup per packet for every
	// ClusterIP, external IP and LB IP, and one for every NodePort.
	servicesChain       = "services"
	serviceIPsMap       = "service-ips"
	serviceNodePortsMap = "service-nodeports"

	// The node addresses that accept NodePort traffic.
	nodePortIPsSet = "nodeport-ips"

	// Every active ClusterIP, for rejecting traffic to ports it lacks.
	clusterIPsSet = "cluster-ips"

	// Services (or NodePorts) with no usable endpoints: drop or reject.
	serviceEndpointsCheckChain  = "service-endpoints-check"
	nodePortEndpointsCheckChain = "nodeport-endpoints-check"
	noEndpointServicesMap       = "no-endpoint-services"
	noEndpointNodePortsMap      = "no-endpoint-nodeports"
	rejectChain                 = "reject-chain"

	// Traffic to unallocated ClusterIPs and to undefined ports of ClusterIPs.
	clusterIPsCheckChain = "cluster-ips-check"

	// loadBalancerSourceRanges.
	firewallIPsMap     = "firewall-ips"
	firewallCheckChain = "firewall-check"

	// Masquerading: mark in the service chains, SNAT in postrouting.
	markMasqChain     = "mark-for-masquerade"
	masqueradingChain = "masquerading"
)

// masqueradeMark is kube-proxy's default --masquerade-bit 14. kube-proxy
// spells it "%#08x" ("0x004000"); nft reads both the same way.
const masqueradeMark = "0x4000"

// Per-Service-port and per-endpoint object name prefixes. Each is at most
// chainNamePrefixLengthMax bytes including the hyphen.
const (
	servicePortPolicyClusterChainNamePrefix = "service-"
	servicePortPolicyLocalChainNamePrefix   = "local-"
	serviceExternalChainNamePrefix          = "external-"
	servicePortEndpointChainNamePrefix      = "endpoint-"
	servicePortEndpointAffinityNamePrefix   = "affinity-"
	servicePortFirewallChainNamePrefix      = "firewall-"
)

const (
	// chainNamePrefixLengthMax is the longest prefix above, with room.
	chainNamePrefixLengthMax = 16
	// chainNameBaseLengthMax is what is left for the hashed base name of
	// knftables.NameLengthMax (256): 240 bytes.
	chainNameBaseLengthMax = knftables.NameLengthMax - chainNamePrefixLengthMax
)

// hashAndTruncate prefixes name with 8 base32 characters of its SHA-256
// and truncates the result to chainNameBaseLengthMax. The hash keeps a
// truncated name unique, and makes chains of one Service that differ in a
// single digit easy to tell apart by eye. Same algorithm as kube-proxy, so
// the names match a real node's byte for byte.
func hashAndTruncate(name string) string {
	hash := sha256.Sum256([]byte(name))
	encoded := base32.StdEncoding.EncodeToString(hash[:])
	name = encoded[:8] + "-" + name
	if len(name) > chainNameBaseLengthMax {
		name = name[:chainNameBaseLengthMax-3] + "..."
	}
	return name
}

// servicePortChainNameBase is "HASH-namespace/name/protocol/portName",
// e.g. "ULMVA6XW-ns1/svc1/tcp/p80". Namespace, Service and port names use
// only [a-z0-9-] and the protocol is tcp/udp/sctp, so all are legal in an
// nftables name; "/" separates them because no input can contain it. At
// most 63+63+4+63 + 8 (hash) + 4 punctuation = 205 bytes: never truncated.
func servicePortChainNameBase(svc model.ServiceName, protocol, portName string) string {
	return hashAndTruncate(svc.Namespace + "/" + svc.Name + "/" + protocol + "/" + portName)
}

// servicePortEndpointChainNameBase is
// "HASH-namespace/name/protocol/portName__endpointIP/endpointPort", e.g.
// "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80". IPv6 colons are not legal in
// names and become dots. With a 39-byte IPv6 address the name can reach 252
// bytes, so truncation is possible in theory.
func servicePortEndpointChainNameBase(svc model.ServiceName, protocol, portName string, ep netip.AddrPort) string {
	ip := strings.ReplaceAll(ep.Addr().String(), ":", ".")
	return hashAndTruncate(svc.Namespace + "/" + svc.Name + "/" + protocol + "/" + portName + "__" + ip + "/" + strconv.Itoa(int(ep.Port())))
}

// isServiceChainName tells per-Service chains from the fixed ones: only the
// former contain "/".
func isServiceChainName(chain string) bool { return strings.Contains(chain, "/") }

// isAffinitySetName tells per-endpoint affinity sets from the fixed sets.
func isAffinitySetName(set string) bool {
	return strings.HasPrefix(set, servicePortEndpointAffinityNamePrefix)
}

// servicePortName is kube-proxy's ServicePortName.String(): "ns/name:port",
// or "ns/name" for an unnamed port. It is the comment on map elements.
func servicePortName(svc model.ServiceName, portName string) string {
	if portName == "" {
		return svc.String()
	}
	return svc.String() + ":" + portName
}
