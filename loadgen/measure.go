package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"time"

	"proxyrig/datapaths"
	"proxyrig/internal/netnsutil"
	"proxyrig/model"
	"proxyrig/topologies"
)

// probeTimeout bounds one connection or exchange of the traffic
// measurements. A lab answers in well under a millisecond; a probe that
// takes this long has failed, and is counted as such.
const probeTimeout = time.Second

// recorder collects one cell's figures, one value per repetition.
type recorder struct {
	base Figure
	figs []*Figure
	idx  map[[3]string]*Figure
}

func newRecorder(base Figure) *recorder {
	return &recorder{base: base, idx: map[[3]string]*Figure{}}
}

func (rc *recorder) add(metric, variant, stat, unit string, samples int, v float64) {
	k := [3]string{metric, variant, stat}
	f := rc.idx[k]
	if f == nil {
		cp := rc.base
		cp.Metric, cp.Variant, cp.Stat, cp.Unit = metric, variant, stat, unit
		f = &cp
		rc.idx[k] = f
		rc.figs = append(rc.figs, f)
	}
	f.PerRep = append(f.PerRep, v)
	f.Samples = max(f.Samples, samples)
}

// addDist records percentiles of one repetition's samples. A repetition
// without samples records nothing, rather than a zero.
func (rc *recorder) addDist(metric, variant string, d []time.Duration, stats ...string) {
	if len(d) == 0 {
		return
	}
	s := durationsNs(d)
	for _, st := range stats {
		var v float64
		switch st {
		case "p50":
			v = Percentile(s, 50)
		case "p90":
			v = Percentile(s, 90)
		case "p99":
			v = Percentile(s, 99)
		case "max":
			v = s[len(s)-1]
		case "min":
			v = s[0]
		}
		rc.add(metric, variant, st, "ns", len(s), v)
	}
}

func (rc *recorder) finish() []Figure {
	out := make([]Figure, 0, len(rc.figs))
	for _, f := range rc.figs {
		f.Reps = len(f.PerRep)
		f.Spread = SpreadOf(f.PerRep)
		out = append(out, *f)
	}
	return out
}

// cellState is what one cell's phases share.
type cellState struct {
	cell     *Cell
	lab      *topologies.ScaleLab
	node     string
	client   netnsutil.NS
	tg       targets
	rec      *recorder
	rng      *rand.Rand
	syncDur  time.Duration // all time spent inside Sync
	lastSync time.Duration // the latest Sync's wall time
}

func (cs *cellState) errorf(phase string, err error) {
	cs.cell.Errors = append(cs.cell.Errors, phase+": "+firstLine(err.Error()))
}

func (cs *cellState) note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	if !slices.Contains(cs.cell.Notes, s) {
		cs.cell.Notes = append(cs.cell.Notes, s)
	}
}

// flush empties the datapath node's conntrack table before a sync
// measurement. Datapaths that reconcile conntrack on every Sync (kube-
// proxy's iptables mode dumps the table for stale UDP entries) would
// otherwise pay for whatever traffic an earlier phase left behind, and
// figures would depend on the phase order rather than the datapath.
func (cs *cellState) flush() {
	if err := cs.lab.FlushConntrack(cs.node); err != nil {
		cs.note("could not flush conntrack before a sync measurement: %v", err)
	}
}

// sync hands a prepared cluster to the node's datapath and times it: wall
// time, and CPU time of this process plus the tools the datapath ran.
func (cs *cellState) sync(ctx context.Context, prepared *model.Cluster) (wall, cpu time.Duration, st datapaths.SyncStats, err error) {
	dp := cs.lab.Datapath(cs.node)
	view := cs.lab.View(cs.node, prepared)
	c0 := cpuTime()
	t0 := time.Now()
	st, err = dp.Sync(ctx, view, datapaths.SyncOptions{})
	wall = time.Since(t0)
	cpu = cpuTime() - c0
	cs.syncDur += wall
	cs.lastSync = wall
	return wall, cpu, st, err
}

// noisySteal is the steal ratio from which a cell says its figures are
// disturbed: cells on this 2-core VM with nothing else running showed
// 2-3%.
const noisySteal = 0.05

