package ebpf

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"proxyrig/internal/netnsutil"
)

// This file holds the kernel side that is not map contents: bpffs pins,
// tc attachments (tcx, or clsact where tcx is missing), cgroup socket
// hooks, and network namespace cookies.

// BPFFSRoot is where BPF objects are pinned. Each datapath instance pins
// under BPFFSRoot/<node netns name>/, and every lab netns name starts with
// "prx-", so CleanupPins("prx-") finds whatever a crashed run left.
const BPFFSRoot = "/sys/fs/bpf"

const bpffsMagic = 0xcafe4a11

// ensureBPFFS mounts bpffs at BPFFSRoot when nothing is mounted there, as
// systemd does at boot on most distributions (this VM does not).
// Equivalent to: mount -t bpf bpf /sys/fs/bpf
func ensureBPFFS() error {
	var st unix.Statfs_t
	if err := unix.Statfs(BPFFSRoot, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", BPFFSRoot, err)
	}
	if uint32(st.Type) == bpffsMagic {
		return nil
	}
	if err := unix.Mount("bpf", BPFFSRoot, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs at %s: %w", BPFFSRoot, err)
	}
	return nil
}

func isBPFFS(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && uint32(st.Type) == bpffsMagic
}

// CleanupPins removes every pin directory under BPFFSRoot whose name
// starts with prefix ("prx-" for all labs, "prx-<lab>-" for one). Removing
// a pinned link drops the last reference to it, which detaches its program
// (tcx or cgroup); removing pinned maps and programs frees them once no
// link uses them. It returns the directories it removed. A BPFFSRoot that
// is not a bpffs mount holds no pins, and is not an error.
// Equivalent to: rm -r /sys/fs/bpf/<prefix>*
func CleanupPins(prefix string) ([]string, error) {
	if !strings.HasPrefix(prefix, "prx-") {
		return nil, fmt.Errorf("cleanup BPF pins: prefix %q does not start with prx-", prefix)
	}
	if !isBPFFS(BPFFSRoot) {
		return nil, nil
	}
	entries, err := os.ReadDir(BPFFSRoot)
	if err != nil {
		return nil, fmt.Errorf("cleanup BPF pins: %w", err)
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		p := filepath.Join(BPFFSRoot, e.Name())
		detachPinnedLinks(p)
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, fmt.Errorf("remove BPF pins %s: %w", p, err))
			continue
		}
		removed = append(removed, p)
	}
	return removed, errors.Join(errs...)
}

// detachPinnedLinks detaches every link pinned in dir, even if some
// process still holds a descriptor of it (BPF_LINK_DETACH, Linux 5.9+).
// Errors are ignored: a link whose device is gone is already detached,
// and removing the pin is what matters.
func detachPinnedLinks(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "link_") {
			continue
		}
		l, err := link.LoadPinnedLink(filepath.Join(dir, e.Name()), nil)
		if err != nil {
			continue
		}
		_ = l.Detach()
		_ = l.Close()
	}
}

// pinName is a bpffs file name for an object; interface names are at
// most 15 bytes of [a-zA-Z0-9._-] in practice, and '/' cannot occur.
func pinName(kind, name string) string { return kind + "_" + name }

// attachment is one program on one interface hook.
type attachment struct {
	ifname  string
	ifindex int
	egress  bool
	prog    string // program name, for messages
	// Exactly one of these is set.
	link   link.Link          // tcx
	filter *netlink.BpfFilter // clsact fallback
	pin    string
}

func (a *attachment) key() string {
	dir := "ingress"
	if a.egress {
		dir = "egress"
	}
	return fmt.Sprintf("%s-%d-%s", a.ifname, a.ifindex, dir)
}

