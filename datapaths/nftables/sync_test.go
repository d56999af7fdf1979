package nftables

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/knftables"

	"proxyrig/datapaths"
	"proxyrig/internal/netnsutil"
	"proxyrig/model"
)

// Unit tests of the sync logic against knftables.Fake: no root, no kernel.

type fakeProxier struct {
	*Proxier
	fake  fakeClient
	clock time.Time
}

func newFakeProxier(t *testing.T) *fakeProxier {
	t.Helper()
	fp := &fakeProxier{fake: newFakeClient(), clock: time.Unix(1_700_000_000, 0)}
	fp.Proxier = newProxier(datapaths.Config{Node: nodeA, NS: netnsutil.NS{Name: "prx-unit-fake"}}, fp.fake)
	fp.now = func() time.Time { return fp.clock }
	return fp
}

func (fp *fakeProxier) sync(t *testing.T, v *datapaths.NodeView, opts datapaths.SyncOptions) datapaths.SyncStats {
	t.Helper()
	st, err := fp.Sync(context.Background(), v, opts)
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	return st
}

// lastTx is the text of the last transaction the fake ran.
func (fp *fakeProxier) lastTx() string {
	fp.fake.RLock()
	defer fp.fake.RUnlock()
	if fp.fake.LastTransaction == nil {
		return ""
	}
	return fp.fake.LastTransaction.String()
}

func (fp *fakeProxier) lastOps() int {
	fp.fake.RLock()
	defer fp.fake.RUnlock()
	return fp.fake.LastTransaction.NumOperations()
}

// wantDump fails unless the fake holds exactly what a full sync of v
// into an empty node would leave.
func wantDump(t *testing.T, fp *fakeProxier, v *datapaths.NodeView) {
	t.Helper()
	want, err := RulesetText(v)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, fp.fake.Dump()); diff != "" {
		t.Fatalf("kernel state differs from a fresh full sync (-want +got):\n%s", diff)
	}
}

// settle lets stale chains come due, syncs again (deleting them) and then
// checks the fake holds what a fresh full sync of v would build.
func settle(t *testing.T, fp *fakeProxier, v *datapaths.NodeView) {
	t.Helper()
	fp.clock = fp.clock.Add(staleChainDelay)
	fp.sync(t, v, datapaths.SyncOptions{})
	wantDump(t, fp, v)
}

// seedTables makes fake hold what a full sync of v into an empty node
// leaves, without Fake.Run for the Services: the fake looks up every map
// element it inserts with a linear scan, so a full sync of 10,000 Services
// through it takes minutes. TestSeedTablesMatchesFullSync checks that the
// result is exactly RulesetText's.
func seedTables(t *testing.T, fake fakeClient, v *datapaths.NodeView) {
	t.Helper()
	rs, err := Render(v)
	if err != nil {
		t.Fatal(err)
	}
	tx := fake.NewTransaction()
	for _, fs := range rs.Families {
		writeBase(tx, fs, false)
	}
	if err := fake.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	fake.Lock()
	defer fake.Unlock()
	for _, fs := range rs.Families {
		table := fake.Tables[fs.Family][kubeProxyTable]
		for _, ss := range fs.Services {
			for _, c := range ss.Chains {
				table.Chains[c] = &knftables.FakeChain{Chain: knftables.Chain{Family: fs.Family, Table: kubeProxyTable, Name: c}}
			}
			for _, set := range ss.Sets {
				table.Sets[set.Name] = &knftables.FakeSet{Set: *set}
			}
			for _, r := range ss.Rules {
				table.Chains[r.Chain].Rules = append(table.Chains[r.Chain].Rules, r)
			}
			for _, e := range ss.Elements {
				if e.Set != "" {
					table.Sets[e.Set].Elements = append(table.Sets[e.Set].Elements, e)
				} else {
					table.Maps[e.Map].Elements = append(table.Maps[e.Map].Elements, e)
				}
			}
		}
	}
}

// seedingClient applies its next transaction by seeding the fake with a
// full sync of view, rather than running it through Fake.Run.
type seedingClient struct {
	fakeClient
	t    *testing.T
	view *datapaths.NodeView
}

func (c *seedingClient) Run(ctx context.Context, tx *knftables.Transaction) error {
	if c.view == nil {
		return c.fakeClient.Run(ctx, tx)
	}
	seedTables(c.t, c.fakeClient, c.view)
	c.view = nil
	return nil
}

