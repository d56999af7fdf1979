package topologies

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"proxyrig/datapaths"
	"proxyrig/internal/netnsutil"
	"proxyrig/model"
)

// requireRoot skips without root, except under CI=true where this machine
// is expected to run everything.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	const why = "needs root: creates network namespaces, veths and bridges"
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip(why)
}

// labName returns a fresh lab name: tag plus random hex, so tests (and
// test runs in parallel on one machine) never share namespaces.
func labName(t testing.TB, tag string) string {
	t.Helper()
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name := tag + hex.EncodeToString(b)
	if err := ValidateName(name); err != nil {
		t.Fatal(err)
	}
	return name
}

func labNamespaces(t *testing.T, lab string) []string {
	t.Helper()
	names, err := netnsutil.List(labPrefix(lab))
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// buildLab builds a lab and closes it at the end of the test, checking
// that nothing of it remains.
func buildLab(t *testing.T, c *model.Cluster, opts Options) *Lab {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := Build(ctx, c, opts)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
		if left := labNamespaces(t, opts.Name); len(left) > 0 {
			t.Errorf("namespaces left after Close: %v", left)
		}
	})
	return l
}

// The test cluster: two nodes; web-a on node-a and web-b on node-b, both
// dual-stack; host-b, a host-network endpoint on node-b's address.
func testCluster() *model.Cluster {
	return &model.Cluster{
		Nodes: []*model.Node{mkNode("node-a"), mkNode("node-b")},
		Services: []*model.Service{
			mkSvc("web", []string{"198.19.0.10", "2001:db8:19::10"},
				mkPort(model.TCP, 80,
					mkEP("198.18.64.10", 8080, "web-a", "node-a"),
					mkEP("198.18.65.10", 8080, "web-b", "node-b"),
					mkEP("2001:db8:64::10", 8080, "web-a", "node-a"),
					mkEP("2001:db8:65::10", 8080, "web-b", "node-b"),
				),
				mkPort(model.UDP, 53,
					mkEP("198.18.64.10", 5353, "web-a", "node-a"),
					mkEP("198.18.65.10", 5353, "web-b", "node-b"),
				),
			),
			// 198.18.0.12 is node-b's default address.
			mkSvc("host", []string{"198.19.0.11"}, mkPort(model.TCP, 81, mkEP("198.18.0.12", 9090, "host-b", "node-b"))),
			mkSvc("diameter", []string{"198.19.0.13"}, mkPort(model.SCTP, 3868, mkEP("198.18.64.10", 3868, "web-a", "node-a"))),
		},
	}
}

func probe(t *testing.T, ns netnsutil.NS, proto, dst string, timeout time.Duration) ProbeResult {
	t.Helper()
	return Probe(context.Background(), ns, ProbeSpec{Proto: proto, Dst: netip.MustParseAddrPort(dst), Timeout: timeout})
}

func wantAnswer(t *testing.T, what string, r ProbeResult, endpoint string, seen netip.Addr) {
	t.Helper()
	if r.Outcome != Answered {
		t.Errorf("%s: outcome %s (%s), want answered by %s", what, r.Outcome, r.Err, endpoint)
		return
	}
	if r.Endpoint != endpoint {
		t.Errorf("%s: answered by %q, want %q", what, r.Endpoint, endpoint)
	}
	if r.SeenSource.Addr() != seen {
		t.Errorf("%s: backend saw %s, want %s", what, r.SeenSource, seen)
	}
	if r.Local.Addr() != seen || r.Local.Port() != r.SeenSource.Port() {
		t.Errorf("%s: local socket %s, but backend saw %s (no NAT expected)", what, r.Local, r.SeenSource)
	}
}

