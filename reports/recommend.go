package reports

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"

	"proxyrig/conformance/matrix"
	"proxyrig/loadgen"
)

// Profile is what a cluster asks of its Service proxy.
type Profile struct {
	// Services (N) and Endpoints per Service (E) the proxy must carry.
	Services  int
	Endpoints int
	// ChurnPerSec is how many endpoint or Service changes a second the
	// cluster makes (rollouts, autoscaling).
	ChurnPerSec float64
	// Needs are features the cluster uses, by the names Needs() lists:
	// "affinity", "etp-local", … The core items of CONFORMANCE.md are
	// always needed.
	Needs []string
}

// DefaultProfile is the report's question: a large cluster (10k Services
// of 5 endpoints) under the bench's default churn of 5 changes a second,
// using no optional feature.
func DefaultProfile() Profile {
	return Profile{Services: 10000, Endpoints: 5, ChurnPerSec: 5}
}

func (p Profile) String() string {
	needs := "core features only"
	if len(p.Needs) > 0 {
		needs = "needs " + strings.Join(p.Needs, ", ")
	}
	return fmt.Sprintf("%s Services × %d endpoints, %s changes/s, %s", humanCount(p.Services), p.Endpoints, trimFloat(p.ChurnPerSec), needs)
}

// Need is an optional feature and the CONFORMANCE.md items that check it.
type Need struct {
	Name        string
	Description string
	Items       []string
}

// Needs lists the features a Profile may need.
func Needs() []Need {
	return []Need{
		{"nodeport", "NodePort Services", []string{"NP-01", "NP-02", "NP-03", "NP-04", "NP-05", "NP-06"}},
		{"loadbalancer", "LoadBalancer and external IPs", []string{"LB-01", "LB-02", "LB-03", "LB-06"}},
		{"source-ranges", "loadBalancerSourceRanges", []string{"LB-04", "NP-08"}},
		{"etp-local", "externalTrafficPolicy: Local", []string{"ETP-01", "ETP-02", "ETP-03", "ETP-05", "ETP-06", "NOEP-05", "NOEP-07", "EPC-03"}},
		{"healthcheck", "healthCheckNodePort for eTP=Local", []string{"ETP-04", "EPC-06"}},
		{"itp-local", "internalTrafficPolicy: Local", []string{"ITP-01", "ITP-02", "ITP-03", "NOEP-06", "CT-03"}},
		{"affinity", "sessionAffinity: ClientIP", []string{"AFF-01", "AFF-02", "AFF-03", "AFF-04", "AFF-05"}},
		{"topology", "topology hints and trafficDistribution", []string{"TOPO-01", "TOPO-02", "TOPO-03"}},
		{"sctp", "SCTP Services", []string{"CIP-11"}},
		{"ipv6", "IPv6 single-stack", []string{"DS-01"}},
		{"dual-stack", "dual-stack Services", []string{"DS-01", "DS-02", "DS-03"}},
	}
}

