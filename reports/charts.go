package reports

import (
	"bytes"
	"fmt"
	"html/template"
	"image/color"
	"math"
	"regexp"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"proxyrig/loadgen"
)

// Chart is one figure of the report: the data it plots, and the plot.
type Chart struct {
	// ID is unique in the report; the chart's anchor is "chart-"+ID.
	ID    string
	Title string
	// Caption says what is plotted and where it was measured (kernel, CPU,
	// iptables backend, topology, native or emulated, repetitions).
	Caption  string
	XLabel   string
	YLabel   string
	LogX     bool
	LogY     bool
	Emulated bool
	// Series are exactly what is drawn, one plotter (line, bars or
	// glyphs) each, in the plotted unit (YLabel's).
	Series []Series
	// Categories name the X positions 0, 1, … of a nominal X axis.
	Categories []string
	// Kind is "lines", "bars" or "ladder" (per-category percentile ladders).
	Kind string
	// Table is the anchor of the table holding the plotted figures.
	Table string
}

// Series is one legend entry.
type Series struct {
	Name string
	// Datapath is "" for the direct baseline.
	Datapath string
	Points   []XY
	Color    color.RGBA
	Dashed   bool
}

// XY is one plotted point, with the spread across repetitions (Lo, Hi:
// min and max) when the chart draws error bars.
type XY struct {
	X, Y   float64
	Lo, Hi float64
	// Label names the point where X alone does not ("p99").
	Label string
}

// palette gives each datapath one colour in every chart (Okabe–Ito,
// readable by colour-blind readers and in greyscale print).
var palette = []color.RGBA{
	{0, 114, 178, 255},   // blue
	{230, 159, 0, 255},   // orange
	{0, 158, 115, 255},   // green
	{213, 94, 0, 255},    // vermillion
	{204, 121, 167, 255}, // purple
	{86, 180, 233, 255},  // sky blue
	{240, 228, 66, 255},  // yellow
}

var baselineColor = color.RGBA{0, 0, 0, 255}

// colorOf is a datapath's colour: by its position among every datapath of
// the report, so it is the same in every chart.
func colorOf(all []string, dp string) color.RGBA {
	i := slices.Index(all, dp)
	if i < 0 {
		i = len(all)
	}
	return palette[i%len(palette)]
}

// chartSet builds every chart of one figure set.
type chartSet struct {
	fs     *FigureSet
	all    []string // every datapath of the report, for colours
	prefix string   // "emu-" for the emulated set
	env    string   // the caption's environment sentence
}

// Charts builds the report's charts: the native set first, then the
// emulated one (separate charts, never mixed), then the emulated ratio
// panel.
func Charts(ev *Evidence) []*Chart {
	all := ev.Datapaths()
	var out []*Chart
	for _, set := range []*FigureSet{ev.Native, ev.Emulated} {
		if set.Empty() {
			continue
		}
		cs := chartSet{fs: set, all: all, env: envCaption(ev, set.Emulated)}
		if set.Emulated {
			cs.prefix = "emu-"
		}
		out = append(out, cs.build()...)
	}
	if !ev.Emulated.Empty() {
		if c := emulatedRatioChart(ev, all); c != nil {
			out = append(out, c)
		}
	}
	return out
}

