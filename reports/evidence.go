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

// Evidence is everything measured, indexed for charts, tables and the
// recommendation. Native and emulated figures live in separate sets: an
// emulated CPU's timings say nothing about a native one's, so the two are
// never mixed in one series (see loadgen/README.md, "Emulated runs").
type Evidence struct {
	// Native and Emulated hold the figures of native and emulated (VM)
	// runs. Either may be empty, never nil.
	Native, Emulated *FigureSet
	// Runs are the bench runs, oldest first.
	Runs []*loadgen.Results
	// Matrices are the conformance runs; a datapath's verdicts come from
	// the newest matrix that has it (a VM run for IPVS, a native run for
	// the others).
	Matrices []*matrix.Matrix
}

// FigureSet indexes figures by what they measure. When several runs
// measured the same figure, the newest run's value is the one kept: runs
// are never averaged, because figures are comparable only within a run.
type FigureSet struct {
	Emulated bool
	figs     map[figKey]*Entry
	cells    map[cellKey]loadgen.Cell
}

// Entry is one figure with where it came from.
type Entry struct {
	loadgen.Figure
	// Run is the index of the run (in Evidence.Runs) it came from.
	Run int
}

type figKey struct {
	Datapath, Metric, Variant, Stat string
	Services, Endpoints             int
}

type cellKey struct {
	Datapath            string
	Services, Endpoints int
}

func newFigureSet(emulated bool) *FigureSet {
	return &FigureSet{Emulated: emulated, figs: map[figKey]*Entry{}, cells: map[cellKey]loadgen.Cell{}}
}

// NewEvidence indexes bench runs and conformance matrices. Nil entries are
// ignored.
func NewEvidence(bench []*loadgen.Results, matrices ...*matrix.Matrix) *Evidence {
	ev := &Evidence{Native: newFigureSet(false), Emulated: newFigureSet(true)}
	for _, r := range bench {
		if r != nil {
			ev.Runs = append(ev.Runs, r)
		}
	}
	// Oldest first, so a newer run's figure replaces an older one's.
	slices.SortStableFunc(ev.Runs, func(a, b *loadgen.Results) int { return a.Run.Started.Compare(b.Run.Started) })
	for i, r := range ev.Runs {
		for _, f := range r.Figures {
			set := ev.Native
			if f.Emulated || r.Run.Env.Emulated {
				set = ev.Emulated
			}
			f.Emulated = set.Emulated
			k := figKey{f.Datapath, f.Metric, f.Variant, f.Stat, f.Services, f.Endpoints}
			set.figs[k] = &Entry{Figure: f, Run: i}
		}
		set := ev.Native
		if r.Run.Env.Emulated {
			set = ev.Emulated
		}
		for _, c := range r.Cells {
			set.cells[cellKey{c.Datapath, c.Services, c.Endpoints}] = c
		}
	}
	for _, m := range matrices {
		if m != nil {
			ev.Matrices = append(ev.Matrices, m)
		}
	}
	slices.SortStableFunc(ev.Matrices, func(a, b *matrix.Matrix) int { return a.Generated.Compare(b.Generated) })
	return ev
}

// Set returns the native or the emulated set.
func (ev *Evidence) Set(emulated bool) *FigureSet {
	if emulated {
		return ev.Emulated
	}
	return ev.Native
}

// Empty reports whether the set holds no figure.
func (fs *FigureSet) Empty() bool { return len(fs.figs) == 0 }

// Datapaths lists the datapaths with figures or cells, sorted.
func (fs *FigureSet) Datapaths() []string {
	var dps []string
	for k := range fs.figs {
		if !slices.Contains(dps, k.Datapath) {
			dps = append(dps, k.Datapath)
		}
	}
	for k := range fs.cells {
		if !slices.Contains(dps, k.Datapath) {
			dps = append(dps, k.Datapath)
		}
	}
	return sortDatapaths(dps)
}