func TestLabDirect(t *testing.T) {
	requireRoot(t)
	name := labName(t, "tdir")
	l := buildLab(t, testCluster(), Options{Name: name})

	clientA, clientB := l.ClientNS("node-a"), l.ClientNS("node-b")
	ipA, ipA6 := l.ClientIP("node-a", false), l.ClientIP("node-a", true)
	if clientA.Name != "prx-"+name+"-c-node-a" || ipA != netip.MustParseAddr("198.18.127.1") {
		t.Fatalf("client pod of node-a: %s %s", clientA.Name, ipA)
	}
	if l.NodeIP("node-b", false) != netip.MustParseAddr("198.18.0.12") || !l.NodeIP("node-b", true).IsValid() {
		t.Fatalf("node-b addresses: %s %s", l.NodeIP("node-b", false), l.NodeIP("node-b", true))
	}

	t.Run("pod to pod across nodes", func(t *testing.T) {
		wantAnswer(t, "TCP client-a -> web-b", probe(t, clientA, "TCP", "198.18.65.10:8080", 0), "web-b", ipA)
		wantAnswer(t, "TCP6 client-a -> web-b", probe(t, clientA, "TCP", "[2001:db8:65::10]:8080", 0), "web-b", ipA6)
		wantAnswer(t, "TCP client-b -> web-a", probe(t, clientB, "TCP", "198.18.64.10:8080", 0), "web-a", l.ClientIP("node-b", false))
	})
	t.Run("pod to pod on one node", func(t *testing.T) {
		wantAnswer(t, "TCP client-a -> web-a", probe(t, clientA, "TCP", "198.18.64.10:8080", 0), "web-a", ipA)
	})
	t.Run("endpoint as client", func(t *testing.T) {
		ns := l.EndpointNS("web-a")
		if ns.Name != "prx-"+name+"-p-web-a" || l.EndpointNS("198.18.64.10") != ns || l.EndpointNS("2001:db8:64::10") != ns {
			t.Fatalf("EndpointNS(web-a) = %q; by IP %q", ns.Name, l.EndpointNS("198.18.64.10").Name)
		}
		r := Probe(context.Background(), ns, ProbeSpec{Proto: "TCP", Dst: netip.MustParseAddrPort("198.18.65.10:8080"), Src: netip.MustParseAddrPort("198.18.64.10:0")})
		wantAnswer(t, "web-a -> web-b", r, "web-b", netip.MustParseAddr("198.18.64.10"))
	})
	t.Run("UDP echo", func(t *testing.T) {
		wantAnswer(t, "UDP client-b -> web-a", probe(t, clientB, "UDP", "198.18.64.10:5353", 0), "web-a", l.ClientIP("node-b", false))
		// A fixed source port is kept.
		r := Probe(context.Background(), clientB, ProbeSpec{Proto: "UDP", Dst: netip.MustParseAddrPort("198.18.64.10:5353"), Src: netip.MustParseAddrPort("0.0.0.0:12345")})
		if r.Outcome != Answered || r.SeenSource.Port() != 12345 {
			t.Errorf("UDP from fixed port 12345: %+v", r)
		}
	})
	t.Run("external reaches a node and a host-network endpoint", func(t *testing.T) {
		ext := l.ExternalNS(0)
		if ext.Name != "prx-"+name+"-x-0" || l.ExternalIP(0, false) != netip.MustParseAddr("198.18.0.200") {
			t.Fatalf("external 0: %s %s", ext.Name, l.ExternalIP(0, false))
		}
		if ns := l.EndpointNS("host-b"); ns != l.NodeNS("node-b") {
			t.Errorf("EndpointNS(host-b) = %q, want node-b's namespace", ns.Name)
		}
		wantAnswer(t, "external -> host-b", probe(t, ext, "TCP", "198.18.0.12:9090", 0), "host-b", l.ExternalIP(0, false))
		wantAnswer(t, "client-a -> host-b", probe(t, clientA, "TCP", "198.18.0.12:9090", 0), "host-b", ipA)
	})
	t.Run("closed port is refused", func(t *testing.T) {
		for _, proto := range []string{"TCP", "UDP"} {
			if r := probe(t, clientA, proto, "198.18.65.10:9999", 0); r.Outcome != Refused {
				t.Errorf("%s to a closed port: %s (%s), want refused", proto, r.Outcome, r.Err)
			}
		}
		if r := probe(t, l.ExternalNS(0), "TCP", "198.18.0.11:9999", 0); r.Outcome != Refused {
			t.Errorf("TCP to a node's closed port: %s (%s), want refused", r.Outcome, r.Err)
		}
	})
	t.Run("silent address times out", func(t *testing.T) {
		// No datapath: nothing answers for a ClusterIP, and ARP for it goes
		// unanswered on the segment.
		for _, proto := range []string{"TCP", "UDP"} {
			if r := probe(t, clientA, proto, "198.19.0.10:80", 300*time.Millisecond); r.Outcome != TimedOut {
				t.Errorf("%s to a silent address: %s (%s), want timeout", proto, r.Outcome, r.Err)
			}
		}
	})
	t.Run("SCTP", func(t *testing.T) {
		info := l.Info()
		r := probe(t, clientA, "SCTP", "198.18.64.10:3868", 0)
		if info.SCTP {
			wantAnswer(t, "SCTP client-a -> web-a", r, "web-a", ipA)
			return
		}
		// This kernel has no SCTP sockets: the lab says so and goes on.
		if !slices.Contains(info.Notes, noSCTPNote) {
			t.Errorf("no SCTP, but the notes do not say so: %v", info.Notes)
		}
		if r.Outcome != Failed || !strings.Contains(r.Err, "SCTP") {
			t.Errorf("SCTP probe without kernel support: %+v", r)
		}
	})
	t.Run("info", func(t *testing.T) {
		info := l.Info()
		if info.Name != name || info.Topology != "direct" || info.Fabric != "prx-"+name+"-fabric" || len(info.Nodes) != 2 {
			t.Errorf("info header: %+v", info)
		}
		var names []string
		for _, e := range info.Endpoints {
			names = append(names, e.Name)
		}
		if !slices.Equal(names, []string{"host-b", "web-a", "web-b"}) {
			t.Errorf("info endpoints %v", names)
		}
		if len(info.Clients) != 3 || info.Clients[0].Kind != "external" || info.Clients[1].Node != "node-a" {
			t.Errorf("info clients %+v", info.Clients)
		}
		if _, err := json.Marshal(info); err != nil {
			t.Error(err)
		}
		if got := l.Cluster().Node("node-a").Addresses; len(got) != 2 {
			t.Errorf("effective node-a addresses %v, want v4 and v6", got)
		}
		for _, ns := range []string{info.Fabric, info.Nodes[0].Netns, info.Endpoints[1].Netns, info.Clients[0].Netns} {
			if !netnsutil.Exists(ns) {
				t.Errorf("namespace %s does not exist", ns)
			}
		}
	})
	t.Run("sysctls", func(t *testing.T) {
		for key, want := range map[string]string{
			"net.ipv4.ip_forward":               "1",
			"net.ipv6.conf.all.forwarding":      "1",
			"net.ipv4.conf.all.rp_filter":       "0",
			"net.ipv4.conf.eth0.rp_filter":      "0",
			"net.ipv4.conf.all.send_redirects":  "0",
			"net.ipv6.conf.eth0.accept_dad":     "0",
			"net.ipv4.conf.eth0.send_redirects": "0",
		} {
			if got, err := l.NodeNS("node-a").ReadSysctl(key); err != nil || got != want {
				t.Errorf("node-a %s = %q (%v), want %s", key, got, err, want)
			}
		}
	})
}

