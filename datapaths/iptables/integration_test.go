package iptables

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"proxyrig/datapaths"
	"proxyrig/internal/netnsutil"
	"proxyrig/model"
)

// Privileged tests: each runs against a namespace of its own, named
// prx-t<random>-it, and checks kernel state with iptables-save. Packets are
// another package's business (the lab's conformance suite).

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	const reason = "needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to create network namespaces and program netfilter"
	if os.Getenv("CI") == "true" {
		t.Fatal(reason + "; CI=true, so this must not be skipped")
	}
	t.Skip(reason)
}

func newTestNS(t *testing.T) netnsutil.NS {
	t.Helper()
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	name := "prx-t" + hex.EncodeToString(rnd[:]) + "-it"
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

func newTestProxier(t *testing.T, backendName string) (*Proxier, netnsutil.NS) {
	t.Helper()
	requireRoot(t)
	ns := newTestNS(t)
	b, _ := newBackend(backendName)
	if err := checkPrivileges(b); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	dp, err := New(datapaths.Config{Node: nodeA, NS: ns, IPTablesBackend: backendName})
	if err != nil {
		t.Fatal(err)
	}
	p := dp.(*Proxier)
	if err := p.Check(context.Background()); err != nil {
		if errors.Is(err, datapaths.ErrNotSupported) && os.Getenv("CI") != "true" {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Cleanup(context.Background()) })
	return p, ns
}

// saved returns iptables-save output of one family with comments dropped.
func saved(t *testing.T, p *Proxier, ns netnsutil.NS, f Family) string {
	t.Helper()
	out, err := ns.Run(context.Background(), nil, p.backend.saveCmd(f))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n") + "\n"
}

// kubeChains lists the KUBE-* chains of one table.
func kubeChains(t *testing.T, p *Proxier, ns netnsutil.NS, f Family, table string) []string {
	t.Helper()
	st := parseSave([]byte(saved(t, p, ns, f)))
	var out []string
	if tb := st[table]; tb != nil {
		for c := range tb.chains {
			if strings.HasPrefix(c, "KUBE-") {
				out = append(out, c)
			}
		}
	}
	sort.Strings(out)
	return out
}

// desiredChains lists the chains the rendered state has in one table.
func desiredChains(fr *FamilyRules, table string) []string {
	var out []string
	if table == tableFilter {
		for _, c := range fr.Filter {
			out = append(out, c.Name)
		}
	} else {
		for _, c := range fr.NAT {
			out = append(out, c.Name)
		}
		for _, s := range fr.Services {
			for _, c := range s.Chains {
				out = append(out, c.Name)
			}
		}
	}
	sort.Strings(out)
	return out
}

func integrationView(webEndpoints ...*model.Endpoint) *datapaths.NodeView {
	lb := service("default", "lb", model.LoadBalancer, addrs("198.19.0.17", "2001:db8:19::17"),
		port("http", model.TCP, 80, 30017, ep("198.18.64.10", 8080, nodeA), ep("198.18.65.10", 8080, nodeB), ep("2001:db8:64::10", 8080, nodeA)))
	lb.ExternalTrafficPolicy = model.PolicyLocal
	lb.HealthCheckNodePort = 32017
	lb.LoadBalancerIPs = addrs("198.19.200.17")
	lb.LoadBalancerSourceRanges = []netip.Prefix{prefix("198.18.0.192/26")}
	dns := service("default", "dns", model.ClusterIP, addrs("198.19.0.53"),
		port("dns", model.UDP, 53, 0, ep("198.18.64.53", 5353, nodeA)),
		port("sctp", model.SCTP, 5060, 0, ep("198.18.64.53", 5060, nodeA)))
	dns.SessionAffinity = true
	v := view(
		service("default", "web", model.ClusterIP, addrs("198.19.0.10"), port("http", model.TCP, 80, 0, webEndpoints...)),
		lb, dns,
		service("default", "empty", model.NodePort, addrs("198.19.0.11"), port("http", model.TCP, 80, 30011)),
	)
	v.Proxy.LocalhostNodePorts = true
	return v
}

func forEachBackend(t *testing.T, fn func(t *testing.T, backend string)) {
	for _, b := range []string{"legacy", "nft"} {
		t.Run(b, func(t *testing.T) { fn(t, b) })
	}
}

func TestIntegrationSyncPartialAndCleanup(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		p, ns := newTestProxier(t, backend)

		v1 := integrationView(ep("198.18.64.1", 8080, nodeA), ep("198.18.65.1", 8080, nodeB))
		st, err := p.Sync(ctx, v1, datapaths.SyncOptions{})
		if err != nil {
			t.Fatalf("first sync: %v", err)
		}
		if !st.Full || st.Backend != "iptables-"+backend || st.ChangedServices != 4 || st.Written != st.Objects {
			t.Errorf("first sync stats: %+v", st)
		}
		rs, _ := Render(v1, p.env)
		for _, f := range families {
			for _, table := range []string{tableFilter, tableNAT} {
				if got, want := kubeChains(t, p, ns, f, table), desiredChains(rs.Family(f), table); !slices.Equal(got, want) {
					t.Errorf("%s %s chains after first sync:\n got %v\nwant %v", f, table, got, want)
				}
			}
		}
		v4 := saved(t, p, ns, IPv4)
		for _, want := range []string{
			"-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
			"-A INPUT -j KUBE-FIREWALL",
			"-j MASQUERADE --random-fully",
			"--probability 0.50000000000",
			"-m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-",
			"-m comment --comment \"default/empty:http has no endpoints\" -m tcp --dport 80 -j REJECT",
			"-p sctp -m comment --comment \"default/dns:sctp cluster IP\" -m sctp --dport 5060",
			"-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8",
		} {
			if !strings.Contains(v4, want) {
				t.Errorf("iptables-save lacks %q:\n%s", want, v4)
			}
		}
		if v6 := saved(t, p, ns, IPv6); !strings.Contains(v6, "--to-destination [2001:db8:64::10]:8080") {
			t.Errorf("ip6tables-save lacks the IPv6 endpoint:\n%s", v6)
		}
		if v, _ := ns.ReadSysctl("net.ipv4.conf.all.route_localnet"); v != "1" {
			t.Errorf("route_localnet = %q with localhost NodePorts, want 1", v)
		}

		// One endpoint of one Service changes: a partial sync rewrites it.
		oldSEP := sepChainName("default/web:http", "tcp", "198.18.65.1:8080")
		v2 := integrationView(ep("198.18.64.1", 8080, nodeA), ep("198.18.65.2", 8080, nodeB))
		st, err = p.Sync(ctx, v2, datapaths.SyncOptions{})
		if err != nil {
			t.Fatalf("second sync: %v", err)
		}
		if st.Full || st.ChangedServices != 1 || st.Written >= st.Objects {
			t.Errorf("second sync should be partial with one changed Service: %+v", st)
		}
		nat := kubeChains(t, p, ns, IPv4, tableNAT)
		if slices.Contains(nat, oldSEP) {
			t.Errorf("chain %s of the removed endpoint survived the partial sync", oldSEP)
		}
		if !slices.Contains(nat, sepChainName("default/web:http", "tcp", "198.18.65.2:8080")) {
			t.Error("chain of the new endpoint is missing")
		}

		// A forced full sync converges to the same state without adding
		// duplicate jump rules.
		before := saved(t, p, ns, IPv4)
		if st, err = p.Sync(ctx, v2, datapaths.SyncOptions{ForceFull: true}); err != nil || !st.Full {
			t.Fatalf("forced full sync: %+v, %v", st, err)
		}
		if after := saved(t, p, ns, IPv4); after != before {
			t.Errorf("full resync changed converged state:\nbefore:\n%s\nafter:\n%s", before, after)
		}

		// Deleting a Service deletes its chains.
		v3 := integrationView(ep("198.18.64.1", 8080, nodeA))
		v3.Cluster.Services = slices.DeleteFunc(v3.Cluster.Services, func(s *model.Service) bool { return s.Name.Name == "lb" })
		if st, err = p.Sync(ctx, v3, datapaths.SyncOptions{}); err != nil || st.Full {
			t.Fatalf("sync after deleting a Service: %+v, %v", st, err)
		}
		for _, f := range families {
			for _, c := range kubeChains(t, p, ns, f, tableNAT) {
				if strings.HasSuffix(c, portProtoHash("default/lb:http", "tcp")) {
					t.Errorf("%s chain %s of the deleted Service survived", f, c)
				}
			}
		}

		if err := p.Cleanup(ctx); err != nil {
			t.Fatalf("cleanup: %v", err)
		}
		for _, f := range families {
			if s := saved(t, p, ns, f); strings.Contains(s, "KUBE-") {
				t.Errorf("%s state after cleanup still has KUBE- chains:\n%s", f, s)
			}
		}
		if v, _ := ns.ReadSysctl("net.ipv4.conf.all.route_localnet"); v != "0" {
			t.Errorf("route_localnet = %q after cleanup, want 0", v)
		}
		if err := p.Cleanup(ctx); err != nil {
			t.Errorf("second cleanup: %v", err)
		}
		// After a cleanup, the next sync is full again.
		if st, err := p.Sync(ctx, v3, datapaths.SyncOptions{}); err != nil || !st.Full {
			t.Errorf("sync after cleanup: %+v, %v", st, err)
		}
	})
}

