package ebpf_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"

	"proxyrig/datapaths"
	"proxyrig/datapaths/ebpf"
	"proxyrig/internal/netnsutil"
	"proxyrig/model"
	"proxyrig/topologies"
)

// Privileged integration tests: a two-node lab with the datapath on both
// nodes, probed with real packets.

const labYAML = `
apiVersion: v1
kind: Service
metadata: {name: hello, namespace: default}
spec:
  type: NodePort
  clusterIP: 198.19.0.80
  ports: [{protocol: TCP, port: 80, targetPort: 8080, nodePort: 30080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: hello-1
  namespace: default
  labels: {kubernetes.io/service-name: hello}
addressType: IPv4
ports: [{name: "", protocol: TCP, port: 8080}]
endpoints:
- addresses: [198.18.64.10]
  conditions: {ready: true}
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: hello-a}
- addresses: [198.18.65.10]
  conditions: {ready: true}
  nodeName: node-b
  targetRef: {kind: Pod, namespace: default, name: hello-b}
---
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: default}
spec:
  clusterIP: 198.19.0.53
  ports: [{name: dns, protocol: UDP, port: 53, targetPort: 5353}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: dns-1
  namespace: default
  labels: {kubernetes.io/service-name: dns}
addressType: IPv4
ports: [{name: dns, protocol: UDP, port: 5353}]
endpoints:
- addresses: [198.18.65.53]
  conditions: {ready: true}
  nodeName: node-b
  targetRef: {kind: Pod, namespace: default, name: dns-b}
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: default}
spec:
  clusterIP: 198.19.0.81
  ports:
  - {name: tcp, protocol: TCP, port: 80, targetPort: 8080}
  - {name: udp, protocol: UDP, port: 81, targetPort: 8081}
---
apiVersion: v1
kind: Service
metadata: {name: local, namespace: default}
spec:
  type: NodePort
  clusterIP: 198.19.0.82
  externalTrafficPolicy: Local
  ports: [{protocol: TCP, port: 80, targetPort: 8080, nodePort: 30082}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: local-1
  namespace: default
  labels: {kubernetes.io/service-name: local}
addressType: IPv4
ports: [{name: "", protocol: TCP, port: 8080}]
endpoints:
- addresses: [198.18.65.20]
  conditions: {ready: true}
  nodeName: node-b
  targetRef: {kind: Pod, namespace: default, name: local-b}
---
apiVersion: v1
kind: Node
metadata: {name: node-a}
status: {addresses: [{type: InternalIP, address: 198.18.0.11}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-b}
status: {addresses: [{type: InternalIP, address: 198.18.0.12}]}
`

var (
	helloVIP = netip.MustParseAddrPort("198.19.0.80:80")
	dnsVIP   = netip.MustParseAddrPort("198.19.0.53:53")
	emptyTCP = netip.MustParseAddrPort("198.19.0.81:80")
	emptyUDP = netip.MustParseAddrPort("198.19.0.81:81")
	nodeAIP  = netip.MustParseAddr("198.18.0.11")
	nodeBIP  = netip.MustParseAddr("198.18.0.12")
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	const reason = "needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN) to build a lab and load BPF programs"
	if os.Getenv("CI") == "true" {
		t.Fatal(reason + "; CI=true, so this must not be skipped")
	}
	t.Skip(reason)
}

func labName(t *testing.T, tag string) string {
	t.Helper()
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return tag + hex.EncodeToString(b)
}

// buildLab builds the test lab with dp on every node and closes it at the
// end of the test, checking that no pin and no namespace of it remains.
func buildLab(t *testing.T, dp string, yaml string, proxy datapaths.ProxyConfig) *topologies.Lab {
	t.Helper()
	requireRoot(t)
	if _, err := datapaths.Lookup(dp); err != nil {
		t.Fatal(err)
	}
	c, err := model.Parse("lab.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	name := labName(t, "ebpf")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lab, err := topologies.Build(ctx, c, topologies.Options{Name: name, Datapath: dp, Proxy: proxy})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	t.Cleanup(func() {
		if err := lab.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
		left, err := ebpf.CleanupPins("prx-" + name + "-")
		if err != nil {
			t.Errorf("CleanupPins: %v", err)
		}
		if len(left) > 0 {
			t.Errorf("BPF pins left after Close: %v", left)
		}
	})
	return lab
}

