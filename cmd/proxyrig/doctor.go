package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"text/tabwriter"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"proxyrig/datapaths"
	"proxyrig/datapaths/ebpf"
	"proxyrig/internal/netnsutil"
	"proxyrig/topologies/vm"
)

// A check is one capability doctor probes. Probes that need kernel state
// run in a scratch namespace that doctor creates and deletes, so the root
// namespace is only ever read.
type check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
	// Consequence says what a failure means for proxyrig.
	Consequence string `json:"consequence,omitempty"`
}

func runDoctor(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return &exitError{code: 2}
	}
	checks, dps := diagnose(ctx)
	if *asJSON {
		return printJSON(map[string]any{"checks": checks, "datapaths": dps})
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tSTATUS\tDETAIL")
	for _, c := range checks {
		status := "ok"
		detail := c.Detail
		if !c.OK {
			status = "MISSING"
			if c.Consequence != "" {
				detail += " — " + c.Consequence
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Name, status, detail)
	}
	fmt.Fprintln(tw, "\nDATAPATH\tRUNS\tDETAIL")
	for _, d := range dps {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", d.Name, d.Where, d.Detail)
	}
	return tw.Flush()
}

type datapathVerdict struct {
	Name   string `json:"name"`
	Where  string `json:"where"` // native, unsupported
	Detail string `json:"detail"`
}

func diagnose(ctx context.Context) ([]check, []datapathVerdict) {
	var out []check
	add := func(name string, err error, okDetail, consequence string) {
		c := check{Name: name, OK: err == nil, Detail: okDetail}
		if err != nil {
			c.Detail = err.Error()
			c.Consequence = consequence
		}
		out = append(out, c)
	}
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	out = append(out, check{Name: "kernel", OK: true, Detail: unix.ByteSliceToString(uts.Release[:])})
	if os.Geteuid() != 0 {
		add("root", errors.New("not running as root"), "", "labs need root to create network namespaces")
		return out, nil
	}
	add("root", nil, "running as root", "")

	scratch := fmt.Sprintf("prx-doctor-%d", os.Getpid())
	ns, err := netnsutil.Create(scratch)
	if err != nil {
		add("network namespaces", err, "", "no lab can be built")
		return out, nil
	}
	defer netnsutil.Delete(scratch)
	add("network namespaces", nil, "can create and enter namespaces", "")

	for _, tool := range []struct{ bin, what string }{
		{"iptables-legacy-restore", "iptables datapath with --iptables-backend legacy"},
		{"iptables-nft-restore", "iptables datapath with --iptables-backend nft"},
		{"nft", "nftables datapath and nft inspection"},
	} {
		_, err := exec.LookPath(tool.bin)
		add(tool.bin, err, "installed", "needed by the "+tool.what+"; run ci/install-deps.sh")
	}
	// xt_statistic, xt_recent and conntrack are what kube-proxy's iptables
	// layout leans on; load one rule of each into the scratch namespace.
	if _, err := exec.LookPath("iptables-legacy-restore"); err == nil {
		rules := "*nat\n:PRX-CHECK - [0:0]\n" +
			"-A PRX-CHECK -m statistic --mode random --probability 0.5 -j RETURN\n" +
			"-A PRX-CHECK -m recent --name prxcheck --rcheck --seconds 10 --reap -j RETURN\n" +
			"-A PRX-CHECK -m conntrack --ctstate NEW -m addrtype --dst-type LOCAL -j RETURN\n" +
			"-A PRX-CHECK -j MASQUERADE --random-fully\nCOMMIT\n"
		_, err := ns.Run(ctx, []byte(rules), "iptables-legacy-restore", "-w")
		add("netfilter matches", err, "statistic, recent, conntrack, addrtype, MASQUERADE --random-fully", "kube-proxy's iptables layout cannot be loaded")
	}
	add("conntrack netlink", ns.Do(func() error {
		_, err := netlink.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
		return err
	}), "can list and delete conntrack entries", "stale UDP conntrack entries cannot be flushed")
	add("SCTP sockets", sctpSupported(), "kernel has SCTP", "SCTP specs need the VM runner (kernel lacks SCTP)")
	add("IPVS", ns.Do(func() error {
		_, err := netlink.GenlFamilyGet("IPVS")
		if err != nil {
			return errors.New("kernel lacks IPVS (no IPVS generic netlink family)")
		}
		return nil
	}), "kernel has IPVS", "the IPVS datapath must run inside the VM runner")
	add("dummy interfaces", ns.Do(func() error {
		h, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		err = h.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "prxdummy"}})
		if err != nil {
			return fmt.Errorf("kernel lacks dummy interfaces: %v", err)
		}
		return nil
	}), "kernel has dummy interfaces", "IPVS' kube-ipvs0 layout needs the VM")
	// eBPF: the datapaths' own Check (below) loads their programs; these
	// say how they would attach here, and whether bpftool can show them.
	if hooks, err := ebpf.ProbeHooks(ns); err == nil {
		how := "tcx links (Linux 6.6+)"
		if hooks.TC != "tcx" {
			how = "clsact qdisc + bpf filters (kernel lacks tcx: the fallback)"
		}
		add("eBPF hooks", nil, fmt.Sprintf("tc programs attach as %s; socket hooks on cgroup v2 %s", how, hooks.Cgroup), "")
	} else {
		add("eBPF hooks", err, "", "the ebpf and ebpf-socket datapaths cannot attach their programs")
	}
	_, err = exec.LookPath("bpftool")
	add("bpftool", err, "installed", "BPF maps of the ebpf datapaths cannot be inspected (bpftool map dump); run ci/install-deps.sh")
	if kernels, err := vm.Kernels(); err == nil && vm.Check() == nil {
		add("VM runner", nil, fmt.Sprintf("qemu (TCG) with kernels %v: IPVS, SCTP, dummy and netem run there, emulated", kernels), "")
	} else {
		if err == nil {
			err = vm.Check()
		}
		add("VM runner", err, "", "IPVS and SCTP cannot run on this machine at all; run ci/install-deps.sh")
	}

	var dps []datapathVerdict
	for _, name := range datapaths.Names() {
		reg, _ := datapaths.Lookup(name)
		v := datapathVerdict{Name: name, Where: "native", Detail: reg.Description}
		if reg.Check != nil {
			if err := reg.Check(ctx, datapaths.Config{}); err != nil {
				v.Where = "unsupported"
				v.Detail = err.Error()
			}
		}
		if why := needsVM(ctx, name, ""); name == "ipvs" && v.Where == "unsupported" && why != "" {
			v.Where = "in the VM"
			v.Detail = why + ": proxyrig conformance --datapath ipvs runs it in the VM runner by itself; 'proxyrig lab up --datapath ipvs' explains how to run a lab there"
		}
		dps = append(dps, v)
	}
	return out, dps
}

func sctpSupported() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP)
	if err != nil {
		if errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.ESOCKTNOSUPPORT) {
			return errors.New("kernel lacks SCTP sockets")
		}
		return err
	}
	unix.Close(fd)
	return nil
}
