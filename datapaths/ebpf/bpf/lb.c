//go:build ignore

// lb.c: proxyrig's eBPF Service datapath, a kube-proxy replacement.
//
// Programs:
//   from_dev      tc ingress of every pod-facing veth on the node and of
//                 the node's uplink (eth0): one program serves both, since
//                 a packet's treatment does not depend on which it came in
//   from_host     tc ingress of the node's loopback: node sockets bound to
//                 127.0.0.1 reaching a localhost NodePort
//   to_dev        tc egress of the same devices: reverse NAT of replies the
//                 node itself sends (host-network endpoints), and the drop
//                 of node-originated packets to frontends that must drop
//   sock_connect4, sock_sendmsg4, sock_recvmsg4, sock_getpeername4
//                 cgroup hooks: socket-level load balancing for sockets of
//                 the namespaces in netns_cookies (the node's, and in the
//                 socket-LB variant its pods')
//
// See ../README.md for a packet's walk through these.

#include "lb.h"

char __license[] SEC("license") = "Dual MIT/GPL";

// Packet headers, spelled out without bitfields so the object does not
// depend on the host's endianness headers.
struct eth_hdr {
	__u8 dst[ETH_ALEN];
	__u8 src[ETH_ALEN];
	__be16 proto;
};

struct ip4_hdr {
	__u8 ver_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__be32 saddr;
	__be32 daddr;
};

struct tcp_hdr {
	__be16 source;
	__be16 dest;
	__be32 seq;
	__be32 ack_seq;
	__u8 doff_res;
	__u8 flags;
	__be16 window;
	__u16 check;
	__be16 urg_ptr;
};

struct udp_hdr {
	__be16 source;
	__be16 dest;
	__be16 len;
	__u16 check;
};

struct icmp_hdr {
	__u8 type;
	__u8 code;
	__u16 check;
	__u32 unused;
};

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

#define IP_CSUM_OFF (ETH_HLEN + 10)
#define IP_TTL_OFF (ETH_HLEN + 8)
#define IP_SRC_OFF (ETH_HLEN + 12)
#define IP_DST_OFF (ETH_HLEN + 16)

// Where a program runs, for the decisions that depend on it.
#define HOOK_DEV 0  // pod veth or uplink ingress: from a pod or another host
#define HOOK_HOST 2 // loopback ingress: traffic from the node itself

// pkt is what the programs need of a parsed IPv4 TCP/UDP packet.
struct pkt {
	__u32 l4_off;
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 tcp_flags;
	__u8 ttl;
	__u8 frag; // a non-first fragment: no L4 header to rewrite
};

static __always_inline int is_loopback4(__be32 a)
{
	return (bpf_ntohl(a) >> 24) == 127;
}

// parse4 fills p from an IPv4 TCP or UDP packet; anything else (other
// families, other protocols, later fragments of datagrams whose first
// fragment was not seen) returns -1 and passes untouched.
static __always_inline int parse4(struct __sk_buff *skb, struct pkt *p)
{
	struct frag_key fk = {};
	struct ip4_hdr ip;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return -1;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
		return -1;
	if ((ip.ver_ihl >> 4) != 4 || (ip.ver_ihl & 0xf) < 5)
		return -1;
	if (ip.protocol != IPPROTO_TCP && ip.protocol != IPPROTO_UDP)
		return -1;
	p->l4_off = ETH_HLEN + (ip.ver_ihl & 0xf) * 4;
	p->saddr = ip.saddr;
	p->daddr = ip.daddr;
	p->proto = ip.protocol;
	p->ttl = ip.ttl;
	fk.saddr = ip.saddr;
	fk.daddr = ip.daddr;
	fk.id = ip.id;
	fk.proto = ip.protocol;
	if (ip.frag_off & bpf_htons(IP_OFFSET)) {
		// A later fragment: take the ports its first fragment carried.
		struct frag_ports *fp = bpf_map_lookup_elem(&frags, &fk);
		if (!fp)
			return -1;
		p->sport = fp->sport;
		p->dport = fp->dport;
		p->tcp_flags = 0;
		p->frag = 1;
		return 0;
	}
	if (ip.protocol == IPPROTO_TCP) {
		struct tcp_hdr tcp;
		if (bpf_skb_load_bytes(skb, p->l4_off, &tcp, 14) < 0)
			return -1;
		p->sport = tcp.source;
		p->dport = tcp.dest;
		p->tcp_flags = tcp.flags;
	} else {
		struct udp_hdr udp;
		if (bpf_skb_load_bytes(skb, p->l4_off, &udp, sizeof(udp)) < 0)
			return -1;
		p->sport = udp.source;
		p->dport = udp.dest;
		p->tcp_flags = 0;
	}
	if (ip.frag_off & bpf_htons(IP_MF)) {
		struct frag_ports fp = { .sport = p->sport, .dport = p->dport };
		bpf_map_update_elem(&frags, &fk, &fp, BPF_ANY);
	}
	return 0;
}

static __always_inline __u32 l4_csum_off(const struct pkt *p)
{
	return p->l4_off + (p->proto == IPPROTO_TCP ? 16 : 6);
}

// A UDP checksum of 0 means "none" and must stay 0 (BPF_F_MARK_MANGLED_0
// also turns a computed 0 into 0xffff).
static __always_inline __u64 l4_csum_flags(const struct pkt *p)
{
	return p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
}