// ParseNeeds splits a comma-separated list of needs and checks each name.
func ParseNeeds(s string) ([]string, error) {
	var out []string
	known := map[string]bool{}
	var names []string
	for _, n := range Needs() {
		known[n.Name] = true
		names = append(names, n.Name)
	}
	for _, n := range strings.Split(s, ",") {
		n = strings.TrimSpace(strings.ToLower(n))
		if n == "" {
			continue
		}
		if !known[n] {
			return nil, fmt.Errorf("unknown need %q (known: %s)", n, strings.Join(names, ", "))
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

// coreItems are the CONFORMANCE.md items every cluster needs: all but the
// optional features' and the benchmarks'.
func coreItems() []string {
	optional := map[string]bool{}
	for _, n := range Needs() {
		for _, it := range n.Items {
			optional[it] = true
		}
	}
	var out []string
	for _, it := range matrix.Items() {
		if !it.Benchmark && !optional[it.ID] {
			out = append(out, it.ID)
		}
	}
	return out
}

// Ranking is the datapaths ordered for one Profile, best first, with the
// evidence for every place.
type Ranking struct {
	Profile Profile
	Ranked  []Ranked
	// Facts are things a user must weigh that the measurements do not
	// show, each pointing at the evidence it concerns.
	Facts []Fact
	// Notes qualify the whole ranking ("no native measurements").
	Notes []string
}

// Best returns the first-ranked datapath, or "" when none could be ranked
// on measurements.
func (r Ranking) Best() string {
	if len(r.Ranked) == 0 || r.Ranked[0].Tier != TierRanked {
		return ""
	}
	return r.Ranked[0].Datapath
}

// Tiers of a Ranked datapath: a datapath fails a need, or has no
// performance evidence, ranks below every one that has and does not,
// whatever its score.
const (
	TierRanked       = 0 // measured, and passes every needed item it was checked on
	TierUnmeasured   = 1 // no comparable performance figure at all
	TierFailsANeed   = 2 // fails at least one needed conformance item
	penaltyDuty      = 4.0
	penaltyDeviation = 0.5
	penaltyUnchecked = 0.25
	penaltyNoMatrix  = 1.0
)

// Ranked is one datapath's place and why.
type Ranked struct {
	Rank     int
	Datapath string
	Tier     int
	// Score is the sum of penalties: 0 is best on every cost and free of
	// gaps. Lower is better.
	Score float64
	Costs []Cost
	Gaps  []Gap
	// SyncDuty is ChurnPerSec × the incremental sync p50 at the profile's
	// scale: the share of a CPU spent syncing if every change is synced
	// on its own. At 1 or more the datapath cannot keep up without
	// batching changes.
	SyncDuty *Estimate
	// EmulatedOnly: every performance figure came from an emulated run,
	// scaled by the ratio to a reference datapath measured in the same run.
	EmulatedOnly bool
	Facts        []Fact
	// Warnings say why a datapath ranks low whatever its costs: a failed
	// need, churn it cannot keep up with, no measurements.
	Warnings []string
	// Reasons are one line per cost: where the datapath stands.
	Reasons []string
}

// Cost is one measured cost of a datapath at the profile's scale.
type Cost struct {
	Name string
	Unit string
	// Estimate is the value at the profile's scale (Estimate.Value, in
	// Unit), with how it was obtained.
	Estimate Estimate
	Missing  bool
	// Ratio is Value over the best datapath's value (1 = best).
	Ratio   float64
	Weight  float64
	Penalty float64
	// Basis says how an emulated figure was made comparable, if it was.
	Basis string
}

// Gap is a needed conformance item that is not a plain pass.
type Gap struct {
	Need   string // the need, or "core"
	Item   string
	Status string // matrix status, or "not run"
	Reason string
	Anchor string
}

// Fact is a claim beside the ranking, with the evidence it points at.
type Fact struct {
	Datapath string
	Text     string
	// Source names where an upstream fact comes from ("KEP-5495").
	Source string
	// Anchor is the id in the report of the figure or table behind it.
	Anchor string
}

// costDef is one cost the ranking weighs.
type costDef struct {
	name, unit string
	weight     func(Profile) float64
	// scaleEndpoints: the cost grows with the total endpoint count, so a
	// profile with other E than measured reads the series at N·E/E₀.
	scaleEndpoints bool
	samples        func(fs *FigureSet, dp string) []sample
	single         growth
	// offset is subtracted before reading the series at a scale, and
	// added back after: a ratio to the direct path is 1 plus an overhead,
	// and it is the overhead that grows as a power of N.
	offset float64
}

func seriesSamples(metric, variant, stat string) func(*FigureSet, string) []sample {
	return func(fs *FigureSet, dp string) []sample { return samplesOf(fs.Series(dp, metric, variant, stat)) }
}

// ratioSamples divides one variant by another at every scale where both
// were measured in the same cell: per-packet costs are judged against the
// baseline of the same cell (straight to the endpoints on the node before
// any rule was loaded), never across runs. The baseline, not the "direct"
// variant measured with the rules loaded, because a datapath can tax every
// packet of the node: iptables' nat chains see direct traffic too.
func ratioSamples(metric, num, den, stat string) func(*FigureSet, string) []sample {
	return func(fs *FigureSet, dp string) []sample {
		d := fs.Series(dp, metric, den, stat)
		var out []sample
		for _, p := range fs.Series(dp, metric, num, stat) {
			for _, q := range d {
				if q.Services == p.Services && q.Median > 0 && q.Run == p.Run {
					out = append(out, sample{N: p.Services, V: p.Median / q.Median, Refs: []*Entry{p.Entry, q.Entry}})
				}
			}
		}
		return out
	}
}

// disruptionSamples adds up the connections and flows a rolling update
// broke: failed TCP connections, connections answered by an already
// removed endpoint, and UDP flows stuck on a removed endpoint.
func disruptionSamples(fs *FigureSet, dp string) []sample {
	byN := map[int]*sample{}
	for _, vs := range [][2]string{{"tcp", "failed"}, {"tcp", "to-removed"}, {"udp", "stuck-flows"}} {
		for _, p := range fs.Series(dp, loadgen.MetricDisruption, vs[0], vs[1]) {
			s := byN[p.Services]
			if s == nil {
				s = &sample{N: p.Services}
				byN[p.Services] = s
			}
			s.V += p.Median
			s.Refs = append(s.Refs, p.Entry)
		}
	}
	var out []sample
	for _, s := range byN {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b sample) int { return cmp.Compare(a.N, b.N) })
	return out
}

func costDefs() []costDef {
	one := func(Profile) float64 { return 1 }
	return []costDef{
		{name: "full sync", unit: "ns", weight: one, scaleEndpoints: true, single: growLinear,
			samples: seriesSamples(loadgen.MetricSyncFull, "", "wall")},
		// The more a cluster churns, the more the per-change sync matters.
		{name: "incremental sync p99", unit: "ns", scaleEndpoints: true, single: growLinear,
			weight:  func(p Profile) float64 { return 1 + math.Min(2, p.ChurnPerSec/5) },
			samples: seriesSamples(loadgen.MetricSyncIncremental, "all", "p99")},
		{name: "programming latency p99", unit: "ns", weight: one, scaleEndpoints: true, single: growLinear,
			samples: seriesSamples(loadgen.MetricProgrammingLatency, "all", "p99")},
		{name: "first-packet RTT p50 vs baseline", unit: "×", weight: one, single: growFlat, offset: 1,
			samples: ratioSamples(loadgen.MetricFirstPacketRTT, "vip", "baseline", "p50")},
		{name: "first-packet RTT p99 vs baseline", unit: "×", weight: func(Profile) float64 { return 0.5 }, single: growFlat, offset: 1,
			samples: ratioSamples(loadgen.MetricFirstPacketRTT, "vip", "baseline", "p99")},
		{name: "CPU per UDP packet vs baseline", unit: "×", weight: one, single: growFlat, offset: 1,
			samples: ratioSamples(loadgen.MetricCPUPerPacket, "udp-vip", "udp-baseline", "value")},
		// Baseline over VIP: how many times slower new connections are
		// through the Service than straight to the endpoint on the empty
		// node.
		{name: "connection-rate slowdown vs baseline", unit: "×", weight: func(Profile) float64 { return 0.5 }, single: growFlat, offset: 1,
			samples: ratioSamples(loadgen.MetricThroughput, "crr-baseline", "crr-vip", "rate")},
		{name: "disrupted connections and flows", unit: "count", single: growFlat,
			weight: func(p Profile) float64 {
				if p.ChurnPerSec > 0 {
					return 1
				}
				return 0.5
			},
			samples: disruptionSamples},
	}
}

// Recommend ranks every datapath with evidence for the profile. Only
// measured evidence counts: sync cost at the profile's scale (read off
// the measured scales on log-log axes, and marked when extrapolated),
// per-packet cost against the direct path, disruption, and conformance
// gaps in the needed items. See reports/README.md for the scoring.
func Recommend(p Profile, ev *Evidence) Ranking {
	if p.Services <= 0 {
		p.Services = DefaultProfile().Services
	}
	if p.Endpoints <= 0 {
		p.Endpoints = DefaultProfile().Endpoints
	}
	rk := Ranking{Profile: p}
	if ev == nil {
		ev = NewEvidence(nil)
	}
	dps := ev.Datapaths()
	if len(dps) == 0 {
		rk.Notes = append(rk.Notes, "No evidence: no bench results and no conformance matrix were given.")
		return rk
	}
	if ev.Native.Empty() {
		if ev.Emulated.Empty() {
			rk.Notes = append(rk.Notes, "No bench results: the ranking rests on conformance alone.")
		} else {
			rk.Notes = append(rk.Notes, "Only emulated (VM) bench results: their timings are compared with each other only.")
		}
	}
	byDP := map[string]*Ranked{}
	for _, d := range dps {
		byDP[d] = &Ranked{Datapath: d}
	}

	// Performance: every cost at the profile's scale, then penalties
	// relative to the best datapath on that cost.
	baseSet := ev.Native
	if ev.Native.Empty() {
		baseSet = ev.Emulated
	}
	anyExtrapolated := false
	for _, def := range costDefs() {
		w := def.weight(p)
		type got struct {
			dp  string
			c   Cost
			val float64 // lower is better
		}
		var have []got
		for _, d := range dps {
			c, ok := costAt(def, p, ev, baseSet, d)
			if !ok {
				continue
			}
			v := c.Estimate.Value
			if def.unit == "count" {
				v++ // zero disruptions is perfect; ratios need a floor
			}
			c.Weight = w
			have = append(have, got{d, c, v})
		}
		if len(have) == 0 || w == 0 {
			continue
		}
		best := math.Inf(1)
		for _, g := range have {
			best = math.Min(best, g.val)
		}
		worst := 0.0
		for i := range have {
			g := &have[i]
			g.c.Ratio = g.val / best
			if best <= 0 || math.IsInf(g.val, 1) {
				g.c.Ratio = math.Inf(1)
			}
			g.c.Penalty = w * math.Log2(math.Min(g.c.Ratio, 1<<20))
			worst = math.Max(worst, g.c.Penalty)
			if g.c.Estimate.Extrapolated() {
				anyExtrapolated = true
			}
			byDP[g.dp].Costs = append(byDP[g.dp].Costs, g.c)
		}
		// A datapath without the figure is taken to be worse than the
		// worst that has it: missing evidence never helps.
		for _, d := range dps {
			if !slices.ContainsFunc(have, func(g got) bool { return g.dp == d }) {
				byDP[d].Costs = append(byDP[d].Costs, Cost{Name: def.name, Unit: def.unit, Missing: true, Weight: w, Penalty: worst + w})
			}
		}
	}
	if anyExtrapolated {
		rk.Notes = append(rk.Notes, fmt.Sprintf("Some figures at %s Services are extrapolated beyond the measured scales; they are marked.", humanCount(p.Services)))
	}

	needs := neededItems(p)
	for _, d := range dps {
		r := byDP[d]
		measured := 0
		for _, c := range r.Costs {
			if !c.Missing {
				measured++
			}
			r.Score += c.Penalty
		}
		if measured == 0 {
			r.Tier = TierUnmeasured
		}
		r.EmulatedOnly = !ev.Native.hasDatapath(d) && ev.Emulated.hasDatapath(d)
		// Churn the datapath cannot keep up with.
		if p.ChurnPerSec > 0 {
			def := costDef{name: "incremental sync p50", unit: "ns", scaleEndpoints: true, single: growLinear,
				samples: seriesSamples(loadgen.MetricSyncIncremental, "all", "p50")}
			if c, ok := costAt(def, p, ev, baseSet, d); ok {
				duty := c.Estimate
				duty.Value = p.ChurnPerSec * c.Estimate.Value / 1e9
				r.SyncDuty = &duty
				if duty.Value >= 1 {
					r.Score += penaltyDuty
					r.Warnings = append(r.Warnings, fmt.Sprintf("cannot keep up with %s changes/s one sync per change: incremental syncs would need %.1f CPUs", trimFloat(p.ChurnPerSec), duty.Value))
				}
			}
		}
		// Conformance of the needed items.
		results, m := ev.Conformance(d)
		if m == nil {
			r.Score += penaltyNoMatrix
			r.Gaps = append(r.Gaps, Gap{Need: "all", Status: "not run", Reason: "no conformance results for this datapath", Anchor: "conformance"})
		} else {
			fails := 0
			for _, ni := range needs {
				res, ok := findResult(results, ni.item)
				g := Gap{Need: ni.need, Item: ni.item, Anchor: conformanceAnchor(ni.item, d)}
				switch {
				case !ok:
					g.Status, g.Reason, g.Anchor = "not run", "the matrix has no result for this item", "conformance"
					r.Score += penaltyUnchecked
				case res.Status == matrix.StatusPass:
					continue
				case res.Status == matrix.StatusFail:
					fails++
					g.Status, g.Reason = res.Status, res.Reason
				case res.Status == matrix.StatusDeviation:
					g.Status, g.Reason = res.Status, res.Reason
					r.Score += penaltyDeviation
				default: // skip, missing: unverified
					g.Status, g.Reason = res.Status, res.Reason
					r.Score += penaltyUnchecked
				}
				r.Gaps = append(r.Gaps, g)
			}
			if fails > 0 {
				r.Tier = TierFailsANeed
				r.Warnings = append([]string{fmt.Sprintf("fails %d needed conformance item(s)", fails)}, r.Warnings...)
			}
		}
		r.Facts = factsFor(ev, d)
		rk.Facts = append(rk.Facts, r.Facts...)
	}

	for _, d := range dps {
		rk.Ranked = append(rk.Ranked, *byDP[d])
	}
	slices.SortStableFunc(rk.Ranked, func(a, b Ranked) int {
		return cmp.Or(cmp.Compare(a.Tier, b.Tier), cmp.Compare(a.Score, b.Score))
	})
	for i := range rk.Ranked {
		rk.Ranked[i].Rank = i + 1
		rk.Ranked[i].Reasons = costReasons(rk.Ranked[i])
		if rk.Ranked[i].Tier == TierUnmeasured {
			rk.Ranked[i].Warnings = append(rk.Ranked[i].Warnings, "no comparable performance measurement: ranked on conformance only, below every measured datapath")
		}
	}
	return rk
}

func (fs *FigureSet) hasDatapath(d string) bool { return slices.Contains(fs.Datapaths(), d) }

// costAt evaluates one cost for a datapath at the profile's scale. A
// datapath measured natively is read from the native set. A datapath
// measured only under emulation is compared by ratio: its value over a
// reference datapath's in the same emulated set, times the reference's
// native value. Without a reference it has no comparable value, unless
// nothing was measured natively at all (then the emulated set is the
// only basis and every datapath is read from it).
func costAt(def costDef, p Profile, ev *Evidence, base *FigureSet, dp string) (Cost, bool) {
	c := Cost{Name: def.name, Unit: def.unit}
	read := func(fs *FigureSet, d string) (Estimate, bool) {
		s := def.samples(fs, d)
		n := p.Services
		if def.scaleEndpoints {
			if e := fs.endpoints(d); e > 0 && e != p.Endpoints {
				n = int(math.Round(float64(p.Services) * float64(p.Endpoints) / float64(e)))
			}
		}
		if def.offset != 0 {
			s = slices.Clone(s)
			for i := range s {
				s[i].V -= def.offset
			}
		}
		est, ok := estimateAt(s, n, def.single)
		est.Value += def.offset
		if ok && n != p.Services {
			est.Note = strings.TrimPrefix(est.Note+fmt.Sprintf("; read at %s Services to match %d endpoints per Service", humanCount(n), p.Endpoints), "; ")
			est.Services = p.Services
		}
		return est, ok
	}
	if est, ok := read(base, dp); ok {
		c.Estimate = est
		return c, true
	}
	if base == ev.Emulated {
		return c, false
	}
	// Emulated only: scale by a reference measured both ways.
	emu, ok := read(ev.Emulated, dp)
	if !ok {
		return c, false
	}
	for _, ref := range sortDatapaths(ev.Emulated.Datapaths()) {
		if ref == dp {
			continue
		}
		refEmu, ok1 := read(ev.Emulated, ref)
		refNat, ok2 := read(base, ref)
		// Ratios to the direct path scale by their overhead (value − 1);
		// a reference without a clear overhead cannot scale anything.
		if !ok1 || !ok2 || refEmu.Value-def.offset <= 0.01*math.Max(1, def.offset) {
			continue
		}
		ratio := (emu.Value - def.offset) / (refEmu.Value - def.offset)
		est := Estimate{Value: def.offset + ratio*(refNat.Value-def.offset), Kind: worstKind(emu.Kind, refEmu.Kind, refNat.Kind), Services: p.Services}
		est.From = append(append(append(est.From, emu.From...), refEmu.From...), refNat.From...)
		var notes []string
		if emu.Note != "" {
			notes = append(notes, "in the VM: "+emu.Note)
		}
		if refNat.Note != "" {
			notes = append(notes, ref+" native: "+refNat.Note)
		}
		est.Note = strings.Join(notes, "; ")
		c.Estimate = est
		c.Basis = fmt.Sprintf("emulated: %.2f× %s in the same VM run, applied to %s's native figure", ratio, ref, ref)
		if def.offset != 0 {
			c.Basis = fmt.Sprintf("emulated: overhead %.2f× %s's in the same VM run, applied to %s's native overhead", ratio, ref, ref)
		}
		return c, true
	}
	return c, false
}

func worstKind(kinds ...string) string {
	w := "measured"
	for _, k := range kinds {
		switch {
		case k == "extrapolated":
			w = k
		case k == "interpolated" && w == "measured":
			w = k
		}
	}
	return w
}

type neededItem struct{ need, item string }

func neededItems(p Profile) []neededItem {
	var out []neededItem
	seen := map[string]bool{}
	for _, it := range coreItems() {
		out = append(out, neededItem{"core", it})
		seen[it] = true
	}
	for _, n := range Needs() {
		if !slices.Contains(p.Needs, n.Name) {
			continue
		}
		for _, it := range n.Items {
			if !seen[it] {
				seen[it] = true
				out = append(out, neededItem{n.Name, it})
			}
		}
	}
	return out
}

func findResult(rs []matrix.Result, item string) (matrix.Result, bool) {
	for _, r := range rs {
		if r.Item == item {
			return r, true
		}
	}
	return matrix.Result{}, false
}

// costReasons describes the costs where a datapath stands out.
func costReasons(r Ranked) []string {
	var out []string
	for _, c := range r.Costs {
		switch {
		case c.Missing:
			out = append(out, fmt.Sprintf("%s: not measured (counted as worse than the worst measured)", c.Name))
		case c.Ratio <= 1.0001:
			out = append(out, fmt.Sprintf("%s: best, %s%s", c.Name, formatValue(c.Estimate.Value, c.Unit), kindSuffix(c.Estimate)))
		default:
			out = append(out, fmt.Sprintf("%s: %s, %s the best%s", c.Name, formatValue(c.Estimate.Value, c.Unit), formatRatio(c.Ratio), kindSuffix(c.Estimate)))
		}
	}
	return out
}

func kindSuffix(e Estimate) string {
	switch e.Kind {
	case "extrapolated":
		return " (EXTRAPOLATED: " + e.Note + ")"
	case "interpolated":
		return " (interpolated)"
	}
	return ""
}

func formatRatio(r float64) string {
	if math.IsInf(r, 1) {
		return "infinitely worse than"
	}
	return fmt.Sprintf("%.2f×", r)
}

// formatValue prints a value with its unit for people.
func formatValue(v float64, unit string) string {
	switch unit {
	case "ns":
		return formatDuration(v)
	case "×":
		return fmt.Sprintf("%.2f×", v)
	case "count":
		return trimFloat(v)
	case "ns/pkt", "ns/conn":
		return formatDuration(v) + unit[2:]
	case "conn/s", "pkt/s":
		return formatSI(v) + " " + unit
	case "ratio":
		return fmt.Sprintf("%.3g", v)
	}
	return trimFloat(v) + " " + unit
}

// formatDuration prints nanoseconds with 3 significant digits.
func formatDuration(ns float64) string {
	a := math.Abs(ns)
	switch {
	case a >= 1e9:
		return sig3(ns/1e9) + " s"
	case a >= 1e6:
		return sig3(ns/1e6) + " ms"
	case a >= 1e3:
		return sig3(ns/1e3) + " µs"
	}
	return sig3(ns) + " ns"
}

func formatSI(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1e6:
		return sig3(v/1e6) + "M"
	case a >= 1e3:
		return sig3(v/1e3) + "k"
	}
	return sig3(v)
}

func sig3(v float64) string {
	switch a := math.Abs(v); {
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.3f", v)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

// Why says in a sentence or two why the pick is first: on how many costs
// it is the best, and where the runner-up loses most.
func (r Ranking) Why() string {
	best := r.Best()
	if best == "" {
		return ""
	}
	first := r.Ranked[0]
	bestOn, measured := 0, 0
	for _, c := range first.Costs {
		if !c.Missing {
			measured++
			if c.Ratio <= 1.0001 {
				bestOn++
			}
		}
	}
	s := fmt.Sprintf("%s is the cheapest on %d of its %d measured costs", best, bestOn, measured)
	if g := first.GapTally(); len(first.Gaps) > 0 {
		s += fmt.Sprintf(", with %s among the needed conformance items", g)
	} else {
		s += ", with no gap in the needed conformance items"
	}
	s += "."
	if len(r.Ranked) < 2 {
		return s
	}
	next := r.Ranked[1]
	// The runner-up's two costliest differences.
	type diff struct {
		name    string
		ratio   float64
		penalty float64
	}
	var ds []diff
	for _, c := range next.Costs {
		fc := first.CostNamed(c.Name)
		if c.Missing || fc == nil || fc.Missing || fc.Estimate.Value <= 0 || c.Penalty <= 0 {
			continue
		}
		ds = append(ds, diff{c.Name, c.Estimate.Value / fc.Estimate.Value, c.Penalty - fc.Penalty})
	}
	slices.SortFunc(ds, func(a, b diff) int { return cmp.Compare(b.penalty, a.penalty) })
	var parts []string
	for _, d := range ds[:min(2, len(ds))] {
		if d.penalty > 0 {
			parts = append(parts, fmt.Sprintf("%.2f× on %s", d.ratio, d.name))
		}
	}
	switch {
	case next.Tier == TierFailsANeed:
		s += fmt.Sprintf(" Runner-up %s fails a needed conformance item.", next.Datapath)
	case next.Tier == TierUnmeasured:
		s += fmt.Sprintf(" Runner-up %s was not measured.", next.Datapath)
	case len(parts) > 0:
		s += fmt.Sprintf(" The runner-up, %s, costs %s.", next.Datapath, strings.Join(parts, " and "))
	}
	return s
}

// GapTally counts a ranked datapath's conformance gaps by status.
func (r Ranked) GapTally() string {
	t := map[string]int{}
	for _, g := range r.Gaps {
		t[g.Status]++
	}
	if len(t) == 0 {
		return "no gaps in needed items"
	}
	var parts []string
	for _, k := range []struct{ status, one, many string }{
		{matrix.StatusFail, "failure", "failures"},
		{matrix.StatusDeviation, "deviation", "deviations"},
		{matrix.StatusSkip, "skipped", "skipped"},
		{matrix.StatusMissing, "missing", "missing"},
		{"not run", "not run", "not run"},
	} {
		switch n := t[k.status]; {
		case n == 1:
			parts = append(parts, "1 "+k.one)
		case n > 1:
			parts = append(parts, fmt.Sprintf("%d %s", n, k.many))
		}
	}
	return strings.Join(parts, ", ")
}

// CostNamed finds a cost by name.
func (r Ranked) CostNamed(name string) *Cost {
	for i := range r.Costs {
		if r.Costs[i].Name == name {
			return &r.Costs[i]
		}
	}
	return nil
}
