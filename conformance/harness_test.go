package conformance

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/vishvananda/netlink"

	"proxyrig/datapaths"
	"proxyrig/datapaths/flowtest"
	"proxyrig/internal/netnsutil"
	"proxyrig/model"
	"proxyrig/topologies"
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
	// fwdTimeout and rejectTimeout are generous: a refusal is recognised by
	// its outcome, never by how fast it came.
	fwdTimeout    = 3 * time.Second
	rejectTimeout = 3 * time.Second
	// dropTimeout is short: silence is all DROP and PASS promise, and a
	// late answer would still be an answer before it.
	dropTimeout = 1 * time.Second
	// portOwner is what the test's own listener answers with (FreePorts).
	portOwner = "port-owner"
)

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
