package reports

import (
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"slices"
	"strings"
	"time"

	"proxyrig/conformance/matrix"
	"proxyrig/loadgen"
)

//go:embed report.html.tmpl
var reportTemplate string

// Render writes the report: one self-contained HTML file (charts inlined
// as SVG, CSS inline, no script, nothing loaded from anywhere) that also
// prints well. Sections: summary, recommendation, conformance matrix,
// charts, tables of every figure with its spread, trends (with a
// history), environment.
func Render(w io.Writer, in Inputs) error {
	v, err := buildView(in)
	if err != nil {
		return err
	}
	t, err := template.New("report").Funcs(templateFuncs).Parse(reportTemplate)
	if err != nil {
		return fmt.Errorf("parse report template: %w", err)
	}
	if err := t.Execute(w, v); err != nil {
		return fmt.Errorf("render report: %w", err)
	}
	return nil
}

var templateFuncs = template.FuncMap{
	"value":    formatValue,
	"duration": func(ns int64) string { return formatDuration(float64(ns)) },
	"count":    humanCount,
	"percent":  func(r float64) string { return fmt.Sprintf("%.1f%%", 100*r) },
	"kind":     kindText,
	"ratio":    formatRatio,
	"symbol":   func(s string) string { return matrix.Symbols[s] },
	"join":     strings.Join,
	"pct":      func(f float64) string { return fmt.Sprintf("%+.1f%%", 100*f) },
	"pval":     func(p float64) string { return fmt.Sprintf("%.3f", p) },
	"score":    func(f float64) string { return fmt.Sprintf("%.2f", f) },
	"bytes": func(b uint64) string {
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	},
	"time": func(t time.Time) string {
		if t.IsZero() {
			return "unrecorded"
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"load": func(l [3]float64) string { return fmt.Sprintf("%.2f %.2f %.2f", l[0], l[1], l[2]) },
	"where": func(emulated bool) string {
		if emulated {
			return "EMULATED (VM runner)"
		}
		return "native"
	},
	"lower": strings.ToLower,
	"first": func(s []string) string {
		if len(s) == 0 {
			return ""
		}
		return s[0]
	},
	"inc": func(i int) int { return i + 1 },
}

// view is what the template reads.
type view struct {
	Title     string
	Generated time.Time
	Ranking   Ranking
	// Command recomputes the ranking for another profile.
	Command  string
	AtScales []scaleRow
	Columns  []string // cost names of the ranking table
	Matrix   *matrixView
	Native   figureSetView
	Emulated figureSetView
	// RatioCharts are the ratio-only panels of emulated figures.
	RatioCharts []chartView
	Trends      *trendView
	Runs        []*loadgen.Results
	Matrices    []*matrix.Matrix
	Sources     []string
	Datapaths   []string
	Warnings    []string
}

type scaleRow struct {
	Services     int
	Best         string
	Extrapolated bool
	Runner       string
}

type figureSetView struct {
	Charts []chartView
	Tables []tableView
	Cells  []loadgen.Cell
}

type chartView struct {
	ID, Title, Caption, Table string
	Emulated                  bool
	SVG                       template.HTML
	Series                    int
}

type tableView struct {
	ID, Metric string
	Rows       []*Entry
}

type matrixView struct {
	Datapaths  []string
	Categories []matrixCategory
	Details    []matrixDetail
	Tallies    map[string]map[string]int
	Envs       map[string]matrix.Env // per datapath: where its verdicts come from
}

type matrixCategory struct {
	Letter, Title string
	Rows          []matrixRow
}

type matrixRow struct {
	Item, Title string
	Cells       []matrixCell
}

type matrixCell struct {
	Status, Anchor, Reason string
}

type matrixDetail struct {
	Anchor, Item, Title, Datapath string
	matrix.Result
	Env matrix.Env
}

type trendView struct {
	Dir         string
	Runs        []HistoryRun
	Charts      []chartView
	Comparisons []Comparison
	Significant int
	TooFew      int
}

func buildView(in Inputs) (*view, error) {
	ev := in.Evidence()
	p := in.Profile
	if p.Services == 0 && p.Endpoints == 0 && p.ChurnPerSec == 0 && len(p.Needs) == 0 {
		p = DefaultProfile()
	}
	v := &view{
		Title:     cmpOr(in.Title, "proxyrig report"),
		Generated: in.Generated,
		Ranking:   Recommend(p, ev),
		Runs:      ev.Runs,
		Matrices:  ev.Matrices,
		Sources:   in.Sources,
		Datapaths: ev.Datapaths(),
	}
	if v.Generated.IsZero() {
		v.Generated = time.Now()
	}
	v.Command = fmt.Sprintf("proxyrig recommend --services %d --endpoints %d --churn %s", v.Ranking.Profile.Services, v.Ranking.Profile.Endpoints, trimFloat(v.Ranking.Profile.ChurnPerSec))
	if len(v.Ranking.Profile.Needs) > 0 {
		v.Command += " --need " + strings.Join(v.Ranking.Profile.Needs, ",")
	}
	v.Command += " --results DIR"
	// The summary shows the costs a reader weighs first; the
	// recommendation section has every one.
	keyCosts := []string{"full sync", "incremental sync p99", "programming latency p99", "first-packet RTT p50 vs baseline", "CPU per UDP packet vs baseline", "disrupted connections and flows"}
	for _, r := range v.Ranking.Ranked {
		for _, c := range r.Costs {
			if slices.Contains(keyCosts, c.Name) && !slices.Contains(v.Columns, c.Name) {
				v.Columns = append(v.Columns, c.Name)
			}
		}
	}
	// The pick at other scales, so a reader sees where the answer turns.
	scales := []int{100, 1000, 5000, 10000, 30000}
	for _, n := range scales {
		q := v.Ranking.Profile
		q.Services = n
		rk := Recommend(q, ev)
		row := scaleRow{Services: n, Best: rk.Best()}
		if len(rk.Ranked) > 1 && rk.Ranked[1].Tier == TierRanked {
			row.Runner = rk.Ranked[1].Datapath
		}
		if len(rk.Ranked) > 0 {
			for _, c := range rk.Ranked[0].Costs {
				if c.Estimate.Extrapolated() {
					row.Extrapolated = true
				}
			}
		}
		v.AtScales = append(v.AtScales, row)
	}

	// Charts, native and emulated apart.
	for _, c := range Charts(ev) {
		cv, err := renderChart(c)
		if err != nil {
			return nil, err
		}
		switch {
		case strings.HasPrefix(c.ID, "emu-ratio"):
			v.RatioCharts = append(v.RatioCharts, cv)
		case c.Emulated:
			v.Emulated.Charts = append(v.Emulated.Charts, cv)
		default:
			v.Native.Charts = append(v.Native.Charts, cv)
		}
	}
	v.Native.Tables, v.Native.Cells = tablesOf(ev.Native), ev.Native.Cells()
	v.Emulated.Tables, v.Emulated.Cells = tablesOf(ev.Emulated), ev.Emulated.Cells()
	v.Matrix = buildMatrixView(ev)

	if in.History != nil {
		tv := &trendView{Dir: in.History.Dir, Runs: in.History.Runs, Comparisons: in.History.Compare(ev.Runs)}
		for _, c := range in.History.TrendCharts(ev.Runs, v.Datapaths) {
			cv, err := renderChart(c)
			if err != nil {
				return nil, err
			}
			tv.Charts = append(tv.Charts, cv)
		}
		for _, c := range tv.Comparisons {
			if c.Significant() {
				tv.Significant++
			}
			if c.Verdict == "too few repetitions" {
				tv.TooFew++
			}
		}
		v.Trends = tv
	}
	if len(ev.Runs) == 0 {
		v.Warnings = append(v.Warnings, "No bench results were given: there are no performance figures, and the recommendation rests on conformance alone.")
	}
	if len(ev.Matrices) == 0 {
		v.Warnings = append(v.Warnings, "No conformance matrix was given: correctness is unchecked.")
	}
	v.fixAnchors()
	return v, nil
}

func renderChart(c *Chart) (chartView, error) {
	svg, err := c.SVG()
	if err != nil {
		return chartView{}, err
	}
	return chartView{ID: chartAnchor(c.ID), Title: c.Title, Caption: c.Caption, Table: c.Table, Emulated: c.Emulated, SVG: svg, Series: len(c.Series)}, nil
}

func tablesOf(fs *FigureSet) []tableView {
	var out []tableView
	for _, e := range fs.Entries() {
		if len(out) == 0 || out[len(out)-1].Metric != e.Metric {
			out = append(out, tableView{ID: tableAnchor(e.Metric, fs.Emulated), Metric: e.Metric})
		}
		out[len(out)-1].Rows = append(out[len(out)-1].Rows, e)
	}
	return out
}

func buildMatrixView(ev *Evidence) *matrixView {
	dps := ev.ConformanceDatapaths()
	if len(dps) == 0 {
		return nil
	}
	mv := &matrixView{Datapaths: dps, Tallies: map[string]map[string]int{}, Envs: map[string]matrix.Env{}}
	results := map[string][]matrix.Result{}
	for _, d := range dps {
		rs, m := ev.Conformance(d)
		results[d] = rs
		mv.Envs[d] = m.Env
		t := map[string]int{}
		for _, r := range rs {
			t[r.Status]++
		}
		mv.Tallies[d] = t
	}
	// Items in CONFORMANCE.md order, then any the matrices have beyond it.
	items := matrix.Items()
	known := map[string]bool{}
	for _, it := range items {
		known[it.ID] = true
	}
	for _, d := range dps {
		for _, r := range results[d] {
			if !known[r.Item] {
				known[r.Item] = true
				items = append(items, matrix.Item{ID: r.Item, Title: r.Item, Category: r.Category})
			}
		}
	}
	cats := matrix.Categories()
	catTitle := map[string]string{}
	for _, c := range cats {
		catTitle[c.Letter] = c.Title
	}
	for _, it := range items {
		if len(mv.Categories) == 0 || mv.Categories[len(mv.Categories)-1].Letter != it.Category {
			mv.Categories = append(mv.Categories, matrixCategory{Letter: it.Category, Title: cmpOr(catTitle[it.Category], "Other")})
		}
		row := matrixRow{Item: it.ID, Title: it.Title}
		for _, d := range dps {
			r, ok := findResult(results[d], it.ID)
			cell := matrixCell{Status: "none"}
			if ok {
				cell.Status, cell.Reason = r.Status, r.Reason
				if r.Status != matrix.StatusPass {
					cell.Anchor = conformanceAnchor(it.ID, d)
					mv.Details = append(mv.Details, matrixDetail{Anchor: cell.Anchor, Item: it.ID, Title: it.Title, Datapath: d, Result: r, Env: mv.Envs[d]})
				}
			}
			row.Cells = append(row.Cells, cell)
		}
		cat := &mv.Categories[len(mv.Categories)-1]
		cat.Rows = append(cat.Rows, row)
	}
	// Details: failures first, then deviations, skips, missing.
	rank := map[string]int{matrix.StatusFail: 0, matrix.StatusDeviation: 1, matrix.StatusSkip: 2, matrix.StatusMissing: 3}
	slices.SortStableFunc(mv.Details, func(a, b matrixDetail) int { return rank[a.Status] - rank[b.Status] })
	return mv
}

// fixAnchors points every link of the ranking at an element that exists:
// a fact about a chart that was not drawn (no native figures, say) links
// to its section instead.
func (v *view) fixAnchors() {
	ids := map[string]bool{}
	for _, s := range []string{anchorSummary, anchorRecommendation, anchorConformance, anchorCharts, anchorTables, anchorCells, anchorEnvironment} {
		ids[s] = true
	}
	if len(v.Emulated.Charts) > 0 || len(v.RatioCharts) > 0 {
		ids[anchorChartsEmulated] = true
	}
	for _, set := range []figureSetView{v.Native, v.Emulated} {
		for _, c := range set.Charts {
			ids[c.ID] = true
		}
		for _, t := range set.Tables {
			ids[t.ID] = true
			for _, e := range t.Rows {
				ids[e.Anchor()] = true
			}
		}
	}
	for _, c := range v.RatioCharts {
		ids[c.ID] = true
	}
	if v.Matrix != nil {
		for _, d := range v.Matrix.Details {
			ids[d.Anchor] = true
		}
		for _, d := range v.Matrix.Datapaths {
			ids[slug("cf-dp-"+d)] = true
		}
	}
	fix := func(a, fallback string) string {
		if ids[a] {
			return a
		}
		if strings.HasPrefix(a, "chart-emu") && ids[anchorChartsEmulated] {
			return anchorChartsEmulated
		}
		if ids[fallback] {
			return fallback
		}
		return anchorRecommendation
	}
	for i := range v.Ranking.Facts {
		v.Ranking.Facts[i].Anchor = fix(v.Ranking.Facts[i].Anchor, anchorCharts)
	}
	for i := range v.Ranking.Ranked {
		r := &v.Ranking.Ranked[i]
		for j := range r.Facts {
			r.Facts[j].Anchor = fix(r.Facts[j].Anchor, anchorCharts)
		}
		for j := range r.Gaps {
			r.Gaps[j].Anchor = fix(r.Gaps[j].Anchor, anchorConformance)
		}
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Outliers prints a figure's outlier repetitions (1-based), or "".
func (e *Entry) OutlierReps() string {
	var s []string
	for _, o := range e.Outliers {
		s = append(s, fmt.Sprint(o+1))
	}
	return strings.Join(s, ", ")
}

// PerRepText prints every repetition's value.
func (e *Entry) PerRepText() string {
	var s []string
	for _, v := range e.PerRep {
		s = append(s, formatValue(v, e.Unit))
	}
	return strings.Join(s, ", ")
}

// Label names a figure's statistic: "vip p50".
func (e *Entry) Label() string {
	if e.Variant == "" {
		return e.Stat
	}
	return e.Variant + " " + e.Stat
}