// noopDatapath stands in for a real one: it counts syncs and programs
// nothing, so the lab's datapath plumbing and health checks can be tested
// without iptables.
type noopDatapath struct {
	node     string
	syncs    *atomic.Int32
	cleanups *atomic.Int32
}

func (d *noopDatapath) Name() string                    { return "topologies-noop" }
func (d *noopDatapath) Check(ctx context.Context) error { return nil }
func (d *noopDatapath) Sync(ctx context.Context, v *datapaths.NodeView, o datapaths.SyncOptions) (datapaths.SyncStats, error) {
	if v.Node == nil || v.Node.Name != d.node || v.Cluster == nil || len(v.Proxy.ClusterCIDRs) == 0 {
		return datapaths.SyncStats{}, fmt.Errorf("bad view for %s: %+v", d.node, v)
	}
	d.syncs.Add(1)
	return datapaths.SyncStats{Full: o.ForceFull, Objects: len(v.Cluster.Services), Backend: "noop"}, nil
}
func (d *noopDatapath) Cleanup(ctx context.Context) error { d.cleanups.Add(1); return nil }

var (
	registerOnce sync.Once
	noopSyncs    atomic.Int32
	noopCleanups atomic.Int32
)

func registerTestDatapaths() {
	registerOnce.Do(func() {
		datapaths.Register(datapaths.Registration{
			Name: "topologies-noop",
			New: func(cfg datapaths.Config) (datapaths.Datapath, error) {
				if !netnsutil.Exists(cfg.NS.Name) {
					return nil, fmt.Errorf("node namespace %q does not exist", cfg.NS.Name)
				}
				return &noopDatapath{node: cfg.Node, syncs: &noopSyncs, cleanups: &noopCleanups}, nil
			},
		})
		datapaths.Register(datapaths.Registration{
			Name: "topologies-unsupported",
			New:  func(datapaths.Config) (datapaths.Datapath, error) { return nil, errors.New("unreachable") },
			Check: func(context.Context, datapaths.Config) error {
				return &datapaths.NotSupportedError{Datapath: "topologies-unsupported", Reason: "test says no"}
			},
		})
	})
}