// set_addr rewrites the source (is_src) or destination address and fixes
// the IP checksum and, through the pseudo-header, the L4 checksum. The
// helpers handle CHECKSUM_PARTIAL skbs (sent by a local socket through a
// veth) correctly, which a hand-rolled update would not.
static __always_inline int set_addr(struct __sk_buff *skb, struct pkt *p, int is_src, __be32 new)
{
	__be32 old = is_src ? p->saddr : p->daddr;

	if (old == new)
		return 0;
	// A later fragment has no L4 checksum; the first fragment's update
	// covered the whole datagram.
	if (!p->frag &&
	    bpf_l4_csum_replace(skb, l4_csum_off(p), old, new, BPF_F_PSEUDO_HDR | sizeof(new) | l4_csum_flags(p)) < 0)
		return -1;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old, new, sizeof(new)) < 0)
		return -1;
	if (bpf_skb_store_bytes(skb, is_src ? IP_SRC_OFF : IP_DST_OFF, &new, sizeof(new), 0) < 0)
		return -1;
	if (is_src)
		p->saddr = new;
	else
		p->daddr = new;
	return 0;
}

static __always_inline int set_port(struct __sk_buff *skb, struct pkt *p, int is_src, __be16 new)
{
	__be16 old = is_src ? p->sport : p->dport;

	if (old == new)
		return 0;
	if (p->frag)
		goto done;
	if (bpf_l4_csum_replace(skb, l4_csum_off(p), old, new, sizeof(new) | l4_csum_flags(p)) < 0)
		return -1;
	if (bpf_skb_store_bytes(skb, p->l4_off + (is_src ? 0 : 2), &new, sizeof(new), 0) < 0)
		return -1;
done:
	if (is_src)
		p->sport = new;
	else
		p->dport = new;
	return 0;
}

// forward4 sends a translated packet on its way.
//
// Why not TC_ACT_OK and let the stack route it? After source NAT to the
// node's own address, the IPv4 input path would drop the packet as a
// martian (fib_validate_source rejects a local source address unless
// accept_local is set), and the same holds for replies we rewrite to come
// from a frontend the node owns. So, as Cilium does, look the route up
// here and redirect to the egress device, which also skips netfilter and
// the second routing decision. A local destination (a host-network
// endpoint on this node) returns NOT_FWDED, and the stack delivers it.
static __always_inline int forward4(struct __sk_buff *skb, struct pkt *p)
{
	struct bpf_fib_lookup fib = {};
	long rc;

	// A reply to a node socket bound to 127.0.0.1 (localhost NodePort):
	// only the loopback device may deliver a loopback destination, so hand
	// it to lo's receive path. Its MACs must be lo's (zero) or the stack
	// takes the packet for another host's.
	if (is_loopback4(p->daddr)) {
		__u8 zero[2 * ETH_ALEN] = {};
		if (bpf_skb_store_bytes(skb, 0, zero, sizeof(zero), 0) < 0)
			return TC_ACT_SHOT;
		return bpf_redirect(1 /* LOOPBACK_IFINDEX */, BPF_F_INGRESS);
	}

	fib.family = AF_INET;
	fib.l4_protocol = p->proto;
	fib.sport = p->sport;
	fib.dport = p->dport;
	fib.tot_len = 0; // no MTU check: GSO packets are larger than the MTU
	fib.ifindex = skb->ifindex;
	fib.ipv4_src = p->saddr;
	fib.ipv4_dst = p->daddr;

	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return TC_ACT_OK;

	// A router decrements the TTL; at 1 leave the packet to the stack,
	// which sends the ICMP time exceeded.
	if (p->ttl <= 1)
		return TC_ACT_OK;
	{
		__be16 old = bpf_htons(((__u16)p->ttl << 8) | p->proto);
		__be16 new = bpf_htons(((__u16)(p->ttl - 1) << 8) | p->proto);
		__u8 ttl = p->ttl - 1;
		if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old, new, sizeof(new)) < 0)
			return TC_ACT_SHOT;
		if (bpf_skb_store_bytes(skb, IP_TTL_OFF, &ttl, 1, 0) < 0)
			return TC_ACT_SHOT;
	}

	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		// Let the neighbour subsystem resolve the next hop (ARP).
		struct bpf_redir_neigh nh = {};
		nh.nh_family = AF_INET;
		nh.ipv4_nh = fib.ipv4_dst;
		return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
	}
	if (bpf_skb_store_bytes(skb, 0, fib.dmac, ETH_ALEN, 0) < 0)
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, ETH_ALEN, fib.smac, ETH_ALEN, 0) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(fib.ifindex, 0);
}

static __always_inline __u16 csum_fold(__u64 csum)
{
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	return (__u16)~csum;
}

// The L3 and L4 part of a generated reply; the Ethernet header is written
// separately so these start 4-byte aligned.
struct rst_pkt {
	struct ip4_hdr ip;
	struct tcp_hdr tcp;
};

struct icmp_pkt {
	struct ip4_hdr ip;
	struct icmp_hdr icmp;
	struct ip4_hdr inner;
	__u8 inner_l4[8];
};

struct pseudo_hdr {
	__be32 saddr;
	__be32 daddr;
	__u8 zero;
	__u8 proto;
	__be16 len;
};