func TestSeedTablesMatchesFullSync(t *testing.T) {
	for _, c := range goldenCases() {
		f := newFakeClient()
		seedTables(t, f, c.view)
		want, _ := RulesetText(c.view)
		if diff := cmp.Diff(want, f.Dump()); diff != "" {
			t.Errorf("%s: seeded tables differ from a full sync (-want +got):\n%s", c.name, diff)
		}
	}
}

// scaleView is n ClusterIP Services with five remote endpoints each.
func scaleView(n int) *datapaths.NodeView {
	svcs := make([]*model.Service, 0, n)
	for i := range n {
		eps := make([]*model.Endpoint, 0, 5)
		for j := range 5 {
			k := i*5 + j
			eps = append(eps, ep(fmt.Sprintf("198.18.%d.%d", 65+k/250%60, 1+k%250), 8080, nodeB))
		}
		svcs = append(svcs, service("default", fmt.Sprintf("svc-%05d", i), model.ClusterIP,
			addrs(fmt.Sprintf("198.19.%d.%d", i/250, 1+i%250)), port("http", model.TCP, 80, 0, eps...)))
	}
	return view(svcs...)
}

// withEndpoints returns a copy of v whose Service i has the given endpoints
// on its first port; the rest of the cluster is shared, unchanged.
func withEndpoints(v *datapaths.NodeView, i int, eps ...*model.Endpoint) *datapaths.NodeView {
	svcs := append([]*model.Service(nil), v.Cluster.Services...)
	s := *svcs[i]
	p := *s.Ports[0]
	p.Endpoints = eps
	s.Ports = []*model.ServicePort{&p}
	svcs[i] = &s
	nv := *v
	c := *v.Cluster
	c.Services = svcs
	nv.Cluster = &c
	return &nv
}

func withoutService(v *datapaths.NodeView, i int) *datapaths.NodeView {
	svcs := append([]*model.Service(nil), v.Cluster.Services[:i]...)
	svcs = append(svcs, v.Cluster.Services[i+1:]...)
	nv := *v
	c := *v.Cluster
	c.Services = svcs
	nv.Cluster = &c
	return &nv
}