func (cs chartSet) build() []*Chart {
	var out []*Chart
	add := func(c *Chart) {
		if c != nil && len(c.Series) > 0 {
			c.ID = cs.prefix + c.ID
			c.Emulated = cs.fs.Emulated
			if c.Emulated {
				c.Title += " (EMULATED, VM)"
			}
			c.Caption += " " + cs.env
			out = append(out, c)
		}
	}
	ms := 1e-6
	us := 1e-3
	add(cs.lines("sync-full", "Full sync time against Services", "Services (log)", "full sync wall time (ms, log)", true, true,
		"Wall time of one Sync of the whole cluster into an empty node; median of repetitions, bars from min to max.",
		loadgen.MetricSyncFull, []lineSpec{{"", "wall", "", false}}, ms, false, true))
	add(cs.lines("sync-incremental", "Incremental sync time against Services", "Services (log)", "sync time of one change (ms, log)", true, true,
		"One change (add or remove a Service or endpoint, flip a condition) synced into N Services: p50 (solid) and p99 (dashed) per repetition, median of repetitions.",
		loadgen.MetricSyncIncremental, []lineSpec{{"all", "p50", " p50", false}, {"all", "p99", " p99", true}}, ms, false, false))
	add(cs.lines("programming-latency", "Programming latency against Services", "Services (log)", "programming latency (ms, log)", true, true,
		"From handing a change to the datapath until a client probe first sees it (all change kinds): p50 (solid) and p99 (dashed), median of repetitions.",
		loadgen.MetricProgrammingLatency, []lineSpec{{"all", "p50", " p50", false}, {"all", "p99", " p99", true}}, ms, false, false))
	add(cs.programmingLadder())
	for _, pct := range []string{"p50", "p90", "p99"} {
		add(cs.lines("first-packet-rtt-"+pct, "First-packet RTT "+pct+" against Services", "Services (log)", "TCP connect time "+pct+" (µs)", true, false,
			"TCP handshake time to a random Service VIP among N, "+pct+" per repetition, median of repetitions, bars from min to max. The black line is the direct baseline: straight to the endpoints on the node before any rule was loaded (median over the cells).",
			loadgen.MetricFirstPacketRTT, []lineSpec{{"vip", pct, "", false}}, us, true, true))
	}
	add(cs.lines("throughput-crr", "Connection rate against Services", "Services (log)", "new connections per second (conn/s)", true, false,
		"Back-to-back connect, answer, close to random VIPs from one client thread (a lower bound on the datapath's capacity); black: the direct baseline.",
		loadgen.MetricThroughput, []lineSpec{{"crr-vip", "rate", "", false}}, 1, true, true))
	add(cs.lines("throughput-udp", "UDP packet rate against Services", "Services (log)", "datagrams received per second (pkt/s)", true, false,
		"Datagrams delivered to the backends from one client thread over 16 flows; black: the direct baseline.",
		loadgen.MetricThroughput, []lineSpec{{"udp-vip", "rate", "", false}}, 1, true, true))
	add(cs.lines("cpu-per-packet", "Kernel CPU per UDP packet against Services", "Services (log)", "kernel CPU per delivered datagram (ns/pkt)", true, false,
		"System, IRQ and softirq time of the whole machine over the UDP run, divided by the datagrams delivered (client and server syscalls included, as in the baseline).",
		loadgen.MetricCPUPerPacket, []lineSpec{{"udp-vip", "value", "", false}}, 1, true, true))
	add(cs.disruption())
	return out
}

// lineSpec is one statistic drawn as a line per datapath.
type lineSpec struct {
	variant, stat, suffix string
	dashed                bool
}

// baselineVariant is the variant measured straight to the endpoints on
// the empty node, for a VIP variant.
func baselineVariant(v string) string {
	switch {
	case v == "vip":
		return "baseline"
	case strings.HasSuffix(v, "-vip"):
		return strings.TrimSuffix(v, "-vip") + "-baseline"
	}
	return ""
}

func (cs chartSet) lines(id, title, xl, yl string, logX, logY bool, caption, metric string, specs []lineSpec, scale float64, baseline, errBars bool) *Chart {
	c := &Chart{ID: id, Title: title, XLabel: xl, YLabel: yl, LogX: logX, LogY: logY, Caption: caption, Kind: "lines", Table: tableAnchor(metric, cs.fs.Emulated)}
	for _, dp := range cs.fs.Datapaths() {
		for _, sp := range specs {
			pts := cs.fs.Series(dp, metric, sp.variant, sp.stat)
			s := Series{Name: dp + sp.suffix, Datapath: dp, Color: colorOf(cs.all, dp), Dashed: sp.dashed}
			for _, p := range pts {
				if (logX && p.Services <= 0) || (logY && p.Median <= 0) {
					continue // no place on a log axis
				}
				xy := XY{X: float64(p.Services), Y: p.Median * scale}
				if errBars {
					xy.Lo, xy.Hi = p.Min*scale, p.Max*scale
				}
				s.Points = append(s.Points, xy)
			}
			if len(s.Points) > 0 {
				c.Series = append(c.Series, s)
			}
		}
	}
	if baseline && len(c.Series) > 0 {
		bv := baselineVariant(specs[0].variant)
		byN := map[int][]float64{}
		for _, dp := range cs.fs.Datapaths() {
			for _, p := range cs.fs.Series(dp, metric, bv, specs[0].stat) {
				byN[p.Services] = append(byN[p.Services], p.Median)
			}
		}
		s := Series{Name: "direct (baseline)", Color: baselineColor, Dashed: true}
		for _, n := range sortedKeys(byN) {
			v := medianOf(byN[n]) * scale
			if (logX && n <= 0) || (logY && v <= 0) {
				continue
			}
			s.Points = append(s.Points, XY{X: float64(n), Y: v})
		}
		if len(s.Points) > 0 {
			c.Series = append(c.Series, s)
		}
	}
	return c
}