func lbCluster(epNode string, ready bool) *model.Cluster {
	c := &model.Cluster{Nodes: []*model.Node{mkNode("node-a"), mkNode("node-b")}}
	var eps []*model.Endpoint
	if epNode != "" {
		ep := mkEP("198.18.64.20", 8080, "lb-0", epNode)
		ep.Ready = ready
		eps = append(eps, ep)
	}
	lb := mkSvc("lb", []string{"198.19.0.30"}, mkPort(model.TCP, 80, eps...))
	lb.Type = model.LoadBalancer
	lb.ExternalTrafficPolicy = model.PolicyLocal
	lb.HealthCheckNodePort = 30100
	lb.Ports[0].NodePort = 30080
	lb.LoadBalancerIPs = []netip.Addr{netip.MustParseAddr("198.19.100.1")}
	c.Services = []*model.Service{lb}
	return c
}

func TestUnsupportedDatapathBuildsNothing(t *testing.T) {
	requireRoot(t)
	registerTestDatapaths()
	name := labName(t, "tuns")
	_, err := Build(context.Background(), testCluster(), Options{Name: name, Datapath: "topologies-unsupported"})
	if !errors.Is(err, datapaths.ErrNotSupported) {
		t.Errorf("Build with an unsupported datapath: %v, want ErrNotSupported", err)
	}
	if left := labNamespaces(t, name); len(left) > 0 {
		t.Errorf("namespaces made: %v", left)
	}
	if _, err := Build(context.Background(), testCluster(), Options{Name: name, Datapath: "no-such-datapath"}); err == nil {
		t.Error("unknown datapath accepted")
	}
}