// sortDatapaths orders datapaths the way every table and legend does:
// kube-proxy's modes in the order they were introduced, then the rest by
// name. A stable order keeps a datapath's colour the same in every chart.
func sortDatapaths(dps []string) []string {
	order := map[string]int{"iptables": 0, "ipvs": 1, "nftables": 2, "ebpf": 3, "ebpf-socket": 4}
	slices.SortFunc(dps, func(a, b string) int {
		oa, aok := order[a]
		ob, bok := order[b]
		switch {
		case aok && bok:
			return cmp.Compare(oa, ob)
		case aok:
			return -1
		case bok:
			return 1
		}
		return strings.Compare(a, b)
	})
	return dps
}

// Entries returns every figure, ordered by metric, datapath, variant, stat
// and scale: the order of the report's tables.
func (fs *FigureSet) Entries() []*Entry {
	out := make([]*Entry, 0, len(fs.figs))
	for _, e := range fs.figs {
		out = append(out, e)
	}
	metricOrder := map[string]int{}
	for i, m := range metricNames {
		metricOrder[m] = i
	}
	dpOrder := map[string]int{}
	for i, d := range fs.Datapaths() {
		dpOrder[d] = i
	}
	slices.SortFunc(out, func(a, b *Entry) int {
		return cmp.Or(
			cmp.Compare(metricOrder[a.Metric], metricOrder[b.Metric]),
			cmp.Compare(dpOrder[a.Datapath], dpOrder[b.Datapath]),
			strings.Compare(a.Variant, b.Variant),
			cmp.Compare(statRank(a.Stat), statRank(b.Stat)),
			strings.Compare(a.Stat, b.Stat),
			cmp.Compare(a.Services, b.Services),
			cmp.Compare(a.Endpoints, b.Endpoints),
		)
	})
	return out
}

func statRank(s string) int {
	switch s {
	case "wall", "rate", "value", "p50":
		return 0
	case "p90":
		return 1
	case "p99":
		return 2
	case "max":
		return 3
	}
	return 4
}

// metricNames are DESIGN.md §6's metrics in the order the report shows them.
var metricNames = []string{
	loadgen.MetricSyncFull, loadgen.MetricSyncIncremental, loadgen.MetricProgrammingLatency,
	loadgen.MetricFirstPacketRTT, loadgen.MetricRRLatency, loadgen.MetricThroughput,
	loadgen.MetricCPUPerPacket, loadgen.MetricDisruption,
}

// Cells returns the bench cells (one datapath at one scale), sorted.
func (fs *FigureSet) Cells() []loadgen.Cell {
	out := make([]loadgen.Cell, 0, len(fs.cells))
	for _, c := range fs.cells {
		out = append(out, c)
	}
	dpOrder := map[string]int{}
	for i, d := range fs.Datapaths() {
		dpOrder[d] = i
	}
	slices.SortFunc(out, func(a, b loadgen.Cell) int {
		return cmp.Or(cmp.Compare(dpOrder[a.Datapath], dpOrder[b.Datapath]), cmp.Compare(a.Services, b.Services), cmp.Compare(a.Endpoints, b.Endpoints))
	})
	return out
}

// Point is one figure of a series: a statistic at one scale.
type Point struct {
	Services int
	*Entry
}

// Series returns one statistic of one datapath across scales, smallest
// scale first, at the endpoint count the datapath was measured with most
// (a run measures every scale with one E).
func (fs *FigureSet) Series(datapath, metric, variant, stat string) []Point {
	e := fs.endpoints(datapath)
	var pts []Point
	for k, f := range fs.figs {
		if k.Datapath == datapath && k.Metric == metric && k.Variant == variant && k.Stat == stat && k.Endpoints == e {
			pts = append(pts, Point{Services: k.Services, Entry: f})
		}
	}
	slices.SortFunc(pts, func(a, b Point) int { return cmp.Compare(a.Services, b.Services) })
	return pts
}

