package reports

import (
	"fmt"
	"image/color"
	"math"
	"regexp"
	"slices"
	"strings"
	"testing"

	"proxyrig/loadgen"
)

func fixtureCharts(t *testing.T) (*Evidence, map[string]*Chart) {
	t.Helper()
	ev := fixtureInputs(t).Evidence()
	byID := map[string]*Chart{}
	for _, c := range Charts(ev) {
		if byID[c.ID] != nil {
			t.Fatalf("two charts with id %s", c.ID)
		}
		byID[c.ID] = c
	}
	return ev, byID
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

// The sync chart plots, per datapath, exactly the medians (and min–max)
// of the input figures, in ms, at every measured scale.
func TestChartSyncFullMatchesInput(t *testing.T) {
	ev, charts := fixtureCharts(t)
	c := charts["sync-full"]
	if c == nil {
		t.Fatal("no sync-full chart")
	}
	if !c.LogX || !c.LogY {
		t.Error("sync-full is not log-log")
	}
	var names []string
	for _, s := range c.Series {
		names = append(names, s.Name)
		var want []XY
		for _, p := range ev.Native.Series(s.Datapath, loadgen.MetricSyncFull, "", "wall") {
			want = append(want, XY{X: float64(p.Services), Y: p.Median / 1e6, Lo: p.Min / 1e6, Hi: p.Max / 1e6})
		}
		if len(want) != len(s.Points) {
			t.Fatalf("%s: %d points, input has %d", s.Name, len(s.Points), len(want))
		}
		for i := range want {
			g, w := s.Points[i], want[i]
			if !near(g.X, w.X) || !near(g.Y, w.Y) || !near(g.Lo, w.Lo) || !near(g.Hi, w.Hi) {
				t.Errorf("%s point %d = %+v, want %+v", s.Name, i, g, w)
			}
		}
	}
	if !slices.Equal(names, []string{"iptables", "nftables", "ebpf"}) {
		t.Errorf("series = %v, want one per native datapath", names)
	}
}

// First-packet RTT: one line per datapath (the VIP figure) and the direct
// baseline, for each percentile.
func TestChartFirstPacketHasBaseline(t *testing.T) {
	ev, charts := fixtureCharts(t)
	for _, pct := range []string{"p50", "p90", "p99"} {
		c := charts["first-packet-rtt-"+pct]
		if c == nil {
			t.Fatalf("no first-packet-rtt-%s chart", pct)
		}
		var base *Series
		for i := range c.Series {
			if c.Series[i].Datapath == "" {
				base = &c.Series[i]
			}
		}
		if base == nil {
			t.Fatalf("%s: no baseline series", c.ID)
		}
		// The baseline is the median over datapaths of each cell's baseline.
		for _, pt := range base.Points {
			var vals []float64
			for _, dp := range ev.Native.Datapaths() {
				for _, p := range ev.Native.Series(dp, loadgen.MetricFirstPacketRTT, "baseline", pct) {
					if float64(p.Services) == pt.X {
						vals = append(vals, p.Median/1e3)
					}
				}
			}
			if !near(pt.Y, medianOf(vals)) {
				t.Errorf("%s baseline at %v = %v, want %v", c.ID, pt.X, pt.Y, medianOf(vals))
			}
		}
		if len(c.Series) != 4 {
			t.Errorf("%s has %d series, want 3 datapaths and the baseline", c.ID, len(c.Series))
		}
	}
}

// No chart sets emulated figures beside native ones: emulated charts
// hold only emulated data, native charts only native data, and the one
// chart that brings them near each other holds ratios.
func TestChartsKeepEmulatedApart(t *testing.T) {
	ev, charts := fixtureCharts(t)
	for id, c := range charts {
		emu := strings.HasPrefix(id, "emu-")
		if emu != c.Emulated {
			t.Errorf("%s: id and Emulated (%v) disagree", id, c.Emulated)
		}
		set := ev.Set(c.Emulated)
		for _, s := range c.Series {
			if s.Datapath != "" && !set.hasDatapath(s.Datapath) {
				t.Errorf("%s plots %s, which is not in its set (emulated=%v)", id, s.Datapath, c.Emulated)
			}
		}
		if emu && !strings.Contains(c.Title, "EMULATED") && !strings.Contains(c.Title, "RATIO ONLY") {
			t.Errorf("%s: emulated chart's title does not say so: %q", id, c.Title)
		}
	}
	r := charts["emu-ratio-sync-full"]
	if r == nil {
		t.Fatal("no emulated ratio panel")
	}
	for _, s := range r.Series {
		for _, p := range s.Points {
			if s.Datapath == "iptables" && !near(p.Y, 1) {
				t.Errorf("the reference's own ratio is %v, want 1", p.Y)
			}
		}
	}
}

// Every chart has labelled axes with units, a legend entry per series,
// and the environment in its caption.
func TestChartsAreLabelled(t *testing.T) {
	_, charts := fixtureCharts(t)
	unit := regexp.MustCompile(`\(.+\)`)
	for id, c := range charts {
		if c.XLabel == "" || c.YLabel == "" || !unit.MatchString(c.YLabel) {
			t.Errorf("%s: axes %q / %q lack a label or a unit", id, c.XLabel, c.YLabel)
		}
		if !strings.Contains(c.Caption, "kernel") || !strings.Contains(c.Caption, "iptables") || !strings.Contains(c.Caption, "topology") {
			t.Errorf("%s: caption lacks the environment: %q", id, c.Caption)
		}
		svg, err := c.SVG()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range c.Series {
			if !strings.Contains(string(svg), ">"+htmlEscape(s.Name)+"<") {
				t.Errorf("%s: legend lacks %q", id, s.Name)
			}
		}
		for _, l := range []string{c.XLabel, c.YLabel} {
			if !strings.Contains(string(svg), htmlEscape(l)) {
				t.Errorf("%s: SVG lacks axis label %q", id, l)
			}
		}
	}
}

func htmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&#34;", "'", "&#39;").Replace(s)
}