// runCell measures one datapath at one scale: build the lab, baseline on
// the empty node, sync_full, traffic with the rules loaded,
// sync_incremental, programming_latency and disruption, each phase's
// failure recorded without stopping the ones that can still run.
func (r *runner) runCell(ctx context.Context, cell *Cell) {
	t0 := time.Now()
	ticks0, ticksErr := readCPUTicks()
	defer func() {
		cell.DurationNs = time.Since(t0).Nanoseconds()
		if ticks, err := readCPUTicks(); err == nil && ticksErr == nil {
			cell.StealRatio = ticks.stealRatio(ticks0)
			if cell.StealRatio >= noisySteal {
				cell.Notes = append(cell.Notes, fmt.Sprintf("the hypervisor took %.0f%% of the CPU time while this cell ran (steal in /proc/stat): its latency figures are noisier than a quiet machine's", 100*cell.StealRatio))
			}
		}
	}()
	cfg := r.cfg
	env := r.res.Run.Env
	spec := cfg.Spec
	spec.Services, spec.EndpointsPerService, spec.Nodes, spec.Seed = cell.Services, cfg.Endpoints, cfg.Nodes, cfg.Seed
	spec = spec.Defaults()

	r.phase("generate")
	c, err := Generate(spec)
	if err != nil {
		cell.Status, cell.Reason = "failed", err.Error()
		return
	}
	c = withRRService(c, spec)
	cell.Notes = append(cell.Notes, c.Warnings...)

	r.phase("build lab")
	backends := map[string][]netip.Prefix{}
	for i := range spec.Nodes {
		backends[NodeName(i)] = NodePrefixes(i, spec.Nodes)
	}
	node := NodeName(0)
	lab, err := topologies.BuildScale(ctx, c, topologies.ScaleOptions{
		Name:            r.lab,
		Datapath:        cell.Datapath,
		DatapathOptions: cfg.DatapathOptions,
		IPTablesBackend: cfg.IPTablesBackend,
		DatapathNodes:   []string{node},
		Proxy: datapaths.ProxyConfig{
			ClusterCIDRs: []netip.Prefix{PodRange},
			ServiceCIDRs: []netip.Prefix{topologies.ServiceCIDR},
		},
		Backends:       backends,
		ExternalRoutes: []netip.Prefix{LoadBalancerRange},
		Logger:         cfg.Logger,
	})
	if err != nil {
		cell.Status, cell.Reason = "failed", "build the lab: "+firstLine(err.Error())
		if errors.Is(err, datapaths.ErrNotSupported) {
			cell.Status = "skipped"
		}
		// A half-built lab of a crashed attempt must not block the next.
		_, _ = topologies.Cleanup(context.WithoutCancel(ctx), r.lab)
		return
	}
	defer func() {
		if err := lab.Close(context.WithoutCancel(ctx)); err != nil {
			cell.Errors = append(cell.Errors, "close the lab: "+firstLine(err.Error()))
			_, _ = topologies.Cleanup(context.WithoutCancel(ctx), r.lab)
		}
	}()
	cell.Notes = append(cell.Notes, lab.Notes()...)
	prepared, err := lab.Prepare(c)
	if err != nil {
		cell.Status, cell.Reason = "failed", firstLine(err.Error())
		return
	}
	cs := &cellState{
		cell:   cell,
		lab:    lab,
		node:   node,
		client: lab.ClientNS(node),
		rng:    rand.New(rand.NewPCG(cfg.Seed, uint64(cell.Services))),
		rec: newRecorder(Figure{
			Datapath: cell.Datapath, Services: cell.Services, Endpoints: cell.Endpoints,
			Topology: "direct", Kernel: env.Kernel, IPTablesBackend: cfg.IPTablesBackend, Emulated: env.Emulated,
		}),
	}
	cs.tg = findTargets(prepared, prepared.Node(node))
	defer func() { r.res.Figures = append(r.res.Figures, cs.rec.finish()...) }()

	r.phase("baseline (empty node)")
	for rep := range cfg.Reps {
		if err := r.traffic(ctx, cs, false, rep); err != nil {
			cs.errorf("baseline", err)
			break
		}
	}

	r.phase("sync_full")
	var cost cellCost
	phaseStart := time.Now()
	var fulls []time.Duration
	for rep := range cfg.Reps {
		if rep > 0 {
			// Each repetition starts from an empty node: Cleanup, then a
			// fresh instance, as a restarted kube-proxy would.
			if err := lab.ResetDatapath(ctx, node); err != nil {
				cs.errorf("sync_full", err)
				break
			}
		}
		cs.flush()
		wall, cpu, st, err := cs.sync(ctx, prepared)
		if err != nil {
			cs.errorf("sync_full", err)
			if rep == 0 {
				cell.Status, cell.Reason = "failed", "full sync: "+firstLine(err.Error())
				if errors.Is(ctx.Err(), context.DeadlineExceeded) {
					// Not a failure of the datapath: it was too slow for
					// what was left of the budget.
					left := time.Duration(0)
					if d, ok := ctx.Deadline(); ok {
						left = d.Sub(t0)
					}
					cell.Status = "skipped"
					cell.Reason = fmt.Sprintf("the full sync did not finish within the %s of the time budget that was left for this cell", left.Round(time.Second))
				}
				return
			}
			// The node may be half-programmed now; put it right for the
			// phases that follow.
			if _, _, _, err := cs.sync(ctx, prepared); err != nil {
				cell.Status, cell.Reason = "failed", "full sync after a failed one: "+firstLine(err.Error())
				return
			}
			break
		}
		fulls = append(fulls, wall)
		cell.Backend = st.Backend
		rec := cs.rec
		rec.add(MetricSyncFull, "", "wall", "ns", 1, float64(wall))
		rec.add(MetricSyncFull, "", "cpu", "ns", 1, float64(cpu))
		rec.add(MetricSyncFull, "", "render", "ns", 1, float64(st.Render))
		rec.add(MetricSyncFull, "", "apply", "ns", 1, float64(st.Apply))
		rec.add(MetricSyncFull, "", "objects", "objects", 1, float64(st.Objects))
		if tot := st.Render + st.Apply; tot > 0 {
			// proxyrig's own share of the sync: rendering and diffing, as
			// opposed to the kernel and the tools.
			rec.add(MetricSyncFull, "", "overhead", "ratio", 1, float64(st.Render)/float64(tot))
		}
	}
	fullMedian := time.Duration(median(durationsNs(fulls)))
	cost.fullPhase = time.Since(phaseStart)
	if err := r.checkProgrammed(ctx, cs); err != nil {
		cs.errorf("sync_full", err)
	}

	// Sync phases come before the traffic phase: syncs are measured
	// against a node whose conntrack table holds only what the phase
	// itself made (see flush), traffic against the settled rules.
	churn, err := NewChurn(c, spec, cfg.Seed+uint64(cell.Services), nil)
	if err != nil {
		cs.errorf("churn", err)
	} else {
		r.phase(MetricSyncIncremental)
		phaseStart = time.Now()
		if err := r.syncIncremental(ctx, cs, churn); err != nil {
			cs.errorf(MetricSyncIncremental, err)
		}
		cost.incPhase = time.Since(phaseStart)
		r.phase(MetricProgrammingLatency)
		phaseStart = time.Now()
		if err := r.programmingLatency(ctx, cs, churn); err != nil {
			cs.errorf(MetricProgrammingLatency, err)
		}
		cost.progPhase = time.Since(phaseStart)
	}

	// Churn has changed the cluster since the full sync: aim traffic at
	// what the datapath holds now, not at Services that went away.
	if churn != nil {
		if current, err := lab.Prepare(churn.Cluster()); err == nil {
			cs.tg = findTargets(current, current.Node(node))
		} else {
			cs.errorf("traffic", err)
		}
	}
	r.phase("traffic (rules loaded)")
	for rep := range cfg.Reps {
		if err := r.traffic(ctx, cs, true, rep); err != nil {
			cs.errorf("traffic", err)
			break
		}
	}

	if churn != nil && cfg.Samples.Disruption > 0 {
		r.phase(MetricDisruption)
		if err := r.disruption(ctx, cs, churn); err != nil {
			cs.errorf(MetricDisruption, err)
		}
	}

	cell.Status = "measured"
	if len(cell.Errors) > 0 {
		cell.Status, cell.Reason = "partial", reasonOf(cell.Errors)
	}
	if len(fulls) > 0 {
		r.mu.Lock()
		cost.services, cost.syncFull, cost.total = cell.Services, fullMedian, time.Since(t0)
		r.measured[cell.Datapath] = append(r.measured[cell.Datapath], cost)
		r.mu.Unlock()
	}
}