// TestPartialSyncAtScale is the headline property: with 10,000 Services
// installed, replacing one endpoint of one Service writes a transaction
// whose size depends on that Service alone. Counts, never timings.
func TestPartialSyncAtScale(t *testing.T) {
	const n = 10000
	v := scaleView(n)
	fp := newFakeProxier(t)
	seeding := &seedingClient{fakeClient: fp.fake, t: t, view: v}
	fp.Proxier.nft = seeding

	st := fp.sync(t, v, datapaths.SyncOptions{})
	if !st.Full || st.ChangedServices != n || st.Backend != "nftables" {
		t.Fatalf("first sync: %+v, want a full sync of %d Services", st, n)
	}
	fullOps := st.Written
	if min := n * (2*6 + 12 + 2); fullOps < min {
		t.Fatalf("the full sync wrote %d operations, fewer than the %d its Services need", fullOps, min)
	}

	// Nothing changed: a partial sync with an empty transaction, which is
	// not even run.
	fullTx := fp.fake.LastTransaction
	st = fp.sync(t, v, datapaths.SyncOptions{})
	if st.Full || st.ChangedServices != 0 || st.Written != 0 || fp.fake.LastTransaction != fullTx {
		t.Fatalf("no-op sync: %+v, want partial, nothing written:\n%s", st, fp.lastTx())
	}

	// Replace one endpoint of Service 5000 (five endpoints before and
	// after): its service chain and five endpoint chains are flushed and
	// rewritten, the replaced endpoint's chain is flushed as stale, and no
	// map element changes.
	const target = 5000
	old := v.Cluster.Services[target].Ports[0].Endpoints
	eps := append(append([]*model.Endpoint(nil), old[:4]...), ep("198.18.126.250", 8080, nodeB))
	v2 := withEndpoints(v, target, eps...)
	st = fp.sync(t, v2, datapaths.SyncOptions{})
	const (
		chains    = 1 + 5      // service chain + endpoint chains
		rewrite   = 2 * chains // add + flush each
		rules     = 2 + 2*5    // masquerade + numgen; hairpin + dnat per endpoint
		staleOps  = 1          // flush of the replaced endpoint's chain
		wantTotal = rewrite + rules + staleOps
	)
	if st.Full || st.ChangedServices != 1 || st.Written != wantTotal || fp.lastOps() != wantTotal {
		t.Fatalf("one-endpoint change at %d Services: %+v (transaction has %d operations), want partial, 1 Service, %d operations (a full sync has %d):\n%s",
			n, st, fp.lastOps(), wantTotal, fullOps, fp.lastTx())
	}
	for _, line := range strings.Split(strings.TrimSpace(fp.lastTx()), "\n") {
		if !strings.Contains(line, "default/svc-05000/") {
			t.Errorf("the partial sync touches something besides svc-05000: %s", line)
		}
	}

	// Removing a whole Service: its chains are flushed (6) and its two map
	// elements deleted. As in kube-proxy, a stale chain is flushed again
	// on every sync until it is deleted: the replaced endpoint's chain (1).
	v3 := withoutService(v2, 7000)
	st = fp.sync(t, v3, datapaths.SyncOptions{})
	if st.Full || st.ChangedServices != 1 || st.Written != 6+2+1 {
		t.Fatalf("removing one Service at %d: %+v, want 9 operations:\n%s", n, st, fp.lastTx())
	}

	// The stale chains (one endpoint chain of svc-05000, six of svc-07000)
	// are not deleted by a sync that changes a Service, even once due:
	// deleting makes nft read its whole cache (see Proxier.Sync).
	fp.clock = fp.clock.Add(staleChainDelay)
	v4 := withEndpoints(v3, 6000, ep("198.18.99.1", 8080, nodeB))
	st = fp.sync(t, v4, datapaths.SyncOptions{})
	if st.ChangedServices != 1 || strings.Contains(fp.lastTx(), "delete chain") {
		t.Errorf("a sync changing svc-06000 after the delay: %+v, want no chain deleted:\n%s", st, fp.lastTx())
	}
	// A sync that changes nothing (the periodic resync) deletes the due
	// ones, in a transaction of their own, after the main one has flushed
	// every stale chain once more: the 7, and the 5 endpoint chains
	// svc-06000 just gave up, which are not due yet.
	st = fp.sync(t, v4, datapaths.SyncOptions{})
	if st.Written != 7+5+7 || st.ChangedServices != 0 || fp.lastOps() != 7 || strings.Count(fp.lastTx(), "delete chain") != 7 {
		t.Errorf("resync after the delay: %+v, want 12 stale chains flushed, then the 7 due ones deleted, and nothing else:\n%s", st, fp.lastTx())
	}
	fp.clock = fp.clock.Add(staleChainDelay)
	fp.sync(t, v4, datapaths.SyncOptions{})
	fresh := newFakeClient()
	seedTables(t, fresh, v4)
	if got, want := fp.fake.Dump(), fresh.Dump(); got != want {
		t.Fatalf("after partial syncs at %d Services the tables differ from a fresh full sync:\n%s", n, cmp.Diff(want, got))
	}
}

func TestPartialSyncServiceLifecycle(t *testing.T) {
	fp := newFakeProxier(t)
	a := service("default", "a", model.ClusterIP, addrs("198.19.0.1"), port("http", model.TCP, 80, 0, ep("198.18.65.1", 80, nodeB)))
	b := service("default", "b", model.NodePort, addrs("198.19.0.2"), port("http", model.TCP, 80, 30002, ep("198.18.65.2", 80, nodeB)))
	b.SessionAffinity = true
	v1 := view(a, b)
	fp.sync(t, v1, datapaths.SyncOptions{})
	wantDump(t, fp, v1)

	// Add a Service without endpoints: only elements (REJECT), no chains.
	c := service("default", "c", model.ClusterIP, addrs("198.19.0.3"), port("http", model.TCP, 80, 0))
	v2 := view(a, b, c)
	st := fp.sync(t, v2, datapaths.SyncOptions{})
	if st.Full || st.ChangedServices != 1 {
		t.Errorf("adding c: %+v", st)
	}
	if got, want := fp.lastTx(), "add element ip kube-proxy cluster-ips { 198.19.0.3 }\nadd element ip kube-proxy no-endpoint-services { 198.19.0.3 . tcp . 80 comment \"default/c:http\" : goto reject-chain }\n"; got != want {
		t.Errorf("adding an endpoint-less Service wrote:\n%s\nwant:\n%s", got, want)
	}
	wantDump(t, fp, v2)

	// Give c an endpoint: the REJECT element goes, a dispatch element and
	// chains come.
	c2 := *c
	c2.Ports = []*model.ServicePort{port("http", model.TCP, 80, 0, ep("198.18.65.3", 80, nodeB))}
	v3 := view(a, b, &c2)
	fp.sync(t, v3, datapaths.SyncOptions{})
	if tx := fp.lastTx(); !strings.Contains(tx, "delete element ip kube-proxy no-endpoint-services { 198.19.0.3 . tcp . 80 }") ||
		!strings.Contains(tx, "add element ip kube-proxy service-ips { 198.19.0.3 . tcp . 80 : goto service-") {
		t.Errorf("c gaining an endpoint:\n%s", tx)
	}
	wantDump(t, fp, v3)

	// Delete b (NodePort, affinity): its elements and affinity set go at
	// once, its chains are flushed now and deleted a second later.
	v4 := view(a, &c2)
	st = fp.sync(t, v4, datapaths.SyncOptions{})
	tx := fp.lastTx()
	for _, want := range []string{
		"delete element ip kube-proxy service-nodeports { tcp . 30002 }",
		"delete element ip kube-proxy service-ips { 198.19.0.2 . tcp . 80 }",
		"delete element ip kube-proxy cluster-ips { 198.19.0.2 }",
		"delete set ip kube-proxy affinity-",
		"flush chain ip kube-proxy service-",
		"flush chain ip kube-proxy external-",
		"flush chain ip kube-proxy endpoint-",
	} {
		if !strings.Contains(tx, want) {
			t.Errorf("deleting b: the transaction lacks %q:\n%s", want, tx)
		}
	}
	if st.ChangedServices != 1 || strings.Contains(tx, "delete chain") {
		t.Errorf("deleting b: %+v, transaction:\n%s", st, tx)
	}
	fp.clock = fp.clock.Add(staleChainDelay / 2)
	fp.sync(t, v4, datapaths.SyncOptions{})
	if strings.Count(fp.fake.Dump(), "/b/") == 0 {
		t.Error("b's chains were deleted before the delay passed")
	}
	fp.clock = fp.clock.Add(staleChainDelay / 2)
	fp.sync(t, v4, datapaths.SyncOptions{})
	wantDump(t, fp, v4)
}

