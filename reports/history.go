package reports

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"

	"proxyrig/loadgen"
)

// Alpha is the significance level of trend comparisons, benchstat's
// default.
const Alpha = 0.05

// baselineRuns is how many earlier runs (of the same environment) pool
// into the baseline a run is compared with. Pooling their repetitions
// folds night-to-night noise into the baseline, and gives the test enough
// samples: 3 repetitions against 3 can never reach p < 0.05.
const baselineRuns = 5

// trendMetric is a headline figure followed over the history.
type trendMetric struct {
	Metric, Variant, Stat string
	Title                 string
	// Scale converts the figure's unit to the plotted one.
	Scale float64
	Unit  string
}

func trendMetrics() []trendMetric {
	return []trendMetric{
		{loadgen.MetricSyncFull, "", "wall", "full sync", 1e-6, "ms"},
		{loadgen.MetricSyncIncremental, "all", "p99", "incremental sync p99", 1e-6, "ms"},
		{loadgen.MetricProgrammingLatency, "all", "p99", "programming latency p99", 1e-6, "ms"},
		{loadgen.MetricFirstPacketRTT, "vip", "p50", "first-packet RTT p50", 1e-3, "µs"},
		{loadgen.MetricFirstPacketRTT, "vip", "p99", "first-packet RTT p99", 1e-3, "µs"},
		{loadgen.MetricThroughput, "crr-vip", "rate", "connection rate", 1, "conn/s"},
		{loadgen.MetricThroughput, "udp-vip", "rate", "UDP packet rate", 1, "pkt/s"},
		{loadgen.MetricCPUPerPacket, "udp-vip", "value", "CPU per UDP packet", 1, "ns/pkt"},
	}
}

// Comparison is one figure of the newest run against its baseline.
type Comparison struct {
	Metric, Variant, Stat, Title string
	Datapath                     string
	Services, Endpoints          int
	Unit                         string
	// Old pools the repetitions of up to baselineRuns earlier runs of the
	// same environment; New is the newest run's repetitions.
	Old, New             []float64
	OldMedian, NewMedian float64
	OldRuns              int
	Test                 UTest
	// Q is Test.P adjusted for the number of figures compared
	// (Benjamini–Hochberg): the verdict rests on Q < Alpha.
	Q float64
	// Verdict is "regression", "improvement", "no significant change",
	// "too few repetitions" or "environment changed".
	Verdict string
	Note    string
}

// Significant reports whether the change passed the test.
func (c Comparison) Significant() bool {
	return c.Verdict == "regression" || c.Verdict == "improvement"
}

// Delta is the relative change of the median, for display only: the
// verdict rests on the test, never on this percentage.
func (c Comparison) Delta() float64 {
	if c.OldMedian == 0 {
		return 0
	}
	return (c.NewMedian - c.OldMedian) / c.OldMedian
}

// higherIsBetter says which way is an improvement, from the unit: rates
// are better high, times and costs low.
func higherIsBetter(unit string) bool { return strings.HasSuffix(unit, "/s") }

// envKey is what must match for two runs' figures to be compared: the
// same kernel, CPU, iptables backend, topology and emulation.
func envKey(r *loadgen.Results) string {
	e := r.Run.Env
	return fmt.Sprintf("%s|%s|%d|%s|%s/%s/%d|%t", e.Kernel, e.CPUModel, e.CPUs, r.Run.Config.IPTablesBackend,
		r.Run.Topology.Name, r.Run.Topology.Mode, r.Run.Topology.Nodes, e.Emulated)
}

type trendKey struct {
	metric, variant, stat, datapath string
	services, endpoints             int
	emulated                        bool
}

type trendPoint struct {
	run int
	env string
	fig loadgen.Figure
}

