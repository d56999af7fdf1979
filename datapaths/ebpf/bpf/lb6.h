// lb6.h: the IPv6 half of lb.c. Same decisions, same order, with 16-byte
// addresses and the IPv6 maps; included by lb.c after its IPv4 helpers.
// IPv6 has no header checksum, so only the L4 checksum is updated, and
// the forwarding decrement is of the hop limit.

#ifndef PRX_LB6_H
#define PRX_LB6_H

#define AF_INET6 10
#define ETH_P_IPV6 0x86DD
#define IPPROTO_ICMPV6 58
#define IP6_HLEN 40
#define IP6_HOP_OFF (ETH_HLEN + 7)
#define IP6_SRC_OFF (ETH_HLEN + 8)
#define IP6_DST_OFF (ETH_HLEN + 24)

struct ip6_hdr {
	__be32 vtc_flow;
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u32 saddr[4];
	__u32 daddr[4];
};

struct pkt6 {
	__u32 saddr[4];
	__u32 daddr[4];
	__u32 l4_off;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 tcp_flags;
	__u8 hop;
	__u8 frag; // a later fragment: no L4 header to rewrite
};

#define P6_L4_OFF (ETH_HLEN + IP6_HLEN)
#define IPPROTO_FRAGMENT 44

struct ip6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; // offset << 3 | M
	__be32 id;
};