// A chain that becomes stale and then active again before the delay is
// rewritten, not deleted.
func TestStaleChainRevived(t *testing.T) {
	fp := newFakeProxier(t)
	a := service("default", "a", model.ClusterIP, addrs("198.19.0.1"), port("http", model.TCP, 80, 0, ep("198.18.65.1", 80, nodeB)))
	v1 := view(a)
	fp.sync(t, v1, datapaths.SyncOptions{})
	v0 := view()
	fp.sync(t, v0, datapaths.SyncOptions{})
	fp.sync(t, v1, datapaths.SyncOptions{})
	fp.clock = fp.clock.Add(time.Hour)
	fp.sync(t, v1, datapaths.SyncOptions{})
	wantDump(t, fp, v1)
}

func TestFailedSyncLeavesStateAndForcesFull(t *testing.T) {
	fp := newFakeProxier(t)
	v1 := caseView(t, "overall-yaml")
	fp.sync(t, v1, datapaths.SyncOptions{})
	before := fp.fake.Dump()

	// The next transaction fails half-way: an operation on a chain that
	// does not exist. Nothing of it may stick.
	v2 := withEndpoints(v1, 0, ep("198.18.65.99", 80, nodeB))
	fp.hookTransaction = func(tx *knftables.Transaction) {
		tx.Flush(&knftables.Chain{Family: knftables.IPv4Family, Table: kubeProxyTable, Name: "no-such-chain"})
	}
	if _, err := fp.Sync(context.Background(), v2, datapaths.SyncOptions{}); err == nil {
		t.Fatal("a sync whose transaction fails reported success")
	}
	if diff := cmp.Diff(before, fp.fake.Dump()); diff != "" {
		t.Fatalf("a failed sync changed the ruleset (-before +after):\n%s", diff)
	}

	fp.hookTransaction = nil
	st := fp.sync(t, v2, datapaths.SyncOptions{})
	if !st.Full {
		t.Errorf("the sync after a failure was not full: %+v", st)
	}
	settle(t, fp, v2)
	if st = fp.sync(t, v2, datapaths.SyncOptions{}); st.Full || st.Written != 0 {
		t.Errorf("the sync after recovery: %+v, want partial and empty", st)
	}
}