// swap_eth writes the reply's Ethernet header: the sender's MAC becomes
// the destination, so the reply goes back out the device it came in on.
static __always_inline int swap_eth(struct __sk_buff *skb, __u16 ethertype)
{
	struct eth_hdr eth, out;

	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0)
		return -1;
	__builtin_memcpy(out.dst, eth.src, ETH_ALEN);
	__builtin_memcpy(out.src, eth.dst, ETH_ALEN);
	out.proto = bpf_htons(ethertype);
	return bpf_skb_store_bytes(skb, 0, &out, sizeof(out), 0);
}

static __always_inline void ip_header(struct ip4_hdr *ip, __be32 saddr, __be32 daddr, __u8 proto, __u16 len)
{
	ip->ver_ihl = 0x45;
	ip->tos = 0;
	ip->tot_len = bpf_htons(len);
	ip->id = 0;
	ip->frag_off = bpf_htons(IP_DF);
	ip->ttl = 64;
	ip->protocol = proto;
	ip->check = 0;
	ip->saddr = saddr;
	ip->daddr = daddr;
	ip->check = csum_fold(bpf_csum_diff(0, 0, (__be32 *)ip, sizeof(*ip), 0));
}

// reject_tcp turns a TCP segment to a Service without endpoints into the
// RST that iptables' REJECT --reject-with tcp-reset would send, and
// bounces it out of the device it arrived on. The reply comes from the
// address the client targeted, so the client's socket takes it.
static __noinline int reject_tcp(struct __sk_buff *skb, __u32 l4_off)
{
	struct ip4_hdr ip;
	struct tcp_hdr tcp;
	struct rst_pkt out = {};
	struct pseudo_hdr ph = {};
	__u32 seg_len;
	__s64 sum;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
		return TC_ACT_SHOT;
	if (l4_off > ETH_HLEN + 60)
		return TC_ACT_SHOT;
	if (bpf_skb_load_bytes(skb, l4_off, &tcp, sizeof(tcp)) < 0)
		return TC_ACT_SHOT;
	if (tcp.flags & TCP_RST)
		return TC_ACT_SHOT; // never answer a reset with a reset

	// Sequence space used by the offending segment (RFC 9293 3.10.7.1).
	seg_len = bpf_ntohs(ip.tot_len) - (l4_off - ETH_HLEN) - (tcp.doff_res >> 4) * 4;
	if (tcp.flags & TCP_SYN)
		seg_len++;
	if (tcp.flags & TCP_FIN)
		seg_len++;

	out.tcp.source = tcp.dest;
	out.tcp.dest = tcp.source;
	out.tcp.doff_res = 5 << 4;
	if (tcp.flags & TCP_ACK) {
		out.tcp.seq = tcp.ack_seq;
		out.tcp.flags = TCP_RST;
	} else {
		out.tcp.seq = 0;
		out.tcp.ack_seq = bpf_htonl(bpf_ntohl(tcp.seq) + seg_len);
		out.tcp.flags = TCP_RST | TCP_ACK;
	}
	ip_header(&out.ip, ip.daddr, ip.saddr, IPPROTO_TCP, sizeof(out));

	ph.saddr = ip.daddr;
	ph.daddr = ip.saddr;
	ph.proto = IPPROTO_TCP;
	ph.len = bpf_htons(sizeof(out.tcp));
	sum = bpf_csum_diff(0, 0, (__be32 *)&ph, sizeof(ph), 0);
	sum = bpf_csum_diff(0, 0, (__be32 *)&out.tcp, sizeof(out.tcp), sum);
	out.tcp.check = csum_fold(sum);

	if (bpf_skb_change_tail(skb, ETH_HLEN + sizeof(out), 0) < 0)
		return TC_ACT_SHOT;
	if (swap_eth(skb, ETH_P_IP) < 0)
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, ETH_HLEN, &out, sizeof(out), 0) < 0)
		return TC_ACT_SHOT;
	stat_inc(STAT_REJECT_TCP);
	return bpf_redirect(skb->ifindex, 0);
}

// reject_udp answers a UDP datagram to a Service without endpoints with
// ICMP port unreachable (iptables' REJECT default), quoting the offending
// IP header and the first 8 bytes of its payload, as RFC 792 asks.
static __noinline int reject_udp(struct __sk_buff *skb, __u32 l4_off)
{
	struct icmp_pkt out = {};

	if (l4_off != ETH_HLEN + sizeof(struct ip4_hdr))
		return TC_ACT_SHOT; // IP options: quote would be longer; just drop
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &out.inner, sizeof(out.inner)) < 0)
		return TC_ACT_SHOT;
	if (bpf_skb_load_bytes(skb, l4_off, out.inner_l4, sizeof(out.inner_l4)) < 0)
		return TC_ACT_SHOT;

	out.icmp.type = 3; // destination unreachable
	out.icmp.code = 3; // port unreachable
	out.icmp.check = csum_fold(bpf_csum_diff(0, 0, (__be32 *)&out.icmp,
						 sizeof(out) - sizeof(out.ip), 0));
	ip_header(&out.ip, out.inner.daddr, out.inner.saddr, IPPROTO_ICMP, sizeof(out));

	if (bpf_skb_change_tail(skb, ETH_HLEN + sizeof(out), 0) < 0)
		return TC_ACT_SHOT;
	if (swap_eth(skb, ETH_P_IP) < 0)
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, ETH_HLEN, &out, sizeof(out), 0) < 0)
		return TC_ACT_SHOT;
	stat_inc(STAT_REJECT_UDP);
	return bpf_redirect(skb->ifindex, 0);
}