// points collects every headline figure of every run of the history
// (plus the current runs, as the newest run when given).
func (h *History) points(current []*loadgen.Results) (map[trendKey][]trendPoint, []string) {
	runs := slices.Clone(h.Runs)
	if len(current) > 0 {
		runs = append(runs, HistoryRun{Name: "this run", Bench: current, Started: current[0].Run.Started})
	}
	names := make([]string, len(runs))
	want := map[[3]string]bool{}
	for _, m := range trendMetrics() {
		want[[3]string{m.Metric, m.Variant, m.Stat}] = true
	}
	out := map[trendKey][]trendPoint{}
	for i, run := range runs {
		names[i] = run.Name
		for _, r := range run.Bench {
			for _, f := range r.Figures {
				if !want[[3]string{f.Metric, f.Variant, f.Stat}] {
					continue
				}
				k := trendKey{f.Metric, f.Variant, f.Stat, f.Datapath, f.Services, f.Endpoints, f.Emulated || r.Run.Env.Emulated}
				pts := out[k]
				// One point per run: the newest results file of a run wins.
				if n := len(pts); n > 0 && pts[n-1].run == i {
					pts = pts[:n-1]
				}
				out[k] = append(pts, trendPoint{run: i, env: envKey(r), fig: f})
			}
		}
	}
	return out, names
}

// Compare tests the newest run of the history (or current, when given)
// against the pooled repetitions of the up to five runs before it with
// the same environment, for every headline figure. It flags a regression
// or an improvement only when the Mann-Whitney U test finds the difference
// significant at Alpha.
func (h *History) Compare(current []*loadgen.Results) []Comparison {
	if h == nil {
		h = &History{}
	}
	pts, _ := h.points(current)
	last := len(h.Runs) - 1
	if len(current) > 0 {
		last = len(h.Runs)
	}
	titles := map[[3]string]trendMetric{}
	for _, m := range trendMetrics() {
		titles[[3]string{m.Metric, m.Variant, m.Stat}] = m
	}
	var out []Comparison
	for k, list := range pts {
		newest := list[len(list)-1]
		if newest.run != last {
			continue // not measured in the newest run
		}
		tm := titles[[3]string{k.metric, k.variant, k.stat}]
		c := Comparison{Metric: k.metric, Variant: k.variant, Stat: k.stat, Title: tm.Title, Datapath: k.datapath,
			Services: k.services, Endpoints: k.endpoints, Unit: newest.fig.Unit, New: newest.fig.PerRep, NewMedian: newest.fig.Median}
		envChanged := false
		for i := len(list) - 2; i >= 0 && c.OldRuns < baselineRuns; i-- {
			if list[i].env != newest.env {
				envChanged = true
				continue
			}
			c.Old = append(c.Old, list[i].fig.PerRep...)
			c.OldRuns++
		}
		switch {
		case c.OldRuns == 0 && envChanged:
			c.Verdict = "environment changed"
			c.Note = "earlier runs had another kernel, CPU, backend or topology: not compared"
		case c.OldRuns == 0:
			continue // first measurement: nothing to compare
		default:
			c.OldMedian = medianOf(c.Old)
			c.Test = MannWhitney(c.Old, c.New)
			if envChanged {
				c.Note = "runs of another environment were left out"
			}
		}
		out = append(out, c)
	}
	decide(out)
	slices.SortFunc(out, func(a, b Comparison) int {
		return cmp.Or(
			cmp.Compare(verdictRank(a.Verdict), verdictRank(b.Verdict)),
			strings.Compare(a.Metric, b.Metric), strings.Compare(a.Variant, b.Variant), strings.Compare(a.Stat, b.Stat),
			strings.Compare(a.Datapath, b.Datapath), cmp.Compare(a.Services, b.Services))
	})
	return out
}

func verdictRank(v string) int {
	switch v {
	case "regression":
		return 0
	case "improvement":
		return 1
	case "environment changed":
		return 2
	case "too few repetitions":
		return 3
	}
	return 4
}

