package ipvs

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	libipvs "github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"proxyrig/datapaths"
	"proxyrig/internal/netnsutil"
	"proxyrig/model"
	"proxyrig/topologies/vm"
)

// Privileged tests. This host's kernel has no IPVS, so here they skip with
// "kernel lacks IPVS" (even under CI=true: the feature is truly absent,
// and TestInVM runs them inside the VM runner, whose kernel has it).
// Inside the VM, a missing feature is a failure.

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	const reason = "needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to create network namespaces and program IPVS"
	if os.Getenv("CI") == "true" {
		t.Fatal(reason + "; CI=true, so this must not be skipped")
	}
	t.Skip(reason)
}

// requireIPVS skips on a kernel without IPVS, unless this is the VM
// runner's guest, which must have it.
func requireIPVS(t *testing.T) {
	t.Helper()
	requireRoot(t)
	if err := checkIPVS(); err != nil {
		if vm.Emulated() {
			t.Fatalf("%v inside the VM runner, whose kernel should have it (was ip_vs loaded?)", err)
		}
		t.Skip("kernel lacks IPVS")
	}
}

func randomHex(t *testing.T) string {
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(rnd[:])
}

func newTestNS(t *testing.T, name string) netnsutil.NS {
	t.Helper()
	ns, err := netnsutil.Create(name)
	if err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := netnsutil.Delete(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	return ns
}

// testbed is a node namespace wired by a veth to an endpoint namespace
// that holds every endpoint address of the integration fixtures, each
// with a TCP server that answers "<its address>\n" and then echoes lines.
type testbed struct {
	node, pods netnsutil.NS
	// nodeAddrs are the node's addresses on the veth: what IPVS mode uses
	// for NodePorts.
	nodeAddrs []netip.Addr
}

var (
	bedNode4 = netip.MustParsePrefix("198.18.64.1/24")
	bedNode6 = netip.MustParsePrefix("2001:db8:64::1/64")
	bedPods  = []string{"198.18.64.10", "198.18.64.11", "198.18.64.12", "198.18.64.53", "2001:db8:64::10", "2001:db8:64::11"}
)

func newTestbed(t *testing.T) *testbed {
	t.Helper()
	r := randomHex(t)
	tb := &testbed{node: newTestNS(t, "prx-t"+r+"-node"), pods: newTestNS(t, "prx-t"+r+"-pods"),
		nodeAddrs: []netip.Addr{bedNode4.Addr(), bedNode6.Addr()}}
	nh, err := tb.node.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	ph, err := tb.pods.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer ph.Close()
	podFd, err := tb.pods.Fd()
	if err != nil {
		t.Fatal(err)
	}
	defer podFd.Close()

	up := func(h *netlink.Handle, name string) netlink.Link {
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		return l
	}
	// DAD would keep the IPv6 addresses tentative for a second.
	addAddr := func(h *netlink.Handle, l netlink.Link, p netip.Prefix) {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}, Flags: unix.IFA_F_NODAD}
		if err := h.AddrAdd(l, a); err != nil {
			t.Fatalf("add %s: %v", p, err)
		}
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "prxbed0"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(podFd))}
	if err := nh.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	up(nh, "lo")
	nl := up(nh, "prxbed0")
	addAddr(nh, nl, bedNode4)
	addAddr(nh, nl, bedNode6)
	up(ph, "lo")
	pl := up(ph, "eth0")
	for _, s := range bedPods {
		a := netip.MustParseAddr(s)
		bits := 24
		if a.Is6() {
			bits = 64
		}
		addAddr(ph, pl, netip.PrefixFrom(a, bits))
	}
	for _, gw := range []netip.Addr{bedNode4.Addr(), bedNode6.Addr()} {
		if err := ph.RouteAdd(&netlink.Route{LinkIndex: pl.Attrs().Index, Gw: gw.AsSlice()}); err != nil {
			t.Fatalf("default route via %s: %v", gw, err)
		}
	}
	for _, s := range bedPods {
		tb.serve(t, netip.AddrPortFrom(netip.MustParseAddr(s), 8080))
	}
	tb.serveUDP(t, netip.MustParseAddrPort("198.18.64.53:5353"))
	return tb
}

// serveUDP answers every datagram with "<its address>\n" until the test
// ends.
func (tb *testbed) serveUDP(t *testing.T, at netip.AddrPort) {
	t.Helper()
	var pc net.PacketConn
	if err := tb.pods.Do(func() error {
		var err error
		pc, err = net.ListenPacket("udp", at.String())
		return err
	}); err != nil {
		t.Fatalf("listen on udp %s: %v", at, err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo([]byte(at.Addr().String()+"\n"), from)
		}
	}()
}