func probe(t *testing.T, lab *topologies.Lab, from string, proto string, dst netip.AddrPort, timeout time.Duration) topologies.ProbeResult {
	t.Helper()
	var ns = lab.ClientNS("node-a")
	switch from {
	case "external":
		ns = lab.ExternalNS(0)
	case "node-a":
		ns = lab.NodeNS("node-a")
	case "client-b":
		ns = lab.ClientNS("node-b")
	}
	return topologies.Probe(context.Background(), ns, topologies.ProbeSpec{Proto: proto, Dst: dst, Timeout: timeout})
}

// expectAnswered probes n times and checks every answer's seen source.
func expectAnswered(t *testing.T, lab *topologies.Lab, from, proto string, dst netip.AddrPort, n int, wantSource netip.Addr) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for range n {
		r := probe(t, lab, from, proto, dst, 2*time.Second)
		if r.Outcome != topologies.Answered {
			t.Fatalf("%s -> %s/%s: %s (%s), want answered", from, dst, proto, r.Outcome, r.Err)
		}
		if r.SeenSource.Addr() != wantSource {
			t.Errorf("%s -> %s/%s: backend %s saw source %s, want %s", from, dst, proto, r.Endpoint, r.SeenSource, wantSource)
		}
		seen[r.Endpoint]++
	}
	return seen
}