// TrendCharts draws each headline figure over the runs of the history
// (and the current run, when given): one line per datapath and scale,
// medians with min–max bars, X the run. Emulated figures get charts of
// their own.
func (h *History) TrendCharts(current []*loadgen.Results, all []string) []*Chart {
	if h == nil {
		return nil
	}
	pts, names := h.points(current)
	if len(names) < 2 {
		return nil
	}
	var out []*Chart
	for _, emulated := range []bool{false, true} {
		for _, tm := range trendMetrics() {
			c := &Chart{ID: "trend-" + slug(tm.Metric+"-"+tm.Variant+"-"+tm.Stat), Kind: "lines", Categories: names,
				Title:    "Trend: " + tm.Title,
				XLabel:   "run (oldest to newest)",
				YLabel:   fmt.Sprintf("%s (%s)", tm.Title, tm.Unit),
				Caption:  fmt.Sprintf("Median of repetitions in each run, bars from min to max, per datapath at its largest scale (Services × endpoints) measured in two runs or more; the table above has every scale. Only runs of the same environment are compared; a change is flagged only when the Mann-Whitney U test finds it significant at α = %.2f (see the comparison table).", Alpha),
				Emulated: emulated,
				Table:    anchorTrends}
			if emulated {
				c.ID = "emu-" + c.ID
				c.Title += " — EMULATED (VM)"
			}
			var keys []trendKey
			for k := range pts {
				if k.metric == tm.Metric && k.variant == tm.Variant && k.stat == tm.Stat && k.emulated == emulated {
					keys = append(keys, k)
				}
			}
			order := map[string]int{}
			for i, d := range sortDatapaths(append([]string(nil), all...)) {
				order[d] = i
			}
			slices.SortFunc(keys, func(a, b trendKey) int {
				return cmp.Or(cmp.Compare(order[a.datapath], order[b.datapath]), strings.Compare(a.datapath, b.datapath), cmp.Compare(a.services, b.services), cmp.Compare(a.endpoints, b.endpoints))
			})
			// One line per datapath, at its largest scale measured in at
			// least two runs: the comparison table has every scale.
			chosen := map[string]trendKey{}
			var dpOrder []string
			for _, k := range keys {
				if len(pts[k]) < 2 {
					continue
				}
				prev, ok := chosen[k.datapath]
				if !ok {
					dpOrder = append(dpOrder, k.datapath)
				}
				if !ok || k.services > prev.services || (k.services == prev.services && k.endpoints > prev.endpoints) {
					chosen[k.datapath] = k
				}
			}
			for _, dp := range dpOrder {
				k := chosen[dp]
				s := Series{Name: fmt.Sprintf("%s @ %s×%d", k.datapath, humanCount(k.services), k.endpoints), Datapath: k.datapath, Color: colorOf(all, k.datapath)}
				for _, p := range pts[k] {
					s.Points = append(s.Points, XY{X: float64(p.run), Y: p.fig.Median * tm.Scale, Lo: p.fig.Min * tm.Scale, Hi: p.fig.Max * tm.Scale})
				}
				c.Series = append(c.Series, s)
			}
			if len(c.Series) > 0 {
				out = append(out, c)
			}
		}
	}
	return out
}

// decide gives every tested comparison its verdict. Dozens of figures are
// compared each night; at α = 0.05 each, one or two would be flagged by
// chance alone every time. The p-values are therefore adjusted for the
// number of comparisons (Benjamini–Hochberg, which bounds the expected
// share of false flags at Alpha), and a figure is flagged only when its
// adjusted value is below Alpha.
func decide(cs []Comparison) {
	var tested []int
	for i, c := range cs {
		if c.OldRuns > 0 {
			tested = append(tested, i)
		}
	}
	m := float64(len(tested))
	slices.SortFunc(tested, func(a, b int) int { return cmp.Compare(cs[a].Test.P, cs[b].Test.P) })
	q := 1.0
	for r := len(tested) - 1; r >= 0; r-- {
		c := &cs[tested[r]]
		q = math.Min(q, c.Test.P*m/float64(r+1))
		c.Q = q
	}
	for _, i := range tested {
		c := &cs[i]
		switch {
		case c.Q < Alpha:
			worse := c.NewMedian > c.OldMedian
			if higherIsBetter(c.Unit) {
				worse = !worse
			}
			c.Verdict = "improvement"
			if worse {
				c.Verdict = "regression"
			}
		case c.Test.MinP*m >= Alpha:
			// Even the most extreme outcome could not be flagged alone.
			c.Verdict = "too few repetitions"
			c.Note = strings.TrimPrefix(c.Note+"; "+fmt.Sprintf("%d against %d repetitions cannot show a change on their own among %d figures (smallest possible p = %.4f, needs < %.4f): more runs or --reps", len(c.Old), len(c.New), len(tested), c.Test.MinP, Alpha/m), "; ")
		default:
			c.Verdict = "no significant change"
		}
	}
}
