package conformance

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/vishvananda/netlink"

	"proxyrig/datapaths"
	"proxyrig/datapaths/flowtest"
	"proxyrig/internal/netnsutil"
	"proxyrig/model"
	"proxyrig/topologies"
	"proxyrig/topologies/vm"
)

// What a flow's verdict means on the wire, and how much traffic proves it.
const (
	// connsPerEndpoint new connections per expected endpoint prove FWD:
	// with uniform random balancing over n endpoints the chance that one
	// of them gets none of 20n connections is n(1-1/n)^(20n) < 2e-8 for
	// n <= 5.
	connsPerEndpoint = 20
	// uniformConnsPerEndpoint is used when the spread itself is checked
	// (CIP-02): each endpoint's share must be within uniformTolerance of
	// 1/n. For n=2 and 100 connections a fair coin falls outside [25, 75]
	// with probability below 1e-6.
	uniformConnsPerEndpoint = 50
	uniformTolerance        = 0.5
	// silentProbes are sent for REJECT, DROP and PASS; each must behave.
	silentProbes = 3
	// rejectTimeout is generous: a refusal is recognised by its outcome,
	// never by how fast it came.
	rejectTimeout = 3 * time.Second
	// dropTimeout is short: silence is all DROP and PASS promise, and a
	// late answer would still be an answer before it.
	dropTimeout = 1 * time.Second
	// portOwner is what the test's own listener answers with (FreePorts).
	portOwner = "port-owner"
)

// fwdTimeout bounds a probe that must be answered. 3 s natively; inside the
// VM runner (emulated CPU, about 6x slower) it is 10 s, because 3 s is also
// SCTP's initial INIT retransmission timeout (net.sctp.rto_initial), so one
// INIT lost while an emulated node is busy would otherwise turn into a
// false failure. A longer wait only ever costs time on a failing probe.
var fwdTimeout = func() time.Duration {
	if vm.Emulated() {
		return 10 * time.Second
	}
	return 3 * time.Second
}()

// harness is one case's lab and the cluster state applied to it.
type harness struct {
	dp       string
	c        *flowtest.Case
	lab      *topologies.Lab
	clusters []*model.Cluster // [0] the fixture, [i+1] step i
	step     int              // -1: the fixture is applied

	mu        sync.Mutex
	nodeAddrs map[string][]netip.Addr
}

// newHarness checks that the datapath can run here, builds the case's lab
// and arranges for it to be torn down. It skips (with the exact reason) only
// for what this machine cannot do.
func newHarness(ctx context.Context, dp string, c *flowtest.Case) *harness {
	requireRoot()
	reg, err := datapaths.Lookup(dp)
	Expect(err).NotTo(HaveOccurred())
	if reg.Check != nil {
		if err := reg.Check(ctx, datapaths.Config{IPTablesBackend: *iptablesBackend}); err != nil {
			if errors.Is(err, datapaths.ErrNotSupported) {
				Skip(err.Error())
			}
			Fail(fmt.Sprintf("datapath %s: check: %v", dp, err))
		}
	}

	h := &harness{dp: dp, c: c, step: -1, nodeAddrs: map[string][]netip.Addr{}}
	cl, err := c.Cluster()
	Expect(err).NotTo(HaveOccurred(), "fixture of %s", c.Line)
	h.clusters = append(h.clusters, cl)
	for i := range c.Then {
		scl, err := c.StepCluster(i)
		Expect(err).NotTo(HaveOccurred(), "fixture of step %d of %s", i+1, c.Line)
		h.clusters = append(h.clusters, scl)
	}

	name := labName()
	By(fmt.Sprintf("building lab %s with datapath %s for %s (%s)", name, dp, c.Title(), c.Line))
	lab, err := topologies.Build(ctx, cl, topologies.Options{
		Name:            name,
		Datapath:        dp,
		Proxy:           c.Proxy,
		IPTablesBackend: *iptablesBackend,
		ExternalClients: c.ExternalClients(),
		IngressNode:     c.NodeUnderTest(),
	})
	if err != nil {
		// Build tears down after itself; this catches anything it missed.
		_, _ = topologies.Cleanup(context.WithoutCancel(ctx), name)
		if errors.Is(err, datapaths.ErrNotSupported) {
			Skip(err.Error())
		}
		Fail(fmt.Sprintf("build lab for %s (%s): %v", c.Title(), c.Line, err))
	}
	h.lab = lab
	DeferCleanup(func(ctx SpecContext) {
		err := lab.Close(ctx)
		if _, cerr := topologies.Cleanup(ctx, name); cerr != nil {
			err = errors.Join(err, cerr)
		}
		Expect(err).NotTo(HaveOccurred(), "tear down lab %s", name)
	}, NodeTimeout(time.Minute))

	if slices.Contains(c.Protocols(), model.SCTP) && !lab.Info().SCTP {
		// The kernel cannot open SCTP sockets, so no echo server can
		// answer: this machine cannot run the case at all (DESIGN.md §5:
		// SCTP runs in the VM).
		Skip("kernel lacks SCTP sockets")
	}
	return h
}