func TestLabEBPF(t *testing.T) {
	lab := buildLab(t, ebpf.Name, labYAML, datapaths.ProxyConfig{LocalhostNodePorts: true})
	clientA := lab.ClientIP("node-a", false)
	external := lab.ExternalIP(0, false)

	t.Run("pod to ClusterIP keeps the pod source", func(t *testing.T) {
		seen := expectAnswered(t, lab, "client-a", "TCP", helloVIP, 20, clientA)
		if len(seen) != 2 {
			t.Errorf("20 connections reached %v, want both endpoints", seen)
		}
	})
	t.Run("pod to UDP ClusterIP", func(t *testing.T) {
		expectAnswered(t, lab, "client-a", "UDP", dnsVIP, 3, clientA)
	})
	t.Run("external to NodePort is SNATed to the node", func(t *testing.T) {
		seen := expectAnswered(t, lab, "external", "TCP", netip.AddrPortFrom(nodeAIP, 30080), 20, nodeAIP)
		if len(seen) != 2 {
			t.Errorf("20 connections reached %v, want both endpoints (local and remote)", seen)
		}
	})
	t.Run("external to ClusterIP is SNATed to the node", func(t *testing.T) {
		expectAnswered(t, lab, "external", "TCP", helloVIP, 4, nodeAIP)
	})
	t.Run("node to ClusterIP through the socket hooks", func(t *testing.T) {
		expectAnswered(t, lab, "node-a", "TCP", helloVIP, 6, nodeAIP)
		expectAnswered(t, lab, "node-a", "UDP", dnsVIP, 2, nodeAIP)
	})
	t.Run("node's connected UDP sockets of a backend that left are closed", func(t *testing.T) {
		// A pod's UDP flows are translated per packet here and re-steered
		// by their ct entries; the node's, at the socket.
		connectedUDPReaped(t, lab, lab.NodeNS("node-a"))
	})
	t.Run("node socket bound to 127.0.0.1 to a localhost NodePort is masqueraded", func(t *testing.T) {
		for range 4 {
			r := topologies.Probe(context.Background(), lab.NodeNS("node-a"), topologies.ProbeSpec{
				Proto: "TCP", Dst: netip.MustParseAddrPort("127.0.0.1:30080"), Src: netip.MustParseAddrPort("127.0.0.1:0"), Timeout: 2 * time.Second})
			if r.Outcome != topologies.Answered || r.SeenSource.Addr() != nodeAIP {
				t.Fatalf("127.0.0.1 -> 127.0.0.1:30080: %+v, want answered with source %s", r, nodeAIP)
			}
		}
	})
	t.Run("no endpoints: refused", func(t *testing.T) {
		for _, c := range []struct {
			from, proto string
			dst         netip.AddrPort
		}{
			{"client-a", "TCP", emptyTCP},
			{"client-a", "UDP", emptyUDP},
			{"external", "TCP", emptyTCP},
			{"node-a", "TCP", emptyTCP},
			{"node-a", "UDP", emptyUDP},
		} {
			if r := probe(t, lab, c.from, c.proto, c.dst, 2*time.Second); r.Outcome != topologies.Refused {
				t.Errorf("%s -> %s/%s: %s (%s), want refused", c.from, c.dst, c.proto, r.Outcome, r.Err)
			}
		}
	})
	t.Run("eTP=Local keeps the client source, drops where no local endpoint", func(t *testing.T) {
		expectAnswered(t, lab, "external", "TCP", netip.AddrPortFrom(nodeBIP, 30082), 3, external)
		if r := probe(t, lab, "external", "TCP", netip.AddrPortFrom(nodeAIP, 30082), time.Second); r.Outcome != topologies.TimedOut {
			t.Errorf("external -> node-a:30082 (no local endpoint): %s (%s), want a timeout (DROP)", r.Outcome, r.Err)
		}
		// Pods short-circuit to all endpoints, source kept.
		expectAnswered(t, lab, "client-a", "TCP", netip.AddrPortFrom(nodeAIP, 30082), 2, clientA)
	})
	t.Run("counters saw each path", func(t *testing.T) {
		got, err := ebpf.ReadCounters(lab.NodeNS("node-a").Name)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"ct_new", "ct_hit_forward", "ct_hit_reply", "reject_tcp", "reject_udp", "drop_no_local", "sock_xlate", "sock_reject"} {
			if got[name] == 0 {
				t.Errorf("counter %s is 0 on node-a: %v", name, got)
			}
		}
		if got["drop_error"] != 0 {
			t.Errorf("drop_error = %d on node-a: %v", got["drop_error"], got)
		}
	})
	t.Run("bpftool shows named fields", func(t *testing.T) {
		if _, err := exec.LookPath("bpftool"); err != nil {
			const why = "bpftool not installed (Debian package bpftool)"
			if os.Getenv("CI") == "true" {
				t.Fatal(why + "; CI=true, so this must not be skipped")
			}
			t.Skip(why)
		}
		dir := filepath.Join(ebpf.BPFFSRoot, lab.NodeNS("node-a").Name)
		pins, err := filepath.Glob(filepath.Join(dir, "map_services_*"))
		if err != nil || len(pins) != 1 {
			t.Fatalf("services map pin in %s: %v %v", dir, pins, err)
		}
		out, err := exec.Command("bpftool", "map", "dump", "pinned", pins[0]).CombinedOutput()
		if err != nil {
			t.Fatalf("bpftool map dump: %v: %s", err, out)
		}
		for _, field := range []string{`"addr"`, `"port"`, `"scope"`, `"count"`, `"flags"`} {
			if !strings.Contains(string(out), field) {
				t.Errorf("bpftool map dump lacks %s:\n%s", field, out)
			}
		}
	})
	t.Run("incremental sync writes only what changed", func(t *testing.T) {
		c, err := model.Parse("lab.yaml", []byte(strings.Replace(labYAML, "  - {name: udp, protocol: UDP, port: 81, targetPort: 8081}\n", "", 1)))
		if err != nil {
			t.Fatal(err)
		}
		if err := lab.Apply(context.Background(), c); err != nil {
			t.Fatal(err)
		}
		for node, st := range lab.LastSync() {
			// One frontend (198.19.0.81:81/UDP) went away.
			if st.Full || st.Written != 1 || st.ChangedServices != 1 {
				t.Errorf("node %s: sync %+v, want a partial sync that wrote 1 entry of 1 Service", node, st)
			}
		}
		if err := lab.Resync(context.Background(), true); err != nil {
			t.Fatal(err)
		}
		for node, st := range lab.LastSync() {
			if !st.Full || st.Written != 0 {
				t.Errorf("node %s: forced resync %+v, want a full sync that found nothing to repair", node, st)
			}
		}
		expectAnswered(t, lab, "client-a", "TCP", helloVIP, 2, clientA)
	})
	t.Run("restart adopts the pinned state", func(t *testing.T) {
		if err := lab.RestartDatapath(context.Background(), "node-a"); err != nil {
			t.Fatal(err)
		}
		if st := lab.LastSync()["node-a"]; st.Written != 0 {
			t.Errorf("first sync after restart wrote %d entries, want 0: %+v", st.Written, st)
		}
		expectAnswered(t, lab, "client-a", "TCP", helloVIP, 4, clientA)
		expectAnswered(t, lab, "external", "TCP", netip.AddrPortFrom(nodeAIP, 30080), 4, nodeAIP)
	})
	t.Run("cleanup from a fresh instance detaches every link", func(t *testing.T) {
		ns := lab.NodeNS("node-b")
		pins, err := filepath.Glob(filepath.Join(ebpf.BPFFSRoot, ns.Name, "link_*"))
		if err != nil || len(pins) == 0 {
			t.Fatalf("no link pins for %s: %v", ns.Name, err)
		}
		// Hold our own descriptors, as a leaked instance would: Cleanup
		// must detach the links anyway.
		var links []link.Link
		for _, p := range pins {
			l, err := link.LoadPinnedLink(p, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			links = append(links, l)
		}
		dp, err := ebpf.New(datapaths.Config{Node: "node-b", NS: ns})
		if err != nil {
			t.Fatal(err)
		}
		if err := dp.Cleanup(context.Background()); err != nil {
			t.Fatal(err)
		}
		for i, l := range links {
			info, err := l.Info()
			if err != nil {
				t.Fatal(err)
			}
			if tcx := info.TCX(); tcx != nil && tcx.Ifindex != 0 {
				t.Errorf("%s still attached to ifindex %d", pins[i], tcx.Ifindex)
			}
			if cg := info.Cgroup(); cg != nil && cg.CgroupId != 0 {
				t.Errorf("%s still attached to cgroup %d", pins[i], cg.CgroupId)
			}
		}
		if _, err := os.Stat(filepath.Join(ebpf.BPFFSRoot, ns.Name)); !os.IsNotExist(err) {
			t.Errorf("pin directory of %s still there: %v", ns.Name, err)
		}
	})
}

