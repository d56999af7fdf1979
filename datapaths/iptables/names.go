package iptables

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"strings"
)

// Tables this datapath writes.
const (
	tableFilter = "filter"
	tableNAT    = "nat"
)

// Top-level chains. kube-proxy rewrites every one of them on every sync,
// partial or full, because they hold one or more rules per Service.
const (
	// kubeServicesChain: nat (DNAT entry point for every Service VIP) and
	// filter (REJECT/DROP for Services without usable endpoints).
	kubeServicesChain = "KUBE-SERVICES"
	// kubeExternalServicesChain: filter; REJECT/DROP for external entry
	// points (externalIPs, LB IPs, NodePorts) with no usable endpoints.
	kubeExternalServicesChain = "KUBE-EXTERNAL-SERVICES"
	// kubeNodePortsChain: nat (NodePort dispatch, reached from the tail of
	// nat KUBE-SERVICES) and filter (ACCEPT for health-check node ports).
	kubeNodePortsChain = "KUBE-NODEPORTS"
	// kubePostroutingChain: nat; MASQUERADE for marked packets.
	kubePostroutingChain = "KUBE-POSTROUTING"
	// kubeMarkMasqChain: nat; sets the masquerade mark. A chain of its own
	// so the mark value lives in one place.
	kubeMarkMasqChain = "KUBE-MARK-MASQ"
	// kubeForwardChain: filter; accepts marked and established traffic in
	// FORWARD, drops conntrack-INVALID packets.
	kubeForwardChain = "KUBE-FORWARD"
	// kubeProxyFirewallChain: filter; drops LB traffic that the per-Service
	// KUBE-FW chain did not DNAT (source not in loadBalancerSourceRanges).
	kubeProxyFirewallChain = "KUBE-PROXY-FIREWALL"
	// kubeletFirewallChain: filter; kubelet's copy of the rule that drops
	// martian traffic to 127/8 once route_localnet=1 is set.
	kubeletFirewallChain = "KUBE-FIREWALL"
)

// masqueradeMark is 1<<14, kube-proxy's default --iptables-masquerade-bit.
// kube-proxy formats it with %#08x ("0x004000"); iptables normalises it to
// 0x4000, which is what its unit tests and iptables-save show.
const masqueradeMark = "0x4000"

// Per-Service chain prefixes. Each is followed by a 16-character hash.
//
// Length arithmetic: iptables chain names may have at most 28 characters
// (XT_EXTENSION_MAXNAMELEN is 29 bytes including the NUL). "KUBE-SVC-",
// "KUBE-SVL-", "KUBE-EXT-" and "KUBE-SEP-" are 9 characters, so with 16
// hash characters the names are 25 long; "KUBE-FW-" is 8, giving 24. 16
// base32 characters carry 80 bits of the SHA-256, so collisions are not a
// practical concern even at 100k Service ports.
const (
	svcChainPrefix = "KUBE-SVC-" // endpoints used for Cluster traffic policy
	svlChainPrefix = "KUBE-SVL-" // endpoints used for Local traffic policy
	extChainPrefix = "KUBE-EXT-" // external entry points (NodePort, extIP, LB)
	fwChainPrefix  = "KUBE-FW-"  // loadBalancerSourceRanges filter
	sepChainPrefix = "KUBE-SEP-" // one endpoint: hairpin masquerade + DNAT
)

// isServiceChain reports whether a chain is one of the per-Service chains.
func isServiceChain(name string) bool {
	for _, p := range []string{svcChainPrefix, svlChainPrefix, extChainPrefix, fwChainPrefix, sepChainPrefix} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// portProtoHash is kube-proxy's chain hash: base32(sha256(servicePortName +
// protocol)), first 16 characters. servicePortName is "ns/name:port" (or
// "ns/name" for an unnamed port) and protocol is lower case ("tcp").
func portProtoHash(servicePortName, protocol string) string {
	var buf [128]byte
	h := hash16(append(append(buf[:0], servicePortName...), protocol...))
	return string(h[:])
}

// hash16 is the first 16 base32 characters of sha256(in). 16 characters
// encode exactly the first 10 bytes of the sum, so only those are encoded.
func hash16(in []byte) (h [16]byte) {
	sum := sha256.Sum256(in)
	base32.StdEncoding.Encode(h[:], sum[:10])
	return h
}

func svcChainName(servicePortName, protocol string) string {
	return svcChainPrefix + portProtoHash(servicePortName, protocol)
}

func svlChainName(servicePortName, protocol string) string {
	return svlChainPrefix + portProtoHash(servicePortName, protocol)
}

func extChainName(servicePortName, protocol string) string {
	return extChainPrefix + portProtoHash(servicePortName, protocol)
}

func fwChainName(servicePortName, protocol string) string {
	return fwChainPrefix + portProtoHash(servicePortName, protocol)
}

// sepChainName hashes the endpoint ("10.0.0.1:80" or "[2001:db8::1]:80")
// together with the service port name and protocol.
func sepChainName(servicePortName, protocol, endpoint string) string {
	var buf [160]byte
	h := hash16(append(append(append(buf[:0], servicePortName...), protocol...), endpoint...))
	return sepChainPrefix + string(h[:])
}

// computeProbability is the probability of the rule that picks one of n
// remaining endpoints, formatted as kube-proxy does: ten decimals, so the
// value is monotone in n up to 100000 endpoints.
func computeProbability(n int) string {
	return fmt.Sprintf("%0.10f", 1.0/float64(n))
}

// probabilityCache avoids formatting the same float over and over, the way
// kube-proxy precomputes probabilities; rendering 100k endpoints calls it
// once per endpoint.
type probabilityCache []string

func (c *probabilityCache) get(n int) string {
	for len(*c) <= n {
		*c = append(*c, computeProbability(len(*c)))
	}
	return (*c)[n]
}