// labName is "c" and six random base-36 characters: unique across
// parallel ginkgo processes, within the lab's 12-character limit.
func labName() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return "c" + string(b)
}

// ensureStep makes the lab hold step i's cluster (-1: the fixture). Each
// fixture is a whole cluster, so one Apply reaches any step from any other.
func (h *harness) ensureStep(ctx context.Context, i int) {
	if h == nil || h.lab == nil {
		Fail("the case's lab was not built")
	}
	if h.step == i {
		return
	}
	what := "the fixture"
	if i >= 0 {
		what = fmt.Sprintf("step %q (%s)", h.c.Then[i].Name, h.c.Then[i].Line)
	}
	By("applying " + what)
	Expect(h.lab.Apply(ctx, h.clusters[i+1])).To(Succeed(), "apply %s", what)
	h.step = i
}

// flowPlan is a flow made concrete in this lab.
type flowPlan struct {
	f     flowtest.Flow
	want  flowtest.Expect
	ns    netnsutil.NS
	spec  topologies.ProbeSpec
	node  string // the node whose datapath decides, for the SNAT check
	where string // "cases_nodeport.go:123 external to node-a NodePort"
}

func (h *harness) plan(f flowtest.Flow) flowPlan {
	cl := h.lab.Cluster()
	where := f.Line + " " + f.String()
	dst, err := flowtest.DestAddr(cl, f.To)
	Expect(err).NotTo(HaveOccurred(), where)
	node, err := flowtest.DecidingNode(h.c, cl, f.From, dst)
	Expect(err).NotTo(HaveOccurred(), where)

	var ns netnsutil.NS
	var src netip.AddrPort
	switch f.From.Kind {
	case flowtest.FromPod:
		ns = h.lab.ClientNS(f.From.Node)
	case flowtest.FromNode:
		ns = h.lab.NodeNS(f.From.Node)
	case flowtest.FromNodeLocalhost:
		ns = h.lab.NodeNS(f.From.Node)
		lo := netip.MustParseAddr("127.0.0.1")
		if dst.Is6() {
			lo = netip.IPv6Loopback()
		}
		src = netip.AddrPortFrom(lo, 0)
	case flowtest.FromExternal:
		ns = h.lab.ExternalNS(f.From.Index)
	case flowtest.FromEndpoint:
		ns = h.lab.EndpointNS(f.From.Endpoint)
	}
	Expect(ns.Name).NotTo(BeEmpty(), "%s: the lab has no namespace for %s", where, f.From)
	if f.SrcPort != 0 {
		src = netip.AddrPortFrom(src.Addr(), f.SrcPort)
	}
	spec := topologies.ProbeSpec{
		Proto: string(f.Protocol()),
		Dst:   netip.AddrPortFrom(dst, uint16(f.Port)),
		Src:   src,
	}
	if f.PayloadSize > 0 {
		spec.Payload = []byte("n" + strings.Repeat("o", f.PayloadSize-1))
	}
	want, _ := f.Expect.For(h.dp)
	return flowPlan{f: f, want: want, ns: ns, spec: spec, node: node.Name, where: where}
}

// check sends a flow's traffic and asserts its verdict on this datapath.
func (h *harness) check(ctx context.Context, f flowtest.Flow) {
	p := h.plan(f)
	if _, why := f.Expect.For(h.dp); why != "" {
		By(fmt.Sprintf("expecting %s on %s, not kube-proxy iptables mode's %s: %s", p.want, h.dp, f.Expect, why))
	}
	switch p.want.Verdict {
	case flowtest.VerdictFWD:
		h.checkForwarded(ctx, p)
	case flowtest.VerdictREJECT:
		h.checkSilentOr(ctx, p, rejectTimeout, func(r topologies.ProbeResult) bool { return r.Outcome == topologies.Refused }, "refused")
	case flowtest.VerdictDROP:
		h.checkSilentOr(ctx, p, dropTimeout, func(r topologies.ProbeResult) bool { return r.Outcome == topologies.TimedOut }, "timed out")
	case flowtest.VerdictPASS:
		// Not touched by the datapath: whatever routing does with it, no
		// endpoint may answer. Nobody owns these addresses and ports in a
		// lab, so that is a refusal (RST, ICMP) or silence.
		h.checkSilentOr(ctx, p, dropTimeout, func(r topologies.ProbeResult) bool {
			return r.Outcome == topologies.Refused || r.Outcome == topologies.TimedOut
		}, "unanswered (refused or timed out)")
	default:
		Fail(fmt.Sprintf("%s: invalid verdict %q", p.where, p.want.Verdict))
	}
}