func TestLabEBPFSocket(t *testing.T) {
	lab := buildLab(t, ebpf.NameSocket, labYAML, datapaths.ProxyConfig{})
	clientA := lab.ClientIP("node-a", false)
	expectAnswered(t, lab, "client-a", "TCP", helloVIP, 6, clientA)
	expectAnswered(t, lab, "client-a", "UDP", dnsVIP, 2, clientA)
	expectAnswered(t, lab, "external", "TCP", netip.AddrPortFrom(nodeAIP, 30080), 4, nodeAIP)
	if r := probe(t, lab, "client-a", "TCP", emptyTCP, 2*time.Second); r.Outcome != topologies.Refused {
		t.Errorf("client-a -> %s: %s (%s), want refused", emptyTCP, r.Outcome, r.Err)
	}
	got, err := ebpf.ReadCounters(lab.NodeNS("node-a").Name)
	if err != nil {
		t.Fatal(err)
	}
	// The pod's 8 connections/datagrams and the refused one were handled
	// at its sockets, not per packet at its veth.
	if got["sock_xlate"] < 8 || got["sock_reject"] < 1 {
		t.Errorf("socket-LB counters on node-a: %v, want sock_xlate >= 8 and sock_reject >= 1", got)
	}
	t.Run("pinned UDP flows keep their backend and move when it leaves", func(t *testing.T) {
		pinnedFlows(t, lab)
	})
	t.Run("connected UDP sockets of a backend that left are closed", func(t *testing.T) {
		connectedUDPReaped(t, lab, lab.ClientNS("node-a"), lab.NodeNS("node-a"))
	})
}