// tcHooks lists which program goes on which hook of which interface:
// the uplink and every other veth (a pod's, or a client pod's) get
// from_dev at ingress and to_dev at egress. The
// loopback device gets from_host at ingress only, for localhost NodePorts.
func tcHooks(links []netlink.Link, uplink string) []attachment {
	var out []attachment
	for _, l := range links {
		a := l.Attrs()
		switch {
		case a.Name == "lo":
			out = append(out, attachment{ifname: a.Name, ifindex: a.Index, prog: lbProgFromHost})
			continue
		case a.Name != uplink && l.Type() != "veth":
			continue
		}
		out = append(out,
			attachment{ifname: a.Name, ifindex: a.Index, prog: lbProgFromDev},
			attachment{ifname: a.Name, ifindex: a.Index, egress: true, prog: lbProgToDev},
		)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key() < out[j].key() })
	return out
}

func (d *Datapath) program(name string) *ebpf.Program {
	switch name {
	case lbProgFromDev:
		return d.objs.FromDev
	case lbProgFromHost:
		return d.objs.FromHost
	case lbProgToDev:
		return d.objs.ToDev
	}
	return nil
}

// syncAttachments attaches the programs to every interface of the node
// that needs them and detaches from interfaces that went away (a pod
// deleted by the lab). It must run after new pods are wired and before
// the maps point at them, which is the lab's Apply order.
func (d *Datapath) syncAttachments() (int, error) {
	h, err := d.cfg.NS.Handle()
	if err != nil {
		return 0, err
	}
	defer h.Close()
	links, err := d.listLinks(h)
	if err != nil {
		return 0, fmt.Errorf("list links in netns %s: %w", d.cfg.NS.Name, err)
	}
	want := tcHooks(links, d.uplink)
	wantKeys := map[string]bool{}
	for _, a := range want {
		wantKeys[a.key()] = true
	}
	var errs []error
	// Detach what is no longer wanted, and forget tcx links the kernel
	// already detached (their device went away).
	for k, a := range d.attached {
		if wantKeys[k] && a.alive() {
			continue
		}
		if err := d.detach(h, a); err != nil {
			errs = append(errs, err)
		}
		delete(d.attached, k)
	}
	var missing []attachment
	for _, a := range want {
		if _, ok := d.attached[a.key()]; !ok {
			missing = append(missing, a)
		}
	}
	if len(missing) == 0 {
		return 0, errors.Join(errs...)
	}
	// tcx attaches by ifindex, which the kernel resolves in the calling
	// thread's network namespace, so attach from inside the node's.
	err = d.cfg.NS.Do(func() error {
		for _, a := range missing {
			a := a
			if err := d.attach(h, &a); err != nil {
				return err
			}
			d.attached[a.key()] = &a
		}
		return nil
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("in netns %s: %w", d.cfg.NS.Name, err))
	}
	return len(missing), errors.Join(errs...)
}

// alive reports whether a tcx link is still attached; the kernel detaches
// it when its device is deleted.
func (a *attachment) alive() bool {
	if a.link == nil {
		return true
	}
	info, err := a.link.Info()
	if err != nil {
		return false
	}
	tcx := info.TCX()
	return tcx != nil && tcx.Ifindex != 0
}

// attach puts one program on one hook: a tcx link (Linux 6.6+) pinned
// under the pin directory, or, where tcx is missing, a clsact qdisc with
// a direct-action bpf filter. Equivalent to:
// bpftool net attach tcx_ingress pinned <prog> dev <ifname>
func (d *Datapath) attach(h *netlink.Handle, a *attachment) error {
	prog := d.program(a.prog)
	at := ebpf.AttachTCXIngress
	if a.egress {
		at = ebpf.AttachTCXEgress
	}
	if d.attachMode != attachTC {
		l, err := link.AttachTCX(link.TCXOptions{Interface: a.ifindex, Program: prog, Attach: at})
		switch {
		case err == nil:
			a.link = l
			a.pin = filepath.Join(d.pinDir, pinName("link", a.key()))
			if err := l.Pin(a.pin); err != nil {
				_ = l.Close()
				return fmt.Errorf("pin tcx link of %s on %s: %w", a.prog, a.ifname, err)
			}
			d.attachMode = attachTCX
			return nil
		case errors.Is(err, ebpf.ErrNotSupported):
			// Kernels before 6.6: fall back to clsact.
			d.attachMode = attachTC
		default:
			return fmt.Errorf("attach %s to %s (tcx): %w", a.prog, a.ifname, err)
		}
	}
	return d.attachClsact(h, a, prog)
}