static __always_inline __u64 ct_lifetime(const struct ct_entry *e, __u8 proto)
{
	if (proto == IPPROTO_UDP)
		return CT_LIFETIME_UDP;
	if (e->flags & CT_CLOSING)
		return CT_LIFETIME_TCP_CLOSING;
	return CT_LIFETIME_TCP;
}

static __always_inline int ct_alive(const struct ct_entry *e, __u8 proto, __u64 now)
{
	return now - e->last_seen <= ct_lifetime(e, proto);
}

static __always_inline void ct_touch(struct ct_entry *e, const struct pkt *p, __u64 now)
{
	e->last_seen = now;
	if (p->tcp_flags & (TCP_FIN | TCP_RST))
		e->flags |= CT_CLOSING;
}

// ct_reply_reused reports a reply entry that a new connection has taken
// over. A SYN-ACK answers a connection being opened, so one that meets the
// reply entry of a closed flow belongs to a new connection on the same
// tuple: a client that reused its source port to reach the backend
// directly (not through the frontend). Translated, it would hand the
// client a SYN-ACK from the frontend, which the client resets, and the new
// connection would time out. kube-proxy's conntrack sees the clash when the
// new connection's SYN arrives and gives it a tuple of its own.
static __always_inline int ct_reply_reused(__u16 flags, __u8 proto, __u8 tcp_flags)
{
	return proto == IPPROTO_TCP && (flags & CT_CLOSING) &&
	       (tcp_flags & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK);
}

static __always_inline int is_member(__u32 group, __u32 backend_id)
{
	struct member_key mk = { .id = group, .backend_id = backend_id };

	return bpf_map_lookup_elem(&members, &mk) != 0;
}

// pick_backend chooses a backend of the set: the client's previous one
// while its affinity lasts and the backend is still in the set, otherwise
// a uniformly random slot (kube-proxy's statistic --mode random spreads the
// same way). Returns 0 when the set is inconsistent.
static __always_inline __u32 pick_backend(const struct svc_value *svc, __be32 client, __u64 now)
{
	struct affinity_key ak = { .client = client, .id = svc->id };
	struct slot_key sk = { .id = svc->id };
	__u32 *backend_id;

	if (svc->flags & SVC_AFFINITY) {
		struct affinity_value *av = bpf_map_lookup_elem(&affinity, &ak);
		if (av && now - av->last_used <= (__u64)svc->affinity_timeout * NSEC_PER_SEC &&
		    is_member(svc->id, av->backend_id)) {
			// kube-proxy's `recent --set` refreshes the entry on every
			// new connection, so the timeout runs from the last one.
			av->last_used = now;
			return av->backend_id;
		}
	}
	if (svc->count == 0)
		return 0;
	sk.slot = bpf_get_prandom_u32() % svc->count + 1;
	backend_id = bpf_map_lookup_elem(&slots, &sk);
	if (!backend_id)
		return 0;
	if (svc->flags & SVC_AFFINITY) {
		struct affinity_value av = { .last_used = now, .backend_id = *backend_id };
		bpf_map_update_elem(&affinity, &ak, &av, BPF_ANY);
	}
	return *backend_id;
}

static __always_inline int src_allowed(__u32 group, __be32 saddr)
{
	struct src_range_key k = { .prefixlen = 64, .id = group, .addr = saddr };

	return bpf_map_lookup_elem(&src_ranges, &k) != 0;
}

static __always_inline struct lb_config *get_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&config, &zero);
}

static __always_inline int from_cluster(const struct lb_config *cfg, __be32 saddr)
{
	return (cfg->flags & CFG_DETECTOR) && (saddr & cfg->cluster_mask4) == cfg->cluster_cidr4;
}

// nat_forward applies a forward CT entry: destination to the backend and,
// with CT_SNAT, source to the node.
static __always_inline int nat_forward(struct __sk_buff *skb, struct pkt *p, const struct ct_entry *e)
{
	if (set_addr(skb, p, 0, e->addr) < 0 || set_port(skb, p, 0, e->port) < 0)
		return -1;
	if (e->flags & CT_SNAT) {
		if (set_addr(skb, p, 1, e->peer_addr) < 0 || set_port(skb, p, 1, e->peer_port) < 0)
			return -1;
	}
	return 0;
}

// nat_reply applies a reply CT entry: source back to the frontend the
// client used, destination back to the client.
static __always_inline int nat_reply(struct __sk_buff *skb, struct pkt *p, const struct ct_entry *e)
{
	if (set_addr(skb, p, 1, e->addr) < 0 || set_port(skb, p, 1, e->port) < 0)
		return -1;
	if (set_addr(skb, p, 0, e->peer_addr) < 0 || set_port(skb, p, 0, e->peer_port) < 0)
		return -1;
	return 0;
}