func (h *harness) checkSilentOr(ctx context.Context, p flowPlan, timeout time.Duration, ok func(topologies.ProbeResult) bool, want string) {
	p.spec.Timeout = timeout
	By(fmt.Sprintf("sending %d probes from %s to %s/%s, each to be %s", silentProbes, p.ns.Name, p.spec.Dst, p.spec.Proto, want))
	var bad []string
	for range silentProbes {
		r := topologies.Probe(ctx, p.ns, p.spec)
		if !ok(r) {
			bad = append(bad, describe(r))
		}
	}
	Expect(bad).To(BeEmpty(), "%s: want every probe %s (%s); got:\n  %s", p.where, want, p.want, strings.Join(bad, "\n  "))
}

func (h *harness) checkForwarded(ctx context.Context, p flowPlan) {
	n := len(p.want.Endpoints)
	conns := connsPerEndpoint * n
	if p.want.Uniform {
		conns = uniformConnsPerEndpoint * n
	}
	if p.f.SrcPort != 0 {
		// A pinned 5-tuple is one connection; repeating it would reuse
		// the conntrack entry rather than make new ones.
		conns = 1
	}
	p.spec.Timeout = fwdTimeout
	By(fmt.Sprintf("opening %d new connections from %s to %s/%s; want %s", conns, p.ns.Name, p.spec.Dst, p.spec.Proto, p.want))
	results := make([]topologies.ProbeResult, 0, conns)
	for range conns {
		results = append(results, topologies.Probe(ctx, p.ns, p.spec))
	}
	problems := h.forwardProblems(p, results)
	counts := map[string]int{}
	for _, r := range results {
		if r.Outcome == topologies.Answered {
			counts[r.Endpoint]++
		}
	}
	for _, ep := range p.want.Endpoints {
		if counts[ep] == 0 {
			problems = append(problems, fmt.Sprintf("endpoint %s never answered", ep))
		}
	}
	if p.want.Uniform && len(problems) == 0 {
		fair := float64(conns) / float64(n)
		lo, hi := math.Floor(fair*(1-uniformTolerance)), math.Ceil(fair*(1+uniformTolerance))
		for _, ep := range p.want.Endpoints {
			if c := float64(counts[ep]); c < lo || c > hi {
				problems = append(problems, fmt.Sprintf("endpoint %s got %d of %d connections, outside [%.0f, %.0f] (fair share %.0f ± %.0f%%)",
					ep, counts[ep], conns, lo, hi, fair, uniformTolerance*100))
			}
		}
	}
	Expect(problems).To(BeEmpty(), "%s: want %s; answers per endpoint %v; problems:\n  %s",
		p.where, p.want, counts, strings.Join(problems, "\n  "))
}

// forwardProblems checks each answer of a FWD flow: answered, by an
// expected endpoint, with the expected source address.
func (h *harness) forwardProblems(p flowPlan, results []topologies.ProbeResult) []string {
	var problems []string
	seenBad := map[string]int{}
	for _, r := range results {
		if r.Outcome != topologies.Answered {
			seenBad[describe(r)]++
			continue
		}
		if !slices.Contains(p.want.Endpoints, r.Endpoint) {
			seenBad[fmt.Sprintf("answered by %s, which is not an expected endpoint", r.Endpoint)]++
			continue
		}
		if msg := h.sourceProblem(p, r); msg != "" {
			seenBad[msg]++
		}
	}
	keys := make([]string, 0, len(seenBad))
	for k := range seenBad {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		problems = append(problems, fmt.Sprintf("%d× %s", seenBad[k], k))
	}
	return problems
}

// sourceProblem checks what source address the backend saw. With
// masquerade it must be an address of the node that decided the packet;
// without, the client's own address. (From a node's own namespace both
// are node addresses, so there the check cannot tell them apart.)
func (h *harness) sourceProblem(p flowPlan, r topologies.ProbeResult) string {
	seen := r.SeenSource.Addr()
	if p.want.Masquerade {
		if !slices.Contains(h.nodeAddresses(p.node), seen) {
			return fmt.Sprintf("backend %s saw source %s, not an address of %s (want masquerade; client was %s)", r.Endpoint, seen, p.node, r.Local.Addr())
		}
		return ""
	}
	if seen != r.Local.Addr() {
		return fmt.Sprintf("backend %s saw source %s, not the client's own %s (want no masquerade)", r.Endpoint, seen, r.Local.Addr())
	}
	return ""
}