// attachClsact is the pre-tcx way: ensure a clsact qdisc and add a bpf
// filter. Equivalent to:
// tc qdisc add dev <if> clsact; tc filter add dev <if> ingress bpf da fd <prog>
func (d *Datapath) attachClsact(h *netlink.Handle, a *attachment, prog *ebpf.Program) error {
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: a.ifindex,
			Handle:    netlink.MakeHandle(0xffff, 0),
			Parent:    netlink.HANDLE_CLSACT,
		},
		QdiscType: "clsact",
	}
	if err := h.QdiscReplace(qdisc); err != nil {
		return fmt.Errorf("add clsact qdisc to %s: %w", a.ifname, err)
	}
	parent := uint32(netlink.HANDLE_MIN_INGRESS)
	if a.egress {
		parent = netlink.HANDLE_MIN_EGRESS
	}
	f := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: a.ifindex,
			Parent:    parent,
			Handle:    1,
			Priority:  1,
			Protocol:  unix.ETH_P_ALL,
		},
		Fd:           prog.FD(),
		Name:         "prx-" + a.prog,
		DirectAction: true,
	}
	if err := h.FilterReplace(f); err != nil {
		return fmt.Errorf("add bpf filter %s to %s: %w", a.prog, a.ifname, err)
	}
	a.filter = f
	return nil
}

// detach removes one attachment: closing and unpinning a tcx link
// detaches it; a clsact filter is deleted (a missing device took it
// already).
func (d *Datapath) detach(h *netlink.Handle, a *attachment) error {
	if a.link != nil {
		var errs []error
		// Detach first: another file descriptor of the same link (an
		// earlier instance in this process that was dropped without
		// Cleanup) would otherwise keep the program attached.
		if err := a.link.Detach(); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOLINK) {
			errs = append(errs, fmt.Errorf("detach tcx link on %s: %w", a.ifname, err))
		}
		if err := a.link.Unpin(); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("unpin tcx link %s: %w", a.pin, err))
		}
		if err := a.link.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close tcx link on %s: %w", a.ifname, err))
		}
		return errors.Join(errs...)
	}
	if a.filter != nil && h != nil {
		if err := h.FilterDel(a.filter); err != nil && !errors.Is(err, unix.ENODEV) && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("delete bpf filter %s on %s: %w", a.prog, a.ifname, err)
		}
	}
	return nil
}

// cgroupHooks are the socket programs and where they attach.
var cgroupHooks = []struct {
	prog string
	at   ebpf.AttachType
}{
	{lbProgSockConnect4, ebpf.AttachCGroupInet4Connect},
	{lbProgSockSendmsg4, ebpf.AttachCGroupUDP4Sendmsg},
	{lbProgSockRecvmsg4, ebpf.AttachCGroupUDP4Recvmsg},
	{lbProgSockGetpeername4, ebpf.AttachCgroupInet4GetPeername},
	{lbProgSockConnect6, ebpf.AttachCGroupInet6Connect},
	{lbProgSockSendmsg6, ebpf.AttachCGroupUDP6Sendmsg},
	{lbProgSockRecvmsg6, ebpf.AttachCGroupUDP6Recvmsg},
	{lbProgSockGetpeername6, ebpf.AttachCgroupInet6GetPeername},
}

func (d *Datapath) cgroupProgram(name string) *ebpf.Program {
	switch name {
	case lbProgSockConnect4:
		return d.objs.SockConnect4
	case lbProgSockSendmsg4:
		return d.objs.SockSendmsg4
	case lbProgSockRecvmsg4:
		return d.objs.SockRecvmsg4
	case lbProgSockGetpeername4:
		return d.objs.SockGetpeername4
	case lbProgSockConnect6:
		return d.objs.SockConnect6
	case lbProgSockSendmsg6:
		return d.objs.SockSendmsg6
	case lbProgSockRecvmsg6:
		return d.objs.SockRecvmsg6
	case lbProgSockGetpeername6:
		return d.objs.SockGetpeername6
	}
	return nil
}