// applyYAML applies a cluster file's text to the lab.
func applyYAML(t *testing.T, lab *topologies.Lab, yaml string) {
	t.Helper()
	c, err := model.Parse("lab.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Apply(context.Background(), c); err != nil {
		t.Fatal(err)
	}
}

// pinnedYAML is a UDP Service with two endpoints, for pinnedFlows.
const pinnedYAML = `
---
apiVersion: v1
kind: Service
metadata: {name: pinned, namespace: default}
spec:
  clusterIP: 198.19.0.54
  ports: [{name: dns, protocol: UDP, port: 53, targetPort: 5353}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: pinned-1
  namespace: default
  labels: {kubernetes.io/service-name: pinned}
addressType: IPv4
ports: [{name: dns, protocol: UDP, port: 5353}]
endpoints:
- addresses: [198.18.65.54]
  conditions: {ready: true}
  nodeName: node-b
  targetRef: {kind: Pod, namespace: default, name: pinned-1}
- addresses: [198.18.65.55]
  conditions: {ready: true}
  nodeName: node-b
  targetRef: {kind: Pod, namespace: default, name: pinned-2}
`

// pinnedFlows is CONFORMANCE.md CT-01 for flows the socket hooks translate
// (the node's own, and a pod's with ebpf-socket): each probe is a new UDP
// socket bound to the same source port, so only sock_flows can keep the
// flow on its backend; once that backend leaves the flow must move.
func pinnedFlows(t *testing.T, lab *topologies.Lab) {
	apply := func(yaml string) { t.Helper(); applyYAML(t, lab, yaml) }
	apply(labYAML + pinnedYAML)
	vip := netip.MustParseAddrPort("198.19.0.54:53")
	ask := func(ns netnsutil.NS, port uint16) string {
		t.Helper()
		r := topologies.Probe(context.Background(), ns, topologies.ProbeSpec{Proto: "UDP", Dst: vip, Src: netip.AddrPortFrom(netip.Addr{}, port), Timeout: 2 * time.Second})
		if r.Outcome != topologies.Answered {
			t.Fatalf("%s -> %s/UDP from port %d: %s (%s), want answered", ns.Name, vip, port, r.Outcome, r.Err)
		}
		return r.Endpoint
	}
	type flow struct {
		ns      netnsutil.NS
		port    uint16
		backend string
	}
	var flows []flow
	for i, ns := range []netnsutil.NS{lab.ClientNS("node-a"), lab.NodeNS("node-a")} {
		for j := range 4 {
			port := uint16(41000 + 10*i + j)
			first := ask(ns, port)
			for range 4 {
				if got := ask(ns, port); got != first {
					t.Fatalf("%s from port %d: answered by %s, then by %s: the pinned flow did not keep its backend", ns.Name, port, first, got)
				}
			}
			flows = append(flows, flow{ns, port, first})
		}
	}
	// Remove pinned-1: flows on it must move to pinned-2, the others stay.
	apply(labYAML + strings.Replace(pinnedYAML, `- addresses: [198.18.65.54]
  conditions: {ready: true}
  nodeName: node-b
  targetRef: {kind: Pod, namespace: default, name: pinned-1}
`, "", 1))
	moved := 0
	for _, f := range flows {
		if got := ask(f.ns, f.port); got != "pinned-2" {
			t.Errorf("%s from port %d (was on %s): answered by %s after pinned-1 left, want pinned-2", f.ns.Name, f.port, f.backend, got)
		}
		if f.backend == "pinned-1" {
			moved++
		}
	}
	got, err := ebpf.ReadCounters(lab.NodeNS("node-a").Name)
	if err != nil {
		t.Fatal(err)
	}
	if moved > 0 && got["sock_resteer"] < uint64(moved) {
		t.Errorf("sock_resteer = %d, want at least the %d flows that were on pinned-1", got["sock_resteer"], moved)
	}
	apply(labYAML)
}

