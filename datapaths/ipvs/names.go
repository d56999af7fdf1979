package ipvs

import (
	"net/netip"
	"strings"
)

// dummyDevice holds every Service VIP (ClusterIPs, externalIPs and
// load-balancer IPs not already on a node interface) as a /32 or /128, so
// the kernel treats packets to them as local and IPVS, which hooks
// LOCAL_IN, sees them. kube-proxy leaves it down; local routes for its
// addresses exist regardless (kube-proxy's defaultDummyDevice).
const dummyDevice = "kube-ipvs0"

// Tables this datapath writes with iptables-restore.
const (
	tableNAT    = "nat"
	tableFilter = "filter"
)

// iptables chains. Unlike iptables mode there is no per-Service chain:
// IPVS does the load balancing and DNAT, and iptables only marks for
// masquerade and filters, matching ipsets, so the rule count stays
// constant however many Services there are.
const (
	// nat: entry point from PREROUTING and OUTPUT; marks Service traffic
	// for masquerade by matching the VIP sets.
	kubeServicesChain = "KUBE-SERVICES"
	// nat: MASQUERADE for marked packets and for hairpin (KUBE-LOOP-BACK).
	kubePostroutingChain = "KUBE-POSTROUTING"
	// nat: NodePort masquerade decisions (KUBE-NODE-PORT-* sets); filter:
	// accepts health-check node ports.
	kubeNodePortChain = "KUBE-NODE-PORT"
	// nat: LB IP masquerade decisions (KUBE-LOAD-BALANCER-LOCAL returns).
	kubeLoadBalancerChain = "KUBE-LOAD-BALANCER"
	// nat: sets the masquerade mark.
	kubeMarkMasqChain = "KUBE-MARK-MASQ"
	// filter: accepts marked and established forwarded traffic.
	kubeForwardChain = "KUBE-FORWARD"
	// filter: sends LB traffic with loadBalancerSourceRanges to the
	// source-range check.
	kubeProxyFirewallChain = "KUBE-PROXY-FIREWALL"
	// filter: returns for allowed sources, drops the rest.
	kubeSourceRangesFirewallChain = "KUBE-SOURCE-RANGES-FIREWALL"
	// filter (INPUT): rejects new connections to a VIP on a port no
	// Service uses; without it the VIP, being a local address, would
	// expose the node's own listeners (kubernetes#72236).
	kubeIPVSFilterChain = "KUBE-IPVS-FILTER"
	// filter (OUTPUT): drops node-originated traffic to LB IPs whose source
	// ranges do not include the node (kubernetes#119656).
	kubeIPVSOutFilterChain = "KUBE-IPVS-OUT-FILTER"
)

// natChains and filterChains are our chains in each table, in the order
// kube-proxy declares them (iptablesChains).
var (
	natChains    = []string{kubeServicesChain, kubePostroutingChain, kubeNodePortChain, kubeLoadBalancerChain, kubeMarkMasqChain}
	filterChains = []string{kubeForwardChain, kubeNodePortChain, kubeProxyFirewallChain, kubeSourceRangesFirewallChain, kubeIPVSFilterChain, kubeIPVSOutFilterChain}
)

// masqueradeMark is 1<<14, kube-proxy's default --iptables-masquerade-bit,
// written the way iptables-save prints it.
const masqueradeMark = "0x4000"

// IPVS service flags (include/uapi/linux/ip_vs.h).
const (
	// flagPersistent is IP_VS_SVC_F_PERSISTENT: ClientIP affinity, with the
	// service's Timeout as the persistence timeout.
	flagPersistent uint32 = 0x0001
	// flagHashed is IP_VS_SVC_F_HASHED, which the kernel sets on every
	// service it holds; it is stripped before comparing.
	flagHashed uint32 = 0x0002
	// flagSourceHash is IP_VS_SVC_F_SCHED2, which the mh scheduler reads as
	// "mh-port" (hash the source port too); kube-proxy calls it
	// FlagSourceHash and sets it whenever the scheduler is mh.
	flagSourceHash uint32 = 0x0010
)

// Set types, as ipset names them.
const (
	setHashIP         = "hash:ip"
	setHashIPPort     = "hash:ip,port"
	setHashIPPortIP   = "hash:ip,port,ip"
	setHashIPPortNet  = "hash:ip,port,net"
	setBitmapPort     = "bitmap:port"
	bitmapPortRange   = "0-65535"
	setHashSize       = 1024
	setMaxElem        = 65536
	maxSetNameLength  = 31 // IPSET_MAXNAMELEN is 32 bytes including the NUL
	ipv6SetNamePrefix = "KUBE-6-"
)