// largestCommonScale is the largest scale at which every datapath that
// has the statistic has it; failing that, the largest at which any has it.
func (cs chartSet) largestCommonScale(metric, variant, stat string) int {
	per := map[int]int{}
	dps := 0
	for _, dp := range cs.fs.Datapaths() {
		pts := cs.fs.Series(dp, metric, variant, stat)
		if len(pts) > 0 {
			dps++
		}
		for _, p := range pts {
			per[p.Services]++
		}
	}
	best, any := -1, -1
	for n, k := range per {
		if k == dps && n > best {
			best = n
		}
		if n > any {
			any = n
		}
	}
	if best >= 0 {
		return best
	}
	return any
}

// programmingLadder shows the distribution of programming latency per
// change kind at one scale: for each datapath a vertical ladder from p50
// through p99 to the maximum (medians of repetitions).
func (cs chartSet) programmingLadder() *Chart {
	m := loadgen.MetricProgrammingLatency
	n := cs.largestCommonScale(m, "all", "p50")
	if n < 0 {
		return nil
	}
	kinds := []string{"add-service", "replace-endpoint", "remove-last-endpoint", "all"}
	c := &Chart{ID: "programming-latency-dist", Kind: "ladder", Categories: kinds, LogY: true, Table: tableAnchor(m, cs.fs.Emulated),
		Title:  fmt.Sprintf("Programming-latency distribution at %s Services", humanCount(n)),
		XLabel: "change kind", YLabel: "programming latency (ms, log)",
		Caption: fmt.Sprintf("For each change kind and datapath at %s Services: a ladder from p50 (circle) through p99 (triangle) to the maximum (cross), each the median of repetitions.", humanCount(n))}
	dps := cs.fs.Datapaths()
	width := 0.6
	for i, dp := range dps {
		s := Series{Name: dp, Datapath: dp, Color: colorOf(cs.all, dp)}
		off := 0.0
		if len(dps) > 1 {
			off = -width/2 + width*float64(i)/float64(len(dps)-1)
		}
		for k, kind := range kinds {
			for _, st := range []string{"p50", "p99", "max"} {
				for _, p := range cs.fs.Series(dp, m, kind, st) {
					if p.Services == n && p.Median > 0 {
						s.Points = append(s.Points, XY{X: float64(k) + off, Y: p.Median * 1e-6, Label: kind + " " + st})
					}
				}
			}
		}
		if len(s.Points) > 0 {
			c.Series = append(c.Series, s)
		}
	}
	return c
}