// new_flow load-balances the first packet of a flow to a frontend, or
// returns TC_ACT_OK when the destination is no frontend.
static __always_inline int new_flow(struct __sk_buff *skb, struct pkt *p, int hook, __u64 now)
{
	struct svc_key key = { .addr = p->daddr, .port = p->dport, .proto = p->proto, .scope = SCOPE_PRIMARY };
	struct ct_key fkey = {}, rkey = {};
	struct ct_entry fwd = {}, rev = {};
	struct svc_value *svc;
	struct lb_config *cfg;
	struct backend *be;
	__u32 backend_id;
	int masq, i;

	svc = bpf_map_lookup_elem(&services, &key);
	if (!svc)
		return TC_ACT_OK;
	cfg = get_config();
	if (!cfg)
		return TC_ACT_OK;

	if (hook == HOOK_HOST) {
		// The node's own traffic (kube-proxy's "src-type LOCAL"): to an
		// external frontend it uses all endpoints, like pod traffic, and
		// it is always masqueraded: a loopback source cannot leave the
		// node.
		if ((svc->flags & SVC_SRC_RANGE) && !src_allowed(svc->id, cfg->node_ip4)) {
			stat_inc(STAT_DROP_SRC_RANGE);
			return TC_ACT_SHOT;
		}
		if (svc->flags & SVC_TWO_SCOPES) {
			key.scope = SCOPE_INTERNAL;
			svc = bpf_map_lookup_elem(&services, &key);
			if (!svc) {
				stat_inc(STAT_DROP_ERROR);
				return TC_ACT_SHOT;
			}
		}
		masq = 1;
	} else if (svc->flags & SVC_EXTERNAL) {
		// kube-proxy's KUBE-FW chain comes before KUBE-EXT: source ranges
		// apply to every source, pods included.
		if ((svc->flags & SVC_SRC_RANGE) && !src_allowed(svc->id, p->saddr)) {
			stat_inc(STAT_DROP_SRC_RANGE);
			return TC_ACT_SHOT;
		}
		if ((svc->flags & SVC_TWO_SCOPES) && from_cluster(cfg, p->saddr)) {
			// Pod traffic to an external address of an eTP=Local
			// Service goes to any endpoint, source kept, as if it had
			// left the cluster and come back through a load balancer.
			key.scope = SCOPE_INTERNAL;
			svc = bpf_map_lookup_elem(&services, &key);
			if (!svc) {
				stat_inc(STAT_DROP_ERROR);
				return TC_ACT_SHOT;
			}
			masq = 0;
		} else {
			// eTP=Cluster may cross nodes: always SNAT, so replies come
			// back through this node. eTP=Local keeps the client address.
			masq = !(svc->flags & SVC_LOCAL);
		}
	} else {
		// A ClusterIP from outside the pod network (a static route to
		// the Service range) is SNATed; pod traffic keeps its source.
		masq = (cfg->flags & CFG_MASQ_ALL) || ((cfg->flags & CFG_DETECTOR) && !from_cluster(cfg, p->saddr));
	}

	if (svc->flags & SVC_REJECT) {
		if (p->frag)
			return TC_ACT_SHOT; // the first fragment drew the reply
		if (p->proto == IPPROTO_TCP)
			return reject_tcp(skb, p->l4_off);
		return reject_udp(skb, p->l4_off);
	}
	if (svc->count == 0) {
		stat_inc(STAT_DROP_NO_LOCAL);
		return TC_ACT_SHOT;
	}

	backend_id = pick_backend(svc, p->saddr, now);
	be = bpf_map_lookup_elem(&backends, &backend_id);
	if (!be) {
		stat_inc(STAT_DROP_ERROR);
		return TC_ACT_SHOT;
	}
	// Hairpin: an endpoint reaching itself through the Service must be
	// SNATed or it would answer itself directly.
	if (be->addr == p->saddr)
		masq = 1;
	// A host-network endpoint on this node is delivered locally, where
	// kube-proxy's POSTROUTING MASQUERADE never runs.
	if (be->flags & BE_HOST_LOCAL)
		masq = 0;
	if (masq && !cfg->node_ip4) {
		stat_inc(STAT_DROP_ERROR);
		return TC_ACT_SHOT;
	}

	fwd.last_seen = now;
	fwd.addr = be->addr;
	fwd.port = be->port;
	fwd.backend_id = backend_id;
	fwd.group = svc->id;
	rev.last_seen = now;
	rev.addr = p->daddr;
	rev.port = p->dport;
	rev.peer_addr = p->saddr;
	rev.peer_port = p->sport;
	rev.backend_id = backend_id;
	rev.group = svc->id;

	rkey.saddr = be->addr;
	rkey.sport = be->port;
	rkey.proto = p->proto;
	rkey.dir = CT_REPLY;
	if (masq) {
		fwd.flags = CT_SNAT;
		rev.flags = CT_SNAT;
		fwd.peer_addr = cfg->node_ip4;
		rkey.daddr = cfg->node_ip4;
		// Reserve a source port: the reply entry is the reservation, so
		// inserting it with BPF_NOEXIST is the atomic "is it free".
		for (i = 0; i < SNAT_TRIES; i++) {
			rkey.dport = bpf_htons(SNAT_PORT_MIN + bpf_get_prandom_u32() % SNAT_PORT_RANGE);
			if (bpf_map_update_elem(&ct, &rkey, &rev, BPF_NOEXIST) == 0)
				break;
		}
		if (i == SNAT_TRIES) {
			stat_inc(STAT_DROP_SNAT_PORTS);
			return TC_ACT_SHOT;
		}
		fwd.peer_port = rkey.dport;
	} else {
		rkey.daddr = p->saddr;
		rkey.dport = p->sport;
		if (bpf_map_update_elem(&ct, &rkey, &rev, BPF_ANY) < 0) {
			stat_inc(STAT_DROP_ERROR);
			return TC_ACT_SHOT;
		}
	}

	fkey.saddr = p->saddr;
	fkey.daddr = p->daddr;
	fkey.sport = p->sport;
	fkey.dport = p->dport;
	fkey.proto = p->proto;
	fkey.dir = CT_FORWARD;
	if (bpf_map_update_elem(&ct, &fkey, &fwd, BPF_ANY) < 0) {
		stat_inc(STAT_DROP_ERROR);
		return TC_ACT_SHOT;
	}
	stat_inc(STAT_CT_NEW);

	if (nat_forward(skb, p, &fwd) < 0) {
		stat_inc(STAT_DROP_ERROR);
		return TC_ACT_SHOT;
	}
	return forward4(skb, p);
}