// connectedUDPReaped checks what sock_flows cannot do: a UDP socket
// connect()ed through the socket hooks holds its backend's address itself,
// so when that backend leaves the datapath closes it (bpf_sock_destroy, as
// Cilium's agent does) rather than leave it sending into nothing. The
// application's next call fails at once; a new socket reaches the backend
// that is left, and a socket on that backend is not touched.
func connectedUDPReaped(t *testing.T, lab *topologies.Lab, namespaces ...netnsutil.NS) {
	apply := func(yaml string) { t.Helper(); applyYAML(t, lab, yaml) }
	apply(labYAML + pinnedYAML)
	t.Cleanup(func() { apply(labYAML) })
	vip := net.UDPAddrFromAddrPort(netip.MustParseAddrPort("198.19.0.54:53"))
	ask := func(c *net.UDPConn) (string, error) {
		if _, err := c.Write([]byte("x\n")); err != nil {
			return "", err
		}
		if err := c.SetReadDeadline(time.Now().Add(2 * time.Second)); err != nil {
			return "", err
		}
		buf := make([]byte, 256)
		n, err := c.Read(buf)
		if err != nil {
			return "", err
		}
		name, _, _ := strings.Cut(string(buf[:n]), " ")
		return name, nil
	}
	dial := func(ns netnsutil.NS) *net.UDPConn {
		t.Helper()
		var c *net.UDPConn
		if err := ns.Do(func() (err error) { c, err = net.DialUDP("udp4", nil, vip); return err }); err != nil {
			t.Fatalf("in %s: dial %s: %v", ns.Name, vip, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	type conn struct {
		ns      netnsutil.NS
		c       *net.UDPConn
		backend string
	}
	var conns []conn
	for _, ns := range namespaces {
		seen := map[string]bool{}
		for i := 0; i < 40 && len(seen) < 2; i++ {
			c := dial(ns)
			name, err := ask(c)
			if err != nil {
				t.Fatalf("in %s: connected UDP socket to %s: %v", ns.Name, vip, err)
			}
			if !seen[name] {
				seen[name] = true
				conns = append(conns, conn{ns, c, name})
			}
		}
		if len(seen) != 2 {
			t.Fatalf("in %s: 40 connected sockets reached only %v", ns.Name, seen)
		}
	}
	// pinned-1 leaves.
	apply(labYAML + strings.Replace(pinnedYAML, `- addresses: [198.18.65.54]
  conditions: {ready: true}
  nodeName: node-b
  targetRef: {kind: Pod, namespace: default, name: pinned-1}
`, "", 1))
	for _, c := range conns {
		name, err := ask(c.c)
		switch {
		case c.backend == "pinned-2" && (err != nil || name != "pinned-2"):
			t.Errorf("in %s: the socket on pinned-2, which stayed: answered by %q (%v), want pinned-2", c.ns.Name, name, err)
		case c.backend == "pinned-1" && err == nil:
			t.Errorf("in %s: the socket connected to pinned-1 still works after pinned-1 left (answered by %s)", c.ns.Name, name)
		case c.backend == "pinned-1":
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Errorf("in %s: the socket connected to pinned-1 timed out after pinned-1 left, want it closed at once", c.ns.Name)
			}
		}
	}
	for _, ns := range namespaces {
		if name, err := ask(dial(ns)); err != nil || name != "pinned-2" {
			t.Errorf("in %s: a new socket after pinned-1 left: answered by %q (%v), want pinned-2", ns.Name, name, err)
		}
	}
}

const dualStackYAML = `
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: NodePort
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv4, IPv6]
  clusterIP: 198.19.0.90
  clusterIPs: [198.19.0.90, "2001:db8:19::90"]
  ports:
  - {name: tcp, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30090}
  - {name: udp, protocol: UDP, port: 53, targetPort: 5353, nodePort: 30091}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-v4
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: tcp, protocol: TCP, port: 8080}, {name: udp, protocol: UDP, port: 5353}]
endpoints:
- addresses: [198.18.64.30]
  conditions: {ready: true}
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: web-a}
- addresses: [198.18.65.30]
  conditions: {ready: true}
  nodeName: node-b
  targetRef: {kind: Pod, namespace: default, name: web-b}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-v6
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv6
ports: [{name: tcp, protocol: TCP, port: 8080}, {name: udp, protocol: UDP, port: 5353}]
endpoints:
- addresses: ["2001:db8:64:1::30"]
  conditions: {ready: true}
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: web-a}
- addresses: ["2001:db8:64:2::30"]
  conditions: {ready: true}
  nodeName: node-b
  targetRef: {kind: Pod, namespace: default, name: web-b}
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: default}
spec:
  ipFamilies: [IPv6]
  clusterIP: "2001:db8:19::91"
  clusterIPs: ["2001:db8:19::91"]
  ports:
  - {name: tcp, protocol: TCP, port: 80, targetPort: 8080}
  - {name: udp, protocol: UDP, port: 81, targetPort: 8081}
---
apiVersion: v1
kind: Node
metadata: {name: node-a}
---
apiVersion: v1
kind: Node
metadata: {name: node-b}
`

func TestLabEBPFDualStack(t *testing.T) {
	lab := buildLab(t, ebpf.Name, dualStackYAML, datapaths.ProxyConfig{})
	client6 := lab.ClientIP("node-a", true)
	nodeA6 := lab.NodeIP("node-a", true)
	vip6 := netip.MustParseAddr("2001:db8:19::90")

	seen := expectAnswered(t, lab, "client-a", "TCP", netip.AddrPortFrom(vip6, 80), 20, client6)
	if len(seen) != 2 {
		t.Errorf("20 connections to the IPv6 ClusterIP reached %v, want both endpoints", seen)
	}
	expectAnswered(t, lab, "client-a", "UDP", netip.AddrPortFrom(vip6, 53), 2, client6)
	expectAnswered(t, lab, "external", "TCP", netip.AddrPortFrom(nodeA6, 30090), 8, nodeA6)
	expectAnswered(t, lab, "node-a", "TCP", netip.AddrPortFrom(vip6, 80), 4, nodeA6)
	// The IPv4 side of the same Service still works.
	expectAnswered(t, lab, "client-a", "TCP", netip.MustParseAddrPort("198.19.0.90:80"), 4, lab.ClientIP("node-a", false))
	for _, c := range []struct {
		from, proto string
		dst         netip.AddrPort
	}{
		{"client-a", "TCP", netip.MustParseAddrPort("[2001:db8:19::91]:80")},
		{"client-a", "UDP", netip.MustParseAddrPort("[2001:db8:19::91]:81")},
		{"node-a", "TCP", netip.MustParseAddrPort("[2001:db8:19::91]:80")},
	} {
		if r := probe(t, lab, c.from, c.proto, c.dst, 2*time.Second); r.Outcome != topologies.Refused {
			t.Errorf("%s -> %s/%s: %s (%s), want refused", c.from, c.dst, c.proto, r.Outcome, r.Err)
		}
	}
}
