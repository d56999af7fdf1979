package ebpf

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"proxyrig/datapaths"
)

var (
	_ datapaths.FaultKinds  = (*Datapath)(nil)
	_ datapaths.StateDumper = (*Datapath)(nil)
)

// FailNextSync implements datapaths.FaultInjector: the next Sync writes
// the new backends, slots and members, then fails on a map update the
// kernel rejects, before any frontend changes. The failed Sync rolls the
// maps back (rollback.go), so every frontend forwards as before, and the
// Sync after it is a full one that reads the maps back and converges.
func (d *Datapath) FailNextSync() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.faultNext = true
	return "after writing backends, slots and members, a write to config[1] that the kernel rejects (E2BIG) fails the sync before any frontend changes"
}

// netlinkFaults holds the netlink fault armed for each datapath instance
// (a kind), consumed by the next netlink dump its apply path makes. It
// lives beside the type rather than in it so that fault injection stays in
// this file.
var netlinkFaults sync.Map // *Datapath -> string

// Faults implements datapaths.FaultKinds.
func (d *Datapath) Faults() []string {
	return []string{datapaths.FaultMapFull, datapaths.FaultNetlinkEBUSY, datapaths.FaultNetlinkEINTR, datapaths.FaultDumpInterrupted}
}

// InjectFault implements datapaths.FaultKinds. The netlink kinds hit the
// link dump with which every Sync finds the interfaces to attach to, in
// front of the real netlink call; it runs before any map is written.
func (d *Datapath) InjectFault(kind string) (datapaths.Fault, error) {
	f := datapaths.Fault{Kind: kind}
	switch kind {
	case datapaths.FaultMapFull:
		f.Desc, f.Cause = d.FailNextSync(), "argument list too long" // E2BIG
		return f, nil
	case datapaths.FaultNetlinkEBUSY:
		f.Desc, f.Cause = "the link dump before attaching returns EBUSY", unix.EBUSY.Error()
	case datapaths.FaultNetlinkEINTR:
		f.Desc, f.Cause = "the link dump before attaching returns EINTR", unix.EINTR.Error()
	case datapaths.FaultDumpInterrupted:
		f.Desc, f.Absorbed = "the link dump before attaching returns half the links and ErrDumpInterrupted; the datapath retries it", true
	default:
		return f, fmt.Errorf("%s datapath: no fault kind %q (have %v)", d.name, kind, d.Faults())
	}
	netlinkFaults.Store(d, kind)
	return f, nil
}

// dumpRetries bounds retries of an interrupted netlink dump. Since
// vishvananda/netlink v1.2 a dump that raced a change of the table returns
// what it read along with ErrDumpInterrupted; the result is incomplete and
// must not be used (a link missing from it would be detached).
const dumpRetries = 5

// retryDump runs a netlink dump until it is not interrupted, at most
// dumpRetries times.
func retryDump[T any](dump func() ([]T, error)) ([]T, error) {
	for i := 1; ; i++ {
		out, err := dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
		if i == dumpRetries {
			return nil, fmt.Errorf("netlink dump interrupted %d times in a row: %w", i, err)
		}
	}
}

// listLinks is the link dump of syncAttachments, retried when interrupted,
// with the seam through which InjectFault's netlink kinds fail it.
// Equivalent to: ip link show
func (d *Datapath) listLinks(h *netlink.Handle) ([]netlink.Link, error) {
	return retryDump(func() ([]netlink.Link, error) {
		kind, armed := netlinkFaults.LoadAndDelete(d)
		if !armed {
			return h.LinkList()
		}
		switch kind {
		case datapaths.FaultNetlinkEBUSY:
			return nil, fmt.Errorf("injected fault: %w", unix.EBUSY)
		case datapaths.FaultNetlinkEINTR:
			return nil, fmt.Errorf("injected fault: %w", unix.EINTR)
		}
		links, err := h.LinkList()
		if err != nil {
			return nil, err
		}
		return links[:len(links)/2], netlink.ErrDumpInterrupted
	})
}

// DumpState implements datapaths.StateDumper: the contents of the
// configuration maps, read back from the kernel, with the datapath's own
// numbering (group and backend ids, which depend on the history of syncs)
// resolved: every frontend is printed with its flags and the backends of
// its slots and members, and entries no frontend reaches are printed as
// orphans. Equivalent to: bpftool map dump pinned <pin dir>/<map>, joined.
func (d *Datapath) DumpState(ctx context.Context) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return "# not loaded\n", nil
	}
	have, err := readMaps(&d.objs.lbMaps)
	if err != nil {
		return "", fmt.Errorf("dump BPF maps of netns %s: %w", d.cfg.NS.Name, err)
	}
	return canonicalMaps(have), nil
}

