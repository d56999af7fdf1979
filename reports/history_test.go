package reports

import (
	"math"
	"strings"
	"testing"
	"time"

	"proxyrig/loadgen"
)

func TestMannWhitneyExact(t *testing.T) {
	for _, tc := range []struct {
		x, y       []float64
		p, minP, u float64
	}{
		// Complete separation: p = 2 / C(n1+n2, n1).
		{[]float64{1, 2, 3}, []float64{4, 5, 6}, 0.1, 0.1, 0},
		{[]float64{1, 2, 3, 4}, []float64{5, 6, 7, 8}, 2.0 / 70, 2.0 / 70, 0},
		{[]float64{6, 7, 8, 9, 10}, []float64{1, 2, 3, 4, 5}, 2.0 / 252, 2.0 / 252, 25},
		// Identical samples: no evidence at all.
		{[]float64{1, 2, 3}, []float64{1, 2, 3}, 1, 0.2, 4.5},
		// Interleaved: x ranks 1,3,5,7 among 8; R1 = 16, E = 18;
		// P(|R−18| ≥ 2) = 1 − P(R ∈ {17, 18, 19}) = 1 − (7+8+7)/70.
		{[]float64{1, 3, 5, 7}, []float64{2, 4, 6, 8}, 1 - 22.0/70, 2.0 / 70, 6},
	} {
		r := MannWhitney(tc.x, tc.y)
		if !r.Exact || math.Abs(r.P-tc.p) > 1e-12 || math.Abs(r.MinP-tc.minP) > 1e-12 || r.U != tc.u {
			t.Errorf("MannWhitney(%v, %v) = %+v, want p=%v minP=%v U=%v", tc.x, tc.y, r, tc.p, tc.minP, tc.u)
		}
	}
	if r := MannWhitney(nil, []float64{1}); r.P != 1 {
		t.Errorf("empty sample: p = %v", r.P)
	}
	// Large samples use the normal approximation; a clear shift is tiny p.
	var x, y []float64
	for i := range 80 {
		x = append(x, float64(i))
		y = append(y, float64(i)+40)
	}
	if r := MannWhitney(x, y); r.Exact || r.P > 1e-6 {
		t.Errorf("large shifted samples: %+v", r)
	}
}

// history builds nights of the same measurements, then a last night whose
// times are multiplied by slow.
func history(nights int, slow float64) (*History, []*loadgen.Results) {
	h := &History{Dir: "synthetic"}
	start := time.Date(2025, 11, 1, 3, 0, 0, 0, time.UTC)
	for i := range nights {
		r := fixtureRun(uint64(100+i), start.Add(time.Duration(i)*24*time.Hour), []string{"iptables"}, []int{1000}, false, 1)
		h.Runs = append(h.Runs, HistoryRun{Name: r.Run.Started.Format("0102"), Started: r.Run.Started, Bench: []*loadgen.Results{r}})
	}
	cur := fixtureRun(99, start.Add(time.Duration(nights)*24*time.Hour), []string{"iptables"}, []int{1000}, false, slow)
	return h, []*loadgen.Results{cur}
}

func verdicts(cs []Comparison) map[string]string {
	out := map[string]string{}
	for _, c := range cs {
		out[c.Title] = c.Verdict
	}
	return out
}

func TestCompareUnchangedIsNotFlagged(t *testing.T) {
	for _, nights := range []int{1, 2, 5} {
		h, cur := history(nights, 1)
		cs := h.Compare(cur)
		if len(cs) != len(trendMetrics()) {
			t.Errorf("%d nights: %d comparisons, want %d", nights, len(cs), len(trendMetrics()))
		}
		for _, c := range cs {
			if c.Significant() {
				t.Errorf("%d nights: unchanged %s flagged %s (p=%v, q=%v)", nights, c.Title, c.Verdict, c.Test.P, c.Q)
			}
		}
		// One night before: 3 against 3 repetitions can never be significant,
		// and the report must say so rather than imply it checked.
		if nights == 1 {
			for _, c := range cs {
				if c.Verdict != "too few repetitions" || !strings.Contains(c.Note, "cannot show a change") {
					t.Errorf("3 vs 3: %s verdict %q (%s)", c.Title, c.Verdict, c.Note)
				}
			}
		}
	}
}

func TestCompareFlagsRegressionAndImprovement(t *testing.T) {
	h, cur := history(5, 1.5) // everything 50% slower
	v := verdicts(h.Compare(cur))
	for _, m := range []string{"full sync", "incremental sync p99", "programming latency p99", "first-packet RTT p50"} {
		if v[m] != "regression" {
			t.Errorf("50%% slower %s: verdict %q, want regression", m, v[m])
		}
	}
	// Rates fall when things slow down: that, too, is a regression.
	if v["connection rate"] != "regression" {
		t.Errorf("connection rate: %q, want regression", v["connection rate"])
	}
	h, cur = history(5, 0.6)
	v = verdicts(h.Compare(cur))
	if v["full sync"] != "improvement" || v["connection rate"] != "improvement" {
		t.Errorf("40%% faster: %v", v)
	}
}

func TestCompareOnlyWithinOneEnvironment(t *testing.T) {
	h, cur := history(3, 1.5)
	cur[0].Run.Env.Kernel = "7.0.0-new"
	for _, c := range h.Compare(cur) {
		if c.Verdict != "environment changed" {
			t.Errorf("%s: %q across a kernel change, want environment changed", c.Title, c.Verdict)
		}
	}
}

func TestTrendCharts(t *testing.T) {
	h, cur := history(4, 1)
	charts := h.TrendCharts(cur, []string{"iptables"})
	if len(charts) != len(trendMetrics()) {
		t.Fatalf("%d trend charts, want %d", len(charts), len(trendMetrics()))
	}
	c := charts[0]
	if len(c.Series) != 1 || len(c.Series[0].Points) != 5 || len(c.Categories) != 5 {
		t.Fatalf("trend of 4 nights and this run: %d series, %+v", len(c.Series), c.Series)
	}
	for i, p := range c.Series[0].Points {
		var want float64
		var r *loadgen.Results
		if i < 4 {
			r = h.Runs[i].Bench[0]
		} else {
			r = cur[0]
		}
		for _, f := range r.Figures {
			if f.Metric == loadgen.MetricSyncFull && f.Stat == "wall" {
				want = f.Median / 1e6
			}
		}
		if p.X != float64(i) || !near(p.Y, want) {
			t.Errorf("point %d = (%v, %v), want (%d, %v)", i, p.X, p.Y, i, want)
		}
	}
	if _, err := c.SVG(); err != nil {
		t.Fatal(err)
	}
}

func TestLoadHistoryEmpty(t *testing.T) {
	if _, err := LoadHistory(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no runs") {
		t.Errorf("empty history: err = %v", err)
	}
}