func TestForceFullAndBaseChangesSyncFully(t *testing.T) {
	fp := newFakeProxier(t)
	v := caseView(t, "nodeport")
	fp.sync(t, v, datapaths.SyncOptions{})
	if st := fp.sync(t, v, datapaths.SyncOptions{ForceFull: true}); !st.Full || st.ChangedServices != 1 {
		t.Errorf("ForceFull: %+v", st)
	}
	wantDump(t, fp, v)

	// --nodeport-addresses and ServiceCIDRs are part of the fixed setup.
	v2 := caseView(t, "nodeport-match-all")
	if st := fp.sync(t, v2, datapaths.SyncOptions{}); !st.Full {
		t.Errorf("changing --nodeport-addresses: %+v, want a full sync", st)
	}
	settle(t, fp, v2)
	v3 := caseView(t, "no-detector")
	if st := fp.sync(t, v3, datapaths.SyncOptions{}); !st.Full {
		t.Errorf("dropping ServiceCIDRs: %+v, want a full sync", st)
	}
	settle(t, fp, v3)
}

// Walking through every golden fixture in turn, partial syncs must always
// land on the state a fresh full sync would build.
func TestPartialSyncsConverge(t *testing.T) {
	fp := newFakeProxier(t)
	for _, c := range goldenCases() {
		if _, err := fp.Sync(context.Background(), c.view, datapaths.SyncOptions{}); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		fp.clock = fp.clock.Add(staleChainDelay)
		if _, err := fp.Sync(context.Background(), c.view, datapaths.SyncOptions{}); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		want, _ := RulesetText(c.view)
		if diff := cmp.Diff(want, fp.fake.Dump()); diff != "" {
			t.Fatalf("after moving to %s (-want +got):\n%s", c.name, diff)
		}
	}
}

func TestCleanupRemovesTables(t *testing.T) {
	fp := newFakeProxier(t)
	fp.sync(t, caseView(t, "affinity"), datapaths.SyncOptions{})
	if err := fp.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := fp.fake.Dump(); d != "" {
		t.Fatalf("tables left after Cleanup:\n%s", d)
	}
	if err := fp.Cleanup(context.Background()); err != nil {
		t.Fatalf("second Cleanup: %v", err)
	}
	if st := fp.sync(t, caseView(t, "affinity"), datapaths.SyncOptions{}); !st.Full {
		t.Errorf("the sync after Cleanup was not full: %+v", st)
	}
}

func TestFailNextSyncIsOneShot(t *testing.T) {
	fp := newFakeProxier(t)
	v := caseView(t, "clusterip-simple")
	fp.sync(t, v, datapaths.SyncOptions{})
	before := fp.fake.Dump()
	if d := fp.FailNextSync(); !strings.Contains(d, faultChain) {
		t.Errorf("fault description %q does not name the fault", d)
	}
	if _, err := fp.Sync(context.Background(), v, datapaths.SyncOptions{}); err == nil {
		t.Fatal("the armed sync succeeded")
	}
	if fp.fake.Dump() != before {
		t.Fatal("the failed sync changed the ruleset")
	}
	if st := fp.sync(t, v, datapaths.SyncOptions{}); !st.Full {
		t.Errorf("the sync after the fault: %+v, want full", st)
	}
	settle(t, fp, v)
}

// TestStaleChainBatch checks when stale chains are deleted by a sync that
// changes Services: not while fewer than staleChainBatch are due, at once
// when that many are.
func TestStaleChainBatch(t *testing.T) {
	fp := newFakeProxier(t)
	v := scaleView(100) // six chains per Service
	fp.sync(t, v, datapaths.SyncOptions{})
	few := &datapaths.NodeView{Cluster: &model.Cluster{Services: v.Cluster.Services[:90], Nodes: v.Cluster.Nodes}, Node: v.Node, Proxy: v.Proxy}
	fp.sync(t, few, datapaths.SyncOptions{}) // 60 stale chains
	fp.clock = fp.clock.Add(staleChainDelay)
	changed := withEndpoints(few, 0, ep("198.18.99.1", 8080, nodeB))
	fp.sync(t, changed, datapaths.SyncOptions{})
	if strings.Contains(fp.lastTx(), "delete chain") {
		t.Fatalf("60 due stale chains were deleted by a sync that changed a Service:\n%s", fp.lastTx())
	}
	many := &datapaths.NodeView{Cluster: &model.Cluster{Services: changed.Cluster.Services[:40], Nodes: v.Cluster.Nodes}, Node: v.Node, Proxy: v.Proxy}
	fp.sync(t, many, datapaths.SyncOptions{}) // 300 more, not due yet
	fp.clock = fp.clock.Add(staleChainDelay)
	fp.sync(t, withEndpoints(many, 1, ep("198.18.99.2", 8080, nodeB)), datapaths.SyncOptions{})
	if n := strings.Count(fp.lastTx(), "delete chain"); n < staleChainBatch {
		t.Fatalf("%d chains deleted with more than %d due, want them all:\n%s", n, staleChainBatch, fp.lastTx())
	}
}
