package ebpf

// The BPF objects are compiled from bpf/lb.c and bpf/reap.c and committed
// with their Go bindings (lb_bpfel.go, lb_bpfel.o, reap_bpfel.go,
// reap_bpfel.o), so building proxyrig needs no clang.
// Regenerate with `go generate ./datapaths/ebpf/...` (clang, llvm-strip,
// libbpf-dev and linux-libc-dev from Debian). The flags are fixed so the
// output is byte-for-byte reproducible; bpf2go maps the source directory
// out of the debug info and strips DWARF (BTF stays, for bpftool).
//
// Only bpfel is built: proxyrig's labs run on amd64.
//
//go:generate go tool bpf2go -cc clang -strip llvm-strip -cflags "-O2 -g -Wall -Werror -Ibpf/include" -target bpfel -type svc_key -type svc_value -type slot_key -type backend -type member_key -type ct_key -type ct_entry -type affinity_key -type affinity_value -type src_range_key -type lb_config -type netns_info -type sock_revnat_key -type sock_revnat_value -type sock_flow_key -type sock_flow_value -type svc6_key -type backend6 -type src_range6_key lb bpf/lb.c
//go:generate go tool bpf2go -cc clang -strip llvm-strip -cflags "-O2 -g -Wall -Werror -Ibpf/include" -target bpfel -type reap_key reap bpf/reap.c