// Has reports whether any datapath has the statistic.
func (fs *FigureSet) Has(metric, variant, stat string) bool {
	for k := range fs.figs {
		if k.Metric == metric && k.Variant == variant && k.Stat == stat {
			return true
		}
	}
	return false
}

// endpoints is the endpoint count most of a datapath's figures have
// (ties: the larger).
func (fs *FigureSet) endpoints(datapath string) int {
	count := map[int]int{}
	for k := range fs.figs {
		if k.Datapath == datapath {
			count[k.Endpoints]++
		}
	}
	best, bestN := 0, -1
	for e, n := range count {
		if n > bestN || (n == bestN && e > best) {
			best, bestN = e, n
		}
	}
	return best
}

// Anchor is the id of a figure's row in the report's tables; the
// recommendation and the charts link to it.
func (e *Entry) Anchor() string { return figureAnchor(e.Figure) }

func figureAnchor(f loadgen.Figure) string {
	prefix := "fig"
	if f.Emulated {
		prefix = "emu"
	}
	return slug(fmt.Sprintf("%s-%s-%s-%s-%s-%d-%d", prefix, f.Metric, f.Variant, f.Stat, f.Datapath, f.Services, f.Endpoints))
}

// slug makes s usable as an HTML id: letters, digits, '-' and '_' only.
func slug(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteRune('_')
		}
	}
	return b.String()
}

// Estimate is a figure at a scale that may not have been measured: read
// off the measured scales, interpolated between them, or extrapolated
// beyond them. Value is in the unit of the figures it came from.
type Estimate struct {
	Value float64
	// Kind is "measured", "interpolated" or "extrapolated".
	Kind string
	// Services is the scale asked for.
	Services int
	// From are the figures the value was read from.
	From []*Entry
	// Note says how an extrapolation was made ("slope 1.3 from 5k and 10k").
	Note string
}

// Extrapolated reports whether the value lies outside the measured scales.
func (e Estimate) Extrapolated() bool { return e.Kind == "extrapolated" }

// growth says how a metric is assumed to grow with N when only one scale
// was measured: by this exponent on log-log axes. Sync work is at least
// linear in the rules it writes; per-packet ratios are taken as flat.
type growth float64

const (
	growLinear growth = 1
	growFlat   growth = 0
)

// sample is one value at one scale, with the figures it was computed from.
type sample struct {
	N    int
	V    float64
	Refs []*Entry
}

// samplesOf turns a series into samples of its medians.
func samplesOf(pts []Point) []sample {
	out := make([]sample, len(pts))
	for i, p := range pts {
		out[i] = sample{N: p.Services, V: p.Median, Refs: []*Entry{p.Entry}}
	}
	return out
}