static __always_inline int addr6_eq(const __u32 *a, const __u32 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

static __always_inline void addr6_copy(__u32 *dst, const __u32 *src)
{
	dst[0] = src[0];
	dst[1] = src[1];
	dst[2] = src[2];
	dst[3] = src[3];
}

static __always_inline int addr6_is_zero(const __u32 *a)
{
	return !(a[0] | a[1] | a[2] | a[3]);
}

// parse6 fills p from an IPv6 TCP or UDP packet whose L4 header follows
// the fixed header directly or after a fragment header; anything else
// (other extension headers) passes untouched. Later fragments take the
// ports their first fragment carried, as in parse4.
static __noinline int parse6(struct __sk_buff *skb, struct pkt6 *p)
{
	struct frag6_key fk = {};
	struct ip6_frag_hdr fh;
	struct ip6_hdr ip;
	__u8 nexthdr;
	int fragmented = 0;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
		return -1;
	if ((bpf_ntohl(ip.vtc_flow) >> 28) != 6)
		return -1;
	nexthdr = ip.nexthdr;
	p->l4_off = P6_L4_OFF;
	if (nexthdr == IPPROTO_FRAGMENT) {
		if (bpf_skb_load_bytes(skb, P6_L4_OFF, &fh, sizeof(fh)) < 0)
			return -1;
		nexthdr = fh.nexthdr;
		p->l4_off = P6_L4_OFF + sizeof(fh);
		fragmented = 1;
	}
	if (nexthdr != IPPROTO_TCP && nexthdr != IPPROTO_UDP)
		return -1;
	addr6_copy(p->saddr, ip.saddr);
	addr6_copy(p->daddr, ip.daddr);
	p->proto = nexthdr;
	p->hop = ip.hop_limit;
	if (fragmented) {
		addr6_copy(fk.saddr, ip.saddr);
		addr6_copy(fk.daddr, ip.daddr);
		fk.id = fh.id;
		fk.proto = nexthdr;
		if (fh.frag_off & bpf_htons(0xfff8)) {
			struct frag_ports *fp = bpf_map_lookup_elem(&frags6, &fk);
			if (!fp)
				return -1;
			p->sport = fp->sport;
			p->dport = fp->dport;
			p->tcp_flags = 0;
			p->frag = 1;
			return 0;
		}
	}
	if (nexthdr == IPPROTO_TCP) {
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
	if (fragmented) {
		struct frag_ports fp = { .sport = p->sport, .dport = p->dport };
		bpf_map_update_elem(&frags6, &fk, &fp, BPF_ANY);
	}
	return 0;
}

static __always_inline __u32 l4_csum_off6(const struct pkt6 *p)
{
	return p->l4_off + (p->proto == IPPROTO_TCP ? 16 : 6);
}

// set_addr6 rewrites an address and folds the difference into the L4
// checksum through the pseudo-header (size 0: "to" is a precomputed diff).
static __always_inline int set_addr6(struct __sk_buff *skb, struct pkt6 *p, int is_src, const __u32 *new)
{
	__u32 old[4], nw[4];
	__s64 diff;

	addr6_copy(old, is_src ? p->saddr : p->daddr);
	addr6_copy(nw, new);
	if (addr6_eq(old, nw))
		return 0;
	diff = bpf_csum_diff(old, sizeof(old), nw, sizeof(nw), 0);
	if (!p->frag &&
	    bpf_l4_csum_replace(skb, l4_csum_off6(p), 0, diff,
				BPF_F_PSEUDO_HDR | (p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0)) < 0)
		return -1;
	if (bpf_skb_store_bytes(skb, is_src ? IP6_SRC_OFF : IP6_DST_OFF, nw, sizeof(nw), 0) < 0)
		return -1;
	addr6_copy(is_src ? p->saddr : p->daddr, nw);
	return 0;
}

static __always_inline int set_port6(struct __sk_buff *skb, struct pkt6 *p, int is_src, __be16 new)
{
	__be16 old = is_src ? p->sport : p->dport;

	if (old == new)
		return 0;
	if (p->frag)
		goto done;
	if (bpf_l4_csum_replace(skb, l4_csum_off6(p), old, new,
				sizeof(new) | (p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0)) < 0)
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

// forward6: as forward4 (see there for why we route ourselves).
static __always_inline int forward6(struct __sk_buff *skb, struct pkt6 *p)
{
	struct bpf_fib_lookup fib = {};
	long rc;

	fib.family = AF_INET6;
	fib.l4_protocol = p->proto;
	fib.sport = p->sport;
	fib.dport = p->dport;
	fib.tot_len = 0;
	fib.ifindex = skb->ifindex;
	addr6_copy(fib.ipv6_src, p->saddr);
	addr6_copy(fib.ipv6_dst, p->daddr);

	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return TC_ACT_OK;
	if (p->hop <= 1)
		return TC_ACT_OK;
	{
		__u8 hop = p->hop - 1;
		if (bpf_skb_store_bytes(skb, IP6_HOP_OFF, &hop, 1, 0) < 0)
			return TC_ACT_SHOT;
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		struct bpf_redir_neigh nh = {};
		nh.nh_family = AF_INET6;
		addr6_copy(nh.ipv6_nh, fib.ipv6_dst);
		return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
	}
	if (bpf_skb_store_bytes(skb, 0, fib.dmac, ETH_ALEN, 0) < 0)
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, ETH_ALEN, fib.smac, ETH_ALEN, 0) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(fib.ifindex, 0);
}

struct pseudo6_hdr {
	__u32 saddr[4];
	__u32 daddr[4];
	__be32 len;
	__u8 zero[3];
	__u8 nexthdr;
};

struct rst6_pkt {
	struct ip6_hdr ip;
	struct tcp_hdr tcp;
};

struct icmp6_pkt {
	struct ip6_hdr ip;
	struct icmp_hdr icmp; // type, code, checksum, 4 unused bytes
	struct ip6_hdr inner;
	__u8 inner_l4[8];
};

static __always_inline void ip6_header(struct ip6_hdr *ip, const __u32 *saddr, const __u32 *daddr, __u8 nexthdr, __u16 payload)
{
	ip->vtc_flow = bpf_htonl(6 << 28);
	ip->payload_len = bpf_htons(payload);
	ip->nexthdr = nexthdr;
	ip->hop_limit = 64;
	addr6_copy(ip->saddr, saddr);
	addr6_copy(ip->daddr, daddr);
}

// reject_tcp6: the IPv6 form of reject_tcp.
static __noinline int reject_tcp6(struct __sk_buff *skb)
{
	struct ip6_hdr ip;
	struct tcp_hdr tcp;
	struct rst6_pkt out = {};
	struct pseudo6_hdr ph = {};
	__u32 seg_len;
	__s64 sum;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
		return TC_ACT_SHOT;
	if (bpf_skb_load_bytes(skb, P6_L4_OFF, &tcp, sizeof(tcp)) < 0)
		return TC_ACT_SHOT;
	if (tcp.flags & TCP_RST)
		return TC_ACT_SHOT;
	seg_len = bpf_ntohs(ip.payload_len) - (tcp.doff_res >> 4) * 4;
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
		out.tcp.ack_seq = bpf_htonl(bpf_ntohl(tcp.seq) + seg_len);
		out.tcp.flags = TCP_RST | TCP_ACK;
	}
	ip6_header(&out.ip, ip.daddr, ip.saddr, IPPROTO_TCP, sizeof(out.tcp));

	addr6_copy(ph.saddr, ip.daddr);
	addr6_copy(ph.daddr, ip.saddr);
	ph.len = bpf_htonl(sizeof(out.tcp));
	ph.nexthdr = IPPROTO_TCP;
	sum = bpf_csum_diff(0, 0, (__be32 *)&ph, sizeof(ph), 0);
	sum = bpf_csum_diff(0, 0, (__be32 *)&out.tcp, sizeof(out.tcp), sum);
	out.tcp.check = csum_fold(sum);

	if (bpf_skb_change_tail(skb, ETH_HLEN + sizeof(out), 0) < 0)
		return TC_ACT_SHOT;
	if (swap_eth(skb, ETH_P_IPV6) < 0)
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, ETH_HLEN, &out, sizeof(out), 0) < 0)
		return TC_ACT_SHOT;
	stat_inc(STAT_REJECT_TCP);
	return bpf_redirect(skb->ifindex, 0);
}