// checkProgrammed makes sure the rules work before anything is measured
// through them: a few VIPs must answer.
func (r *runner) checkProgrammed(ctx context.Context, cs *cellState) error {
	if len(cs.tg.tcpVIP) == 0 {
		return errors.New("no TCP Service is reachable from the client: nothing to measure")
	}
	var bad []string
	err := cs.client.Do(func() error {
		buf := make([]byte, 256)
		for i := range min(5, len(cs.tg.tcpVIP)) {
			t := cs.tg.tcpVIP[(i*7919)%len(cs.tg.tcpVIP)]
			if x := tcpConnect(t.dst, probeTimeout, buf); x.outcome != okAnswered {
				bad = append(bad, fmt.Sprintf("%s (%s): %s", t.dst, t.service, x.outcome))
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(bad) > 0 {
		return fmt.Errorf("after the full sync, VIPs do not answer: %s", strings.Join(bad, "; "))
	}
	return nil
}

// traffic runs one repetition of the per-packet measurements: with loaded
// false, only to endpoints directly on the empty node ("baseline"); with
// loaded true, to VIPs and, in the same rounds, directly to the endpoint
// each VIP sample reached ("direct").
func (r *runner) traffic(ctx context.Context, cs *cellState, loaded bool, rep int) error {
	cfg := r.cfg
	rec, tg, ns := cs.rec, cs.tg, cs.client
	var errs []error

	// first_packet_rtt
	if loaded {
		vip, direct, vfail, dfail, err := pairedConnect(ctx, ns, tg.tcpVIP, tg.byName, cfg.Samples.FirstPacket, cs.rng)
		if err != nil {
			return err
		}
		rec.addDist(MetricFirstPacketRTT, "vip", vip, "p50", "p90", "p99")
		rec.addDist(MetricFirstPacketRTT, "direct", direct, "p50", "p90", "p99")
		rec.add(MetricFirstPacketRTT, "vip", "failed", "connections", cfg.Samples.FirstPacket, float64(vfail))
		rec.add(MetricFirstPacketRTT, "direct", "failed", "connections", cfg.Samples.FirstPacket, float64(dfail))
	} else {
		rtts, fails, err := connectSamples(ctx, ns, [][]target{tg.tcpDirect}, cfg.Samples.FirstPacket, probeTimeout, cs.rng)
		if err != nil {
			return err
		}
		rec.addDist(MetricFirstPacketRTT, "baseline", rtts[0], "p50", "p90", "p99")
		rec.add(MetricFirstPacketRTT, "baseline", "failed", "connections", cfg.Samples.FirstPacket, float64(fails[0]))
	}

	// rr_latency, UDP: one flow, established in conntrack after its first
	// exchange; and TCP on the rr Service.
	if len(tg.udpVIP) > 0 {
		if loaded {
			v := tg.udpVIP[cs.rng.IntN(len(tg.udpVIP))]
			served, err := firstAnswer(ns, v.dst, "UDP")
			if err != nil {
				errs = append(errs, fmt.Errorf("rr udp via %s: %w", v.dst, err))
			} else {
				rtts, _, err := udpRRSamples(ctx, ns, v.dst, cfg.Samples.RR, probeTimeout)
				errs = append(errs, err)
				rec.addDist(MetricRRLatency, "udp-vip", rtts, "p50", "p90", "p99")
				if ep, ok := tg.byName[served]; ok {
					rtts, _, err := udpRRSamples(ctx, ns, ep, cfg.Samples.RR, probeTimeout)
					errs = append(errs, err)
					rec.addDist(MetricRRLatency, "udp-direct", rtts, "p50", "p90", "p99")
				}
			}
		} else {
			d := tg.udpDirect[cs.rng.IntN(len(tg.udpDirect))]
			rtts, _, err := udpRRSamples(ctx, ns, d.dst, cfg.Samples.RR, probeTimeout)
			errs = append(errs, err)
			rec.addDist(MetricRRLatency, "udp-baseline", rtts, "p50", "p90", "p99")
		}
	} else if rep == 0 {
		cs.note("no UDP Service is reachable from the client: no UDP rr_latency, throughput or cpu_per_packet")
	}
	if tg.rrVIP.IsValid() && len(tg.rrDirect) > 0 {
		if loaded {
			served, err := firstAnswer(ns, tg.rrVIP, "TCP")
			if err != nil {
				errs = append(errs, fmt.Errorf("rr tcp via %s: %w", tg.rrVIP, err))
			} else {
				rtts, _, err := tcpRRSamples(ctx, ns, tg.rrVIP, cfg.Samples.RR, probeTimeout)
				errs = append(errs, err)
				rec.addDist(MetricRRLatency, "tcp-vip", rtts, "p50", "p90", "p99")
				if ep, ok := tg.byName[served]; ok {
					rtts, _, err := tcpRRSamples(ctx, ns, ep, cfg.Samples.RR, probeTimeout)
					errs = append(errs, err)
					rec.addDist(MetricRRLatency, "tcp-direct", rtts, "p50", "p90", "p99")
				}
			}
		} else {
			d := tg.rrDirect[cs.rng.IntN(len(tg.rrDirect))]
			rtts, _, err := tcpRRSamples(ctx, ns, d.dst, cfg.Samples.RR, probeTimeout)
			errs = append(errs, err)
			rec.addDist(MetricRRLatency, "tcp-baseline", rtts, "p50", "p90", "p99")
		}
	}

	// throughput and cpu_per_packet: new connections per second, then UDP
	// packets per second, each from one client thread, with the kernel CPU
	// the whole machine spent meanwhile.
	kinds := []struct {
		suffix string
		tcp    []target
	}{{"baseline", tg.tcpDirect}}
	if loaded {
		kinds = []struct {
			suffix string
			tcp    []target
		}{{"vip", tg.tcpVIP}, {"direct", tg.tcpDirect}}
	}
	for _, k := range kinds {
		k0, err := readKernelCPU()
		if err != nil {
			return err
		}
		ok, failed, el, err := connectRate(ctx, ns, k.tcp, cfg.Samples.Throughput, probeTimeout, cs.rng)
		if err != nil {
			return err
		}
		k1, _ := readKernelCPU()
		if el > 0 {
			rec.add(MetricThroughput, "crr-"+k.suffix, "rate", "conn/s", ok, float64(ok)/el.Seconds())
			rec.add(MetricThroughput, "crr-"+k.suffix, "failed", "connections", ok+failed, float64(failed))
		}
		if ok > 0 {
			rec.add(MetricCPUPerPacket, "crr-"+k.suffix, "value", "ns/conn", ok, float64(k1.since(k0))/float64(ok))
		}
	}
	if len(tg.udpVIP) > 0 {
		udpKinds := []struct {
			suffix string
			flows  []netip.AddrPort
		}{{"baseline", pickFlows(tg.udpDirect, 16, cs.rng)}}
		if loaded {
			udpKinds = []struct {
				suffix string
				flows  []netip.AddrPort
			}{{"vip", pickFlows(tg.udpVIP, 16, cs.rng)}, {"direct", pickFlows(tg.udpDirect, 16, cs.rng)}}
		}
		for _, k := range udpKinds {
			c0 := cs.lab.Counters().UDPBlast
			k0, err := readKernelCPU()
			if err != nil {
				return err
			}
			sent, dropped, el, err := udpBlast(ctx, ns, k.flows, cfg.Samples.Throughput)
			if err != nil {
				return err
			}
			k1, _ := readKernelCPU()
			// Let datagrams still in flight arrive before counting.
			time.Sleep(20 * time.Millisecond)
			got := int(cs.lab.Counters().UDPBlast - c0)
			if el > 0 {
				rec.add(MetricThroughput, "udp-"+k.suffix, "rate", "pkt/s", got, float64(got)/el.Seconds())
				rec.add(MetricThroughput, "udp-"+k.suffix, "sent-rate", "pkt/s", sent, float64(sent)/el.Seconds())
				if sent > 0 {
					rec.add(MetricThroughput, "udp-"+k.suffix, "loss", "ratio", sent, float64(max(0, sent-got))/float64(sent+dropped))
				}
			}
			if got > 0 {
				rec.add(MetricCPUPerPacket, "udp-"+k.suffix, "value", "ns/pkt", got, float64(k1.since(k0))/float64(got))
			}
		}
	}
	if loaded {
		r.checkSaturation(cs)
	}
	return errors.Join(errs...)
}

// checkSaturation says, per rate, whether the VIP figure reached the
// baseline (straight to endpoints, empty node) of the same cell: if it
// did, the client or the echo servers, not the datapath, set the limit,
// and the figure is a lower bound on what the datapath can do. The
// baseline, not the loaded direct figure, is the yardstick: with iptables,
// direct connections through a loaded node walk all of KUBE-SERVICES
// without a match and may well be slower than VIP ones.
func (r *runner) checkSaturation(cs *cellState) {
	get := func(variant string) []float64 {
		f := cs.rec.idx[[3]string{MetricThroughput, variant, "rate"}]
		if f == nil {
			return nil
		}
		return f.PerRep
	}
	for _, k := range []string{"crr", "udp"} {
		vips, base := get(k+"-vip"), get(k+"-baseline")
		if len(vips) == 0 || len(base) == 0 {
			continue
		}
		vip := vips[len(vips)-1]
		b := slices.Max(base)
		if b > 0 && vip >= 0.9*b {
			cs.note("throughput %s-vip reached %.0f%% of the best %s-baseline repetition: the harness (one client thread, in-process echo servers), not the datapath, bounds that rate", k, 100*vip/b, k)
		}
	}
}

// firstAnswer makes one exchange and returns the name of the endpoint that
// answered.
func firstAnswer(ns netnsutil.NS, dst netip.AddrPort, proto string) (string, error) {
	var x exchange
	err := ns.Do(func() error {
		buf := make([]byte, 256)
		if proto == "UDP" {
			c, err := dialUDP(dst)
			if err != nil {
				return err
			}
			defer c.close()
			x = c.exchange([]byte("rr\n"), buf, probeTimeout)
			return nil
		}
		c, name, err := dialRR(dst, probeTimeout, buf)
		if err != nil {
			return err
		}
		c.close()
		x = exchange{outcome: okAnswered, name: name}
		return nil
	})
	if err != nil {
		return "", err
	}
	if x.outcome != okAnswered {
		return "", fmt.Errorf("%s", x.outcome)
	}
	return x.name, nil
}

func pickFlows(t []target, n int, rng *rand.Rand) []netip.AddrPort {
	out := make([]netip.AddrPort, 0, n)
	for _, i := range rng.Perm(len(t)) {
		if len(out) == n {
			break
		}
		out = append(out, t[i].dst)
	}
	return out
}

// pairedConnect takes n rounds of: a TCP connection to a random VIP, then
// one straight to the endpoint that answered it. Both see the same backend
// and the same path beyond the node, so their difference is what the
// datapath's Service handling costs a new connection.
func pairedConnect(ctx context.Context, ns netnsutil.NS, vips []target, byName map[string]netip.AddrPort, n int, rng *rand.Rand) (vip, direct []time.Duration, vfail, dfail int, err error) {
	if len(vips) == 0 {
		return nil, nil, 0, 0, errors.New("no VIP targets")
	}
	picks := make([]netip.AddrPort, n)
	for i := range picks {
		picks[i] = vips[rng.IntN(len(vips))].dst
	}
	vip = make([]time.Duration, 0, n)
	direct = make([]time.Duration, 0, n)
	err = ns.Do(func() error {
		buf := make([]byte, 256)
		for i := range n {
			if i%64 == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
			x := tcpConnect(picks[i], probeTimeout, buf)
			if x.outcome != okAnswered {
				vfail++
				continue
			}
			vip = append(vip, x.rtt)
			ep, ok := byName[x.name]
			if !ok {
				dfail++
				continue
			}
			y := tcpConnect(ep, probeTimeout, buf)
			if y.outcome != okAnswered {
				dfail++
				continue
			}
			direct = append(direct, y.rtt)
		}
		return nil
	})
	return vip, direct, vfail, dfail, err
}

// syncIncremental times single changes at N Services.
func (r *runner) syncIncremental(ctx context.Context, cs *cellState, churn *Churn) error {
	cfg := r.cfg
	for rep := range cfg.Reps {
		cs.flush()
		start := time.Now()
		var all, cpus []time.Duration
		var overheads []float64
		byKind := map[ChangeKind][]time.Duration{}
		for i := 0; i < cfg.Samples.Incremental; i++ {
			if time.Since(start) > cfg.Samples.PhaseCap && len(all) >= 3 {
				cs.note("sync_incremental: a repetition stopped at %d of %d changes after %s (phase cap)", len(all), cfg.Samples.Incremental, cfg.Samples.PhaseCap)
				break
			}
			ch, err := churn.Next()
			if err != nil {
				return err
			}
			prepared, err := cs.lab.Prepare(ch.Cluster)
			if err != nil {
				return err
			}
			wall, cpu, st, err := cs.sync(ctx, prepared)
			if err != nil {
				return fmt.Errorf("change %s: %w", ch, err)
			}
			if st.Full {
				cs.note("sync_incremental: the datapath made a full sync for a single change (%s)", ch.Kind)
			}
			all = append(all, wall)
			cpus = append(cpus, cpu)
			byKind[ch.Kind] = append(byKind[ch.Kind], wall)
			if tot := st.Render + st.Apply; tot > 0 {
				overheads = append(overheads, float64(st.Render)/float64(tot))
			}
		}
		cs.rec.addDist(MetricSyncIncremental, "all", all, "p50", "p99", "max")
		cs.rec.addDist(MetricSyncIncremental, "all-cpu", cpus, "p50", "p99")
		if len(overheads) > 0 {
			// proxyrig's own share of each change's sync, as for sync_full.
			slices.Sort(overheads)
			cs.rec.add(MetricSyncIncremental, "all", "overhead", "ratio", len(overheads), median(overheads))
			cs.rec.add(MetricSyncIncremental, "all", "overhead-max", "ratio", len(overheads), overheads[len(overheads)-1])
		}
		for _, k := range churnKinds {
			cs.rec.addDist(MetricSyncIncremental, string(k), byKind[k], "p50", "p99")
		}
		_ = rep
	}
	return nil
}

// programmingLatency runs cycles of three timed changes on a Service with
// one endpoint, each observed from the client by a watch:
//
//	add-service           a new ClusterIP Service: first answer through it
//	replace-endpoint      its endpoint A replaced by B: first answer from B
//	                      (the same moment A stops being reached)
//	remove-last-endpoint  B removed, none left: first probe refused
//
// then removes the Service (untimed).
func (r *runner) programmingLatency(ctx context.Context, cs *cellState, churn *Churn) error {
	cfg := r.cfg
	for range cfg.Reps {
		cs.flush()
		start := time.Now()
		lat := map[string][]time.Duration{}
		var all []time.Duration
		for i := 0; i < cfg.Samples.Programming; i++ {
			if time.Since(start) > cfg.Samples.PhaseCap && i > 0 {
				cs.note("programming_latency: a repetition stopped at %d of %d cycles after %s (phase cap)", i, cfg.Samples.Programming, cfg.Samples.PhaseCap)
				break
			}
			node := cs.rng.IntN(len(cs.lab.Nodes()))
			add, err := churn.AddServiceWith(ServiceOptions{Endpoints: 1, Nodes: []int{node}})
			if err != nil {
				return err
			}
			answered := func(x exchange) bool { return x.outcome == okAnswered }
			notAnswered := func(x exchange) bool { return x.outcome != okAnswered }
			d, err := r.program(ctx, cs, add, answered, notAnswered)
			if err != nil {
				return fmt.Errorf("add-service %s: %w", add.Service, err)
			}
			lat["add-service"] = append(lat["add-service"], d)

			swap, err := churn.ReplaceEndpointsOf(add.Service, 1, []int{cs.rng.IntN(len(cs.lab.Nodes()))})
			if err != nil {
				return err
			}
			newName, oldName := EndpointName(swap.Added[0]), EndpointName(swap.Removed[0])
			d2, err := r.program(ctx, cs, swap,
				func(x exchange) bool { return x.outcome == okAnswered && x.name == newName },
				func(x exchange) bool { return x.outcome == okAnswered && x.name == oldName })
			if err != nil {
				return fmt.Errorf("replace-endpoint %s: %w", add.Service, err)
			}
			lat["replace-endpoint"] = append(lat["replace-endpoint"], d2)

			empty, err := churn.RemoveEndpointFrom(add.Service, swap.Added[0])
			if err != nil {
				return err
			}
			// REJECT answers at once: a refusal, not a timeout, is the
			// new state.
			d3, err := r.program(ctx, cs, empty, func(x exchange) bool { return x.outcome == okRefused }, answered)
			if err != nil {
				return fmt.Errorf("remove-last-endpoint %s: %w", add.Service, err)
			}
			lat["remove-last-endpoint"] = append(lat["remove-last-endpoint"], d3)
			all = append(all, d, d2, d3)

			gone, err := churn.RemoveServiceNamed(add.Service)
			if err != nil {
				return err
			}
			prepared, err := cs.lab.Prepare(gone.Cluster)
			if err != nil {
				return err
			}
			if _, _, _, err := cs.sync(ctx, prepared); err != nil {
				return fmt.Errorf("remove %s: %w", add.Service, err)
			}
		}
		cs.rec.addDist(MetricProgrammingLatency, "all", all, "p50", "p99", "max")
		for _, k := range []string{"add-service", "replace-endpoint", "remove-last-endpoint"} {
			cs.rec.addDist(MetricProgrammingLatency, k, lat[k], "p50", "p99", "max")
		}
	}
	return nil
}

// program hands one change to the datapath while a watch probes the
// change's VIP, and returns the time from the Sync call until the first
// probe that saw the new state was sent.
func (r *runner) program(ctx context.Context, cs *cellState, ch Change, want, old func(exchange) bool) (time.Duration, error) {
	prepared, err := cs.lab.Prepare(ch.Cluster)
	if err != nil {
		return 0, err
	}
	// Each sample starts from an empty conntrack table, and probes no
	// faster than the change is likely to need: about a thousand probes per
	// expected sync (the last one), at least 250 µs apart. Thousands more
	// would wrap the client's ephemeral ports towards this VIP within
	// conntrack's TIME_WAIT, and a reused 5-tuple can ride an old entry's
	// NAT binding: the harness would be measuring its own leftovers.
	cs.flush()
	interval := max(250*time.Microsecond, min(cs.lastSync/1000, 5*time.Millisecond))
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	started := make(chan struct{})
	type result struct {
		res watchResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := watch(wctx, cs.client, watchSpec{dst: ch.VIP, want: want, old: old, interval: interval}, started)
		done <- result{res, err}
	}()
	<-started
	// Let the watch see the old state for a moment, so "before" is
	// observed rather than assumed.
	time.Sleep(2 * time.Millisecond)
	t0 := time.Now()
	_, _, _, err = cs.sync(ctx, prepared)
	if err != nil {
		cancel()
		<-done
		return 0, err
	}
	// The watch ends once it has seen the new state and confirmed it; give
	// up if it has not within a few seconds of the Sync returning.
	stop := time.AfterFunc(5*time.Second, cancel)
	defer stop.Stop()
	out := <-done
	if !out.res.found {
		if out.err != nil && ctx.Err() != nil {
			return 0, out.err
		}
		return 0, fmt.Errorf("probes of %s never saw the change within 5 s of the Sync returning (%d probes before: %v)", ch.VIP, out.res.before, out.res.beforeOutcomes)
	}
	if out.res.first.Before(t0) {
		return 0, fmt.Errorf("probes of %s saw the new state before the change was handed to the datapath", ch.VIP)
	}
	if out.res.flaps > 0 {
		cs.note("programming_latency: after the new state first showed, %d of %d later probes saw the old one again (%s)", out.res.flaps, out.res.after, ch.Kind)
	}
	return out.res.first.Sub(t0), nil
}

// targets are where traffic goes, computed once per cell from the
// prepared cluster and the client's node.
type targets struct {
	tcpVIP, udpVIP       []target // ClusterIP:port of Services the client can reach
	tcpDirect, udpDirect []target // their usable endpoints
	rrVIP                netip.AddrPort
	rrDirect             []target
	// byName maps an echo line's endpoint name to its address.
	byName map[string]netip.AddrPort
}

// findTargets picks, for each Service, the endpoints the client's node
// would use (model.Categorize): an iTP=Local Service with no endpoint on
// the client's node drops its traffic, and is no target.
func findTargets(c *model.Cluster, node *model.Node) targets {
	tg := targets{byName: map[string]netip.AddrPort{}}
	for _, s := range c.Services {
		if !s.IsProxied() || len(s.Ports) == 0 {
			continue
		}
		sp := s.Ports[0]
		cat := model.Categorize(s, sp, node)
		usable := cat.Cluster
		if s.InternalPolicyLocal() {
			usable = cat.Local
		}
		for _, ep := range sp.Endpoints {
			ap := netip.AddrPortFrom(ep.IP, uint16(ep.Port))
			tg.byName[ep.Name] = ap
		}
		if len(usable) == 0 {
			continue
		}
		vip := target{dst: netip.AddrPortFrom(s.ClusterIPs[0], uint16(sp.Port)), service: s.Name.String()}
		var direct []target
		for _, ep := range usable {
			direct = append(direct, target{dst: netip.AddrPortFrom(ep.IP, uint16(ep.Port)), service: s.Name.String()})
		}
		switch {
		case !generated(s) && sp.Protocol == model.TCP && sp.Port == topologies.ScaleRRPort:
			tg.rrVIP, tg.rrDirect = vip.dst, direct
		case sp.Protocol == model.TCP:
			tg.tcpVIP = append(tg.tcpVIP, vip)
			tg.tcpDirect = append(tg.tcpDirect, direct...)
		case sp.Protocol == model.UDP:
			tg.udpVIP = append(tg.udpVIP, vip)
			tg.udpDirect = append(tg.udpDirect, direct...)
		}
	}
	return tg
}

// rrServiceIP is the ClusterIP of the bench's rr Service: in the Service
// CIDR, outside the range generated ClusterIPs come from.
var rrServiceIP = netip.MustParseAddr("198.19.128.1")

// withRRService adds Service bench/rr: TCP port 7 to the scale backends'
// request/response servers, one endpoint per node, so rr_latency over TCP
// goes through the datapath like any Service.
func withRRService(c *model.Cluster, spec Spec) *model.Cluster {
	name := model.ServiceName{Namespace: Namespace, Name: "rr"}
	s := &model.Service{
		Name: name, Type: model.ClusterIP,
		Origin:                model.Origin{File: model.GeneratedOrigin, Kind: "Service", Name: name.String()},
		ClusterIPs:            []netip.Addr{rrServiceIP},
		ExternalTrafficPolicy: model.PolicyCluster, InternalTrafficPolicy: model.PolicyCluster,
	}
	sp := &model.ServicePort{Name: "", Protocol: model.TCP, Port: topologies.ScaleRRPort, TargetPort: fmt.Sprint(topologies.ScaleRRPort)}
	for i := range spec.Nodes {
		ip := NodePrefixes(i, spec.Nodes)[0].Addr().Next()
		ap := netip.AddrPortFrom(ip, topologies.ScaleRRPort)
		sp.Endpoints = append(sp.Endpoints, &model.Endpoint{IP: ip, Port: topologies.ScaleRRPort, Name: EndpointName(ap), NodeName: NodeName(i), Ready: true, Serving: true})
	}
	sortEndpoints(sp.Endpoints)
	s.Ports = []*model.ServicePort{sp}
	svcs := append(slices.Clone(c.Services), s)
	sortServices(svcs)
	return &model.Cluster{Services: svcs, Nodes: c.Nodes, Warnings: c.Warnings}
}