// estimateAt reads samples (sorted by N) at n Services. Values are
// interpolated on log-log axes (sync costs are power laws in N: linear
// for an incremental datapath, super-linear for one that rewrites
// everything), or, when a value is not positive, linearly in log N.
// Beyond the measured scales the slope of the two nearest measured scales
// is continued, clamped to [0, 3]: a cost that falls with N is noise, and
// steeper than cubic is too. With a single measured scale, single is the
// assumed exponent.
func estimateAt(pts []sample, n int, single growth) (Estimate, bool) {
	if len(pts) == 0 || n <= 0 {
		return Estimate{}, false
	}
	x := float64(n)
	for _, p := range pts {
		if p.N == n {
			return Estimate{Value: p.V, Kind: "measured", Services: n, From: p.Refs}, true
		}
	}
	// Scales of 0 Services have no place on a log axis.
	var usable []sample
	for _, p := range pts {
		if p.N > 0 {
			usable = append(usable, p)
		}
	}
	if len(usable) == 0 {
		return Estimate{}, false
	}
	pts = usable
	if len(pts) == 1 {
		p := pts[0]
		v := p.V * math.Pow(x/float64(p.N), float64(single))
		how := "no growth with Services"
		if single == growLinear {
			how = "linear growth with Services"
		}
		return Estimate{Value: v, Kind: "extrapolated", Services: n, From: p.Refs,
			Note: fmt.Sprintf("from the single measured scale (%s Services), assuming %s", humanCount(p.N), how)}, true
	}
	lo, hi := pts[0], pts[1]
	kind := "extrapolated"
	switch {
	case x > float64(pts[len(pts)-1].N):
		lo, hi = pts[len(pts)-2], pts[len(pts)-1]
	case x < float64(pts[0].N):
		// lo and hi are already the two smallest.
	default:
		kind = "interpolated"
		for i := 1; i < len(pts); i++ {
			if float64(pts[i].N) > x {
				lo, hi = pts[i-1], pts[i]
				break
			}
		}
	}
	x0, x1 := math.Log(float64(lo.N)), math.Log(float64(hi.N))
	y0, y1 := lo.V, hi.V
	t := (math.Log(x) - x0) / (x1 - x0)
	est := Estimate{Kind: kind, Services: n, From: append(slices.Clone(lo.Refs), hi.Refs...)}
	if y0 > 0 && y1 > 0 {
		slope := (math.Log(y1) - math.Log(y0)) / (x1 - x0)
		if kind == "interpolated" {
			est.Value = math.Exp(math.Log(y0) + t*(math.Log(y1)-math.Log(y0)))
			return est, true
		}
		clamped := math.Max(0, math.Min(3, slope))
		est.Note = fmt.Sprintf("log-log slope %.2f between %s and %s Services", slope, humanCount(lo.N), humanCount(hi.N))
		if clamped != slope {
			est.Note += fmt.Sprintf(", clamped to %.0f", clamped)
		}
		// Continue from the nearer measured scale.
		ref, rx := hi.V, x1
		if x < float64(lo.N) {
			ref, rx = lo.V, x0
		}
		est.Value = ref * math.Exp(clamped*(math.Log(x)-rx))
		return est, true
	}
	// Zero or negative values: linear in log N, never below zero.
	if kind == "extrapolated" {
		est.Note = fmt.Sprintf("linear in log(Services) from %s and %s Services", humanCount(lo.N), humanCount(hi.N))
	}
	est.Value = math.Max(0, y0+t*(y1-y0))
	return est, true
}

// humanCount prints a Service count the way people say it: 100, 1k, 30k.
func humanCount(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	case n >= 1000 && n%100 == 0:
		return fmt.Sprintf("%.1fk", float64(n)/1000)
	}
	return fmt.Sprint(n)
}

// Conformance returns a datapath's results from the newest matrix that has
// it, and that matrix; nil if none has it.
func (ev *Evidence) Conformance(datapath string) ([]matrix.Result, *matrix.Matrix) {
	for i := len(ev.Matrices) - 1; i >= 0; i-- {
		m := ev.Matrices[i]
		var rs []matrix.Result
		for _, r := range m.Results {
			if r.Datapath == datapath {
				rs = append(rs, r)
			}
		}
		if len(rs) > 0 {
			return rs, m
		}
	}
	return nil, nil
}

// ConformanceDatapaths lists every datapath any matrix has, sorted.
func (ev *Evidence) ConformanceDatapaths() []string {
	var dps []string
	for _, m := range ev.Matrices {
		for _, d := range m.Datapaths() {
			if !slices.Contains(dps, d) {
				dps = append(dps, d)
			}
		}
	}
	return sortDatapaths(dps)
}

// Datapaths lists every datapath with any evidence: native or emulated
// figures, or conformance results.
func (ev *Evidence) Datapaths() []string {
	var dps []string
	for _, list := range [][]string{ev.Native.Datapaths(), ev.Emulated.Datapaths(), ev.ConformanceDatapaths()} {
		for _, d := range list {
			if !slices.Contains(dps, d) {
				dps = append(dps, d)
			}
		}
	}
	return sortDatapaths(dps)
}

// conformanceAnchor is the id of a conformance result's detail.
func conformanceAnchor(item, datapath string) string { return slug("cf-" + item + "-" + datapath) }