// disruption draws, per datapath at one scale, what a rolling update
// broke: failed TCP connections, connections answered by an already
// removed endpoint, and UDP flows stuck on a removed endpoint.
func (cs chartSet) disruption() *Chart {
	m := loadgen.MetricDisruption
	n := cs.largestCommonScale(m, "tcp", "failed")
	if n < 0 {
		return nil
	}
	stats := [][2]string{{"tcp", "failed"}, {"tcp", "to-removed"}, {"udp", "stuck-flows"}}
	dps := cs.fs.Datapaths()
	var have []string
	for _, dp := range dps {
		if len(cs.fs.Series(dp, m, "tcp", "failed")) > 0 {
			have = append(have, dp)
		}
	}
	changes := ""
	for _, dp := range have {
		for _, p := range cs.fs.Series(dp, m, "", "changes") {
			if p.Services == n {
				changes = fmt.Sprintf(" Each rolling update made %s changes (median, %s).", trimFloat(p.Median), dp)
				break
			}
		}
		if changes != "" {
			break
		}
	}
	c := &Chart{ID: "disruption", Kind: "bars", Categories: have, Table: tableAnchor(m, cs.fs.Emulated),
		Title:  fmt.Sprintf("Disruption during a rolling update at %s Services", humanCount(n)),
		XLabel: "datapath", YLabel: "count per rolling update (median of repetitions)",
		Caption: "A rolling update of a TCP and a UDP Service under load: TCP connections that failed, TCP connections answered by an endpoint whose removal was already synced, and UDP flows still stuck on a removed endpoint afterwards. Fewer is better." + changes}
	greys := []color.RGBA{{68, 68, 68, 255}, {140, 140, 140, 255}, {200, 200, 200, 255}}
	for si, st := range stats {
		s := Series{Name: st[0] + " " + st[1], Color: greys[si]}
		for i, dp := range have {
			for _, p := range cs.fs.Series(dp, m, st[0], st[1]) {
				if p.Services == n {
					s.Points = append(s.Points, XY{X: float64(i), Y: p.Median, Lo: p.Min, Hi: p.Max})
				}
			}
		}
		if len(s.Points) == len(have) {
			c.Series = append(c.Series, s)
		}
	}
	return c
}

// emulatedRatioChart is the only place emulated timings meet native
// thinking: each emulated datapath's full sync divided by a reference
// datapath's in the same emulated run. Ratios survive a slow CPU;
// absolute times do not.
func emulatedRatioChart(ev *Evidence, all []string) *Chart {
	fs := ev.Emulated
	dps := fs.Datapaths()
	ref := ""
	for _, d := range dps {
		if ev.Native.hasDatapath(d) {
			ref = d
			break
		}
	}
	if ref == "" && len(dps) > 1 {
		ref = dps[0]
	}
	if ref == "" {
		return nil
	}
	c := &Chart{ID: "emu-ratio-sync-full", Kind: "lines", LogX: true, Emulated: true, Table: tableAnchor(loadgen.MetricSyncFull, true),
		Title:  "RATIO ONLY — emulated full sync relative to " + ref + " in the same VM run",
		XLabel: "Services (log)", YLabel: "full sync time / " + ref + "'s (ratio)",
		Caption: fmt.Sprintf("Each datapath's full-sync wall time divided by %s's at the same scale, both measured in the same emulated run. Only this ratio, not the times, may be read beside native figures. %s", ref, envCaption(ev, true))}
	refPts := fs.Series(ref, loadgen.MetricSyncFull, "", "wall")
	for _, d := range dps {
		s := Series{Name: d + " / " + ref, Datapath: d, Color: colorOf(all, d)}
		for _, p := range fs.Series(d, loadgen.MetricSyncFull, "", "wall") {
			for _, q := range refPts {
				if q.Services == p.Services && q.Median > 0 && p.Services > 0 {
					s.Points = append(s.Points, XY{X: float64(p.Services), Y: p.Median / q.Median})
				}
			}
		}
		if len(s.Points) > 0 {
			c.Series = append(c.Series, s)
		}
	}
	if len(c.Series) < 2 {
		return nil
	}
	return c
}

func tableAnchor(metric string, emulated bool) string {
	if emulated {
		return "table-emu-" + metric
	}
	return "table-" + metric
}