// lb4 is the ingress path shared by pod-facing devices and the uplink.
static __noinline int lb4(struct __sk_buff *skb, int hook)
{
	struct ct_key key = {};
	struct ct_entry *e;
	struct pkt p = {};
	__u64 now;

	if (parse4(skb, &p) < 0)
		return TC_ACT_OK;
	now = bpf_ktime_get_ns();

	// A reply of a translated flow?
	key.saddr = p.saddr;
	key.daddr = p.daddr;
	key.sport = p.sport;
	key.dport = p.dport;
	key.proto = p.proto;
	key.dir = CT_REPLY;
	e = bpf_map_lookup_elem(&ct, &key);
	if (e && ct_reply_reused(e->flags, p.proto, p.tcp_flags)) {
		bpf_map_delete_elem(&ct, &key);
		e = 0;
	}
	if (e && ct_alive(e, p.proto, now)) {
		ct_touch(e, &p, now);
		e->flags |= CT_SEEN_REPLY;
		stat_inc(STAT_CT_HIT_REPLY);
		if (nat_reply(skb, &p, e) < 0) {
			stat_inc(STAT_DROP_ERROR);
			return TC_ACT_SHOT;
		}
		return forward4(skb, &p);
	}

	// A later packet of a translated flow?
	key.dir = CT_FORWARD;
	e = bpf_map_lookup_elem(&ct, &key);
	if (e && ct_alive(e, p.proto, now)) {
		// A SYN on a tuple whose connection closed opens a new
		// connection, which the kernel's conntrack load-balances
		// afresh (a client reusing its source port).
		if (p.proto == IPPROTO_TCP && (e->flags & CT_CLOSING) &&
		    (p.tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN)
			return new_flow(skb, &p, hook, now);
		// UDP has no connection to break: when the backend left the set
		// (kube-proxy deletes its conntrack entries), pick a new one.
		// TCP keeps going to the old backend and fails there, as with
		// kube-proxy.
		if (p.proto == IPPROTO_UDP && !is_member(e->group, e->backend_id)) {
			stat_inc(STAT_UDP_RESTEER);
			bpf_map_delete_elem(&ct, &key);
			return new_flow(skb, &p, hook, now);
		}
		ct_touch(e, &p, now);
		stat_inc(STAT_CT_HIT_FORWARD);
		if (nat_forward(skb, &p, e) < 0) {
			stat_inc(STAT_DROP_ERROR);
			return TC_ACT_SHOT;
		}
		return forward4(skb, &p);
	}
	return new_flow(skb, &p, hook, now);
}


// to_dev4 runs at egress. Packets the node's own stack sends are seen here
// and nowhere else: replies of host-network endpoints on this node, which
// need reverse NAT, and node-originated packets to frontends that the
// socket hooks left untranslated because they must be dropped (kube-proxy
// DROPs them; a cgroup hook cannot silently drop).
static __always_inline int to_dev4(struct __sk_buff *skb)
{
	struct svc_key skey = {};
	struct ct_key key = {};
	struct svc_value *svc;
	struct ct_entry *e;
	struct pkt p = {};
	__u64 now;

	if (parse4(skb, &p) < 0)
		return TC_ACT_OK;
	now = bpf_ktime_get_ns();
	key.saddr = p.saddr;
	key.daddr = p.daddr;
	key.sport = p.sport;
	key.dport = p.dport;
	key.proto = p.proto;
	key.dir = CT_REPLY;
	e = bpf_map_lookup_elem(&ct, &key);
	if (e && ct_reply_reused(e->flags, p.proto, p.tcp_flags)) {
		bpf_map_delete_elem(&ct, &key);
		e = 0;
	}
	if (e && ct_alive(e, p.proto, now)) {
		ct_touch(e, &p, now);
		e->flags |= CT_SEEN_REPLY;
		stat_inc(STAT_CT_HIT_REPLY);
		if (nat_reply(skb, &p, e) < 0) {
			stat_inc(STAT_DROP_ERROR);
			return TC_ACT_SHOT;
		}
		return TC_ACT_OK;
	}

	skey.addr = p.daddr;
	skey.port = p.dport;
	skey.proto = p.proto;
	svc = bpf_map_lookup_elem(&services, &skey);
	if (!svc)
		return TC_ACT_OK;
	if ((svc->flags & SVC_DROP) && !(svc->flags & SVC_TWO_SCOPES)) {
		stat_inc(STAT_DROP_NO_LOCAL);
		return TC_ACT_SHOT;
	}
	if ((svc->flags & SVC_SRC_RANGE) && !src_allowed(svc->id, p.saddr)) {
		stat_inc(STAT_DROP_SRC_RANGE);
		return TC_ACT_SHOT;
	}
	return TC_ACT_OK;
}

// ---- Socket-level load balancing (cgroup sock_addr hooks) ----

static __always_inline struct netns_info *scoped(void *ctx)
{
	__u64 cookie = bpf_get_netns_cookie(ctx);

	return bpf_map_lookup_elem(&netns_cookies, &cookie);
}

// What a socket hook does with a frontend (sock_policy).
#define SOCK_PRIMARY 0 // translate with the frontend's own entry
#define SOCK_TWIN 1    // translate with the SCOPE_INTERNAL twin
#define SOCK_TO_TC 2   // leave the connection untranslated, to tc

// sock_policy decides how a socket of namespace ns uses a frontend.
// The node's traffic (kube-proxy's "src-type LOCAL") is short-circuited to
// all endpoints of an eTP=Local frontend; a pod's only with a local-traffic
// detector, as in kube-proxy. A socket needs no SNAT for the node: routing
// picks the node's own address, which is what kube-proxy's masquerade
// produces. For a pod it would keep the pod's address, so where kube-proxy
// masquerades pod traffic (eTP=Cluster external frontends,
// --masquerade-all; hairpin is checked once the backend is known) the
// socket is left alone and tc translates, SNATs and reverse-NATs each
// packet.
static __always_inline int sock_policy(const struct netns_info *ns, const struct svc_value *svc, __u32 detector)
{
	struct lb_config *cfg = get_config();
	int pod = ns->kind == NETNS_KIND_POD;

	if (pod && cfg && (cfg->flags & CFG_MASQ_ALL))
		return SOCK_TO_TC;
	if (!(svc->flags & SVC_EXTERNAL))
		return SOCK_PRIMARY;
	if ((svc->flags & SVC_TWO_SCOPES) && (!pod || (cfg && (cfg->flags & detector))))
		return SOCK_TWIN;
	if (pod && !(svc->flags & SVC_LOCAL))
		return SOCK_TO_TC;
	return SOCK_PRIMARY;
}

// ---- UDP flows translated at the socket (sock_flows) ----
//
// A socket hook runs per connect() and per unconnected sendmsg(), not per
// flow: left alone it would pick a backend for every datagram of an
// unconnected socket, and for every new socket a client binds to the same
// source port. kube-proxy's conntrack keeps such a flow on its backend as
// long as the backend stays (and its cleanup moves it once it is gone), so
// the hooks remember each UDP flow's backend in sock_flows and reuse it
// while it is still a member of the frontend's set; a flow whose backend
// left is re-picked, as the tc path re-steers its own conntrack entries.

// sock_flow_key names the UDP flow of a connect/sendmsg call from the
// socket's bound source (sk) and the frontend it asked for (16-byte
// addresses; IPv4 callers pass them IPv4-mapped). Returns 0 when the call
// has no flow identity: TCP, whose every connect is a new connection, and a
// connect() on a socket with no local port yet, which the kernel binds to
// a fresh ephemeral port right after the hook: a new flow either way.
static __always_inline int sock_flow_key(struct bpf_sock_addr *ctx, struct sock_flow_key *fk,
					 const __u32 *saddr, const __u32 *daddr, __be16 dport, __u8 proto, __u32 sport)
{
	if (proto != IPPROTO_UDP || sport == 0 || sport > 0xffff)
		return 0;
	fk->netns_cookie = bpf_get_netns_cookie(ctx);
	__builtin_memcpy(fk->saddr, saddr, sizeof(fk->saddr));
	__builtin_memcpy(fk->daddr, daddr, sizeof(fk->daddr));
	fk->sport = bpf_htons((__u16)sport);
	fk->dport = dport;
	fk->proto = proto;
	return 1;
}

// sock_flow_backend returns the backend the flow was given while it is
// alive and still in svc's set, else 0 (pick a new one).
static __always_inline __u32 sock_flow_backend(const struct sock_flow_key *fk, const struct svc_value *svc, __u64 now)
{
	struct sock_flow_value *v = bpf_map_lookup_elem(&sock_flows, fk);

	if (!v || now - v->last_seen > CT_LIFETIME_UDP)
		return 0;
	if (v->group != svc->id || !is_member(svc->id, v->backend_id)) {
		stat_inc(STAT_SOCK_RESTEER);
		return 0;
	}
	v->last_seen = now;
	return v->backend_id;
}

static __always_inline void sock_flow_remember(const struct sock_flow_key *fk, const struct svc_value *svc, __u32 backend_id, __u64 now)
{
	struct sock_flow_value v = { .last_seen = now, .backend_id = backend_id, .group = svc->id };

	bpf_map_update_elem(&sock_flows, fk, &v, BPF_ANY);
}

// sock_pick4 is pick_backend for a socket hook: the flow's backend if it
// has one that still serves, else a fresh pick, remembered for the flow.
static __always_inline __u32 sock_pick4(const struct sock_flow_key *fk, int is_flow, const struct svc_value *svc, __be32 client)
{
	__u64 now = bpf_ktime_get_ns();
	__u32 id;

	if (is_flow) {
		id = sock_flow_backend(fk, svc, now);
		if (id)
			return id;
	}
	id = pick_backend(svc, client, now);
	if (id && is_flow)
		sock_flow_remember(fk, svc, id, now);
	return id;
}

// sock4_xlate rewrites the destination of connect() or sendmsg() from a
// frontend to a backend. Returns 1 to let the call proceed, 0 (with the
// error set) to fail it.
static __always_inline int sock4_xlate(struct bpf_sock_addr *ctx)
{
	struct svc_key key = {};
	struct sock_revnat_key rk = {};
	struct sock_revnat_value rv = {};
	struct sock_flow_key fk = {};
	struct svc_value *svc;
	struct netns_info *ns;
	struct backend *be;
	__u32 backend_id, src[4] = {}, dst[4] = {};
	int is_flow;
	__u8 proto;

	ns = scoped(ctx);
	if (!ns)
		return 1;
	proto = ctx->protocol;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 1;
	key.addr = ctx->user_ip4;
	// Localhost NodePorts are left to from_host on the loopback device:
	// a socket bound to 127.0.0.1 cannot be pointed at a remote backend,
	// and per packet the source can be masqueraded as kube-proxy does.
	if (is_loopback4(key.addr))
		return 1;
	key.port = (__be16)ctx->user_port;
	key.proto = proto;
	key.scope = SCOPE_PRIMARY;
	svc = bpf_map_lookup_elem(&services, &key);
	if (!svc)
		return 1;

	if ((svc->flags & SVC_SRC_RANGE) && !src_allowed(svc->id, ns->addr4))
		return 1; // untranslated: to_dev (node) or from_dev drops it
	switch (sock_policy(ns, svc, CFG_DETECTOR)) {
	case SOCK_TO_TC:
		return 1;
	case SOCK_TWIN:
		key.scope = SCOPE_INTERNAL;
		svc = bpf_map_lookup_elem(&services, &key);
		if (!svc)
			return 1;
	}
	if (svc->flags & SVC_REJECT) {
		stat_inc(STAT_SOCK_REJECT);
		bpf_set_retval(-ECONNREFUSED);
		return 0;
	}
	if (svc->count == 0)
		return 1; // untranslated: dropped at egress (to_dev) or from_dev

	src[2] = dst[2] = bpf_htonl(0xffff);
	src[3] = ctx->sk->src_ip4;
	dst[3] = key.addr;
	is_flow = sock_flow_key(ctx, &fk, src, dst, key.port, proto, ctx->sk->src_port);
	backend_id = sock_pick4(&fk, is_flow, svc, ns->addr4);
	be = bpf_map_lookup_elem(&backends, &backend_id);
	if (!be)
		return 1;
	// Hairpin: kube-proxy SNATs a pod reaching itself; tc does the same.
	if (ns->kind == NETNS_KIND_POD && be->addr == ns->addr4)
		return 1;

	rk.cookie = bpf_get_socket_cookie(ctx);
	rk.addr = be->addr;
	rk.port = be->port;
	rv.addr = key.addr;
	rv.port = key.port;
	bpf_map_update_elem(&sock_revnat, &rk, &rv, BPF_ANY);

	ctx->user_ip4 = be->addr;
	ctx->user_port = (__u32)be->port;
	stat_inc(STAT_SOCK_XLATE);
	return 1;
}

// sock4_revnat shows the frontend instead of the backend to recvmsg() and
// getpeername().
static __always_inline int sock4_revnat(struct bpf_sock_addr *ctx)
{
	struct sock_revnat_key rk = {};
	struct sock_revnat_value *rv;

	if (!scoped(ctx))
		return 1;
	rk.cookie = bpf_get_socket_cookie(ctx);
	rk.addr = ctx->user_ip4;
	rk.port = (__be16)ctx->user_port;
	rv = bpf_map_lookup_elem(&sock_revnat, &rk);
	if (rv) {
		ctx->user_ip4 = rv->addr;
		ctx->user_port = (__u32)rv->port;
	}
	return 1;
}

SEC("cgroup/connect4")
int sock_connect4(struct bpf_sock_addr *ctx)
{
	return sock4_xlate(ctx);
}

SEC("cgroup/sendmsg4")
int sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_xlate(ctx);
}

SEC("cgroup/recvmsg4")
int sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_revnat(ctx);
}

SEC("cgroup/getpeername4")
int sock_getpeername4(struct bpf_sock_addr *ctx)
{
	return sock4_revnat(ctx);
}

#include "lb6.h"

// ---- tc entry points: dispatch on the L3 protocol ----

// from_dev is the ingress of pod veths and of the uplink alike. They were
// two programs once (as in Cilium, whose netdev program does more); here
// they were the same code, and every full sync verified it twice.
SEC("tc")
int from_dev(struct __sk_buff *skb)
{
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return lb6(skb, 0);
	return lb4(skb, HOOK_DEV);
}

// from_host serves IPv4 only: kube-proxy has no IPv6 localhost NodePorts.
SEC("tc")
int from_host(struct __sk_buff *skb)
{
	return lb4(skb, HOOK_HOST);
}

SEC("tc")
int to_dev(struct __sk_buff *skb)
{
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return lb6(skb, 1);
	return to_dev4(skb);
}
