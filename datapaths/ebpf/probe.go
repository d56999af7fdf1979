package ebpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"

	"proxyrig/internal/netnsutil"
)

// HookReport says how this kernel would carry the datapath's programs, for
// `proxyrig doctor`: which tc attachment a Sync would use and where the
// socket hooks would go.
type HookReport struct {
	// TC is "tcx" (Linux 6.6+) or "tc" (a clsact qdisc with a
	// direct-action filter, the fallback).
	TC string
	// Cgroup is the cgroup v2 root the socket hooks attach to.
	Cgroup string
}

// ProbeHooks finds out which tc attachment the kernel offers by attaching
// a two-instruction program (return TC_ACT_OK) with tcx to the loopback
// device of ns, a scratch namespace the caller owns, and detaching it at
// once; and finds the cgroup v2 root. Nothing outside ns is touched. The
// error names what is missing for the eBPF datapaths to run at all.
func ProbeHooks(ns netnsutil.NS) (HookReport, error) {
	var r HookReport
	if err := rlimit.RemoveMemlock(); err != nil {
		return r, fmt.Errorf("lift RLIMIT_MEMLOCK for BPF: %w", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.SchedCLS,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		return r, fmt.Errorf("load a tc program: %w", err)
	}
	defer prog.Close()
	h, err := ns.Handle()
	if err != nil {
		return r, err
	}
	lo, err := h.LinkByName("lo")
	h.Close()
	if err != nil {
		return r, fmt.Errorf("find lo in %s: %w", ns.Name, err)
	}
	// tcx resolves the ifindex in the calling thread's namespace.
	err = ns.Do(func() error {
		l, err := link.AttachTCX(link.TCXOptions{Interface: lo.Attrs().Index, Program: prog, Attach: ebpf.AttachTCXIngress})
		switch {
		case err == nil:
			r.TC = attachTCX
			return l.Close()
		case errors.Is(err, ebpf.ErrNotSupported):
			r.TC = attachTC
			return nil
		default:
			return fmt.Errorf("attach a tcx program to lo in %s: %w", ns.Name, err)
		}
	})
	if err != nil {
		return r, err
	}
	if r.Cgroup, err = cgroup2Root(); err != nil {
		return r, fmt.Errorf("find cgroup v2 for the socket hooks: %w", err)
	}
	return r, nil
}