// cgroup2Root finds the cgroup v2 mount. The hooks go on its root by
// default: lab namespaces are entered by threads of whatever process
// runs the lab (and `ip netns exec` shells), which may sit in any cgroup,
// and the programs act only on sockets of the namespaces in
// netns_cookies, so a hook on the root touches nothing else.
func cgroup2Root() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		// ... <mount point> <options> - <fstype> <source> <super options>
		fields := strings.Fields(s.Text())
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && fields[i+1] == "cgroup2" && len(fields) > 4 {
				return fields[4], nil
			}
		}
	}
	if err := s.Err(); err != nil {
		return "", err
	}
	return "", errors.New("no cgroup2 filesystem is mounted")
}

// attachCgroup attaches the socket hooks and pins their links.
// Equivalent to: bpftool cgroup attach <cgroup> connect4 pinned <prog>
func (d *Datapath) attachCgroup() error {
	path := d.cgroupPath
	if path == "" {
		p, err := cgroup2Root()
		if err != nil {
			return fmt.Errorf("find cgroup v2 for socket hooks: %w", err)
		}
		path = p
	}
	for _, hk := range cgroupHooks {
		l, err := link.AttachCgroup(link.CgroupOptions{Path: path, Attach: hk.at, Program: d.cgroupProgram(hk.prog)})
		if err != nil {
			return fmt.Errorf("attach %s to cgroup %s: %w", hk.prog, path, err)
		}
		pin := filepath.Join(d.pinDir, pinName("link", "cgroup-"+hk.prog))
		if err := l.Pin(pin); err != nil {
			_ = l.Close()
			return fmt.Errorf("pin cgroup link %s: %w", pin, err)
		}
		d.cgroupLinks = append(d.cgroupLinks, l)
	}
	d.cgroupUsed = path
	return nil
}

// netnsCookie returns the cookie of a network namespace: the value
// bpf_get_netns_cookie() returns for its sockets (SO_NETNS_COOKIE,
// Linux 5.14+).
func netnsCookie(ns netnsutil.NS) (uint64, error) {
	var cookie uint64
	err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		v, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		if err != nil {
			return fmt.Errorf("getsockopt SO_NETNS_COOKIE: %w", err)
		}
		cookie = v
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("netns cookie of %s: %w", ns.Name, err)
	}
	return cookie, nil
}

// podNetns is a pod namespace of this node, found through its veth.
type podNetns struct {
	name   string
	cookie uint64
	addr4  netip.Addr
	addr6  netip.Addr
}

