package nftables

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"

	"proxyrig/datapaths"
	"proxyrig/internal/netnsutil"
)

// Privileged tests: each runs in namespaces of its own, named
// prx-t<random>-nft, and reads kernel state back with nft. Packets are the
// conformance suite's business.

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	const reason = "needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to create network namespaces and program nftables"
	if os.Getenv("CI") == "true" {
		t.Fatal(reason + "; CI=true, so this must not be skipped")
	}
	t.Skip(reason)
}

// skipUnlessSupported skips (or, under CI, fails) when err says this
// machine cannot run nftables at all.
func skipUnlessSupported(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if errors.Is(err, datapaths.ErrNotSupported) && os.Getenv("CI") != "true" {
		t.Skip(err)
	}
	t.Fatal(err)
}

func newTestNS(t testing.TB) netnsutil.NS {
	t.Helper()
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	name := "prx-t" + hex.EncodeToString(rnd[:]) + "-nft"
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

func newTestProxier(t *testing.T) (*Proxier, netnsutil.NS) {
	t.Helper()
	requireRoot(t)
	skipUnlessSupported(t, checkPrivileges())
	ns := newTestNS(t)
	dp, err := New(datapaths.Config{Node: nodeA, NS: ns})
	if err != nil {
		t.Fatal(err)
	}
	p := dp.(*Proxier)
	skipUnlessSupported(t, p.Check(context.Background()))
	t.Cleanup(func() {
		if err := p.Cleanup(context.Background()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return p, ns
}

func nft(t *testing.T, ns netnsutil.NS, stdin []byte, args ...string) string {
	t.Helper()
	out, err := ns.Run(context.Background(), stdin, append([]string{"nft"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// listTables is `nft list table` of both families, normalised: set and map
// elements sorted (the kernel lists hash sets in an order of its own), and
// everything else, rule order included, as nft prints it.
func listTables(t *testing.T, ns netnsutil.NS) string {
	t.Helper()
	var b strings.Builder
	for _, f := range families {
		b.WriteString(normalizeListing(nft(t, ns, nil, "list", "table", string(f), kubeProxyTable)))
	}
	return b.String()
}

func normalizeListing(s string) string {
	// Split the table into its objects (chain, set, map blocks), each with
	// its elements sorted; then sort the objects by their first line, since
	// nft prints them in creation order.
	var blocks []string
	var cur, elems []string
	header := ""
	depth := 0
	inElems := false
	for _, line := range strings.Split(s, "\n") {
		l := strings.TrimSpace(line)
		if l == "" {
			continue
		}
		if depth == 0 {
			header = l // "table ip kube-proxy {"
			depth = 1
			continue
		}
		if inElems || strings.HasPrefix(l, "elements = {") {
			inElems = true
			l = strings.TrimPrefix(l, "elements = {")
			end := strings.HasSuffix(l, "}")
			for _, e := range strings.Split(strings.TrimSuffix(l, "}"), ",") {
				if e = strings.TrimSpace(e); e != "" {
					elems = append(elems, e)
				}
			}
			if end {
				inElems = false
				slices.Sort(elems)
				cur = append(cur, "elements = { "+strings.Join(elems, ", ")+" }")
				elems = nil
			}
			continue
		}
		switch {
		case depth == 1 && l != "}" && !strings.HasSuffix(l, "{"):
			header += "\n" + l // the table's own comment
		case strings.HasSuffix(l, "{"):
			depth++
			cur = append(cur, l)
		case l == "}":
			depth--
			if depth == 1 && cur != nil {
				blocks = append(blocks, strings.Join(cur, "\n\t"))
				cur = nil
			}
		default:
			cur = append(cur, l)
		}
	}
	slices.Sort(blocks)
	return header + "\n" + strings.Join(blocks, "\n") + "\n"
}

// reference is listTables of a fresh namespace loaded with RulesetText(v)
// through plain `nft -f`: what the node must hold after syncing v.
func reference(t *testing.T, v *datapaths.NodeView) string {
	t.Helper()
	text, err := RulesetText(v)
	if err != nil {
		t.Fatal(err)
	}
	ns := newTestNS(t)
	nft(t, ns, []byte(text), "-f", "-")
	return listTables(t, ns)
}

func wantKernel(t *testing.T, ns netnsutil.NS, v *datapaths.NodeView) {
	t.Helper()
	if diff := cmp.Diff(reference(t, v), listTables(t, ns)); diff != "" {
		t.Fatalf("kernel ruleset differs from a fresh load of the rendered one (-want +got):\n%s", diff)
	}
}

func TestIntegrationSyncLifecycle(t *testing.T) {
	p, ns := newTestProxier(t)
	ctx := context.Background()
	clock := time.Now()
	p.now = func() time.Time { return clock }

	// Full sync.
	v1 := caseView(t, "overall-yaml")
	st, err := p.Sync(ctx, v1, datapaths.SyncOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !st.Full || st.Backend != "nftables" || st.Written == 0 || st.ChangedServices != 6 || st.Objects == 0 {
		t.Errorf("first sync: %+v", st)
	}
	listing := nft(t, ns, nil, "list", "table", "ip", "kube-proxy")
	for _, chain := range []string{
		"chain services", "chain nat-prerouting", "chain filter-output-pre-dnat", "chain cluster-ips-check",
		"chain service-ULMVA6XW-ns1/svc1/tcp/p80", "chain external-42NFTM6N-ns2/svc2/tcp/p80",
		"chain firewall-HVFWP5L3-ns5/svc5/tcp/p80", "map service-ips", "set affinity-",
		"masquerade fully-random", "numgen random mod 2 vmap",
	} {
		if !strings.Contains(listing, chain) {
			t.Errorf("nft list table ip kube-proxy lacks %q:\n%s", chain, listing)
		}
	}
	wantKernel(t, ns, v1)

	// Partial sync: svc1 gets a second endpoint.
	v2 := withEndpoints(v1, 0, v1.Cluster.Services[0].Ports[0].Endpoints[0], ep("198.18.65.99", 80, nodeB))
	st, err = p.Sync(ctx, v2, datapaths.SyncOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Full || st.ChangedServices != 1 || st.Written == 0 || st.Written > 20 {
		t.Errorf("partial sync: %+v", st)
	}
	wantKernel(t, ns, v2)

	// Remove svc2: chains flushed now, deleted a second later.
	v3 := withoutService(v2, 1)
	if _, err := p.Sync(ctx, v3, datapaths.SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	if l := nft(t, ns, nil, "list", "chains", "ip"); !strings.Contains(l, "ns2/svc2") {
		t.Errorf("svc2's chains were deleted at once; kube-proxy waits a second:\n%s", l)
	}
	clock = clock.Add(staleChainDelay)
	if _, err := p.Sync(ctx, v3, datapaths.SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	wantKernel(t, ns, v3)

	// A failing transaction changes nothing, and the next sync is full.
	before := nft(t, ns, nil, "list", "ruleset")
	p.hookTransaction = func(tx *knftables.Transaction) {
		tx.Flush(&knftables.Chain{Family: knftables.IPv4Family, Table: kubeProxyTable, Name: "no-such-chain"})
	}
	v4 := withEndpoints(v3, 0, ep("198.18.65.98", 80, nodeB))
	if _, err := p.Sync(ctx, v4, datapaths.SyncOptions{}); err == nil {
		t.Fatal("a sync whose transaction fails reported success")
	}
	if after := nft(t, ns, nil, "list", "ruleset"); after != before {
		t.Fatalf("a failed sync changed the ruleset:\n%s", cmp.Diff(before, after))
	}
	p.hookTransaction = nil
	st, err = p.Sync(ctx, v4, datapaths.SyncOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !st.Full {
		t.Errorf("the sync after a failure was not full: %+v", st)
	}
	clock = clock.Add(staleChainDelay)
	if _, err := p.Sync(ctx, v4, datapaths.SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	wantKernel(t, ns, v4)

	// The conntrack timeouts kube-proxy sets, in the namespace only.
	for key, want := range map[string]string{
		"net.netfilter.nf_conntrack_tcp_timeout_close_wait": "3600",
		"net.netfilter.nf_conntrack_tcp_be_liberal":         "1",
	} {
		if v, err := ns.ReadSysctl(key); err != nil || v != want {
			t.Errorf("%s = %q, %v; want %s", key, v, err, want)
		}
	}

	// Cleanup removes both tables and is safe to repeat.
	if err := p.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if l := strings.TrimSpace(nft(t, ns, nil, "list", "tables")); l != "" {
		t.Errorf("tables left after Cleanup: %s", l)
	}
	if err := p.Cleanup(ctx); err != nil {
		t.Errorf("second Cleanup: %v", err)
	}
}

// A proxier starting on a node that already has a kube-proxy table (left
// by an earlier run, with other Services) takes it over in one full sync.
func TestIntegrationTakesOverLeftovers(t *testing.T) {
	p, ns := newTestProxier(t)
	old, err := RulesetText(caseView(t, "affinity"))
	if err != nil {
		t.Fatal(err)
	}
	nft(t, ns, []byte(old), "-f", "-")
	clock := time.Now()
	p.now = func() time.Time { return clock }
	v := caseView(t, "etp-local")
	if _, err := p.Sync(context.Background(), v, datapaths.SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(staleChainDelay)
	if _, err := p.Sync(context.Background(), v, datapaths.SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	wantKernel(t, ns, v)
}

// Every golden ruleset is one the kernel accepts.
func TestIntegrationGoldensLoad(t *testing.T) {
	requireRoot(t)
	skipUnlessSupported(t, checkPrivileges())
	ns := newTestNS(t)
	files, err := filepath.Glob(filepath.Join("testdata", "*.golden"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ns.Run(context.Background(), text, "nft", "--check", "-f", "-"); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestIntegrationRegistrationCheck(t *testing.T) {
	requireRoot(t)
	reg, err := datapaths.Lookup(Name)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := netnsutil.List("prx-nftchk")
	skipUnlessSupported(t, reg.Check(context.Background(), datapaths.Config{}))
	if after, _ := netnsutil.List("prx-nftchk"); len(after) != len(before) {
		t.Errorf("the registration check left namespaces behind: %v", after)
	}
}

func TestIntegrationConntrackCleanup(t *testing.T) {
	requireRoot(t)
	ns := newTestNS(t)
	h, err := ns.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	cases := conntrackCases()
	created := 0
	for i, c := range cases {
		// Distinct client ports: the kernel refuses two entries with the
		// same original or reply tuple.
		c.flow.Forward.SrcPort = uint16(40000 + i)
		c.flow.Reverse.DstPort = uint16(40000 + i)
		c.flow.TimeOut = 300
		family := netlink.InetFamily(c.flow.FamilyType)
		if err := h.ConntrackCreate(netlink.ConntrackTable, family, c.flow); err != nil {
			t.Fatalf("create conntrack entry %q: %v", c.name, err)
		}
		created++
	}
	n, err := cleanStaleUDPConntrack(h, conntrackCluster())
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, c := range cases {
		if c.delete {
			want++
		}
	}
	if n != want {
		t.Errorf("deleted %d entries, want %d", n, want)
	}
	left := map[string]bool{}
	for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		flows, err := h.ConntrackTableList(netlink.ConntrackTable, fam)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range flows {
			left[key(f)] = true
		}
	}
	for _, c := range cases {
		if left[key(c.flow)] == c.delete {
			t.Errorf("%s: still there = %v, want %v", c.name, left[key(c.flow)], !c.delete)
		}
	}
	if len(left) != created-want {
		t.Errorf("%d entries left, want %d", len(left), created-want)
	}
}

// key identifies a test conntrack entry. netlink's dump parser reads ports
// of TCP and UDP tuples only, so SCTP entries are told apart by address.
func key(f *netlink.ConntrackFlow) string {
	if f.Forward.Protocol == unix.IPPROTO_SCTP {
		return fmt.Sprintf("%d %s %s", f.Forward.Protocol, f.Forward.DstIP, f.Reverse.SrcIP)
	}
	return fmt.Sprintf("%d %s:%d %s:%d", f.Forward.Protocol, f.Forward.DstIP, f.Forward.DstPort, f.Reverse.SrcIP, f.Reverse.SrcPort)
}