// Set names (kube-proxy pkg/proxy/ipvs/ipset.go). Each is also a key of
// setSpecs.
const (
	setLoopBack            = "KUBE-LOOP-BACK"
	setClusterIP           = "KUBE-CLUSTER-IP"
	setExternalIP          = "KUBE-EXTERNAL-IP"
	setExternalIPLocal     = "KUBE-EXTERNAL-IP-LOCAL"
	setLoadBalancer        = "KUBE-LOAD-BALANCER"
	setLoadBalancerFW      = "KUBE-LOAD-BALANCER-FW"
	setLoadBalancerLocal   = "KUBE-LOAD-BALANCER-LOCAL"
	setLoadBalancerSrcIP   = "KUBE-LOAD-BALANCER-SOURCE-IP"
	setLoadBalancerSrcCIDR = "KUBE-LOAD-BALANCER-SOURCE-CIDR"
	setNodePortTCP         = "KUBE-NODE-PORT-TCP"
	setNodePortLocalTCP    = "KUBE-NODE-PORT-LOCAL-TCP"
	setNodePortUDP         = "KUBE-NODE-PORT-UDP"
	setNodePortLocalUDP    = "KUBE-NODE-PORT-LOCAL-UDP"
	setNodePortSCTP        = "KUBE-NODE-PORT-SCTP-HASH"
	setNodePortLocalSCTP   = "KUBE-NODE-PORT-LOCAL-SCTP-HASH"
	setHealthCheckNodePort = "KUBE-HEALTH-CHECK-NODE-PORT"
	setIPVSIPs             = "KUBE-IPVS-IPS"
)

// setSpec describes one ipset: its type and the comment kube-proxy puts on
// the iptables rules that match it.
type setSpec struct {
	name    string // IPv4 name; IPv6 names come from familySetName
	typ     string
	comment string
}

// setSpecs lists every set in kube-proxy's order (ipsetInfo). All of them
// exist whenever the datapath is installed, empty or not, because the
// KUBE-IPVS-FILTER rules reference several unconditionally.
var setSpecs = []setSpec{
	{setLoopBack, setHashIPPortIP, "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose"},
	{setClusterIP, setHashIPPort, "Kubernetes service cluster ip + port for masquerade purpose"},
	{setExternalIP, setHashIPPort, "Kubernetes service external ip + port for masquerade and filter purpose"},
	{setExternalIPLocal, setHashIPPort, "Kubernetes service external ip + port with externalTrafficPolicy=local"},
	{setLoadBalancer, setHashIPPort, "Kubernetes service lb portal"},
	{setLoadBalancerFW, setHashIPPort, "Kubernetes service load balancer ip + port for load balancer with sourceRange"},
	{setLoadBalancerLocal, setHashIPPort, "Kubernetes service load balancer ip + port with externalTrafficPolicy=local"},
	{setLoadBalancerSrcIP, setHashIPPortIP, "Kubernetes service load balancer ip + port + source IP for packet filter purpose"},
	{setLoadBalancerSrcCIDR, setHashIPPortNet, "Kubernetes service load balancer ip + port + source cidr for packet filter purpose"},
	{setNodePortTCP, setBitmapPort, "Kubernetes nodeport TCP port for masquerade purpose"},
	{setNodePortLocalTCP, setBitmapPort, "Kubernetes nodeport TCP port with externalTrafficPolicy=local"},
	{setNodePortUDP, setBitmapPort, "Kubernetes nodeport UDP port for masquerade purpose"},
	{setNodePortLocalUDP, setBitmapPort, "Kubernetes nodeport UDP port with externalTrafficPolicy=local"},
	{setNodePortSCTP, setHashIPPort, "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'"},
	{setNodePortLocalSCTP, setHashIPPort, "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'"},
	{setHealthCheckNodePort, setBitmapPort, "Kubernetes health check node port"},
	{setIPVSIPs, setHashIP, "Addresses on the ipvs interface"},
}

// familySetName is the kernel name of a set in one family. IPv4 keeps
// kube-proxy's historical names; IPv6 replaces "KUBE-" with "KUBE-6-" and
// truncates to 31 characters, as kube-proxy's NewIPSet does, so that both
// families' sets coexist in one namespace ("KUBE-6-LOAD-BALANCER-SOURCE-CIDR"
// is 32 long and becomes "KUBE-6-LOAD-BALANCER-SOURCE-CID").
func familySetName(name string, f Family) string {
	if f != IPv6 {
		return name
	}
	n := ipv6SetNamePrefix + strings.TrimPrefix(name, "KUBE-")
	if len(n) > maxSetNameLength {
		n = n[:maxSetNameLength]
	}
	return n
}

// isOurSet reports whether a kernel set name is one this datapath owns.
func isOurSet(name string) bool {
	for _, s := range setSpecs {
		if name == familySetName(s.name, IPv4) || name == familySetName(s.name, IPv6) {
			return true
		}
	}
	return false
}

// Family is an IP family. kube-proxy runs one IPVS proxier per family;
// they share the IPVS table and kube-ipvs0 but have their own ipsets and
// iptables (iptables-restore / ip6tables-restore).
type Family int

const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string {
	if f == IPv6 {
		return "IPv6"
	}
	return "IPv4"
}

// has reports whether a belongs to the family.
func (f Family) has(a netip.Addr) bool { return a.IsValid() && a.Unmap().Is4() == (f == IPv4) }

// hashFamily is the ipset "family" create option.
func (f Family) hashFamily() string {
	if f == IPv6 {
		return "inet6"
	}
	return "inet"
}

// families is the order in which families are rendered and applied.
var families = []Family{IPv4, IPv6}

func familyOf(a netip.Addr) Family {
	if a.Unmap().Is4() {
		return IPv4
	}
	return IPv6
}