// The SVG draws each line series as one path through exactly its points.
func TestChartSVGPolylines(t *testing.T) {
	_, charts := fixtureCharts(t)
	c := charts["sync-full"]
	svg, err := c.SVG()
	if err != nil {
		t.Fatal(err)
	}
	path := regexp.MustCompile(`<path d="(M[^"]*)" style="([^"]*)"`)
	for _, s := range c.Series {
		stroke := "stroke:" + hexColor(s.Color)
		var lines []int
		for _, m := range path.FindAllStringSubmatch(string(svg), -1) {
			if !strings.Contains(m[2], stroke) || !strings.Contains(m[2], "fill:none") {
				continue
			}
			lines = append(lines, strings.Count(m[1], "L")+1)
		}
		// One path of len(points) vertices: the line. Error bars, caps
		// and the legend thumbnail are two-point paths.
		if n := count(lines, len(s.Points)); n != 1 {
			t.Errorf("%s: %d paths of %d points in %s (paths: %v)", s.Name, n, len(s.Points), stroke, lines)
		}
	}
}

func count(xs []int, v int) int {
	n := 0
	for _, x := range xs {
		if x == v {
			n++
		}
	}
	return n
}

func hexColor(c color.RGBA) string { return fmt.Sprintf("#%02X%02X%02X", c.R, c.G, c.B) }

// The programming-latency ladder plots p50, p99 and max of every change
// kind at one scale, from the input.
func TestChartProgrammingLadderMatchesInput(t *testing.T) {
	ev, charts := fixtureCharts(t)
	c := charts["programming-latency-dist"]
	if c == nil {
		t.Fatal("no programming-latency-dist chart")
	}
	if !strings.Contains(c.Title, "5k Services") {
		t.Errorf("ladder title %q does not name the scale", c.Title)
	}
	for _, s := range c.Series {
		if len(s.Points) != 4*3 {
			t.Errorf("%s: %d points, want 4 kinds × 3 stats", s.Name, len(s.Points))
		}
		for _, p := range s.Points {
			kind, stat, _ := strings.Cut(p.Label, " ")
			var want float64
			for _, q := range ev.Native.Series(s.Datapath, loadgen.MetricProgrammingLatency, kind, stat) {
				if q.Services == 5000 {
					want = q.Median / 1e6
				}
			}
			if !near(p.Y, want) {
				t.Errorf("%s %s = %v, want %v", s.Name, p.Label, p.Y, want)
			}
		}
	}
}

func TestChartDisruptionMatchesInput(t *testing.T) {
	ev, charts := fixtureCharts(t)
	c := charts["disruption"]
	if c == nil {
		t.Fatal("no disruption chart")
	}
	for _, s := range c.Series {
		variant, stat, _ := strings.Cut(s.Name, " ")
		for i, dp := range c.Categories {
			var want float64
			for _, q := range ev.Native.Series(dp, loadgen.MetricDisruption, variant, stat) {
				if q.Services == 5000 {
					want = q.Median
				}
			}
			if !near(s.Points[i].Y, want) {
				t.Errorf("%s of %s = %v, want %v", s.Name, dp, s.Points[i].Y, want)
			}
		}
	}
}

func TestLogTicks(t *testing.T) {
	var labels []string
	for _, tk := range (logTicks{count: true}).Ticks(80, 40000) {
		if tk.Label != "" {
			labels = append(labels, tk.Label)
		}
	}
	if want := []string{"100", "1k", "10k"}; !slices.Equal(labels, want) {
		t.Errorf("labels = %v, want %v", labels, want)
	}
}