func TestHealthCheckAndDatapath(t *testing.T) {
	requireRoot(t)
	registerTestDatapaths()
	name := labName(t, "thc")
	before := noopCleanups.Load()
	l := buildLab(t, lbCluster("node-a", true), Options{Name: name, Datapath: "topologies-noop"})
	ext := l.ExternalNS(0)
	url := func(node string) string {
		return fmt.Sprintf("http://%s:30100/healthz", l.NodeIP(node, false))
	}
	get := func(node string) (int, http.Header, map[string]any) {
		t.Helper()
		status, hdr, body, err := HTTPGet(context.Background(), ext, url(node), 3*time.Second)
		if err != nil {
			t.Fatalf("GET %s: %v", url(node), err)
		}
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("body %q is not JSON: %v", body, err)
		}
		return status, hdr, m
	}

	if ls := l.LastSync(); len(ls) != 2 || ls["node-a"].Backend != "noop" {
		t.Errorf("LastSync = %+v, want both nodes synced", ls)
	}
	if l.Info().Backend != "noop" || !l.Info().Nodes[0].Datapath {
		t.Errorf("info: %+v", l.Info())
	}

	status, hdr, m := get("node-a")
	if status != http.StatusOK {
		t.Errorf("node-a status %d, want 200", status)
	}
	if hdr.Get("Content-Type") != "application/json" || hdr.Get("X-Content-Type-Options") != "nosniff" || hdr.Get("X-Load-Balancing-Endpoint-Weight") != "1" {
		t.Errorf("node-a headers %v", hdr)
	}
	wantBody := map[string]any{
		"service":             map[string]any{"namespace": "default", "name": "lb"},
		"localEndpoints":      float64(1),
		"serviceProxyHealthy": true,
	}
	if fmt.Sprint(m) != fmt.Sprint(wantBody) {
		t.Errorf("node-a body %v, want %v", m, wantBody)
	}
	status, hdr, m = get("node-b")
	if status != http.StatusServiceUnavailable || m["localEndpoints"] != float64(0) || hdr.Get("X-Load-Balancing-Endpoint-Weight") != "0" {
		t.Errorf("node-b: %d %v %v, want 503 with 0 endpoints", status, m, hdr)
	}
	// Any path, and IPv6 is not needed for this check.
	if s, _, _, err := HTTPGet(context.Background(), ext, fmt.Sprintf("http://%s:30100/anything", l.NodeIP("node-a", false)), 3*time.Second); err != nil || s != 200 {
		t.Errorf("other path: %d %v", s, err)
	}

	// Move the endpoint to node-b: the counts follow.
	syncs := noopSyncs.Load()
	if err := l.Apply(context.Background(), lbCluster("node-b", true)); err != nil {
		t.Fatal(err)
	}
	if noopSyncs.Load()-syncs != 2 {
		t.Errorf("Apply synced %d nodes, want 2", noopSyncs.Load()-syncs)
	}
	if s, _, _ := get("node-a"); s != http.StatusServiceUnavailable {
		t.Errorf("after move, node-a %d, want 503", s)
	}
	if s, _, _ := get("node-b"); s != http.StatusOK {
		t.Errorf("after move, node-b %d, want 200", s)
	}
	if r := probe(t, l.ClientNS("node-a"), "TCP", "198.18.64.20:8080", 0); r.Outcome != Answered || r.Endpoint != "lb-0" {
		t.Errorf("moved pod does not answer: %+v", r)
	}
	if got := l.EndpointNS("lb-0"); got.Name == "" {
		t.Error("moved pod has no namespace")
	}
	// Not ready: 503 on both.
	if err := l.Apply(context.Background(), lbCluster("node-b", false)); err != nil {
		t.Fatal(err)
	}
	if s, _, _ := get("node-b"); s != http.StatusServiceUnavailable {
		t.Errorf("unready endpoint: node-b %d, want 503", s)
	}
	// Service no longer eTP=Local: the port closes.
	c := lbCluster("node-b", true)
	c.Services[0].ExternalTrafficPolicy = model.PolicyCluster
	if err := l.Apply(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if r := probe(t, ext, "TCP", l.NodeIP("node-b", false).String()+":30100", 0); r.Outcome != Refused {
		t.Errorf("health check port after eTP=Cluster: %s, want refused", r.Outcome)
	}

	if err := l.Resync(context.Background(), true); err != nil || !l.LastSync()["node-b"].Full {
		t.Errorf("Resync(force): %v, stats %+v", err, l.LastSync())
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := noopCleanups.Load() - before; got != 2 {
		t.Errorf("Close ran datapath Cleanup %d times, want 2", got)
	}
}

func TestApplyAddsAndRemovesEndpoints(t *testing.T) {
	requireRoot(t)
	name := labName(t, "tapp")
	l := buildLab(t, testCluster(), Options{Name: name})
	clientA := l.ClientNS("node-a")
	podC := "prx-" + name + "-p-web-c"

	withC := testCluster()
	web := withC.Services[0]
	web.Ports[0].Endpoints = append(web.Ports[0].Endpoints, mkEP("198.18.65.20", 8080, "web-c", "node-b"))
	// web-c also serves on a second port in another Service.
	withC.Services = append(withC.Services, mkSvc("other", []string{"198.19.0.12"},
		mkPort(model.UDP, 99, mkEP("198.18.65.20", 9999, "web-c", "node-b"))))

	if err := l.Apply(context.Background(), withC); err != nil {
		t.Fatal(err)
	}
	if !netnsutil.Exists(podC) {
		t.Fatalf("namespace %s not made", podC)
	}
	wantAnswer(t, "client-a -> web-c", probe(t, clientA, "TCP", "198.18.65.20:8080", 0), "web-c", l.ClientIP("node-a", false))
	wantAnswer(t, "client-a -> web-c UDP", probe(t, clientA, "UDP", "198.18.65.20:9999", 0), "web-c", l.ClientIP("node-a", false))

	// A cluster that fails validation changes nothing.
	bad := testCluster()
	bad.Services[0].Ports[0].Endpoints = append(bad.Services[0].Ports[0].Endpoints, mkEP("198.18.127.1", 80, "thief", "node-a"))
	if err := l.Apply(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "client pod") {
		t.Errorf("Apply of a colliding endpoint: %v, want an error naming the client pod", err)
	}
	moreNodes := testCluster()
	moreNodes.Nodes = append(moreNodes.Nodes, mkNode("node-c"))
	if err := l.Apply(context.Background(), moreNodes); err == nil {
		t.Error("Apply adding a node should fail")
	}
	if !netnsutil.Exists(podC) {
		t.Fatal("a failed Apply removed web-c")
	}
	wantAnswer(t, "after failed Apply", probe(t, clientA, "TCP", "198.18.65.20:8080", 0), "web-c", l.ClientIP("node-a", false))

	// Remove it again.
	if err := l.Apply(context.Background(), testCluster()); err != nil {
		t.Fatal(err)
	}
	if netnsutil.Exists(podC) {
		t.Errorf("namespace %s still there", podC)
	}
	if r := probe(t, clientA, "TCP", "198.18.65.20:8080", 300*time.Millisecond); r.Outcome == Answered {
		t.Errorf("removed endpoint still answers: %+v", r)
	}
	if l.EndpointNS("web-c").Name != "" {
		t.Error("EndpointNS still knows web-c")
	}
	// The others are untouched.
	wantAnswer(t, "web-b after removal", probe(t, clientA, "TCP", "198.18.65.10:8080", 0), "web-b", l.ClientIP("node-a", false))

	// Renaming an endpoint (same IP, new targetRef) moves it to a new
	// namespace and the echo name follows.
	renamed := testCluster()
	for _, sp := range renamed.Services[0].Ports {
		for _, ep := range sp.Endpoints {
			if ep.Name == "web-b" {
				ep.Name = "web-b2"
			}
		}
	}
	if err := l.Apply(context.Background(), renamed); err != nil {
		t.Fatal(err)
	}
	wantAnswer(t, "renamed", probe(t, clientA, "TCP", "198.18.65.10:8080", 0), "web-b2", l.ClientIP("node-a", false))
	wantAnswer(t, "renamed v6", probe(t, clientA, "TCP", "[2001:db8:65::10]:8080", 0), "web-b2", l.ClientIP("node-a", true))
	if netnsutil.Exists("prx-" + name + "-p-web-b") {
		t.Error("old namespace of web-b remains")
	}
}

func TestBuildCancelledLeavesNothing(t *testing.T) {
	requireRoot(t)
	delays := []time.Duration{0, time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond,
		20 * time.Millisecond, 40 * time.Millisecond, 80 * time.Millisecond, 200 * time.Millisecond}
	for _, delay := range delays {
		name := labName(t, "tcan")
		ctx, cancel := context.WithCancel(context.Background())
		go func() { time.Sleep(delay); cancel() }()
		l, err := Build(ctx, testCluster(), Options{Name: name})
		if err == nil {
			// Finished before the cancel: fine, but it must close cleanly.
			if cerr := l.Close(context.Background()); cerr != nil {
				t.Errorf("delay %v: Close: %v", delay, cerr)
			}
		} else if !errors.Is(err, context.Canceled) {
			t.Errorf("delay %v: Build failed for another reason: %v", delay, err)
		}
		cancel()
		t.Logf("delay %v: built=%v", delay, err == nil)
		if left := labNamespaces(t, name); len(left) > 0 {
			t.Errorf("delay %v (built=%v): namespaces left: %v", delay, err == nil, left)
			_, _ = Cleanup(context.Background(), name)
		}
	}
}

func TestCleanupAfterCrash(t *testing.T) {
	requireRoot(t)
	name := labName(t, "tcrash")
	l, err := Build(context.Background(), testCluster(), Options{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	// Stop the servers at the end; by then the namespaces are long gone.
	t.Cleanup(func() { _ = l.Close(context.Background()) })

	// A leftover supervisor process (this test binary, re-executed as a
	// stand-in; see TestMain) and state directory.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	title := "prx-" + name + "-supervisor"
	cmd := &exec.Cmd{Path: self, Args: []string{title}, Env: append(os.Environ(), standInEnv+"=1")}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The stand-in must be alive, under its title, before cleanup looks.
	// Right after Start the child may still be between fork and exec, when
	// /proc/<pid>/cmdline reads empty or as this binary's: wait for the
	// exec (seconds at most), and fail only if the title never shows.
	got := argv0(cmd.Process.Pid)
	for deadline := time.Now().Add(5 * time.Second); got != title && time.Now().Before(deadline); got = argv0(cmd.Process.Pid) {
		time.Sleep(5 * time.Millisecond)
	}
	if got != title {
		t.Fatalf("stand-in pid %d has argv[0] %q, want %q", cmd.Process.Pid, got, title)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	state := filepath.Join(StateRoot, name)
	if err := os.MkdirAll(state, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, "pid"), []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(state) })

	if _, err := Build(context.Background(), testCluster(), Options{Name: name}); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("Build over a live lab: %v, want an \"already exists\" error", err)
	}
	nsBefore := labNamespaces(t, name)
	if len(nsBefore) == 0 {
		t.Fatal("the lab has no namespaces before Cleanup")
	}
	removed, err := Cleanup(context.Background(), name)
	if err != nil {
		t.Fatalf("Cleanup: %v (removed %v)", err, removed)
	}
	if !slices.IsSorted(removed) {
		t.Errorf("removed is not sorted: %v", removed)
	}
	joined := strings.Join(removed, "\n")
	for _, ns := range nsBefore {
		if !strings.Contains(joined, "netns "+ns) {
			t.Errorf("removed does not list %s: %v", ns, removed)
		}
	}
	if !strings.Contains(joined, fmt.Sprintf("process %d prx-%s-supervisor", cmd.Process.Pid, name)) || !strings.Contains(joined, "state "+state) {
		t.Errorf("removed lacks the process or the state dir: %v", removed)
	}
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Error("the supervisor stand-in was not killed")
	}
	if left := labNamespaces(t, name); len(left) > 0 {
		t.Errorf("namespaces left: %v", left)
	}
	if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir remains: %v", err)
	}

	removed, err = Cleanup(context.Background(), name)
	if err != nil || len(removed) != 0 {
		t.Errorf("second Cleanup: %v, %v; want nothing", removed, err)
	}
	if _, err := Cleanup(context.Background(), "Bad-Name"); err == nil {
		t.Error("Cleanup accepted an invalid lab name")
	}
}

