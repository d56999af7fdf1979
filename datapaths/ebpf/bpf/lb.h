// lb.h: the types, constants and maps that proxyrig's eBPF Service datapath
// shares between its tc programs (lb.c) and its Go side. Every key and value
// type here is emitted into BTF (and into Go by bpf2go -type), so
// `bpftool map dump` prints named fields.
//
// Byte order: every address and port is stored in network byte order, as it
// sits in the packet, so the programs compare and copy without swapping.

#ifndef PRX_LB_H
#define PRX_LB_H

// Only linux/bpf.h and libbpf's helper declarations come from the system
// (Debian linux-libc-dev and libbpf-dev); asm/types.h is shimmed in
// include/ so no architecture-specific header is needed for -target bpf.
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// Constants that would normally come from libc headers, which a BPF object
// cannot include.
#define AF_INET 2
#define ECONNREFUSED 111
#define ETH_HLEN 14
#define ETH_ALEN 6
#define ETH_P_IP 0x0800
#define IPPROTO_ICMP 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IP_DF 0x4000
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define TC_ACT_REDIRECT 7
#define NSEC_PER_SEC 1000000000ULL

// Scopes of a service frontend. Every frontend lives at SCOPE_PRIMARY, so a
// packet costs exactly one service lookup. A frontend flagged SVC_TWO_SCOPES
// (externalTrafficPolicy: Local) has a twin at SCOPE_INTERNAL that holds the
// cluster-wide endpoints, used for traffic from pods and from the node
// itself, which kube-proxy short-circuits to the Cluster policy.
#define SCOPE_PRIMARY 0
#define SCOPE_INTERNAL 1

// Service frontend flags (struct svc_value.flags).
#define SVC_EXTERNAL (1 << 0)   // NodePort, externalIP or LoadBalancer IP
#define SVC_TWO_SCOPES (1 << 1) // SCOPE_INTERNAL twin exists
#define SVC_LOCAL (1 << 2)      // traffic policy Local: keep the client address
#define SVC_AFFINITY (1 << 3)   // sessionAffinity: ClientIP
#define SVC_SRC_RANGE (1 << 4)  // loadBalancerSourceRanges apply
#define SVC_REJECT (1 << 5)     // no usable endpoint anywhere: TCP RST / ICMP
#define SVC_DROP (1 << 6)       // endpoints exist, none for this policy here
#define SVC_NODEPORT (1 << 7)   // informational: a NodePort frontend

// Backend flags (struct backend.flags).
#define BE_LOCAL (1 << 0)      // informational: the endpoint runs on this node
#define BE_HOST_LOCAL (1 << 1) // the endpoint's IP is this node's: local delivery

// Global configuration flags (struct lb_config.flags).
#define CFG_DETECTOR (1 << 0) // cluster_cidr4 is set (--cluster-cidr)
#define CFG_MASQ_ALL (1 << 1) // --masquerade-all
#define CFG_DETECTOR6 (1 << 2) // cluster_cidr6 is set

// Connection tracking directions and flags.
#define CT_FORWARD 0
#define CT_REPLY 1
#define CT_SNAT (1 << 0)        // the forward direction was source-NATed
#define CT_CLOSING (1 << 1)     // a FIN or RST was seen: short lifetime
#define CT_SEEN_REPLY (1 << 2)  // informational: the backend answered

// Lifetimes. kube-proxy leaves these to the kernel's conntrack: TCP
// established 86400 s (its --conntrack-tcp-timeout-established default),
// UDP "stream" 120 s. A closing TCP flow keeps its entries briefly so the
// last ACKs are still translated.
#define CT_LIFETIME_TCP (86400ULL * NSEC_PER_SEC)
#define CT_LIFETIME_TCP_CLOSING (10ULL * NSEC_PER_SEC)
#define CT_LIFETIME_UDP (120ULL * NSEC_PER_SEC)

// Source ports for SNAT are picked at random in 1024-32767: below the
// kernel's default ephemeral range (32768-60999), so a SNATed flow never
// takes the 4-tuple of a connection the node itself opens to the same
// backend (the node's sockets bypass our conntrack, and a clash would hand
// the node's replies to the SNATed client). The client's own port is not
// tried first for the same reason: clients pick from that same range.
#define SNAT_PORT_MIN 1024
#define SNAT_PORT_RANGE 31744
#define SNAT_TRIES 16