// nodeAddresses lists the non-loopback addresses configured in a node's
// namespace. Equivalent to: ip -n <node-ns> addr show.
func (h *harness) nodeAddresses(node string) []netip.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	if a, ok := h.nodeAddrs[node]; ok {
		return a
	}
	ns := h.lab.NodeNS(node)
	Expect(ns.Name).NotTo(BeEmpty(), "the lab has no node %s", node)
	hd, err := ns.Handle()
	Expect(err).NotTo(HaveOccurred())
	defer hd.Close()
	list, err := hd.AddrList(nil, netlink.FAMILY_ALL)
	Expect(err).NotTo(HaveOccurred(), "list addresses in %s", ns.Name)
	var out []netip.Addr
	for _, a := range list {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && !ip.Unmap().IsLoopback() {
			out = append(out, ip.Unmap())
		}
	}
	h.nodeAddrs[node] = out
	return out
}

// checkConcurrent sends one probe per flow, all at once (MASQ-05), and
// requires every flow to be forwarded as expected and every masqueraded
// connection of one protocol to reach the backend from a distinct
// address:port: SNAT gave the colliding clients different ports.
func (h *harness) checkConcurrent(ctx context.Context, flows []flowtest.Flow) {
	plans := make([]flowPlan, len(flows))
	for i, f := range flows {
		plans[i] = h.plan(f)
		plans[i].spec.Timeout = fwdTimeout
	}
	By(fmt.Sprintf("sending %d flows at once", len(plans)))
	results := make([]topologies.ProbeResult, len(plans))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range plans {
		wg.Go(func() {
			<-start
			results[i] = topologies.Probe(ctx, plans[i].ns, plans[i].spec)
		})
	}
	close(start)
	wg.Wait()

	var problems []string
	seen := map[string]map[netip.AddrPort]string{}
	for i, p := range plans {
		r := results[i]
		for _, msg := range h.forwardProblems(p, []topologies.ProbeResult{r}) {
			problems = append(problems, p.where+": "+msg)
		}
		if r.Outcome != topologies.Answered || !p.want.Masquerade {
			continue
		}
		proto := p.spec.Proto
		if seen[proto] == nil {
			seen[proto] = map[netip.AddrPort]string{}
		}
		who := fmt.Sprintf("%s (client %s)", p.f.From, r.Local)
		if other, dup := seen[proto][r.SeenSource]; dup {
			problems = append(problems, fmt.Sprintf("%s and %s both reached the backend as %s/%s: SNAT collided", other, who, r.SeenSource, proto))
		}
		seen[proto][r.SeenSource] = who
	}
	Expect(problems).To(BeEmpty(), "concurrent flows:\n  %s", strings.Join(problems, "\n  "))
}

// checkPortsFree binds each port in the node under test with a listener
// of the test's own, then reaches it from external client 0: the bind
// proves the datapath holds no socket on the port, the answer that nothing
// intercepts traffic to it any more (NP-06).
func (h *harness) checkPortsFree(ctx context.Context, ports []flowtest.PortProto) {
	node := h.c.NodeUnderTest()
	ns := h.lab.NodeNS(node)
	ip := h.lab.NodeIP(node, false)
	Expect(ns.Name).NotTo(BeEmpty())
	Expect(ip.IsValid()).To(BeTrue(), "node %s has no IPv4 address", node)
	for _, pp := range ports {
		By(fmt.Sprintf("binding %d/%s in %s", pp.Port, pp.Proto, ns.Name))
		stop, err := listenOwner(ns, pp)
		Expect(err).NotTo(HaveOccurred(), "port %d/%s is not free in %s", pp.Port, pp.Proto, ns.Name)
		r := topologies.Probe(ctx, h.lab.ExternalNS(0), topologies.ProbeSpec{
			Proto: string(pp.Proto), Dst: netip.AddrPortFrom(ip, uint16(pp.Port)), Timeout: fwdTimeout,
		})
		stop()
		Expect(r.Outcome).To(Equal(topologies.Answered), "probe to our own listener on %s:%d/%s: %s", ip, pp.Port, pp.Proto, describe(r))
		Expect(r.Endpoint).To(Equal(portOwner), "%s:%d/%s was answered by %s, not by the test's listener", ip, pp.Port, pp.Proto, r.Endpoint)
	}
}