func TestTwoLabsSideBySide(t *testing.T) {
	requireRoot(t)
	// The same cluster, so the same addresses, in both: they must not see
	// each other.
	l1 := buildLab(t, testCluster(), Options{Name: labName(t, "tsa")})
	// The second lab gives node-b an address of its own, off the default
	// /24: host routes make it reachable on the same segment all the same.
	c2 := testCluster()
	c2.Nodes[1] = mkNode("node-b", "198.18.5.7")
	c2.Services[1].Ports[0].Endpoints[0].IP = netip.MustParseAddr("198.18.5.7")
	l2 := buildLab(t, c2, Options{Name: labName(t, "tsb")})
	wantAnswer(t, "external -> host-network endpoint on a user-given node address",
		probe(t, l2.ExternalNS(0), "TCP", "198.18.5.7:9090", 0), "host-b", l2.ExternalIP(0, false))
	if ns := l2.EndpointNS("host-b"); ns != l2.NodeNS("node-b") {
		t.Errorf("host-b in %q, want node-b's namespace", ns.Name)
	}
	for _, l := range []*Lab{l1, l2} {
		wantAnswer(t, l.Info().Name, probe(t, l.ClientNS("node-a"), "TCP", "198.18.65.10:8080", 0), "web-b", l.ClientIP("node-a", false))
	}
	if err := l1.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantAnswer(t, "second lab after the first closed", probe(t, l2.ClientNS("node-a"), "TCP", "198.18.65.10:8080", 0), "web-b", l2.ClientIP("node-a", false))
	if err := l1.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// rootSnapshot describes the root namespace's links, addresses and routes
// in the terms that matter (no counters).
func rootSnapshot(t *testing.T) []string {
	t.Helper()
	var out []string
	err := onRootHandle(func(links []string, addrs []string, routes []string) {
		out = append(out, links...)
		out = append(out, addrs...)
		out = append(out, routes...)
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func TestRootNamespaceUntouched(t *testing.T) {
	requireRoot(t)
	before := rootSnapshot(t)
	name := labName(t, "troot")
	l, err := Build(context.Background(), testCluster(), Options{Name: name, ExternalClients: 2})
	if err != nil {
		t.Fatal(err)
	}
	during := rootSnapshot(t)
	wantAnswer(t, "probe", probe(t, l.ClientNS("node-a"), "TCP", "198.18.65.10:8080", 0), "web-b", l.ClientIP("node-a", false))
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	after := rootSnapshot(t)
	if !slices.Equal(before, during) {
		t.Errorf("root namespace changed while the lab was up:\nbefore %v\nduring %v", before, during)
	}
	if !slices.Equal(before, after) {
		t.Errorf("root namespace changed by Build+Close:\nbefore %v\nafter  %v", before, after)
	}
}
