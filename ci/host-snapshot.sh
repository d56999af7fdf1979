#!/usr/bin/env bash
# Prints the root network namespace's state as stable text: everything a
# proxyrig run must leave exactly as it found it. `ci/test.sh` takes one
# snapshot before the test suite and one after, and fails on any difference.
#
# Counters and other values the kernel changes by itself are left out, so a
# difference always means something was changed.
set -u
section() { printf '\n### %s\n' "$1"; }

section "iptables-legacy-save"
iptables-legacy-save 2>/dev/null | grep -v '^#' | sed -E 's/\[[0-9]+:[0-9]+\]/[0:0]/'
section "ip6tables-legacy-save"
ip6tables-legacy-save 2>/dev/null | grep -v '^#' | sed -E 's/\[[0-9]+:[0-9]+\]/[0:0]/'
section "iptables-nft-save"
iptables-nft-save 2>/dev/null | grep -v '^#' | sed -E 's/\[[0-9]+:[0-9]+\]/[0:0]/'
section "ip6tables-nft-save"
ip6tables-nft-save 2>/dev/null | grep -v '^#' | sed -E 's/\[[0-9]+:[0-9]+\]/[0:0]/'
section "nft list ruleset"
nft list ruleset 2>/dev/null | sed -E 's/counter packets [0-9]+ bytes [0-9]+/counter/'
section "links"
ip -d -o link show | sed -E 's/ +(qlen|numtxqueues|numrxqueues|gso_max_size|gso_max_segs|tso_max_size|tso_max_segs|gro_max_size|gso_ipv4_max_size|gro_ipv4_max_size) [0-9]+//g; s/ state [A-Z]+//; s/ mode DEFAULT//'
section "addresses"
ip -o addr show | sed -E 's/ +valid_lft [^ ]+ preferred_lft [^ ]+//'
section "routes"
ip -4 route show table all
ip -6 route show table all | grep -v -E '^(local|anycast|multicast) ' || true
section "rules"
ip -4 rule show; ip -6 rule show
section "netns"
ls -1 /run/netns 2>/dev/null | grep '^prx-' || true
section "sysctl net."
# Counters and per-boot random values change without anyone touching them.
sysctl -a 2>/dev/null | grep '^net\.' | grep -v -E \
  '^net\.netfilter\.nf_conntrack_count|^net\.ipv4\.tcp_fastopen_key|^net\.core\.netdev_rss_key|\.stable_secret|^net\.ipv6\.conf\..*\.(stable_secret)|^net\.netfilter\.nf_conntrack_expect_count|^net\.ipv4\.route\.gc_|^net\.ipv6\.route\.gc_' | sort
section "bpf programs attached"
if command -v bpftool >/dev/null; then
  bpftool -j link show 2>/dev/null | tr ',' '\n' | grep -E '"(type|prog_id|attach_type|ifindex|netns_ino)"' || true
  bpftool net show 2>/dev/null || true
  bpftool cgroup tree 2>/dev/null || true
fi
section "bpffs pins"
find /sys/fs/bpf -mindepth 1 2>/dev/null | sort
section "mounts"
awk '{print $2, $3}' /proc/self/mounts | grep -v -E '^/run/netns(/| )' | sort
section "proxyrig processes and state"
for p in /proc/[0-9]*/cmdline; do tr '\0' ' ' 2>/dev/null <"$p" | grep -E '^prx-' ; done 2>/dev/null || true
ls -1 /run/proxyrig 2>/dev/null || true