// listenOwner serves portOwner's echo line on the port in ns, on every
// address, until stop is called.
func listenOwner(ns netnsutil.NS, pp flowtest.PortProto) (stop func(), err error) {
	addr := fmt.Sprintf("0.0.0.0:%d", pp.Port)
	var ln net.Listener
	var pc net.PacketConn
	err = ns.Do(func() error {
		var err error
		switch pp.Proto {
		case model.UDP:
			pc, err = net.ListenPacket("udp4", addr)
		case model.TCP:
			ln, err = net.Listen("tcp4", addr)
		default:
			err = fmt.Errorf("cannot bind %s", pp.Proto)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	if ln != nil {
		go func() {
			defer close(done)
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_, _ = fmt.Fprintf(c, "%s %s\n", portOwner, c.RemoteAddr())
				c.Close()
			}
		}()
		return func() { ln.Close(); <-done }, nil
	}
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(fmt.Appendf(nil, "%s %s\n", portOwner, from), from)
		}
	}()
	return func() { pc.Close(); <-done }, nil
}

func describe(r topologies.ProbeResult) string {
	s := string(r.Outcome)
	if r.Endpoint != "" {
		s += " by " + r.Endpoint + " seeing " + r.SeenSource.String()
	}
	if r.Err != "" {
		s += ": " + r.Err
	}
	return s
}

// Behaviour specs: the CONFORMANCE.md items that are not one packet flow
// but a behaviour over time (conntrack across endpoint churn, session
// affinity holding and expiring, health-check node ports, sync recovery).
// They are written in Go beside their fixtures, and describeDatapaths
// instantiates them inside every datapath's tree, like the flow tables.

// behaviourCategory is one CONFORMANCE.md category (or the part of one)
// covered by behaviour specs. Specs declares the category's specs for one
// datapath; each spec carries its item ID as a label.
type behaviourCategory struct {
	Letter, Title, Prefix string
	Specs                 func(dp string)
}

// behaviourCategories lists the behaviour categories in CONFORMANCE.md
// order. It is a function, not a registry filled from init, because
// package-level initialisation order across files would otherwise decide
// whether a category is seen.
func behaviourCategories() []behaviourCategory {
	return []behaviourCategory{
		{Letter: "C", Title: "Endpoint conditions: health checks of terminating endpoints", Prefix: "EPC", Specs: terminatingHealthCheckSpecs},
		{Letter: "D", Title: "Conntrack behaviour & endpoint churn", Prefix: "CT", Specs: conntrackSpecs},
		{Letter: "G", Title: "externalTrafficPolicy=Local health checks", Prefix: "ETP", Specs: healthCheckSpecs},
		{Letter: "J", Title: "Session affinity", Prefix: "AFF", Specs: affinitySpecs},
		{Letter: "N", Title: "Sync correctness and resilience", Prefix: "SYNC", Specs: syncSpecs},
	}
}

// newBehaviourLab builds the lab for a behaviour spec from its fixture,
// with the checks, skips and teardown of a table case (newHarness). Call
// it from a BeforeAll or an It: the lab is torn down when that node's
// scope ends.
func newBehaviourLab(ctx context.Context, dp, id, name, fixture string) *harness {
	line := "?"
	if _, file, n, ok := runtime.Caller(1); ok {
		line = fmt.Sprintf("%s:%d", filepath.Base(file), n)
	}
	return newHarness(ctx, dp, &flowtest.Case{ID: id, Name: name, Fixture: fixture, Line: line})
}

// applyFixture makes the lab hold the cluster in fixture, a whole cluster
// like a table step's.
func (h *harness) applyFixture(ctx context.Context, what, fixture string) {
	cl, err := model.Parse(h.c.ID+" "+what+".yaml", []byte(fixture))
	Expect(err).NotTo(HaveOccurred(), "fixture %q", what)
	By("applying " + what)
	Expect(h.lab.Apply(ctx, cl)).To(Succeed(), "apply %s", what)
	h.step = -2 // no table step: ensureStep must apply again if asked
}

// Fixture building blocks, in the lab's address plan (flowtest/fixtures.go):
// node-a 198.18.0.11 with pods 198.18.64.x and client pod 198.18.127.1,
// node-b 198.18.0.12 with pods 198.18.65.x and client pod 198.18.127.2,
// external client 0 198.18.0.200, VIPs in 198.19.0.0/16.

const (
	bNodeA = `
apiVersion: v1
kind: Node
metadata: {name: node-a}
status:
  addresses:
  - {type: InternalIP, address: 198.18.0.11}
`
	bNodeB = `
apiVersion: v1
kind: Node
metadata: {name: node-b}
status:
  addresses:
  - {type: InternalIP, address: 198.18.0.12}
`
)

var (
	nodeAIP = netip.MustParseAddr("198.18.0.11")
	nodeBIP = netip.MustParseAddr("198.18.0.12")
)

// bPort is one Service port; its targetPort is the port itself, and the
// slices carry the same number.
type bPort struct {
	Name     string
	Port     int32
	Proto    model.Protocol // "" is TCP
	NodePort int32
}