func sortedKeys(m map[int][]float64) []int {
	var ks []int
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func medianOf(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// envCaption is the environment sentence of a chart's caption, from the
// runs of one set (native or emulated).
func envCaption(ev *Evidence, emulated bool) string {
	var kernels, cpus, backends, topos, reps []string
	addU := func(list *[]string, s string) {
		if s != "" && !slices.Contains(*list, s) {
			*list = append(*list, s)
		}
	}
	for _, r := range ev.Runs {
		if r.Run.Env.Emulated != emulated {
			continue
		}
		addU(&kernels, r.Run.Env.Kernel)
		cpu := r.Run.Env.CPUModel
		if cpu == "" {
			cpu = "unrecorded CPU"
		}
		addU(&cpus, fmt.Sprintf("%s × %d", cpu, r.Run.Env.CPUs))
		addU(&backends, r.Run.Config.IPTablesBackend)
		t := r.Run.Topology
		addU(&topos, fmt.Sprintf("%s topology, %s mode, %d nodes", t.Name, t.Mode, t.Nodes))
		addU(&reps, fmt.Sprint(r.Run.Config.Reps))
	}
	where := "Native"
	if emulated {
		where = "EMULATED (VM runner)"
	}
	return fmt.Sprintf("%s: kernel %s; %s; iptables %s; %s; %s repetitions.", where,
		orNone(kernels), orNone(cpus), orNone(backends), orNone(topos), orNone(reps))
}

func orNone(list []string) string {
	if len(list) == 0 {
		return "unrecorded"
	}
	return strings.Join(list, " / ")
}

// Plot builds the gonum plot of the chart's series.
func (c *Chart) Plot() (*plot.Plot, error) {
	p := plot.New()
	sans := font.Font{Typeface: "Liberation", Variant: "Sans"}
	p.Title.TextStyle.Font = font.From(sans, 11)
	for _, a := range []*plot.Axis{&p.X, &p.Y} {
		a.Label.TextStyle.Font = font.From(sans, 10)
		a.Tick.Label.Font = font.From(sans, 9)
	}
	p.Legend.TextStyle.Font = font.From(sans, 9)
	p.Legend.Top, p.Legend.Left = true, c.Kind != "bars"
	p.Title.Text = c.Title
	p.Legend.Padding = vg.Points(3)
	p.X.Label.Text = c.XLabel
	p.Y.Label.Text = c.YLabel
	p.Add(plotter.NewGrid())
	if c.LogX {
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = logTicks{count: true}
	}
	if c.LogY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = logTicks{}
	}
	switch c.Kind {
	case "bars":
		if err := c.addBars(p); err != nil {
			return nil, err
		}
	case "ladder":
		if err := c.addLadders(p); err != nil {
			return nil, err
		}
	default:
		if err := c.addLines(p); err != nil {
			return nil, err
		}
	}
	// Leave room above the data for the legend, which gonum draws inside
	// the plot area: a legend over a line hides it.
	rows := float64(len(c.Series))
	if c.Kind == "ladder" {
		rows++
	}
	headroom := math.Min(0.6, (rows*11+8)/(chartHeight.Points()-70))
	if c.LogY {
		// A log axis needs a positive range; pad it so ladders and error
		// bars are not cut at the frame.
		lo, hi := math.Log(math.Max(p.Y.Min, 1e-9)/1.3), math.Log(math.Max(p.Y.Max, 1e-9)*1.3)
		p.Y.Min, p.Y.Max = math.Exp(lo), math.Exp(lo+(hi-lo)/(1-headroom))
	} else {
		lo, hi := math.Min(0, p.Y.Min), p.Y.Max
		if hi <= lo {
			hi = lo + 1
		}
		p.Y.Min, p.Y.Max = lo, lo+(hi-lo)*1.05/(1-headroom)
		p.Y.Tick.Marker = plainTicks{}
	}
	if c.LogX {
		p.X.Min /= 1.3
		p.X.Max *= 1.3
	}
	if len(c.Categories) > 0 {
		p.X.Min, p.X.Max = -0.5, float64(len(c.Categories))-0.5
	}
	return p, nil
}

// plainTicks are gonum's default linear ticks with labels free of
// trailing zeros ("250", not "250.00").
type plainTicks struct{}

func (plainTicks) Ticks(lo, hi float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ticks {
		if ticks[i].Label != "" {
			ticks[i].Label = strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.6f", ticks[i].Value), "0"), ".")
			if math.Abs(ticks[i].Value) >= 1e4 {
				ticks[i].Label = formatSI(ticks[i].Value)
			}
		}
	}
	return ticks
}

func lineStyle(s Series) draw.LineStyle {
	ls := plotter.DefaultLineStyle
	ls.Color = s.Color
	ls.Width = vg.Points(1.5)
	if s.Dashed {
		ls.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
	}
	return ls
}

func xys(pts []XY) plotter.XYs {
	out := make(plotter.XYs, len(pts))
	for i, p := range pts {
		out[i] = plotter.XY{X: p.X, Y: p.Y}
	}
	return out
}

// errXYs draws min–max bars around medians.
type errXYs struct{ pts []XY }

func (e errXYs) Len() int                    { return len(e.pts) }
func (e errXYs) XY(i int) (float64, float64) { return e.pts[i].X, e.pts[i].Y }
func (e errXYs) YError(i int) (float64, float64) {
	return e.pts[i].Y - e.pts[i].Lo, e.pts[i].Hi - e.pts[i].Y
}

func (c *Chart) addLines(p *plot.Plot) error {
	for _, s := range c.Series {
		l, err := plotter.NewLine(xys(s.Points))
		if err != nil {
			return fmt.Errorf("chart %s, series %s: %w", c.ID, s.Name, err)
		}
		l.LineStyle = lineStyle(s)
		sc, err := plotter.NewScatter(xys(s.Points))
		if err != nil {
			return fmt.Errorf("chart %s, series %s: %w", c.ID, s.Name, err)
		}
		sc.GlyphStyle = draw.GlyphStyle{Color: s.Color, Radius: vg.Points(2.2), Shape: draw.CircleGlyph{}}
		p.Add(l, sc)
		if s.Points[0].Hi > 0 || s.Points[0].Lo > 0 {
			eb, err := plotter.NewYErrorBars(errXYs{s.Points})
			if err != nil {
				return fmt.Errorf("chart %s, series %s: %w", c.ID, s.Name, err)
			}
			eb.LineStyle = draw.LineStyle{Color: s.Color, Width: vg.Points(0.8)}
			eb.CapWidth = vg.Points(4)
			p.Add(eb)
		}
		p.Legend.Add(s.Name, l, sc)
	}
	if len(c.Categories) > 0 {
		p.NominalX(c.Categories...)
		// Label at most about ten positions, so names never overlap.
		step := (len(c.Categories) + 9) / 10
		ticks := make(plot.ConstantTicks, 0, len(c.Categories))
		for i, name := range c.Categories {
			t := plot.Tick{Value: float64(i)}
			if i%step == 0 || i == len(c.Categories)-1 {
				t.Label = name
			}
			ticks = append(ticks, t)
		}
		p.X.Tick.Marker = ticks
	}
	return nil
}

func (c *Chart) addLadders(p *plot.Plot) error {
	shapes := map[string]draw.GlyphDrawer{"p50": draw.CircleGlyph{}, "p99": draw.TriangleGlyph{}, "max": draw.CrossGlyph{}}
	for _, s := range c.Series {
		// One ladder per category: the points sharing an X.
		var ladder []XY
		flush := func() error {
			if len(ladder) > 1 {
				l, err := plotter.NewLine(xys(ladder))
				if err != nil {
					return err
				}
				l.LineStyle = lineStyle(s)
				p.Add(l)
			}
			ladder = nil
			return nil
		}
		for i, pt := range s.Points {
			if i > 0 && pt.X != s.Points[i-1].X {
				if err := flush(); err != nil {
					return fmt.Errorf("chart %s: %w", c.ID, err)
				}
			}
			ladder = append(ladder, pt)
		}
		if err := flush(); err != nil {
			return fmt.Errorf("chart %s: %w", c.ID, err)
		}
		sc, err := plotter.NewScatter(xys(s.Points))
		if err != nil {
			return fmt.Errorf("chart %s: %w", c.ID, err)
		}
		pts := s.Points
		col := s.Color
		sc.GlyphStyleFunc = func(i int) draw.GlyphStyle {
			st := pts[i].Label[strings.LastIndexByte(pts[i].Label, ' ')+1:]
			return draw.GlyphStyle{Color: col, Radius: vg.Points(3), Shape: shapes[st]}
		}
		p.Add(sc)
		sw := lineStyle(s)
		p.Legend.Add(s.Name, legendLine{sw})
	}
	p.NominalX(c.Categories...)
	return nil
}

// legendLine is a legend thumbnail of a line style.
type legendLine struct{ draw.LineStyle }

func (l legendLine) Thumbnail(c *draw.Canvas) {
	y := c.Center().Y
	c.StrokeLine2(l.LineStyle, c.Min.X, y, c.Max.X, y)
}

func (c *Chart) addBars(p *plot.Plot) error {
	n := len(c.Series)
	w := vg.Points(14)
	for i, s := range c.Series {
		vals := make(plotter.Values, len(s.Points))
		for j, pt := range s.Points {
			vals[j] = pt.Y
		}
		b, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return fmt.Errorf("chart %s, series %s: %w", c.ID, s.Name, err)
		}
		b.Color = s.Color
		b.LineStyle.Width = vg.Points(0.5)
		b.Offset = w * vg.Length(float64(i)-float64(n-1)/2)
		p.Add(b)
		p.Legend.Add(s.Name, b)
	}
	p.NominalX(c.Categories...)
	p.Y.Min = 0
	p.Y.Max = math.Max(p.Y.Max, 1)
	return nil
}

