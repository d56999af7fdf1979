package ipvs

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	libipvs "github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"proxyrig/datapaths"
)

var (
	_ datapaths.FaultInjector = (*Proxier)(nil)
	_ datapaths.FaultKinds    = (*Proxier)(nil)
	_ datapaths.StateDumper   = (*Proxier)(nil)
)

// faultChain is a chain no sync ever declares. A rule jumping to it makes
// iptables-restore reject the whole table it sits in, which is how a real
// restore failure looks: the table's COMMIT never happens.
const faultChain = "KUBE-PROXYRIG-FAULT"

// FailNextSync implements datapaths.FaultInjector. The next Sync gets a
// rule appended to the IPv4 nat KUBE-SERVICES that jumps to faultChain.
// Sync restores iptables before it changes any set entry, VIP or IPVS
// virtual server, and nat is the first table of the payload, so the
// failed Sync leaves the previous state forwarding untouched; the Sync
// after it is full.
func (p *Proxier) FailNextSync() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armHook(func(st *State) {
		fs := st.Family(IPv4)
		for i := range fs.NAT {
			if fs.NAT[i].Name == kubeServicesChain {
				fs.NAT[i].Rules = append(slices.Clone(fs.NAT[i].Rules), "-j "+faultChain)
			}
		}
	})
	return "IPv4 nat " + kubeServicesChain + " jumps to the missing chain " + faultChain + ", so iptables-restore rejects the nat table before any IPVS change"
}

// armHook chains a one-shot fn onto hookRendered; p.mu must be held. Sync
// calls the hook with p.mu held, so the writes are serialised.
func (p *Proxier) armHook(fn func(*State)) {
	prev := p.hookRendered
	p.hookRendered = func(st *State) {
		p.hookRendered = prev
		if prev != nil {
			prev(st)
		}
		fn(st)
	}
}

// Faults implements datapaths.FaultKinds.
func (p *Proxier) Faults() []string {
	return []string{datapaths.FaultRestoreMidway, datapaths.FaultNetlinkEBUSY, datapaths.FaultNetlinkEINTR, datapaths.FaultDumpInterrupted}
}