func (p bPort) proto() model.Protocol {
	if p.Proto == "" {
		return model.TCP
	}
	return p.Proto
}

// bService is a Service fixture.
type bService struct {
	Name      string
	Type      model.ServiceType // "" is ClusterIP
	ClusterIP string
	LBIP      string
	ETP, ITP  model.TrafficPolicy
	HCNP      int32
	// Affinity sets sessionAffinity: ClientIP, with AffinitySeconds as
	// timeoutSeconds when non-zero.
	Affinity        bool
	AffinitySeconds int32
	Ports           []bPort
}

// bEndpoint is one endpoint of a slice fixture; Cond is the conditions in
// YAML flow style, "" for ready.
type bEndpoint struct {
	Name, IP, Node string
	Cond           string
}

// terminatingServing is a pod being deleted that still serves.
const terminatingServing = "{ready: false, serving: true, terminating: true}"

// yaml renders the Service and, unless eps is nil, one EndpointSlice with
// the endpoints (an empty, non-nil eps gives an empty slice).
func (s bService) yaml(eps []bEndpoint) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Service\nmetadata: {name: %s, namespace: default}\nspec:\n", s.Name)
	if s.Type != "" {
		fmt.Fprintf(&b, "  type: %s\n", s.Type)
	}
	fmt.Fprintf(&b, "  clusterIP: %s\n", s.ClusterIP)
	if s.ETP != "" {
		fmt.Fprintf(&b, "  externalTrafficPolicy: %s\n", s.ETP)
	}
	if s.ITP != "" {
		fmt.Fprintf(&b, "  internalTrafficPolicy: %s\n", s.ITP)
	}
	if s.HCNP != 0 {
		fmt.Fprintf(&b, "  healthCheckNodePort: %d\n", s.HCNP)
	}
	if s.Affinity {
		b.WriteString("  sessionAffinity: ClientIP\n")
		if s.AffinitySeconds != 0 {
			fmt.Fprintf(&b, "  sessionAffinityConfig: {clientIP: {timeoutSeconds: %d}}\n", s.AffinitySeconds)
		}
	}
	b.WriteString("  ports:\n")
	for _, p := range s.Ports {
		fmt.Fprintf(&b, "  - {name: %s, port: %d, protocol: %s, targetPort: %d", p.Name, p.Port, p.proto(), p.Port)
		if p.NodePort != 0 && (s.Type == model.NodePort || s.Type == model.LoadBalancer) {
			fmt.Fprintf(&b, ", nodePort: %d", p.NodePort)
		}
		b.WriteString("}\n")
	}
	if s.LBIP != "" && s.Type == model.LoadBalancer {
		fmt.Fprintf(&b, "status:\n  loadBalancer:\n    ingress:\n    - ip: %s\n", s.LBIP)
	}
	if eps == nil {
		return b.String()
	}
	fmt.Fprintf(&b, "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: %s-abcde\n  namespace: default\n  labels: {kubernetes.io/service-name: %s}\naddressType: IPv4\nports:\n", s.Name, s.Name)
	for _, p := range s.Ports {
		fmt.Fprintf(&b, "- {name: %s, port: %d, protocol: %s}\n", p.Name, p.Port, p.proto())
	}
	if len(eps) == 0 {
		b.WriteString("endpoints: []\n")
		return b.String()
	}
	b.WriteString("endpoints:\n")
	for _, e := range eps {
		fmt.Fprintf(&b, "- addresses: [%s]\n  nodeName: %s\n  targetRef: {kind: Pod, namespace: default, name: %s}\n", e.IP, e.Node, e.Name)
		if e.Cond != "" {
			fmt.Fprintf(&b, "  conditions: %s\n", e.Cond)
		}
	}
	return b.String()
}

// fixtureOf joins YAML documents into one cluster fixture.
func fixtureOf(parts ...string) string {
	trimmed := make([]string, 0, len(parts))
	for _, p := range parts {
		trimmed = append(trimmed, strings.TrimSpace(p))
	}
	return strings.Join(trimmed, "\n---\n") + "\n"
}

// endpointNames lists the endpoints' names.
func endpointNames(eps []bEndpoint) []string {
	out := make([]string, len(eps))
	for i, e := range eps {
		out[i] = e.Name
	}
	return out
}

// Probing.

// probeTarget is where a behaviour spec sends traffic: from a namespace, to an
// address and port.
type probeTarget struct {
	what  string // "pod on node-a to ClusterIP of aff"
	ns    netnsutil.NS
	proto model.Protocol
	dst   netip.AddrPort
	src   netip.AddrPort // optional: pins the source port
}

