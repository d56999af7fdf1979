#!/usr/bin/env bash
# Installs every Debian package proxyrig uses. Idempotent: when everything is
# already installed it only checks, touches nothing and takes a second, so
# `make test` and `make report` can call it every time.
#
# Why each package is here:
#   iptables        iptables-{legacy,nft}-restore/-save: the iptables datapath
#   nftables        nft: doctor, inspection, the nftables datapath
#   conntrack       conntrack -L: people inspecting a lab; kernel-state checks
#   iproute2        ip netns exec …: how a person pokes at a lab (README)
#   netcat-openbsd  nc: the README's walk-through talks to Services with it
#   kmod            lsmod: SCTP checks that no module was loaded
#   procps          pgrep/ps: leftover-process checks
#   qemu-system-x86 the VM runner (proxyrig vm): IPVS, SCTP, dummy and netem
#                   need a kernel that has them; this host's cannot load modules
#   linux-image-amd64  Debian's kernel that the VM boots (it has those modules)
#   busybox-static  the VM's initramfs
#   xz-utils        unpacks the VM kernel once, so every boot skips decompression
#   cpio            lets the VM runner's tests check its initramfs with a second tool
#   chromium        make test renders a real report in headless Chromium
#   clang llvm libbpf-dev linux-libc-dev
#                   make generate compiles the eBPF datapath's C (bpf2go);
#                   make test regenerates and fails on any difference
#   bpftool         people inspecting an eBPF lab: bpftool map dump
#   ipset           the IPVS datapath's sets (kube-proxy's KUBE-CLUSTER-IP …)
#   ipvsadm         people inspecting an IPVS lab (in the VM): ipvsadm -Ln
set -euo pipefail

packages=(iptables nftables conntrack iproute2 netcat-openbsd kmod procps
  qemu-system-x86 linux-image-amd64 busybox-static xz-utils cpio chromium
  clang llvm libbpf-dev linux-libc-dev bpftool ipset ipvsadm)

if [ "$(id -u)" -ne 0 ]; then
  echo "ci/install-deps.sh: must run as root (it installs Debian packages)" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "ci/install-deps.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "ci/install-deps.sh: all ${#packages[@]} packages present"
fi

# Go is not a Debian package here (Debian's is too old for go.mod's version);
# the machine image brings it. Say so clearly when it is missing.
if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
  echo "ci/install-deps.sh: Go is not installed (expected /usr/local/go/bin/go, version per go.mod)" >&2
  exit 1
fi