// InjectFault implements datapaths.FaultKinds. The netlink kinds act on
// the IPVS handle the next Sync opens (moby/ipvs speaks generic netlink):
// EBUSY and EINTR make its first change of the IPVS table fail, the dump
// kind makes its first service dump return half the services and
// ErrDumpInterrupted. The handle is wrapped in front of the real calls;
// every call that is not faulted reaches the kernel.
func (p *Proxier) InjectFault(kind string) (datapaths.Fault, error) {
	f := datapaths.Fault{Kind: kind}
	var errno error
	switch kind {
	case datapaths.FaultRestoreMidway:
		f.Desc, f.Cause = p.FailNextSync(), "restore"
		return f, nil
	case datapaths.FaultNetlinkEBUSY:
		errno = unix.EBUSY
		f.Desc, f.Cause = "the first change of the IPVS table returns EBUSY", unix.EBUSY.Error()
	case datapaths.FaultNetlinkEINTR:
		errno = unix.EINTR
		f.Desc, f.Cause = "the first change of the IPVS table returns EINTR", unix.EINTR.Error()
	case datapaths.FaultDumpInterrupted:
		f.Desc, f.Absorbed = "the IPVS service dump returns half the services and ErrDumpInterrupted; the datapath retries it", true
	default:
		return f, fmt.Errorf("ipvs datapath: no fault kind %q (have %v)", kind, p.Faults())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armHook(func(*State) {
		open := p.newClient
		p.newClient = func() (ipvsClient, error) {
			p.newClient = open
			c, err := open()
			if err != nil {
				return nil, err
			}
			return &faultyClient{ipvsClient: c, errno: errno, interruptDump: errno == nil}, nil
		}
	})
	return f, nil
}

// faultyClient fails one call of the real handle it wraps.
type faultyClient struct {
	ipvsClient
	errno         error // for the first change
	interruptDump bool  // for the first GetServices
}

func (c *faultyClient) change() error {
	if c.errno == nil {
		return nil
	}
	err := fmt.Errorf("injected fault: %w", c.errno)
	c.errno = nil
	return err
}

func (c *faultyClient) GetServices() ([]*libipvs.Service, error) {
	s, err := c.ipvsClient.GetServices()
	if err != nil || !c.interruptDump {
		return s, err
	}
	c.interruptDump = false
	return s[:len(s)/2], netlink.ErrDumpInterrupted
}

func (c *faultyClient) NewService(s *libipvs.Service) error {
	if err := c.change(); err != nil {
		return err
	}
	return c.ipvsClient.NewService(s)
}

func (c *faultyClient) UpdateService(s *libipvs.Service) error {
	if err := c.change(); err != nil {
		return err
	}
	return c.ipvsClient.UpdateService(s)
}

func (c *faultyClient) DelService(s *libipvs.Service) error {
	if err := c.change(); err != nil {
		return err
	}
	return c.ipvsClient.DelService(s)
}

func (c *faultyClient) NewDestination(s *libipvs.Service, d *libipvs.Destination) error {
	if err := c.change(); err != nil {
		return err
	}
	return c.ipvsClient.NewDestination(s, d)
}

func (c *faultyClient) UpdateDestination(s *libipvs.Service, d *libipvs.Destination) error {
	if err := c.change(); err != nil {
		return err
	}
	return c.ipvsClient.UpdateDestination(s, d)
}

func (c *faultyClient) DelDestination(s *libipvs.Service, d *libipvs.Destination) error {
	if err := c.change(); err != nil {
		return err
	}
	return c.ipvsClient.DelDestination(s, d)
}

// dumpRetries bounds retries of an interrupted netlink dump. Since
// vishvananda/netlink v1.2 a dump that raced a change returns what it
// read with ErrDumpInterrupted; that partial result must not be used (a
// virtual server missing from it would be created again, a VIP missing
// from kube-ipvs0 bound twice).
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

var (
	counterRE = regexp.MustCompile(`\s*\[\d+:\d+\]$`)
	initvalRE = regexp.MustCompile(` initval 0x[0-9a-f]+`)
)

// DumpState implements datapaths.StateDumper: the IPVS table (real servers
// at weight 0 that are draining by graceful termination left out: they go
// when their connections end), the KUBE- ipsets with sorted members, the
// addresses of kube-ipvs0, and the nat and filter tables of both families
// without counters; the ipsets' random hash seeds are left out.
// Equivalent to: ipvsadm -Ln; ipset save; ip addr show
// kube-ipvs0; iptables-save -t nat; iptables-save -t filter.
func (p *Proxier) DumpState(ctx context.Context) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ns := p.cfg.NS
	var b strings.Builder
	c, err := p.newClient()
	if err != nil {
		return "", err
	}
	table, err := readTable(c)
	c.Close()
	if err != nil {
		return "", fmt.Errorf("dump IPVS table in netns %s: %w", ns.Name, err)
	}
	for _, key := range slices.Sorted(maps.Keys(table)) {
		kv := table[key]
		fmt.Fprintf(&b, "ipvs %s %s flags=%d timeout=%d\n", key, kv.vs.Scheduler, kv.vs.Flags, kv.vs.Timeout)
		var rs []string
		for k, d := range kv.dests {
			if d.rs.Weight > 0 {
				rs = append(rs, fmt.Sprintf("  -> %s weight=%d", k, d.rs.Weight))
			}
		}
		slices.Sort(rs)
		for _, l := range rs {
			b.WriteString(l + "\n")
		}
	}

	out, err := ns.Run(ctx, nil, "ipset", "save")
	if err != nil {
		return "", fmt.Errorf("dump ipsets in netns %s: %w", ns.Name, err)
	}
	var sets []string
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) >= 2 && strings.HasPrefix(f[1], "KUBE-") {
			// initval is the set's random hash seed, new at every create.
			sets = append(sets, initvalRE.ReplaceAllString(strings.TrimSpace(line), ""))
		}
	}
	slices.Sort(sets)
	b.WriteString(strings.Join(sets, "\n") + "\n")

	h, err := ns.Handle()
	if err != nil {
		return "", err
	}
	defer h.Close()
	if l, err := h.LinkByName(dummyDevice); err == nil {
		addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(l, netlink.FAMILY_ALL) })
		if err != nil {
			return "", fmt.Errorf("dump addresses of %s in netns %s: %w", dummyDevice, ns.Name, err)
		}
		var as []netip.Addr
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok {
				as = append(as, ip.Unmap())
			}
		}
		slices.SortFunc(as, netip.Addr.Compare)
		for _, a := range as {
			fmt.Fprintf(&b, "%s %s\n", dummyDevice, a)
		}
	}

	for _, f := range families {
		for _, table := range []string{"nat", "filter"} {
			out, err := ns.Run(ctx, nil, p.backend.saveCmd(f), "-t", table)
			if err != nil {
				return "", fmt.Errorf("dump %s %s table in netns %s: %w", f, table, ns.Name, err)
			}
			for line := range strings.Lines(string(out)) {
				line = strings.TrimRight(line, "\n")
				if line == "" || strings.HasPrefix(line, "#") {
					continue
				}
				if strings.HasPrefix(line, ":") {
					line = counterRE.ReplaceAllString(line, "")
				}
				b.WriteString(line + "\n")
			}
		}
	}
	return b.String(), nil
}

// WipeState implements datapaths.StateDumper: it clears the IPVS table
// behind the datapath's back. Equivalent to: ipvsadm -C
func (p *Proxier) WipeState(ctx context.Context) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, err := p.newClient()
	if err != nil {
		return "", err
	}
	defer c.Close()
	if err := c.Flush(); err != nil {
		return "", fmt.Errorf("wipe IPVS table in netns %s: %w", p.cfg.NS.Name, err)
	}
	return "ipvsadm -C", nil
}