func (t probeTarget) spec(timeout time.Duration) topologies.ProbeSpec {
	return topologies.ProbeSpec{Proto: string(t.proto), Dst: t.dst, Src: t.src, Timeout: timeout}
}

func (t probeTarget) String() string {
	s := fmt.Sprintf("%s (%s/%s from %s", t.what, t.dst, t.proto, t.ns.Name)
	if t.src.Port() != 0 {
		s += fmt.Sprintf(", source port %d", t.src.Port())
	}
	return s + ")"
}

// withSrcPort pins the client's source port, so every probe is the same
// 5-tuple (conntrack specs).
func (t probeTarget) withSrcPort(port uint16) probeTarget {
	t.src = netip.AddrPortFrom(netip.Addr{}, port)
	return t
}

// probe sends one probe.
func (t probeTarget) probe(ctx context.Context, timeout time.Duration) topologies.ProbeResult {
	return topologies.Probe(ctx, t.ns, t.spec(timeout))
}

// sourceRule says what source address a backend must have seen.
type sourceRule int

const (
	anySource sourceRule = iota
	// clientSource: the client's own address (no SNAT).
	clientSource
	// nodeSource: an address of the node given to forward (SNAT).
	nodeSource
)

// fwdCheck is what forward() requires of every answer.
type fwdCheck struct {
	// endpoints that may answer; with all, each must answer at least once.
	endpoints []string
	all       bool
	source    sourceRule
	node      string // for nodeSource
}

// forward sends n probes (new connections, or datagrams from fresh source
// ports unless t pins one) and requires every one to be answered by an
// allowed endpoint with the right source address. It returns the endpoint
// that answered each probe, in order.
func (h *harness) forward(ctx context.Context, t probeTarget, n int, want fwdCheck) []string {
	By(fmt.Sprintf("sending %d probes: %s; allowed endpoints %v", n, t, want.endpoints))
	got := make([]string, 0, n)
	bad := map[string]int{}
	counts := map[string]int{}
	for range n {
		r := t.probe(ctx, fwdTimeout)
		got = append(got, r.Endpoint)
		if msg := h.answerProblem(r, want); msg != "" {
			bad[msg]++
			continue
		}
		counts[r.Endpoint]++
	}
	var problems []string
	for msg, c := range bad {
		problems = append(problems, fmt.Sprintf("%d× %s", c, msg))
	}
	if want.all {
		for _, ep := range want.endpoints {
			if counts[ep] == 0 {
				problems = append(problems, fmt.Sprintf("endpoint %s never answered", ep))
			}
		}
	}
	sort.Strings(problems)
	Expect(problems).To(BeEmpty(), "%s: answers per endpoint %v; problems:\n  %s", t, counts, strings.Join(problems, "\n  "))
	return got
}

func (h *harness) answerProblem(r topologies.ProbeResult, want fwdCheck) string {
	if r.Outcome != topologies.Answered {
		return describe(r)
	}
	if len(want.endpoints) > 0 && !slices.Contains(want.endpoints, r.Endpoint) {
		return fmt.Sprintf("answered by %s, which is not one of %v", r.Endpoint, want.endpoints)
	}
	seen := r.SeenSource.Addr()
	switch want.source {
	case clientSource:
		if seen != r.Local.Addr() {
			return fmt.Sprintf("backend %s saw source %s, not the client's own %s (want it preserved)", r.Endpoint, seen, r.Local.Addr())
		}
	case nodeSource:
		if !slices.Contains(h.nodeAddresses(want.node), seen) {
			return fmt.Sprintf("backend %s saw source %s, not an address of %s (want SNAT; client was %s)", r.Endpoint, seen, want.node, r.Local.Addr())
		}
	}
	return ""
}

// unanswered sends silentProbes probes and requires each to end as ok
// says (refused, timed out, or either).
func (h *harness) unanswered(ctx context.Context, t probeTarget, timeout time.Duration, wantText string, ok func(topologies.Outcome) bool) {
	By(fmt.Sprintf("sending %d probes: %s; each must be %s", silentProbes, t, wantText))
	var bad []string
	for range silentProbes {
		r := t.probe(ctx, timeout)
		if !ok(r.Outcome) {
			bad = append(bad, describe(r))
		}
	}
	Expect(bad).To(BeEmpty(), "%s: want every probe %s; got:\n  %s", t, wantText, strings.Join(bad, "\n  "))
}

func (h *harness) refused(ctx context.Context, t probeTarget) {
	h.unanswered(ctx, t, rejectTimeout, "refused", func(o topologies.Outcome) bool { return o == topologies.Refused })
}

func (h *harness) dropped(ctx context.Context, t probeTarget) {
	h.unanswered(ctx, t, dropTimeout, "timed out", func(o topologies.Outcome) bool { return o == topologies.TimedOut })
}