func TestIntegrationFailedRestoreKeepsRulesAndForcesFullSync(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		p, ns := newTestProxier(t, backend)

		v1 := integrationView(ep("198.18.64.1", 8080, nodeA))
		if _, err := p.Sync(ctx, v1, datapaths.SyncOptions{}); err != nil {
			t.Fatalf("first sync: %v", err)
		}
		natBefore := parseSave([]byte(saved(t, p, ns, IPv4)))[tableNAT]

		// The next render carries a rule that jumps to a chain that does
		// not exist: iptables-restore rejects the nat table as a whole.
		p.hookRendered = func(rs *Ruleset) {
			fr := rs.Family(IPv4)
			for i := range fr.Services {
				if fr.Services[i].Service == "default/web" && len(fr.Services[i].Chains) > 0 {
					c := &fr.Services[i].Chains[0]
					c.Rules = append(c.Rules, "-j KUBE-DOES-NOT-EXIST")
					fr.Services[i].Hash = "broken"
				}
			}
		}
		v2 := integrationView(ep("198.18.64.2", 8080, nodeA))
		if _, err := p.Sync(ctx, v2, datapaths.SyncOptions{}); err == nil {
			t.Fatal("sync with an invalid rule succeeded")
		}
		natAfter := parseSave([]byte(saved(t, p, ns, IPv4)))[tableNAT]
		if !slices.Equal(natBefore.rules, natAfter.rules) {
			t.Errorf("failed restore changed the nat table:\nbefore:\n%s\nafter:\n%s",
				strings.Join(natBefore.rules, "\n"), strings.Join(natAfter.rules, "\n"))
		}

		// A chain created out of band is cleaned up by the full sync that
		// must follow the failure.
		if _, err := ns.Run(ctx, []byte("*nat\n:KUBE-SVC-OUTOFBAND0000000 - [0:0]\n-A KUBE-SVC-OUTOFBAND0000000 -j RETURN\nCOMMIT\n"),
			p.backend.restoreCmd(IPv4), "--noflush", "-w"); err != nil {
			t.Fatal(err)
		}
		p.hookRendered = nil
		st, err := p.Sync(ctx, v2, datapaths.SyncOptions{})
		if err != nil {
			t.Fatalf("sync after failure: %v", err)
		}
		if !st.Full {
			t.Error("the sync after a failed one was not full")
		}
		rs, _ := Render(v2, p.env)
		for _, f := range families {
			for _, table := range []string{tableFilter, tableNAT} {
				if got, want := kubeChains(t, p, ns, f, table), desiredChains(rs.Family(f), table); !slices.Equal(got, want) {
					t.Errorf("%s %s chains did not converge:\n got %v\nwant %v", f, table, got, want)
				}
			}
		}
		if st, err := p.Sync(ctx, v2, datapaths.SyncOptions{}); err != nil || st.Full {
			t.Errorf("sync after recovery should be partial: %+v, %v", st, err)
		}
	})
}