// reject_udp6 answers with ICMPv6 port unreachable (type 1, code 4),
// quoting the offending header and 8 bytes of its payload.
static __noinline int reject_udp6(struct __sk_buff *skb)
{
	struct icmp6_pkt out = {};
	struct pseudo6_hdr ph = {};
	__s64 sum;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &out.inner, sizeof(out.inner)) < 0)
		return TC_ACT_SHOT;
	if (bpf_skb_load_bytes(skb, P6_L4_OFF, out.inner_l4, sizeof(out.inner_l4)) < 0)
		return TC_ACT_SHOT;
	out.icmp.type = 1; // destination unreachable
	out.icmp.code = 4; // port unreachable
	ip6_header(&out.ip, out.inner.daddr, out.inner.saddr, IPPROTO_ICMPV6, sizeof(out) - sizeof(out.ip));

	addr6_copy(ph.saddr, out.inner.daddr);
	addr6_copy(ph.daddr, out.inner.saddr);
	ph.len = bpf_htonl(sizeof(out) - sizeof(out.ip));
	ph.nexthdr = IPPROTO_ICMPV6;
	sum = bpf_csum_diff(0, 0, (__be32 *)&ph, sizeof(ph), 0);
	sum = bpf_csum_diff(0, 0, (__be32 *)&out.icmp, sizeof(out) - sizeof(out.ip), sum);
	out.icmp.check = csum_fold(sum);

	if (bpf_skb_change_tail(skb, ETH_HLEN + sizeof(out), 0) < 0)
		return TC_ACT_SHOT;
	if (swap_eth(skb, ETH_P_IPV6) < 0)
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, ETH_HLEN, &out, sizeof(out), 0) < 0)
		return TC_ACT_SHOT;
	stat_inc(STAT_REJECT_UDP);
	return bpf_redirect(skb->ifindex, 0);
}