// podNamespaces finds the namespaces at the far end of the node's pod
// veths: each veth's IFLA_LINK_NETNSID is matched against the ids the node
// namespace assigns to the named namespaces under /run/netns. It returns
// them keyed by veth name. cache (veth name -> pod) avoids repeating the
// scan for veths already known.
func (d *Datapath) podNamespaces(cache map[string]podNetns) (map[string]podNetns, error) {
	h, err := d.cfg.NS.Handle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	links, err := retryDump(h.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links in netns %s: %w", d.cfg.NS.Name, err)
	}
	out := map[string]podNetns{}
	wantIDs := map[int]netlink.Link{}
	for _, l := range links {
		if l.Type() != "veth" || l.Attrs().Name == d.uplink {
			continue
		}
		if p, ok := cache[l.Attrs().Name]; ok {
			out[l.Attrs().Name] = p
			continue
		}
		wantIDs[l.Attrs().NetNsID] = l
	}
	if len(wantIDs) == 0 {
		return out, nil
	}
	names, err := netnsutil.List("")
	if err != nil {
		return nil, fmt.Errorf("list network namespaces: %w", err)
	}
	routes, err := retryDump(func() ([]netlink.Route, error) { return h.RouteList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("list routes in netns %s: %w", d.cfg.NS.Name, err)
	}
	for _, name := range names {
		if name == d.cfg.NS.Name {
			continue
		}
		ns := netnsutil.NS{Name: name}
		fd, err := ns.Fd()
		if err != nil {
			continue // deleted meanwhile
		}
		id, err := h.GetNetNsIdByFd(int(fd))
		_ = fd.Close()
		if err != nil || id < 0 {
			continue
		}
		l, ok := wantIDs[id]
		if !ok {
			continue
		}
		cookie, err := netnsCookie(ns)
		if err != nil {
			return nil, err
		}
		p := podNetns{name: name, cookie: cookie}
		// The node routes each pod IP to the pod's veth.
		for _, r := range routes {
			if r.LinkIndex != l.Attrs().Index || r.Dst == nil {
				continue
			}
			a, ok := netip.AddrFromSlice(r.Dst.IP)
			switch {
			case !ok:
			case is4(a) && !p.addr4.IsValid():
				p.addr4 = a.Unmap()
			case !is4(a) && !p.addr6.IsValid() && !a.IsLinkLocalUnicast():
				p.addr6 = a
			}
		}
		out[l.Attrs().Name] = p
	}
	return out, nil
}

// adoptLinks takes over the links an earlier instance pinned: each one
// that still has a hook is switched to this instance's program for that
// hook with one BPF_LINK_UPDATE (no moment without a program), the others
// are removed.
func (d *Datapath) adoptLinks() error {
	entries, err := os.ReadDir(d.pinDir)
	if err != nil {
		return fmt.Errorf("read pin directory: %w", err)
	}
	var h *netlink.Handle
	if hh, err := d.cfg.NS.Handle(); err == nil {
		h = hh
		defer h.Close()
	}
	drop := func(path string, l link.Link) {
		_ = os.Remove(path)
		if l != nil {
			_ = l.Close()
		}
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "link_") {
			continue
		}
		path := filepath.Join(d.pinDir, e.Name())
		l, err := link.LoadPinnedLink(path, nil)
		if err != nil {
			drop(path, nil)
			continue
		}
		info, err := l.Info()
		if err != nil {
			drop(path, l)
			continue
		}
		switch info.Type {
		case link.TCXType:
			a, ok := d.adoptedAttachment(h, info.TCX())
			if !ok {
				drop(path, l)
				continue
			}
			if err := l.Update(d.program(a.prog)); err != nil {
				drop(path, l)
				return fmt.Errorf("switch tcx link on %s to the new %s: %w", a.ifname, a.prog, err)
			}
			a.link, a.pin = l, path
			d.attached[a.key()] = a
			d.attachMode = attachTCX
		case link.CgroupType:
			cg := info.Cgroup()
			var prog string
			for _, hk := range cgroupHooks {
				if cg != nil && ebpf.AttachType(cg.AttachType) == hk.at {
					prog = hk.prog
				}
			}
			if prog == "" || d.noCgroup {
				drop(path, l)
				continue
			}
			if err := l.Update(d.cgroupProgram(prog)); err != nil {
				drop(path, l)
				return fmt.Errorf("switch cgroup link to the new %s: %w", prog, err)
			}
			d.cgroupLinks = append(d.cgroupLinks, l)
			d.cgroupUsed = fmt.Sprintf("cgroup id %d", cg.CgroupId)
		default:
			drop(path, l)
		}
	}
	if len(d.cgroupLinks) != 0 && len(d.cgroupLinks) != len(cgroupHooks) {
		// A partial set is no use: start the socket hooks afresh.
		for _, l := range d.cgroupLinks {
			_ = l.Unpin()
			_ = l.Close()
		}
		d.cgroupLinks = nil
		d.cgroupUsed = ""
	}
	return nil
}

// adoptedAttachment describes the hook of an adopted tcx link, or reports
// false when its device is gone or no longer wants a program.
func (d *Datapath) adoptedAttachment(h *netlink.Handle, tcx *link.TCXInfo) (*attachment, bool) {
	if h == nil || tcx == nil || tcx.Ifindex == 0 {
		return nil, false
	}
	l, err := h.LinkByIndex(int(tcx.Ifindex))
	if err != nil {
		return nil, false
	}
	egress := ebpf.AttachType(tcx.AttachType) == ebpf.AttachTCXEgress
	for _, a := range tcHooks([]netlink.Link{l}, d.uplink) {
		if a.egress == egress {
			return &a, true
		}
	}
	return nil, false
}