// logTicks labels powers of ten the way people read them: 100, 1k, 10k
// for counts; 0.01, 1, 100 for values.
type logTicks struct{ count bool }

func (t logTicks) Ticks(lo, hi float64) []plot.Tick {
	if lo <= 0 || hi <= 0 {
		return nil
	}
	var ticks []plot.Tick
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		base := math.Pow(10, e)
		for m := 1; m < 10; m++ {
			v := base * float64(m)
			if v < lo*0.999 || v > hi*1.001 {
				continue
			}
			tk := plot.Tick{Value: v}
			if m == 1 || (m == 3 && math.Log10(hi/lo) < 2.5) {
				tk.Label = t.label(v)
			}
			ticks = append(ticks, tk)
		}
	}
	return ticks
}

func (t logTicks) label(v float64) string {
	if t.count && v >= 1000 {
		return humanCount(int(math.Round(v)))
	}
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.6f", v), "0"), ".")
}

// Chart size in the report; SVG scales it to the page.
const (
	chartWidth  = 6.5 * vg.Inch
	chartHeight = 3.6 * vg.Inch
)

// SVG renders the chart as an SVG element fit to be inlined in HTML: no
// XML prologue, no namespace URLs (HTML does not need them, and the
// report loads nothing), sans-serif fonts with fallbacks, and a title for
// screen readers.
func (c *Chart) SVG() (template.HTML, error) {
	p, err := c.Plot()
	if err != nil {
		return "", err
	}
	wt, err := p.WriterTo(chartWidth, chartHeight, "svg")
	if err != nil {
		return "", fmt.Errorf("render chart %s: %w", c.ID, err)
	}
	var b bytes.Buffer
	if _, err := wt.WriteTo(&b); err != nil {
		return "", fmt.Errorf("render chart %s: %w", c.ID, err)
	}
	return template.HTML(inlineSVG(b.String(), c.ID, c.Title)), nil
}

var (
	svgProlog = regexp.MustCompile(`(?s)^.*?<svg `)
	svgSize   = regexp.MustCompile(`width="[0-9.]+pt" height="[0-9.]+pt"`)
	svgNS     = regexp.MustCompile(`\s*xmlns(:xlink)?="[^"]*"`)
	svgFont   = regexp.MustCompile(`font-family:Liberation (Sans|Serif|Mono)`)
)

func inlineSVG(s, id, title string) string {
	s = svgProlog.ReplaceAllString(s, "<svg ")
	s = svgSize.ReplaceAllString(s, `class="chart" role="img" aria-labelledby="`+id+`-title"`)
	s = svgNS.ReplaceAllString(s, "")
	s = svgFont.ReplaceAllStringFunc(s, func(m string) string {
		if strings.HasSuffix(m, "Mono") {
			return "font-family:'Liberation Mono',monospace"
		}
		return "font-family:'Liberation Sans',Arial,Helvetica,sans-serif"
	})
	s = strings.Replace(s, ">", `><title id="`+id+`-title">`+template.HTMLEscapeString(title)+`</title>`, 1)
	return s
}