static __always_inline __u64 ct6_lifetime(const struct ct6_entry *e, __u8 proto)
{
	if (proto == IPPROTO_UDP)
		return CT_LIFETIME_UDP;
	if (e->flags & CT_CLOSING)
		return CT_LIFETIME_TCP_CLOSING;
	return CT_LIFETIME_TCP;
}

static __always_inline int ct6_alive(const struct ct6_entry *e, __u8 proto, __u64 now)
{
	return now - e->last_seen <= ct6_lifetime(e, proto);
}

static __always_inline void ct6_touch(struct ct6_entry *e, const struct pkt6 *p, __u64 now)
{
	e->last_seen = now;
	if (p->tcp_flags & (TCP_FIN | TCP_RST))
		e->flags |= CT_CLOSING;
}

// pick_backend6: pick_backend with the IPv6 affinity map; the slots are
// shared.
static __always_inline __u32 pick_backend6(const struct svc_value *svc, const __u32 *client, __u64 now)
{
	struct affinity6_key ak = { .id = svc->id };
	struct slot_key sk = { .id = svc->id };
	__u32 *backend_id;

	addr6_copy(ak.client, client);
	if (svc->flags & SVC_AFFINITY) {
		struct affinity_value *av = bpf_map_lookup_elem(&affinity6, &ak);
		if (av && now - av->last_used <= (__u64)svc->affinity_timeout * NSEC_PER_SEC &&
		    is_member(svc->id, av->backend_id)) {
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
		bpf_map_update_elem(&affinity6, &ak, &av, BPF_ANY);
	}
	return *backend_id;
}

static __always_inline int src_allowed6(__u32 group, const __u32 *saddr)
{
	struct src_range6_key k = { .prefixlen = 32 + 128, .id = group };

	addr6_copy(k.addr, saddr);
	return bpf_map_lookup_elem(&src_ranges6, &k) != 0;
}

static __always_inline int from_cluster6(const struct lb_config *cfg, const __u32 *a)
{
	if (!(cfg->flags & CFG_DETECTOR6))
		return 0;
	return (a[0] & cfg->cluster_mask6[0]) == cfg->cluster_cidr6[0] &&
	       (a[1] & cfg->cluster_mask6[1]) == cfg->cluster_cidr6[1] &&
	       (a[2] & cfg->cluster_mask6[2]) == cfg->cluster_cidr6[2] &&
	       (a[3] & cfg->cluster_mask6[3]) == cfg->cluster_cidr6[3];
}

static __always_inline int nat_forward6(struct __sk_buff *skb, struct pkt6 *p, const struct ct6_entry *e)
{
	if (set_addr6(skb, p, 0, e->addr) < 0 || set_port6(skb, p, 0, e->port) < 0)
		return -1;
	if (e->flags & CT_SNAT) {
		if (set_addr6(skb, p, 1, e->peer_addr) < 0 || set_port6(skb, p, 1, e->peer_port) < 0)
			return -1;
	}
	return 0;
}

static __always_inline int nat_reply6(struct __sk_buff *skb, struct pkt6 *p, const struct ct6_entry *e)
{
	if (set_addr6(skb, p, 1, e->addr) < 0 || set_port6(skb, p, 1, e->port) < 0)
		return -1;
	if (set_addr6(skb, p, 0, e->peer_addr) < 0 || set_port6(skb, p, 0, e->peer_port) < 0)
		return -1;
	return 0;
}

// VERDICT_REJECT is new_flow6's "answer with a reject" result: the reply
// is built by the caller, so the two big stack frames are never stacked
// (the verifier allows 512 bytes for a whole call chain).
#define VERDICT_REJECT -1

// new_flow6: the IPv6 form of new_flow. kube-proxy serves no localhost
// NodePorts over IPv6, so there is no HOOK_HOST case. One ct6 key and
// entry are built first for the reply direction, then reused for the
// forward one, to keep the stack small.
static __noinline int new_flow6(struct __sk_buff *skb, struct pkt6 *p, __u64 now)
{
	struct svc6_key key = { .port = p->dport, .proto = p->proto, .scope = SCOPE_PRIMARY };
	struct ct6_key k = {};
	struct ct6_entry e = {};
	struct svc_value *svc;
	struct lb_config *cfg;
	struct backend6 *be;
	__u32 backend_id;
	__be16 snat_port;
	int masq, i;

	addr6_copy(key.addr, p->daddr);
	svc = bpf_map_lookup_elem(&services6, &key);
	if (!svc)
		return TC_ACT_OK;
	cfg = get_config();
	if (!cfg)
		return TC_ACT_OK;

	if (svc->flags & SVC_EXTERNAL) {
		if ((svc->flags & SVC_SRC_RANGE) && !src_allowed6(svc->id, p->saddr)) {
			stat_inc(STAT_DROP_SRC_RANGE);
			return TC_ACT_SHOT;
		}
		if ((svc->flags & SVC_TWO_SCOPES) && from_cluster6(cfg, p->saddr)) {
			key.scope = SCOPE_INTERNAL;
			svc = bpf_map_lookup_elem(&services6, &key);
			if (!svc) {
				stat_inc(STAT_DROP_ERROR);
				return TC_ACT_SHOT;
			}
			masq = 0;
		} else {
			masq = !(svc->flags & SVC_LOCAL);
		}
	} else {
		masq = (cfg->flags & CFG_MASQ_ALL) || ((cfg->flags & CFG_DETECTOR6) && !from_cluster6(cfg, p->saddr));
	}

	if (svc->flags & SVC_REJECT)
		return VERDICT_REJECT;
	if (svc->count == 0) {
		stat_inc(STAT_DROP_NO_LOCAL);
		return TC_ACT_SHOT;
	}

	backend_id = pick_backend6(svc, p->saddr, now);
	be = bpf_map_lookup_elem(&backends6, &backend_id);
	if (!be) {
		stat_inc(STAT_DROP_ERROR);
		return TC_ACT_SHOT;
	}
	if (addr6_eq(be->addr, p->saddr))
		masq = 1;
	if (be->flags & BE_HOST_LOCAL)
		masq = 0;
	if (masq && addr6_is_zero(cfg->node_ip6)) {
		stat_inc(STAT_DROP_ERROR);
		return TC_ACT_SHOT;
	}

	// Reply direction: backend -> client (or the node, with SNAT).
	e.last_seen = now;
	addr6_copy(e.addr, p->daddr);
	e.port = p->dport;
	addr6_copy(e.peer_addr, p->saddr);
	e.peer_port = p->sport;
	e.backend_id = backend_id;
	e.group = svc->id;
	addr6_copy(k.saddr, be->addr);
	k.sport = be->port;
	k.proto = p->proto;
	k.dir = CT_REPLY;
	if (masq) {
		e.flags = CT_SNAT;
		addr6_copy(k.daddr, cfg->node_ip6);
		for (i = 0; i < SNAT_TRIES; i++) {
			k.dport = bpf_htons(SNAT_PORT_MIN + bpf_get_prandom_u32() % SNAT_PORT_RANGE);
			if (bpf_map_update_elem(&ct6, &k, &e, BPF_NOEXIST) == 0)
				break;
		}
		if (i == SNAT_TRIES) {
			stat_inc(STAT_DROP_SNAT_PORTS);
			return TC_ACT_SHOT;
		}
		snat_port = k.dport;
	} else {
		addr6_copy(k.daddr, p->saddr);
		k.dport = p->sport;
		if (bpf_map_update_elem(&ct6, &k, &e, BPF_ANY) < 0) {
			stat_inc(STAT_DROP_ERROR);
			return TC_ACT_SHOT;
		}
		snat_port = 0;
	}

	// Forward direction: client -> frontend.
	addr6_copy(e.addr, be->addr);
	e.port = be->port;
	if (masq) {
		addr6_copy(e.peer_addr, cfg->node_ip6);
		e.peer_port = snat_port;
	}
	addr6_copy(k.saddr, p->saddr);
	addr6_copy(k.daddr, p->daddr);
	k.sport = p->sport;
	k.dport = p->dport;
	k.dir = CT_FORWARD;
	if (bpf_map_update_elem(&ct6, &k, &e, BPF_ANY) < 0) {
		stat_inc(STAT_DROP_ERROR);
		return TC_ACT_SHOT;
	}
	stat_inc(STAT_CT_NEW);

	if (nat_forward6(skb, p, &e) < 0) {
		stat_inc(STAT_DROP_ERROR);
		return TC_ACT_SHOT;
	}
	return forward6(skb, p);
}

// new_flow6_or_reject runs new_flow6 and builds the reject it asks for.
static __always_inline int new_flow6_or_reject(struct __sk_buff *skb, struct pkt6 *p, __u64 now)
{
	int ret = new_flow6(skb, p, now);

	if (ret != VERDICT_REJECT)
		return ret;
	// The replies quote an unfragmented header; a fragmented datagram to
	// a Service without endpoints is dropped instead.
	if (p->l4_off != P6_L4_OFF)
		return TC_ACT_SHOT;
	if (p->proto == IPPROTO_TCP)
		return reject_tcp6(skb);
	return reject_udp6(skb);
}

// lb6 is the IPv6 ingress path; egress (to_dev) handles only replies and
// drops, like its IPv4 form.
static __noinline int lb6(struct __sk_buff *skb, int egress)
{
	struct ct6_key key = {};
	struct ct6_entry *e;
	struct pkt6 p = {};
	__u64 now;

	if (parse6(skb, &p) < 0)
		return TC_ACT_OK;
	now = bpf_ktime_get_ns();

	addr6_copy(key.saddr, p.saddr);
	addr6_copy(key.daddr, p.daddr);
	key.sport = p.sport;
	key.dport = p.dport;
	key.proto = p.proto;
	key.dir = CT_REPLY;
	e = bpf_map_lookup_elem(&ct6, &key);
	if (e && ct_reply_reused(e->flags, p.proto, p.tcp_flags)) {
		bpf_map_delete_elem(&ct6, &key);
		e = 0;
	}
	if (e && ct6_alive(e, p.proto, now)) {
		ct6_touch(e, &p, now);
		e->flags |= CT_SEEN_REPLY;
		stat_inc(STAT_CT_HIT_REPLY);
		if (nat_reply6(skb, &p, e) < 0) {
			stat_inc(STAT_DROP_ERROR);
			return TC_ACT_SHOT;
		}
		if (egress)
			return TC_ACT_OK;
		return forward6(skb, &p);
	}

	if (egress) {
		struct svc6_key skey = { .port = p.dport, .proto = p.proto };
		struct svc_value *svc;

		addr6_copy(skey.addr, p.daddr);
		svc = bpf_map_lookup_elem(&services6, &skey);
		if (!svc)
			return TC_ACT_OK;
		if ((svc->flags & SVC_DROP) && !(svc->flags & SVC_TWO_SCOPES)) {
			stat_inc(STAT_DROP_NO_LOCAL);
			return TC_ACT_SHOT;
		}
		if ((svc->flags & SVC_SRC_RANGE) && !src_allowed6(svc->id, p.saddr)) {
			stat_inc(STAT_DROP_SRC_RANGE);
			return TC_ACT_SHOT;
		}
		return TC_ACT_OK;
	}

	key.dir = CT_FORWARD;
	e = bpf_map_lookup_elem(&ct6, &key);
	if (e && ct6_alive(e, p.proto, now)) {
		if (p.proto == IPPROTO_TCP && (e->flags & CT_CLOSING) &&
		    (p.tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN)
			return new_flow6_or_reject(skb, &p, now);
		if (p.proto == IPPROTO_UDP && !is_member(e->group, e->backend_id)) {
			stat_inc(STAT_UDP_RESTEER);
			bpf_map_delete_elem(&ct6, &key);
			return new_flow6_or_reject(skb, &p, now);
		}
		ct6_touch(e, &p, now);
		stat_inc(STAT_CT_HIT_FORWARD);
		if (nat_forward6(skb, &p, e) < 0) {
			stat_inc(STAT_DROP_ERROR);
			return TC_ACT_SHOT;
		}
		return forward6(skb, &p);
	}
	return new_flow6_or_reject(skb, &p, now);
}

// ---- Socket hooks, IPv6 ----

static __always_inline int is_v4mapped(const __u32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff);
}

static __always_inline int is_loopback6(const __u32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == bpf_htonl(1);
}

// sock_pick6 is sock_pick4 with the IPv6 affinity map.
static __always_inline __u32 sock_pick6(const struct sock_flow_key *fk, int is_flow, const struct svc_value *svc, const __u32 *client)
{
	__u64 now = bpf_ktime_get_ns();
	__u32 id;

	if (is_flow) {
		id = sock_flow_backend(fk, svc, now);
		if (id)
			return id;
	}
	id = pick_backend6(svc, client, now);
	if (id && is_flow)
		sock_flow_remember(fk, svc, id, now);
	return id;
}

// sock6_xlate is sock4_xlate for AF_INET6 sockets. An IPv4-mapped
// destination (a dual-stack socket reaching an IPv4 frontend) is looked up
// in the IPv4 maps and rewritten to the mapped backend address.
static __always_inline int sock6_xlate(struct bpf_sock_addr *ctx)
{
	struct svc6_key key = {};
	struct sock_revnat6_key rk = {};
	struct sock_revnat6_value rv = {};
	struct sock_flow_key fk = {};
	struct svc_value *svc;
	struct netns_info *ns;
	struct backend6 *be;
	__u32 dst[4], src[4], backend_id;
	int is_flow;
	__u8 proto;

	ns = scoped(ctx);
	if (!ns)
		return 1;
	proto = ctx->protocol;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 1;
	dst[0] = ctx->user_ip6[0];
	dst[1] = ctx->user_ip6[1];
	dst[2] = ctx->user_ip6[2];
	dst[3] = ctx->user_ip6[3];
	if (is_loopback6(dst))
		return 1;
	src[0] = ctx->sk->src_ip6[0];
	src[1] = ctx->sk->src_ip6[1];
	src[2] = ctx->sk->src_ip6[2];
	src[3] = ctx->sk->src_ip6[3];
	is_flow = sock_flow_key(ctx, &fk, src, dst, (__be16)ctx->user_port, proto, ctx->sk->src_port);
	if (is_v4mapped(dst)) {
		struct svc_key k4 = { .addr = dst[3], .port = (__be16)ctx->user_port, .proto = proto };
		struct backend *be4;
		svc = bpf_map_lookup_elem(&services, &k4);
		if (!svc)
			return 1;
		if ((svc->flags & SVC_SRC_RANGE) && !src_allowed(svc->id, ns->addr4))
			return 1;
		switch (sock_policy(ns, svc, CFG_DETECTOR)) {
		case SOCK_TO_TC:
			return 1;
		case SOCK_TWIN:
			k4.scope = SCOPE_INTERNAL;
			svc = bpf_map_lookup_elem(&services, &k4);
			if (!svc)
				return 1;
		}
		if (svc->flags & SVC_REJECT) {
			stat_inc(STAT_SOCK_REJECT);
			bpf_set_retval(-ECONNREFUSED);
			return 0;
		}
		if (svc->count == 0)
			return 1;
		backend_id = sock_pick4(&fk, is_flow, svc, ns->addr4);
		be4 = bpf_map_lookup_elem(&backends, &backend_id);
		if (!be4)
			return 1;
		if (ns->kind == NETNS_KIND_POD && be4->addr == ns->addr4)
			return 1;
		rk.cookie = bpf_get_socket_cookie(ctx);
		rk.addr[2] = bpf_htonl(0xffff);
		rk.addr[3] = be4->addr;
		rk.port = be4->port;
		addr6_copy(rv.addr, dst);
		rv.port = k4.port;
		bpf_map_update_elem(&sock_revnat6, &rk, &rv, BPF_ANY);
		ctx->user_ip6[3] = be4->addr;
		ctx->user_port = (__u32)be4->port;
		stat_inc(STAT_SOCK_XLATE);
		return 1;
	}

	addr6_copy(key.addr, dst);
	key.port = (__be16)ctx->user_port;
	key.proto = proto;
	svc = bpf_map_lookup_elem(&services6, &key);
	if (!svc)
		return 1;
	if ((svc->flags & SVC_SRC_RANGE) && !src_allowed6(svc->id, ns->addr6))
		return 1;
	switch (sock_policy(ns, svc, CFG_DETECTOR6)) {
	case SOCK_TO_TC:
		return 1;
	case SOCK_TWIN:
		key.scope = SCOPE_INTERNAL;
		svc = bpf_map_lookup_elem(&services6, &key);
		if (!svc)
			return 1;
	}
	if (svc->flags & SVC_REJECT) {
		stat_inc(STAT_SOCK_REJECT);
		bpf_set_retval(-ECONNREFUSED);
		return 0;
	}
	if (svc->count == 0)
		return 1;
	backend_id = sock_pick6(&fk, is_flow, svc, ns->addr6);
	be = bpf_map_lookup_elem(&backends6, &backend_id);
	if (!be)
		return 1;
	if (ns->kind == NETNS_KIND_POD && addr6_eq(be->addr, ns->addr6))
		return 1;
	rk.cookie = bpf_get_socket_cookie(ctx);
	addr6_copy(rk.addr, be->addr);
	rk.port = be->port;
	addr6_copy(rv.addr, dst);
	rv.port = key.port;
	bpf_map_update_elem(&sock_revnat6, &rk, &rv, BPF_ANY);
	ctx->user_ip6[0] = be->addr[0];
	ctx->user_ip6[1] = be->addr[1];
	ctx->user_ip6[2] = be->addr[2];
	ctx->user_ip6[3] = be->addr[3];
	ctx->user_port = (__u32)be->port;
	stat_inc(STAT_SOCK_XLATE);
	return 1;
}

static __always_inline int sock6_revnat(struct bpf_sock_addr *ctx)
{
	struct sock_revnat6_key rk = {};
	struct sock_revnat6_value *rv;

	if (!scoped(ctx))
		return 1;
	rk.cookie = bpf_get_socket_cookie(ctx);
	rk.addr[0] = ctx->user_ip6[0];
	rk.addr[1] = ctx->user_ip6[1];
	rk.addr[2] = ctx->user_ip6[2];
	rk.addr[3] = ctx->user_ip6[3];
	rk.port = (__be16)ctx->user_port;
	rv = bpf_map_lookup_elem(&sock_revnat6, &rk);
	if (rv) {
		ctx->user_ip6[0] = rv->addr[0];
		ctx->user_ip6[1] = rv->addr[1];
		ctx->user_ip6[2] = rv->addr[2];
		ctx->user_ip6[3] = rv->addr[3];
		ctx->user_port = (__u32)rv->port;
	}
	return 1;
}

SEC("cgroup/connect6")
int sock_connect6(struct bpf_sock_addr *ctx)
{
	return sock6_xlate(ctx);
}

SEC("cgroup/sendmsg6")
int sock_sendmsg6(struct bpf_sock_addr *ctx)
{
	return sock6_xlate(ctx);
}

SEC("cgroup/recvmsg6")
int sock_recvmsg6(struct bpf_sock_addr *ctx)
{
	return sock6_revnat(ctx);
}

SEC("cgroup/getpeername6")
int sock_getpeername6(struct bpf_sock_addr *ctx)
{
	return sock6_revnat(ctx);
}

#endif // PRX_LB6_H
