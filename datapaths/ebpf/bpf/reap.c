//go:build ignore

// SPDX-License-Identifier: (MIT OR GPL-2.0)
// reap.c: closes connected UDP sockets whose peer is a backend that left.
//
// The socket hooks (lb.c, cgroup/connect4 and connect6) translate a UDP
// socket's connect() once: the socket then holds the backend's address, and
// the kernel never asks the hooks again. When that backend leaves, nothing
// on the packet path can move the socket, and kube-proxy's answer (delete
// the flow's conntrack entry) has no equivalent. Cilium's agent closes such
// sockets; this does the same. After a sync deletes backends, the Go side
// writes their addresses into reap_targets and runs this iterator in each
// namespace whose sockets the hooks translate. bpf_sock_destroy() aborts a
// matching socket: the application's next call fails with ECONNABORTED
// and it reconnects, which the hooks translate afresh.
//
// This is a separate object from lb.c because bpf_sock_destroy needs
// Linux 6.5: on an older kernel only this part is missing, and the
// datapath says so.

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10
#define TCP_ESTABLISHED 1 // a connected UDP socket's state

// The kernel structures read here are declared with only the fields used;
// preserve_access_index makes every access a CO-RE relocation, resolved
// against the running kernel's BTF at load time. Fields inside the
// kernel's anonymous unions are matched by name.
struct in6_addr {
	union {
		__u32 u6_addr32[4];
	} in6_u;
} __attribute__((preserve_access_index));

struct sock_common {
	__be32 skc_daddr;
	__be16 skc_dport;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	struct in6_addr skc_v6_daddr;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

struct udp_sock;
struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
} __attribute__((preserve_access_index));

struct bpf_iter__udp {
	struct bpf_iter_meta *meta;
	struct udp_sock *udp_sk;
} __attribute__((preserve_access_index));

extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

// reap_key is a backend's address and port; IPv4 is stored IPv4-mapped
// (::ffff:a.b.c.d), which is also how a dual-stack socket connected to an
// IPv4 backend holds its peer.
struct reap_key {
	__u32 addr[4];
	__be16 port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct reap_key);
	__type(value, __u8);
} reap_targets SEC(".maps");

SEC("iter/udp")
int reap_udp(struct bpf_iter__udp *ctx)
{
	struct sock *sk = (struct sock *)ctx->udp_sk;
	struct reap_key key = {};
	static const char one = '1';

	if (!sk)
		return 0;
	if (sk->__sk_common.skc_state != TCP_ESTABLISHED)
		return 0;
	switch (sk->__sk_common.skc_family) {
	case AF_INET:
		key.addr[2] = bpf_htonl(0xffff);
		key.addr[3] = sk->__sk_common.skc_daddr;
		break;
	case AF_INET6:
		key.addr[0] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[0];
		key.addr[1] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[1];
		key.addr[2] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[2];
		key.addr[3] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[3];
		break;
	default:
		return 0;
	}
	key.port = sk->__sk_common.skc_dport;
	if (!bpf_map_lookup_elem(&reap_targets, &key))
		return 0;
	if (bpf_sock_destroy((struct sock_common *)sk) == 0)
		bpf_seq_write(ctx->meta->seq, &one, 1); // one byte per socket closed
	return 0;
}

char __license[] SEC("license") = "Dual MIT/GPL";