// canonicalMaps prints map contents without ids; see DumpState.
func canonicalMaps(m *desired) string {
	var lines []string
	add := func(format string, a ...any) { lines = append(lines, fmt.Sprintf(format, a...)) }
	c := m.Config
	add("config node_ip=%s cluster_cidr=%s/%s flags=%s", addrFromBE32(c.NodeIp4), addrFromBE32(c.ClusterCidr4), addrFromBE32(c.ClusterMask4), cfgFlagNames(c.Flags))

	backend := func(id uint32) string {
		if be, ok := m.Backends[id]; ok {
			return netip.AddrPortFrom(addrFromBE32(be.Addr), portFromBE16(be.Port)).String() + beFlagNames(be.Flags)
		}
		if be, ok := m.Backends6[id]; ok {
			return netip.AddrPortFrom(addrFromBE128(be.Addr), portFromBE16(be.Port)).String() + beFlagNames(be.Flags)
		}
		return "<missing backend>"
	}
	usedBackends := map[uint32]bool{}
	usedGroups := map[uint32]bool{}
	group := func(id uint32) string {
		usedGroups[id] = true
		var slots, members, ranges []string
		for _, k := range slices.SortedFunc(maps.Keys(m.Slots), lessSlotKey) {
			if k.Id == id {
				usedBackends[m.Slots[k]] = true
				slots = append(slots, fmt.Sprintf("%d:%s", k.Slot, backend(m.Slots[k])))
			}
		}
		for k := range m.Members {
			if k.Id == id {
				usedBackends[k.BackendId] = true
				members = append(members, backend(k.BackendId))
			}
		}
		slices.Sort(members)
		for k := range m.SrcRanges {
			if k.Id == id {
				ranges = append(ranges, fmt.Sprintf("%s/%d", addrFromBE32(k.Addr), k.Prefixlen-32))
			}
		}
		for k := range m.SrcRanges6 {
			if k.Id == id {
				ranges = append(ranges, fmt.Sprintf("%s/%d", addrFromBE128(k.Addr), k.Prefixlen-32))
			}
		}
		slices.Sort(ranges)
		return fmt.Sprintf("slots=[%s] members=[%s] ranges=[%s]", strings.Join(slots, " "), strings.Join(members, " "), strings.Join(ranges, " "))
	}
	for k, v := range m.Services {
		scope := ""
		if k.Scope == scopeInternal {
			scope = " (internal)"
		}
		add("service %s:%d/%s%s count=%d%s%s %s", addrFromBE32(k.Addr), portFromBE16(k.Port), protoName(k.Proto), scope,
			v.Count, svcFlagNames(v.Flags), affinityText(v), group(v.Id))
	}
	for k, v := range m.Services6 {
		scope := ""
		if k.Scope == scopeInternal {
			scope = " (internal)"
		}
		add("service %s/%s%s count=%d%s%s %s", netip.AddrPortFrom(addrFromBE128(k.Addr), portFromBE16(k.Port)), protoName(k.Proto), scope,
			v.Count, svcFlagNames(v.Flags), affinityText(v), group(v.Id))
	}
	// What no frontend reaches is stale state a sync left behind.
	orphanGroups := map[uint32]bool{}
	for k := range m.Slots {
		orphanGroups[k.Id] = !usedGroups[k.Id]
	}
	for k := range m.Members {
		orphanGroups[k.Id] = !usedGroups[k.Id]
	}
	for k := range m.SrcRanges {
		orphanGroups[k.Id] = !usedGroups[k.Id]
	}
	for k := range m.SrcRanges6 {
		orphanGroups[k.Id] = !usedGroups[k.Id]
	}
	for id, orphan := range orphanGroups {
		if orphan {
			add("orphan group %s", group(id))
		}
	}
	for id := range m.Backends {
		if !usedBackends[id] {
			add("orphan backend %s", backend(id))
		}
	}
	for id := range m.Backends6 {
		if !usedBackends[id] {
			add("orphan backend %s", backend(id))
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n") + "\n"
}

// WipeState implements datapaths.StateDumper: it empties the IPv4
// services map behind the datapath's back, so no frontend is translated.
// Equivalent to: bpftool map delete pinned <pin dir>/services key ... (every key)
func (d *Datapath) WipeState(ctx context.Context) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return "", fmt.Errorf("wipe in netns %s: nothing loaded", d.cfg.NS.Name)
	}
	have, err := readAll[lbSvcKey, lbSvcValue](d.objs.Services, "services")
	if err != nil {
		return "", fmt.Errorf("wipe in netns %s: %w", d.cfg.NS.Name, err)
	}
	if err := remove(d.objs.Services, "services", slices.Collect(maps.Keys(have))); err != nil {
		return "", fmt.Errorf("wipe in netns %s: %w", d.cfg.NS.Name, err)
	}
	return fmt.Sprintf("bpftool map delete pinned %s (all %d keys)", mapPinPath(d.pinDir, lbMapServices), len(have)), nil
}