func TestIntegrationStaleUDPConntrack(t *testing.T) {
	ctx := context.Background()
	p, ns := newTestProxier(t, "legacy")
	dns := func(eps ...*model.Endpoint) *datapaths.NodeView {
		return view(service("default", "dns", model.ClusterIP, addrs("198.19.0.53"), port("dns", model.UDP, 53, 0, eps...)))
	}
	if _, err := p.Sync(ctx, dns(ep("198.18.64.53", 53, nodeA)), datapaths.SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	h, err := ns.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	mk := func(proto uint8, replySrc string) *netlink.ConntrackFlow {
		f := &netlink.ConntrackFlow{FamilyType: unix.AF_INET, TimeOut: 120}
		// netlink needs 4-byte addresses for an AF_INET flow.
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
			if os.Getenv("CI") == "true" {
				t.Fatalf("cannot create conntrack entries: %v", err)
			}
			t.Skipf("cannot create conntrack entries here: %v", err)
		}
	}
	st, err := p.Sync(ctx, dns(ep("198.18.64.53", 53, nodeA)), datapaths.SyncOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.ConntrackFlushed != 1 {
		t.Errorf("ConntrackFlushed = %d, want 1 (the UDP entry only)", st.ConntrackFlushed)
	}
	flows, err := h.ConntrackTableList(netlink.ConntrackTable, netlink.InetFamily(unix.AF_INET))
	if err != nil {
		t.Fatal(err)
	}
	var protos []uint8
	for _, f := range flows {
		if f.Forward.DstIP.Equal(net.ParseIP("198.19.0.53")) {
			protos = append(protos, f.Forward.Protocol)
		}
	}
	if !slices.Equal(protos, []uint8{unix.IPPROTO_TCP}) {
		t.Errorf("entries left to the VIP have protocols %v, want only TCP", protos)
	}
}

func TestIntegrationCheckRegistration(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("iptables-legacy-restore"); err != nil && os.Getenv("CI") != "true" {
		t.Skip("iptables-legacy not installed")
	}
	reg, err := datapaths.Lookup(Name)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, b := range []string{"legacy", "nft"} {
		if err := reg.Check(ctx, datapaths.Config{IPTablesBackend: b}); err != nil {
			t.Errorf("Check(%s) without a node: %v", b, err)
		}
	}
	if err := reg.Check(ctx, datapaths.Config{IPTablesBackend: "bogus"}); err == nil {
		t.Error("Check accepted a bogus backend")
	}
	dp, err := New(datapaths.Config{Node: nodeA, NS: netnsutil.NS{Name: "prx-does-not-exist-it"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := dp.Check(ctx); err == nil || errors.Is(err, datapaths.ErrNotSupported) {
		t.Errorf("Check in a missing namespace: %v, want a plain error", err)
	}
	left, _ := netnsutil.List("prx-iptchk")
	if len(left) != 0 {
		t.Errorf("Check left namespaces behind: %v", left)
	}
}
