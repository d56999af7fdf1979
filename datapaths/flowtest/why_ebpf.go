package flowtest

// Where the eBPF datapaths (datapaths/ebpf: ebpf, ebpf-socket) cannot do
// what kube-proxy does, the flow tables expect their own behaviour
// (.On("ebpf", ...)) with one of these reasons beside it. They are gaps of
// proxyrig's eBPF programs, not behaviours kube-proxy documents; each is
// listed under "Not done yet" in datapaths/ebpf/README.md.
const (
	// whyEBPFNoSCTP: the programs parse and translate TCP and UDP only.
	// SCTP's CRC32c checksum covers the ports, so any port rewrite (a
	// targetPort, SNAT's source port) needs the checksum recomputed over
	// the whole packet, which no BPF helper does; the render step skips
	// SCTP Service ports with a warning, and SCTP traffic to a ClusterIP
	// passes untranslated to normal routing, where nothing answers it.
	whyEBPFNoSCTP = "proxyrig eBPF datapath: SCTP is not translated (TCP and UDP only; a port rewrite would need SCTP's CRC32c recomputed over the packet): " +
		"SCTP Service ports are skipped with a warning and SCTP traffic to them passes untranslated (datapaths/ebpf/README.md, \"Not done yet\")"
)