// notServed: nothing answers (refused or timed out), e.g. a deleted
// Service's VIP, whose fate is the datapath's choice (iptables leaves it to
// routing, nftables drops unallocated Service IPs).
func (h *harness) notServed(ctx context.Context, t probeTarget) {
	h.unanswered(ctx, t, dropTimeout, "unanswered (refused or timed out)", func(o topologies.Outcome) bool {
		return o == topologies.Refused || o == topologies.TimedOut
	})
}

// distinctNames lists the distinct non-empty names in order of first appearance.
func distinctNames(names []string) []string {
	var out []string
	for _, n := range names {
		if n != "" && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// Sources and destinations in the default two-node lab.

func (h *harness) fromPod(node string) netnsutil.NS  { return h.lab.ClientNS(node) }
func (h *harness) fromNode(node string) netnsutil.NS { return h.lab.NodeNS(node) }
func (h *harness) fromExternal() netnsutil.NS        { return h.lab.ExternalNS(0) }
func addrPortOf(ip string, port int32) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr(ip), uint16(port))
}
func nodePortOn(ip netip.Addr, port int32) netip.AddrPort {
	return netip.AddrPortFrom(ip, uint16(port))
}

// TestBehaviourFixtureYAML checks that the fixture builder writes what the
// model reads back: every field a behaviour spec relies on. It needs no
// root.
func TestBehaviourFixtureYAML(t *testing.T) {
	lb := bService{
		Name: "lb", Type: model.LoadBalancer, ClusterIP: "198.19.0.1", LBIP: "198.19.2.1",
		ETP: model.PolicyLocal, ITP: model.PolicyLocal, HCNP: 30100, Affinity: true, AffinitySeconds: 3,
		Ports: []bPort{{Name: "tcp", Port: 80, NodePort: 30001}, {Name: "udp", Port: 53, Proto: model.UDP, NodePort: 30002}},
	}
	cip := bService{Name: "cip", ClusterIP: "198.19.0.2", Ports: []bPort{{Name: "tcp", Port: 80, NodePort: 30003}}}
	empty := bService{Name: "empty", ClusterIP: "198.19.0.3", Ports: []bPort{{Name: "tcp", Port: 80}}}
	eps := []bEndpoint{
		{Name: "pod-a1", IP: "198.18.64.1", Node: "node-a"},
		{Name: "pod-b1", IP: "198.18.65.1", Node: "node-b", Cond: terminatingServing},
	}
	cl, err := model.Parse("fixture.yaml", []byte(fixtureOf(bNodeA, bNodeB, lb.yaml(eps), cip.yaml(eps[:1]), empty.yaml(nil))))
	if err != nil {
		t.Fatal(err)
	}
	s := cl.Service("default", "lb")
	if s == nil {
		t.Fatal("no Service lb")
	}
	if s.Type != model.LoadBalancer || s.ExternalTrafficPolicy != model.PolicyLocal || s.InternalTrafficPolicy != model.PolicyLocal ||
		s.HealthCheckNodePort != 30100 || !s.SessionAffinity || s.AffinityTimeout != 3*time.Second ||
		len(s.LoadBalancerIPs) != 1 || s.LoadBalancerIPs[0].String() != "198.19.2.1" {
		t.Errorf("Service lb parsed as %+v", s)
	}
	if len(s.Ports) != 2 || s.Ports[0].NodePort != 30001 || s.Ports[1].Protocol != model.UDP || s.Ports[1].NodePort != 30002 {
		t.Errorf("ports of lb: %+v %+v", s.Ports[0], s.Ports[1])
	}
	for _, p := range s.Ports {
		if len(p.Endpoints) != 2 {
			t.Fatalf("port %s of lb has %d endpoints, want 2", p.Name, len(p.Endpoints))
		}
		a, b := p.Endpoints[0], p.Endpoints[1]
		if a.Name != "pod-a1" || a.NodeName != "node-a" || !a.Ready || a.Terminating || a.Port != p.Port {
			t.Errorf("pod-a1 on port %s: %+v", p.Name, a)
		}
		if b.Name != "pod-b1" || b.Ready || !b.Serving || !b.Terminating {
			t.Errorf("pod-b1 on port %s: %+v", p.Name, b)
		}
	}
	if c := cl.Service("default", "cip"); c == nil || c.Type != model.ClusterIP || c.Ports[0].NodePort != 0 || c.SessionAffinity {
		t.Errorf("Service cip (a nodePort on a ClusterIP Service must be left out): %+v", c)
	}
	if e := cl.Service("default", "empty"); e == nil || len(e.Ports[0].Endpoints) != 0 {
		t.Errorf("Service empty (no slice): %+v", e)
	}
}