// askUDP sends one datagram from the node and returns the answer.
func (tb *testbed) askUDP(to string) (string, error) {
	var c net.Conn
	if err := tb.node.Do(func() error {
		var err error
		c, err = net.Dial("udp", to)
		return err
	}); err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return "", err
	}
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	return strings.TrimSpace(string(buf[:n])), err
}

// serve runs a TCP server in the pods namespace until the test ends.
func (tb *testbed) serve(t *testing.T, at netip.AddrPort) {
	t.Helper()
	var ln net.Listener
	if err := tb.pods.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", at.String())
		return err
	}); err != nil {
		t.Fatalf("listen on %s: %v", at, err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				fmt.Fprintf(c, "%s\n", at.Addr())
				_, _ = io.Copy(c, c)
			}()
		}
	}()
}

// serveOn runs a TCP server that answers "node" in ns until the test ends.
func (tb *testbed) serveOn(t *testing.T, ns netnsutil.NS, at string) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", at)
		return err
	}); err != nil {
		t.Fatalf("listen on %s: %v", at, err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, "node")
			c.Close()
		}
	}()
}

// dialFrom opens and closes one TCP connection from ns.
func dialFrom(ns netnsutil.NS, to string) error {
	return ns.Do(func() error {
		c, err := net.DialTimeout("tcp", to, 5*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// conn is a client connection from the node's own namespace.
type conn struct {
	net.Conn
	r      *bufio.Reader
	server string // the endpoint address that answered
}

// dial connects from the node namespace and reads the endpoint's name.
func (tb *testbed) dial(t *testing.T, to netip.AddrPort) *conn {
	t.Helper()
	var c net.Conn
	if err := tb.node.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp", to.String(), 5*time.Second)
		return err
	}); err != nil {
		t.Fatalf("dial %s from the node: %v", to, err)
	}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		c.Close()
		t.Fatalf("read greeting from %s: %v", to, err)
	}
	return &conn{Conn: c, r: r, server: strings.TrimSpace(line)}
}

// echo writes a line and reads it back.
func (c *conn) echo(msg string) error {
	if _, err := fmt.Fprintf(c, "%s\n", msg); err != nil {
		return err
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != msg {
		return fmt.Errorf("echo %q came back as %q", msg, line)
	}
	return nil
}

// servers makes n connections to a VIP and returns who answered each.
func (tb *testbed) servers(t *testing.T, to netip.AddrPort, n int) []string {
	t.Helper()
	var out []string
	for range n {
		c := tb.dial(t, to)
		out = append(out, c.server)
		c.Close()
	}
	return out
}

// countingClient wraps the real IPVS client and records every write.
type countingClient struct {
	ipvsClient
	mu  *sync.Mutex
	ops *[]string
}

func (c countingClient) rec(op string, s *libipvs.Service, d *libipvs.Destination) {
	c.mu.Lock()
	defer c.mu.Unlock()
	vs, _ := fromService(s)
	line := op + " " + vs.Key()
	if d != nil {
		kd, _ := fromDestination(d)
		line += fmt.Sprintf(" %s w%d", kd.rs.Key(), d.Weight)
	}
	*c.ops = append(*c.ops, line)
}

func (c countingClient) NewService(s *libipvs.Service) error {
	c.rec("add-vs", s, nil)
	return c.ipvsClient.NewService(s)
}
func (c countingClient) UpdateService(s *libipvs.Service) error {
	c.rec("update-vs", s, nil)
	return c.ipvsClient.UpdateService(s)
}
func (c countingClient) DelService(s *libipvs.Service) error {
	c.rec("del-vs", s, nil)
	return c.ipvsClient.DelService(s)
}
func (c countingClient) NewDestination(s *libipvs.Service, d *libipvs.Destination) error {
	c.rec("add-rs", s, d)
	return c.ipvsClient.NewDestination(s, d)
}
func (c countingClient) UpdateDestination(s *libipvs.Service, d *libipvs.Destination) error {
	c.rec("update-rs", s, d)
	return c.ipvsClient.UpdateDestination(s, d)
}
func (c countingClient) DelDestination(s *libipvs.Service, d *libipvs.Destination) error {
	c.rec("del-rs", s, d)
	return c.ipvsClient.DelDestination(s, d)
}

// opLog collects the IPVS writes of a proxier.
type opLog struct {
	mu  sync.Mutex
	ops []string
}

func (l *opLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.ops
	l.ops = nil
	sort.Strings(out)
	return out
}

func newTestProxier(t *testing.T, tb *testbed, opts map[string]string) (*Proxier, *opLog) {
	t.Helper()
	dp, err := New(datapaths.Config{Node: nodeA, NS: tb.node, Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	p := dp.(*Proxier)
	log := &opLog{}
	open := p.newClient
	p.newClient = func() (ipvsClient, error) {
		c, err := open()
		if err != nil {
			return nil, err
		}
		return countingClient{ipvsClient: c, mu: &log.mu, ops: &log.ops}, nil
	}
	t.Cleanup(func() { _ = p.Cleanup(context.Background()) })
	return p, log
}

// expected renders view as Sync does in the testbed.
func (tb *testbed) expected(t *testing.T, p *Proxier, v *datapaths.NodeView) *State {
	t.Helper()
	return mustRender(t, v, Env{Scheduler: p.scheduler, LocalAddrs: tb.nodeAddrs, RandomFully: p.randomFully})
}

// checkKernel compares the namespace's IPVS table, kube-ipvs0, ipsets and
// iptables chains with the rendered state.
func (tb *testbed) checkKernel(t *testing.T, p *Proxier, want *State) {
	t.Helper()
	c, err := p.openClient()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	table, err := readTable(c)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, vs := range want.VirtualServers {
		seen[vs.Key()] = true
		k := table[vs.Key()]
		if k == nil {
			t.Errorf("IPVS lacks virtual server %s (%s)", vs.Key(), vs.Service)
			continue
		}
		if !k.vs.sameService(vs) {
			t.Errorf("virtual server %s is %+v, want %+v", vs.Key(), *k.vs, *vs)
		}
		var got, exp []string
		for _, d := range k.dests {
			got = append(got, fmt.Sprintf("%s w%d", d.rs.Key(), d.rs.Weight))
		}
		for _, rs := range vs.RealServers {
			exp = append(exp, fmt.Sprintf("%s w%d", rs.Key(), rs.Weight))
		}
		sort.Strings(got)
		if !slices.Equal(got, exp) {
			t.Errorf("virtual server %s has real servers %v, want %v", vs.Key(), got, exp)
		}
	}
	for key := range table {
		if !seen[key] {
			t.Errorf("IPVS has a virtual server %s the render does not", key)
		}
	}

	h, err := tb.node.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName(dummyDevice)
	if err != nil {
		t.Fatalf("%s: %v", dummyDevice, err)
	}
	if l.Type() != "dummy" {
		t.Errorf("%s is a %s", dummyDevice, l.Type())
	}
	bound, _, err := localAddrs(h, l.Attrs().Index)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(bound, want.Bind) {
		t.Errorf("%s holds %v, want %v", dummyDevice, bound, want.Bind)
	}

	out, err := tb.node.Run(context.Background(), nil, "ipset", "save")
	if err != nil {
		t.Fatal(err)
	}
	sets := parseIPSetSave(out)
	for _, fs := range want.Families {
		for _, s := range fs.Sets {
			k := sets[s.Name]
			if k == nil {
				t.Errorf("ipset %s missing", s.Name)
				continue
			}
			var got []string
			for e := range k.entries {
				got = append(got, e)
			}
			sort.Strings(got)
			if k.typ != s.Type || !slices.Equal(got, s.Entries) {
				t.Errorf("ipset %s is %s %v, want %s %v", s.Name, k.typ, got, s.Type, s.Entries)
			}
		}
	}

	for _, fs := range want.Families {
		out, err := tb.node.Run(context.Background(), nil, p.backend.saveCmd(fs.Family))
		if err != nil {
			t.Fatal(err)
		}
		saved := parseSave(out)
		for _, j := range fs.Jumps {
			n := 0
			for _, r := range saved[j.Table].rules {
				if r == "-A "+j.Chain+" "+j.Spec {
					n++
				}
			}
			if n != 1 {
				t.Errorf("%s %s: jump %q present %d times, want once", fs.Family, j.Table, j.Spec, n)
			}
		}
		for table, chains := range map[string][]Chain{tableNAT: fs.NAT, tableFilter: fs.Filter} {
			for _, ch := range chains {
				n := 0
				for _, r := range saved[table].rules {
					if c, _ := ruleChainAndTarget(r); c == ch.Name {
						n++
					}
				}
				if n != len(ch.Rules) {
					t.Errorf("%s %s %s has %d rules, want %d", fs.Family, table, ch.Name, n, len(ch.Rules))
				}
			}
		}
	}
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// integrationView is a node-a view with one of each kind of Service, every
// endpoint on the testbed's pods namespace.
func integrationView(webEndpoints ...*model.Endpoint) *datapaths.NodeView {
	lb := service("default", "lb", model.LoadBalancer, addrs("198.19.0.17", "2001:db8:19::17"),
		port("http", model.TCP, 80, 30017, ep("198.18.64.10", 8080, nodeA), ep("198.18.65.10", 8080, nodeB), ep("2001:db8:64::10", 8080, nodeA)))
	lb.ExternalTrafficPolicy = model.PolicyLocal
	lb.HealthCheckNodePort = 32017
	lb.LoadBalancerIPs = addrs("198.19.200.17")
	lb.ExternalIPs = addrs("198.19.100.17")
	lb.LoadBalancerSourceRanges = []netip.Prefix{prefix("198.18.0.192/26")}
	dns := service("default", "dns", model.ClusterIP, addrs("198.19.0.53"),
		port("dns", model.UDP, 53, 0, ep("198.18.64.53", 5353, nodeA)),
		port("sctp", model.SCTP, 5060, 30060, ep("198.18.64.53", 5060, nodeA)))
	dns.SessionAffinity = true
	return view(
		service("default", "web", model.ClusterIP, addrs("198.19.0.10"), port("http", model.TCP, 80, 0, webEndpoints...)),
		lb, dns,
		service("default", "empty", model.NodePort, addrs("198.19.0.11"), port("http", model.TCP, 80, 30011)),
	)
}

func TestIntegrationSyncMatchesRenderAndPartialSync(t *testing.T) {
	requireIPVS(t)
	ctx := context.Background()
	tb := newTestbed(t)
	p, log := newTestProxier(t, tb, nil)

	v1 := integrationView(ep("198.18.64.10", 8080, nodeA), ep("198.18.64.11", 8080, nodeA))
	st, err := p.Sync(ctx, v1, datapaths.SyncOptions{})
	if err != nil {
		t.Fatalf("first sync: %v", err)
	}
	if !st.Full || st.Backend != "ipvs-rr/iptables-legacy" || st.ChangedServices != 4 || st.Written != st.Objects {
		t.Errorf("first sync stats: %+v", st)
	}
	want1 := tb.expected(t, p, v1)
	tb.checkKernel(t, p, want1)
	log.take()

	// A forced full sync of the same view writes nothing to IPVS or the
	// sets; it restores the (constant) iptables rules.
	st, err = p.Sync(ctx, v1, datapaths.SyncOptions{ForceFull: true})
	if err != nil || !st.Full {
		t.Fatalf("forced full sync: %+v, %v", st, err)
	}
	rules := 0
	for _, fs := range want1.Families {
		rules += fs.Rules() - len(fs.Jumps)
	}
	if ops := log.take(); len(ops) != 0 || st.Written != rules || st.ChangedServices != 0 {
		t.Errorf("resync of a converged state did %v, stats %+v (want %d rules written)", ops, st, rules)
	}

	// One endpoint replaced: a partial sync adds one real server and
	// deletes one (no connection uses it), and touches nothing else.
	v2 := integrationView(ep("198.18.64.10", 8080, nodeA), ep("198.18.64.12", 8080, nodeA))
	st, err = p.Sync(ctx, v2, datapaths.SyncOptions{})
	if err != nil || st.Full || st.ChangedServices != 1 || st.Written >= st.Objects {
		t.Fatalf("partial sync: %+v, %v", st, err)
	}
	if ops := log.take(); !slices.Equal(ops, []string{"add-rs 198.19.0.10:80/TCP 198.18.64.12:8080 w1", "del-rs 198.19.0.10:80/TCP 198.18.64.11:8080 w1"}) {
		t.Errorf("partial sync wrote %v", ops)
	}
	tb.checkKernel(t, p, tb.expected(t, p, v2))

	// Traffic (after the partial sync, whose exact writes assume no
	// connection ever used the removed endpoint): rr alternates between
	// the two web endpoints; the wrong port
	// on the VIP is rejected (KUBE-IPVS-FILTER); the endpoint-less
	// Service's virtual server rejects (IPVS answers port unreachable).
	if got := tb.servers(t, ap("198.19.0.10:80"), 4); !slices.Equal(got, []string{"198.18.64.10", "198.18.64.12", "198.18.64.10", "198.18.64.12"}) &&
		!slices.Equal(got, []string{"198.18.64.12", "198.18.64.10", "198.18.64.12", "198.18.64.10"}) {
		t.Errorf("rr spread %v", got)
	}
	// IPv6 through kube-ipvs0 (which stays down, as kube-proxy leaves it),
	// and UDP.
	if c := tb.dial(t, ap("[2001:db8:19::17]:80")); c.server != "2001:db8:64::10" {
		t.Errorf("IPv6 ClusterIP answered by %s", c.server)
	} else {
		c.Close()
	}
	if got, err := tb.askUDP("198.19.0.53:53"); err != nil || got != "198.18.64.53" {
		t.Errorf("UDP ClusterIP: %q, %v", got, err)
	}
	if err := dialFrom(tb.node, "198.19.0.11:80"); !errors.Is(err, unix.ECONNREFUSED) {
		t.Errorf("connect to the endpoint-less Service: %v, want connection refused", err)
	}
	// KUBE-IPVS-FILTER: a listener of the node's own is reachable on the
	// node's address but not on a VIP, which is just as local.
	tb.serveOn(t, tb.node, "0.0.0.0:9999")
	if err := dialFrom(tb.pods, "198.18.64.1:9999"); err != nil {
		t.Errorf("the node's own listener is unreachable on its address: %v", err)
	}
	if err := dialFrom(tb.pods, "198.19.0.10:9999"); !errors.Is(err, unix.ECONNREFUSED) {
		t.Errorf("connect to the node's listener through a VIP: %v, want connection refused", err)
	}

	// A Service deleted: its virtual servers, VIPs and set entries go.
	v3 := integrationView(ep("198.18.64.10", 8080, nodeA), ep("198.18.64.12", 8080, nodeA))
	v3.Cluster.Services = slices.DeleteFunc(v3.Cluster.Services, func(s *model.Service) bool { return s.Name.Name == "lb" })
	if st, err = p.Sync(ctx, v3, datapaths.SyncOptions{}); err != nil || st.Full || st.ChangedServices != 1 {
		t.Fatalf("sync after deleting a Service: %+v, %v", st, err)
	}
	tb.checkKernel(t, p, tb.expected(t, p, v3))

	// State changed behind our back is repaired by the next sync.
	if _, err := tb.node.Run(ctx, nil, "ipvsadm", "-D", "-t", "198.19.0.10:80"); err != nil {
		t.Logf("ipvsadm not usable (%v); deleting through netlink", err)
		c, _ := p.openClient()
		_ = c.DelService(toService(&VirtualServer{Address: addr("198.19.0.10"), Protocol: model.TCP, Port: 80}))
		c.Close()
	}
	if _, err := p.Sync(ctx, v3, datapaths.SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	tb.checkKernel(t, p, tb.expected(t, p, v3))

	if err := p.Cleanup(ctx); err != nil {
		t.Fatalf("cleanup: %v", err)
	}
	checkClean(t, tb.node, p)
	if err := p.Cleanup(ctx); err != nil {
		t.Errorf("second cleanup: %v", err)
	}
	if st, err := p.Sync(ctx, v3, datapaths.SyncOptions{}); err != nil || !st.Full {
		t.Errorf("sync after cleanup: %+v, %v", st, err)
	}
}

// checkClean asserts that nothing of the datapath is left in ns.
func checkClean(t *testing.T, ns netnsutil.NS, p *Proxier) {
	t.Helper()
	c, err := p.openClient()
	if err != nil {
		t.Fatal(err)
	}
	svcs, err := c.GetServices()
	c.Close()
	if err != nil || len(svcs) != 0 {
		t.Errorf("after cleanup IPVS has %d services (%v)", len(svcs), err)
	}
	h, err := ns.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, err := h.LinkByName(dummyDevice); err == nil {
		t.Errorf("%s survived cleanup", dummyDevice)
	}
	out, _ := ns.Run(context.Background(), nil, "ipset", "list", "-n")
	if strings.Contains(string(out), "KUBE-") {
		t.Errorf("ipsets survived cleanup:\n%s", out)
	}
	for _, f := range families {
		out, _ := ns.Run(context.Background(), nil, p.backend.saveCmd(f))
		if strings.Contains(string(out), "KUBE-") {
			t.Errorf("%s rules survived cleanup:\n%s", f, out)
		}
	}
}

// TestIntegrationGracefulTermination: a TCP connection open to an
// endpoint that is removed keeps working while its real server sits at
// weight 0 and new connections go elsewhere; once the connection closes,
// the real server is deleted by the background check.
func TestIntegrationGracefulTermination(t *testing.T) {
	requireIPVS(t)
	ctx := context.Background()
	tb := newTestbed(t)
	p, log := newTestProxier(t, tb, map[string]string{OptionGracefulCheckInterval: "1s"})
	web := func(eps ...*model.Endpoint) *datapaths.NodeView {
		return view(service("default", "web", model.ClusterIP, addrs("198.19.0.10"), port("http", model.TCP, 80, 0, eps...)))
	}
	a, b := ep("198.18.64.10", 8080, nodeA), ep("198.18.64.11", 8080, nodeA)
	if _, err := p.Sync(ctx, web(a, b), datapaths.SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	log.take()
	vip := ap("198.19.0.10:80")

	// Open connections until one lands on b (rr: within two).
	var onB *conn
	for range 4 {
		c := tb.dial(t, vip)
		if c.server == b.IP.String() {
			onB = c
			break
		}
		defer c.Close()
	}
	if onB == nil {
		t.Fatal("no connection reached 198.18.64.11")
	}
	defer onB.Close()

	// b is removed, the way a pod leaves its EndpointSlice.
	if _, err := p.Sync(ctx, web(a), datapaths.SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	if ops := log.take(); !slices.Equal(ops, []string{"update-rs 198.19.0.10:80/TCP 198.18.64.11:8080 w0"}) {
		t.Errorf("removing a busy endpoint did %v, want only weight 0", ops)
	}
	if d := p.Draining(); !slices.Equal(d, []string{"198.19.0.10:80/TCP/198.18.64.11:8080"}) {
		t.Errorf("draining %v", d)
	}
	weight := func() (int, bool) {
		c, err := p.openClient()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		table, err := readTable(c)
		if err != nil {
			t.Fatal(err)
		}
		d, ok := table["198.19.0.10:80/TCP"].dests["198.18.64.11:8080"]
		return d.rs.Weight, ok
	}
	if w, ok := weight(); !ok || w != 0 {
		t.Errorf("real server 198.18.64.11 present=%v weight=%d, want present at weight 0", ok, w)
	}
	if err := onB.echo("still there"); err != nil {
		t.Errorf("the established connection to the removed endpoint broke: %v", err)
	}
	for _, s := range tb.servers(t, vip, 3) {
		if s != a.IP.String() {
			t.Errorf("a new connection reached %s, which is draining", s)
		}
	}
	// A sync while it drains leaves it alone.
	if _, err := p.Sync(ctx, web(a), datapaths.SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	if ops := log.take(); len(ops) != 0 {
		t.Errorf("a sync during draining wrote %v", ops)
	}
	if err := onB.echo("still there after a sync"); err != nil {
		t.Errorf("the connection broke after a sync: %v", err)
	}

	// Close with a reset: IPVS then keeps the entry in state CLOSE for
	// 10 s (after a FIN it would be TIME_WAIT, 2 minutes), and the
	// background check deletes the real server once it expires.
	if tc, ok := onB.Conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	onB.Close()
	deadline := time.Now().Add(90 * time.Second)
	for {
		if _, ok := weight(); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("real server 198.18.64.11 still present 90 s after its last connection closed; draining %v", p.Draining())
		}
		time.Sleep(500 * time.Millisecond)
	}
	if d := p.Draining(); len(d) != 0 {
		t.Errorf("still draining %v after the real server was deleted", d)
	}
	if ops := log.take(); !slices.Equal(ops, []string{"del-rs 198.19.0.10:80/TCP 198.18.64.11:8080 w0"}) {
		t.Errorf("the background check did %v", ops)
	}
}

// TestIntegrationSchedulers: each scheduler is accepted by the kernel and
// recorded in the stats; rr spreads, sh pins a source, and persistence
// (ClientIP affinity) pins whatever the scheduler.
func TestIntegrationSchedulers(t *testing.T) {
	requireIPVS(t)
	ctx := context.Background()
	tb := newTestbed(t)
	sticky := service("default", "sticky", model.ClusterIP, addrs("198.19.0.20"),
		port("http", model.TCP, 80, 0, ep("198.18.64.10", 8080, nodeA), ep("198.18.64.11", 8080, nodeA)))
	sticky.SessionAffinity = true
	sticky.AffinityTimeout = 60 * time.Second
	v := view(
		service("default", "web", model.ClusterIP, addrs("198.19.0.10"),
			port("http", model.TCP, 80, 0, ep("198.18.64.10", 8080, nodeA), ep("198.18.64.11", 8080, nodeA))),
		sticky)
	// Each scheduler's instance takes over the previous one's state, so
	// this also checks that a full sync switches the scheduler in place.
	for _, sched := range Schedulers {
		t.Run(sched, func(t *testing.T) {
			p, _ := newTestProxier(t, tb, map[string]string{OptionScheduler: sched})
			st, err := p.Sync(ctx, v, datapaths.SyncOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if want := "ipvs-" + sched + "/iptables-legacy"; st.Backend != want {
				t.Errorf("Backend %q, want %q", st.Backend, want)
			}
			c, err := p.openClient()
			if err != nil {
				t.Fatal(err)
			}
			table, err := readTable(c)
			c.Close()
			if err != nil {
				t.Fatal(err)
			}
			want := tb.expected(t, p, v)
			for _, vs := range want.VirtualServers {
				if k := table[vs.Key()]; k == nil || !k.vs.sameService(vs) || len(k.dests) != len(vs.RealServers) {
					t.Errorf("kernel has %+v for %s, want %+v", k, vs.Key(), *vs)
				}
			}

			distinct := func(ss []string) int { slices.Sort(ss); return len(slices.Compact(ss)) }
			web := tb.servers(t, ap("198.19.0.10:80"), 4)
			switch sched {
			case "rr", "wrr", "lc":
				if distinct(web) != 2 {
					t.Errorf("%s sent 4 connections to %v", sched, web)
				}
			case "sh":
				if distinct(web) != 1 {
					t.Errorf("sh sent one source's connections to %v", web)
				}
			}
			if s := tb.servers(t, ap("198.19.0.20:80"), 4); distinct(s) != 1 {
				t.Errorf("persistence did not pin connections: %v", s)
			}
		})
	}
	if _, err := New(datapaths.Config{Node: nodeA, NS: tb.node, Options: map[string]string{OptionScheduler: "fifo"}}); err == nil {
		t.Error("New accepted an unknown scheduler")
	}
}

// TestIntegrationFailedSyncKeepsState: an injected fault fails the sync
// before any kernel object changes; the next sync is full and converges.
func TestIntegrationFailedSyncKeepsState(t *testing.T) {
	requireIPVS(t)
	ctx := context.Background()
	tb := newTestbed(t)
	p, log := newTestProxier(t, tb, nil)
	v1 := integrationView(ep("198.18.64.10", 8080, nodeA))
	if _, err := p.Sync(ctx, v1, datapaths.SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	log.take()
	t.Log(p.FailNextSync())
	v2 := integrationView(ep("198.18.64.11", 8080, nodeA))
	v2.Cluster.Services = slices.DeleteFunc(v2.Cluster.Services, func(s *model.Service) bool { return s.Name.Name == "empty" })
	if _, err := p.Sync(ctx, v2, datapaths.SyncOptions{}); err == nil {
		t.Fatal("sync with an injected fault succeeded")
	}
	if ops := log.take(); len(ops) != 0 {
		t.Errorf("the failed sync wrote to IPVS: %v", ops)
	}
	tb.checkKernel(t, p, tb.expected(t, p, v1))

	st, err := p.Sync(ctx, v2, datapaths.SyncOptions{})
	if err != nil || !st.Full {
		t.Fatalf("sync after the failure: %+v, %v (want a successful full sync)", st, err)
	}
	tb.checkKernel(t, p, tb.expected(t, p, v2))
	if st, err := p.Sync(ctx, v2, datapaths.SyncOptions{}); err != nil || st.Full {
		t.Errorf("the sync after recovery should be partial: %+v, %v", st, err)
	}
}

// TestIntegrationRestartConverges: a new instance over an old one's state
// (no Cleanup in between) converges, and resets real servers the old one
// left draining at weight 0 when it wants them again.
func TestIntegrationRestartConverges(t *testing.T) {
	requireIPVS(t)
	ctx := context.Background()
	tb := newTestbed(t)
	old, _ := newTestProxier(t, tb, nil)
	v := integrationView(ep("198.18.64.10", 8080, nodeA), ep("198.18.64.11", 8080, nodeA))
	if _, err := old.Sync(ctx, v, datapaths.SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	c := tb.dial(t, ap("198.19.0.10:80"))
	defer c.Close()
	if _, err := old.Sync(ctx, integrationView(ep("198.18.64.10", 8080, nodeA), ep("198.18.64.11", 8080, nodeA), ep("198.18.64.12", 8080, nodeA)), datapaths.SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	// Remove whichever endpoint the open connection uses: it drains.
	var keep []*model.Endpoint
	for _, e := range []string{"198.18.64.10", "198.18.64.11", "198.18.64.12"} {
		if e != c.server {
			keep = append(keep, ep(e, 8080, nodeA))
		}
	}
	if _, err := old.Sync(ctx, integrationView(keep...), datapaths.SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(old.Draining()) != 1 {
		t.Fatalf("draining %v, want the connection's endpoint", old.Draining())
	}

	fresh, _ := newTestProxier(t, tb, nil)
	st, err := fresh.Sync(ctx, v, datapaths.SyncOptions{})
	if err != nil || !st.Full {
		t.Fatalf("first sync of a fresh instance: %+v, %v", st, err)
	}
	tb.checkKernel(t, fresh, tb.expected(t, fresh, v))
	if err := c.echo("across the restart"); err != nil {
		t.Errorf("connection broke across the restart: %v", err)
	}
}

func TestIntegrationStaleUDPConntrack(t *testing.T) {
	requireIPVS(t)
	ctx := context.Background()
	tb := newTestbed(t)
	p, _ := newTestProxier(t, tb, nil)
	dns := func(eps ...*model.Endpoint) *datapaths.NodeView {
		return view(service("default", "dns", model.ClusterIP, addrs("198.19.0.53"), port("dns", model.UDP, 53, 0, eps...)))
	}
	if _, err := p.Sync(ctx, dns(ep("198.18.64.53", 53, nodeA)), datapaths.SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	h, err := tb.node.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	mk := func(proto uint8, replySrc string) *netlink.ConntrackFlow {
		f := &netlink.ConntrackFlow{FamilyType: unix.AF_INET, TimeOut: 120}
		ip4 := func(s string) net.IP { return net.ParseIP(s).To4() }
		f.Forward = netlink.IPTuple{Protocol: proto, SrcIP: ip4("198.18.127.1"), SrcPort: 40000, DstIP: ip4("198.19.0.53"), DstPort: 53}
		f.Reverse = netlink.IPTuple{Protocol: proto, SrcIP: ip4(replySrc), SrcPort: 53, DstIP: ip4("198.18.127.1"), DstPort: 40000}
		if proto == unix.IPPROTO_TCP {
			f.ProtoInfo = &netlink.ProtoInfoTCP{State: 3} // ESTABLISHED
		}
		return f
	}
	// Equivalent to: conntrack -I -p udp -s 198.18.127.1 -d 198.19.0.53 --sport 40000 --dport 53 -r 198.18.64.54 ...
	for _, f := range []*netlink.ConntrackFlow{mk(unix.IPPROTO_UDP, "198.18.64.54"), mk(unix.IPPROTO_TCP, "198.18.64.54")} {
		if err := h.ConntrackCreate(netlink.ConntrackTable, netlink.InetFamily(unix.AF_INET), f); err != nil {
			t.Fatalf("create conntrack entry: %v", err)
		}
	}
	st, err := p.Sync(ctx, dns(ep("198.18.64.53", 53, nodeA)), datapaths.SyncOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.ConntrackFlushed != 1 {
		t.Errorf("ConntrackFlushed = %d, want 1 (the UDP entry only)", st.ConntrackFlushed)
	}
}

func TestIntegrationCheck(t *testing.T) {
	requireIPVS(t)
	reg, err := datapaths.Lookup(Name)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, b := range []string{"legacy", "nft"} {
		if err := reg.Check(ctx, datapaths.Config{IPTablesBackend: b}); err != nil {
			t.Errorf("Check(%s): %v", b, err)
		}
	}
	if err := reg.Check(ctx, datapaths.Config{Options: map[string]string{OptionScheduler: "fifo"}}); err == nil {
		t.Error("Check accepted an unknown scheduler")
	}
	dp, err := New(datapaths.Config{Node: nodeA, NS: netnsutil.NS{Name: "prx-does-not-exist-ipvs"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := dp.Check(ctx); err == nil || errors.Is(err, datapaths.ErrNotSupported) {
		t.Errorf("Check in a missing namespace: %v, want a plain error", err)
	}
	if left, _ := netnsutil.List("prx-ipvschk"); len(left) != 0 {
		t.Errorf("Check left namespaces behind: %v", left)
	}
}