// Statistics counters (array index into the stats map).
enum {
	STAT_CT_NEW = 0,        // new flows load-balanced
	STAT_CT_HIT_FORWARD,    // packets translated by a forward CT entry
	STAT_CT_HIT_REPLY,      // packets reverse-translated
	STAT_REJECT_TCP,        // RSTs sent
	STAT_REJECT_UDP,        // ICMP port unreachables sent
	STAT_DROP_NO_LOCAL,     // dropped: no endpoint for the policy here
	STAT_DROP_SRC_RANGE,    // dropped: loadBalancerSourceRanges
	STAT_DROP_SNAT_PORTS,   // dropped: no free SNAT port
	STAT_DROP_ERROR,        // dropped: a helper failed or a map was inconsistent
	STAT_UDP_RESTEER,       // UDP flows moved off a backend that went away
	STAT_SOCK_XLATE,        // socket-level translations (connect/sendmsg)
	STAT_SOCK_REJECT,       // connect/sendmsg refused (no endpoints)
	STAT_SOCK_RESTEER,      // UDP socket flows moved off a backend that went away
	STAT_MAX,
};

// services: frontend -> backend set. One entry per (address, port,
// protocol) frontend and scope.
struct svc_key {
	__be32 addr;
	__be16 port;
	__u8 proto;
	__u8 scope;
};

struct svc_value {
	__u32 id;               // backend set ("group") id: slots, members, affinity, source ranges
	__u16 count;            // number of slots (backends), 1..count
	__u16 flags;            // SVC_*
	__u32 affinity_timeout; // seconds, with SVC_AFFINITY
};

// slots: (group, slot) -> backend id. Slots are numbered 1..count, so a
// random pick is one lookup: O(1) whatever the number of backends.
struct slot_key {
	__u32 id;
	__u32 slot;
};

// backends: backend id -> address.
struct backend {
	__be32 addr;
	__be16 port;
	__u8 flags; // BE_*
	__u8 pad;
};

// members: (group, backend id) -> slot. Answers "is this backend still in
// this set" in O(1), for affinity and for re-steering UDP flows.
struct member_key {
	__u32 id;
	__u32 backend_id;
};

// ct: connection tracking, one entry per direction of a translated flow,
// keyed by the tuple as the packet carries it when it reaches the hook.
struct ct_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir; // CT_FORWARD or CT_REPLY
	__u16 pad;
};

struct ct_entry {
	__u64 last_seen;  // bpf_ktime_get_ns()
	// CT_FORWARD: new destination (the backend) and, with CT_SNAT, new
	// source. CT_REPLY: new source (the frontend) and new destination
	// (the original client).
	__be32 addr;
	__be32 peer_addr;
	__be16 port;
	__be16 peer_port;
	__u32 backend_id;
	__u32 group;
	__u16 flags; // CT_*
	__u16 pad;
};

// affinity: (client, group) -> backend, for sessionAffinity: ClientIP.
struct affinity_key {
	__be32 client;
	__u32 id;
};

struct affinity_value {
	__u64 last_used; // bpf_ktime_get_ns()
	__u32 backend_id;
	__u32 pad;
};

// src_ranges: LPM trie of (group, source prefix) allowed by
// loadBalancerSourceRanges. prefixlen counts the 32 bits of id plus the
// prefix bits.
struct src_range_key {
	__u32 prefixlen;
	__u32 id;
	__be32 addr;
};

// frags: the ports of a fragmented datagram, recorded from its first
// fragment, so the later fragments (which carry no L4 header) get the
// same translation. Keyed as the kernel's reassembly is: addresses, IP id
// and protocol.
struct frag_key {
	__be32 saddr;
	__be32 daddr;
	__be16 id;
	__u8 proto;
	__u8 pad;
};

struct frag_ports {
	__be16 sport;
	__be16 dport;
};

// config: one entry, written by the Go side.
struct lb_config {
	__be32 node_ip4;      // SNAT source: the node's primary IPv4
	__be32 cluster_cidr4; // the local-traffic detector's network
	__be32 cluster_mask4; // ... and mask
	__u32 flags;          // CFG_*
	__u32 node_ip6[4];      // SNAT source for IPv6
	__u32 cluster_cidr6[4]; // IPv6 detector network
	__u32 cluster_mask6[4]; // ... and mask
};

// netns_cookies: network namespaces whose sockets the cgroup hooks
// translate. The cgroup hooks are attached to a cgroup that every lab
// namespace shares (and the root namespace too), so they act only on
// sockets of namespaces listed here: the node's, plus its pods' in the
// socket-LB variant.
#define NETNS_KIND_NODE 1
#define NETNS_KIND_POD 2

struct netns_info {
	__be32 addr4; // the namespace's own IPv4: the client address for affinity
	__u32 kind;   // 1 node, 2 pod
	__u32 addr6[4]; // its own IPv6, likewise
};

// sock_revnat: (socket cookie, backend) -> frontend, so recvmsg and
// getpeername show the address the application asked for.
struct sock_revnat_key {
	__u64 cookie;
	__be32 addr;
	__be16 port;
	__u16 pad;
};

struct sock_revnat_value {
	__be32 addr;
	__be16 port;
	__u16 pad;
};

// sock_flows: the backend a UDP flow translated at its socket was given,
// so that every socket carrying the same flow (unconnected sendmsg after
// sendmsg, or a new socket bound to the same source port, as a client
// pinning its 5-tuple does) keeps reaching that backend while it stays in
// the endpoint set: what a netfilter conntrack entry gives kube-proxy.
// The flow is named by what the hook sees of its 5-tuple: the socket's
// network namespace, its bound source address (zero when unbound; routing
// picks one after the hook) and port, and the frontend. Both families share
// the map: an IPv4 frontend and source are stored IPv4-mapped.
struct sock_flow_key {
	__u64 netns_cookie;
	__u32 saddr[4];
	__u32 daddr[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct sock_flow_value {
	__u64 last_seen; // bpf_ktime_get_ns()
	__u32 backend_id;
	__u32 group; // the set it was picked from: another group re-picks
};

// ---- IPv6 twins of the maps above. Addresses are 16 bytes in network
// order, as __u32[4]. Slots and members are shared: group and backend ids
// come from one space for both families.

struct svc6_key {
	__u32 addr[4];
	__be16 port;
	__u8 proto;
	__u8 scope;
};

struct backend6 {
	__u32 addr[4];
	__be16 port;
	__u8 flags;
	__u8 pad;
};

struct ct6_key {
	__u32 saddr[4];
	__u32 daddr[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir;
	__u16 pad;
};

struct ct6_entry {
	__u64 last_seen;
	__u32 addr[4];
	__u32 peer_addr[4];
	__be16 port;
	__be16 peer_port;
	__u32 backend_id;
	__u32 group;
	__u16 flags;
	__u16 pad;
};

struct affinity6_key {
	__u32 client[4];
	__u32 id;
};

struct src_range6_key {
	__u32 prefixlen; // 32 + prefix bits
	__u32 id;
	__u32 addr[4];
};

struct frag6_key {
	__u32 saddr[4];
	__u32 daddr[4];
	__be32 id;
	__u8 proto;
	__u8 pad[3];
};

struct sock_revnat6_key {
	__u64 cookie;
	__u32 addr[4];
	__be16 port;
	__u16 pad;
	__u32 pad2;
};

struct sock_revnat6_value {
	__u32 addr[4];
	__be16 port;
	__u16 pad;
};

// Map sizes below are defaults; the Go side sets max_entries from its input
// before loading. The configuration maps are not preallocated, so their
// capacity is headroom, not memory; the programs only read them.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct svc_key);
	__type(value, struct svc_value);
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct slot_key);
	__type(value, __u32);
} slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct backend);
} backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct member_key);
	__type(value, __u32);
} members SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
} ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct affinity_key);
	__type(value, struct affinity_value);
} affinity SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct src_range_key);
	__type(value, __u8);
} src_ranges SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, struct netns_info);
} netns_cookies SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sock_revnat_key);
	__type(value, struct sock_revnat_value);
} sock_revnat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sock_flow_key);
	__type(value, struct sock_flow_value);
} sock_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct frag_key);
	__type(value, struct frag_ports);
} frags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct svc6_key);
	__type(value, struct svc_value);
} services6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct backend6);
} backends6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ct6_key);
	__type(value, struct ct6_entry);
} ct6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct affinity6_key);
	__type(value, struct affinity_value);
} affinity6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct src_range6_key);
	__type(value, __u8);
} src_ranges6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sock_revnat6_key);
	__type(value, struct sock_revnat6_value);
} sock_revnat6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct frag6_key);
	__type(value, struct frag_ports);
} frags6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);
	if (v)
		*v += 1;
}

#endif // PRX_LB_H
