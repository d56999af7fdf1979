package reports

import (
	"bytes"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/net/html"
)

// renderFixture renders the testdata report and parses it.
// The report is rendered once per test binary; tests only read it.
func renderFixture(t *testing.T) (string, *html.Node) {
	t.Helper()
	in := fixtureInputs(t)
	renderOnce.Do(func() {
		var b bytes.Buffer
		if renderErr = Render(&b, in); renderErr != nil {
			return
		}
		renderedSrc = b.String()
		renderedDoc, renderErr = html.Parse(bytes.NewReader(b.Bytes()))
	})
	if renderErr != nil {
		t.Fatalf("render or parse the report: %v", renderErr)
	}
	return renderedSrc, renderedDoc
}

var (
	renderOnce  sync.Once
	renderedSrc string
	renderedDoc *html.Node
	renderErr   error
)

func walk(n *html.Node, fn func(*html.Node)) {
	fn(n)
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		walk(c, fn)
	}
}

func attr(n *html.Node, key string) (string, bool) {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val, true
		}
	}
	return "", false
}

func textOf(n *html.Node) string {
	var b strings.Builder
	walk(n, func(c *html.Node) {
		if c.Type == html.TextNode {
			b.WriteString(c.Data)
		}
	})
	return b.String()
}

// byID finds an element by id, through an index built once per document.
func byID(doc *html.Node, id string) *html.Node {
	idsMu.Lock()
	defer idsMu.Unlock()
	idx, ok := idIndex[doc]
	if !ok {
		idx = map[string]*html.Node{}
		walk(doc, func(n *html.Node) {
			if v, ok := attr(n, "id"); ok && idx[v] == nil {
				idx[v] = n
			}
		})
		idIndex[doc] = idx
	}
	return idx[id]
}

var (
	idsMu   sync.Mutex
	idIndex = map[*html.Node]map[string]*html.Node{}
)

func TestReportSections(t *testing.T) {
	_, doc := renderFixture(t)
	var sections []string
	walk(doc, func(n *html.Node) {
		if n.Type == html.ElementNode && n.Data == "section" {
			id, _ := attr(n, "id")
			sections = append(sections, id)
		}
	})
	want := []string{anchorSummary, anchorRecommendation, anchorConformance, anchorCharts, anchorChartsEmulated, anchorTables, anchorTrends, anchorEnvironment}
	if !slices.Equal(sections, want) {
		t.Errorf("sections = %v, want %v (summary first)", sections, want)
	}
	summary := textOf(byID(doc, anchorSummary))
	if !strings.Contains(summary, "Pick ebpf.") {
		t.Errorf("summary does not name the pick for the default profile:\n%s", summary)
	}
	for _, s := range []string{"10k Services × 5 endpoints", "full sync", "incremental sync p99", "The pick at other scales"} {
		if !strings.Contains(summary, s) {
			t.Errorf("summary lacks %q", s)
		}
	}
}

func TestReportCoversEveryDatapath(t *testing.T) {
	_, doc := renderFixture(t)
	for _, dp := range []string{"iptables", "nftables", "ebpf", "ipvs"} {
		if byID(doc, "rank-"+dp) == nil {
			t.Errorf("recommendation has no entry for %s", dp)
		}
		if byID(doc, "cf-dp-"+dp) == nil {
			t.Errorf("conformance matrix has no column for %s", dp)
		}
		if !strings.Contains(textOf(byID(doc, anchorTables)), dp) {
			t.Errorf("tables never mention %s", dp)
		}
	}
	// ipvs was measured only in the VM: its figures are in the emulated
	// section, never among the native charts.
	native := textOf(byID(doc, anchorCharts))
	if strings.Contains(native, "ipvs") {
		t.Errorf("native charts mention ipvs, which was only measured emulated")
	}
	if !strings.Contains(textOf(byID(doc, anchorChartsEmulated)), "ipvs") {
		t.Errorf("emulated section lacks ipvs")
	}
}

func TestReportMatrixLinksToDetails(t *testing.T) {
	_, doc := renderFixture(t)
	table := byID(doc, anchorConformance)
	cells, linked := 0, 0
	walk(table, func(n *html.Node) {
		if n.Type != html.ElementNode || n.Data != "td" {
			return
		}
		class, _ := attr(n, "class")
		if !strings.HasPrefix(class, "st ") {
			return
		}
		cells++
		status := strings.TrimPrefix(strings.Fields(class)[1], "st-")
		var href string
		walk(n, func(a *html.Node) {
			if a.Type == html.ElementNode && a.Data == "a" {
				href, _ = attr(a, "href")
			}
		})
		switch status {
		case "pass":
			if href != "" {
				t.Errorf("a pass cell links to %s", href)
			}
		default:
			if href == "" {
				t.Errorf("a %s cell has no link to its detail", status)
				return
			}
			linked++
			d := byID(doc, strings.TrimPrefix(href, "#"))
			if d == nil {
				t.Errorf("cell links to %s, which does not exist", href)
				return
			}
			if !strings.Contains(textOf(d), status) {
				t.Errorf("detail %s does not state status %s", href, status)
			}
		}
	})
	// 4 datapaths × every item.
	if cells < 4*60 {
		t.Errorf("matrix has %d status cells, want at least 240", cells)
	}
	// The fixture's failures and deviations are all linked.
	for _, id := range []string{"cf-AFF-04-ebpf", "cf-NP-02-nftables", "cf-AFF-04-ipvs", "cf-TOPO-03-ebpf", "cf-CIP-11-iptables"} {
		if byID(doc, id) == nil {
			t.Errorf("no detail %s", id)
		}
	}
	if linked == 0 {
		t.Error("no linked cell at all")
	}
	// The failure's reason is in its detail.
	if d := byID(doc, "cf-AFF-04-ebpf"); d == nil || !strings.Contains(textOf(d), "affinity kept after the timeout") {
		t.Error("the AFF-04 failure's detail lacks its reason")
	}
}

func TestReportInternalLinksResolve(t *testing.T) {
	_, doc := renderFixture(t)
	ids := map[string]bool{}
	walk(doc, func(n *html.Node) {
		if v, ok := attr(n, "id"); ok {
			if ids[v] {
				t.Errorf("duplicate id %q", v)
			}
			ids[v] = true
		}
	})
	links := 0
	walk(doc, func(n *html.Node) {
		if n.Type != html.ElementNode || n.Data != "a" {
			return
		}
		href, _ := attr(n, "href")
		if !strings.HasPrefix(href, "#") {
			t.Errorf("link %q is not internal", href)
			return
		}
		links++
		if !ids[href[1:]] {
			t.Errorf("link %q points at nothing", href)
		}
	})
	if links < 100 {
		t.Errorf("only %d internal links", links)
	}
}

func TestReportSelfContained(t *testing.T) {
	src, doc := renderFixture(t)
	for _, bad := range []string{"http://", "https://", "src=", "<script", "<link", "@import", "url(", "<iframe", "<object", "<embed", "<img"} {
		if i := strings.Index(strings.ToLower(src), bad); i >= 0 {
			lo, hi := max(0, i-80), min(len(src), i+80)
			t.Errorf("report contains %q: …%s…", bad, src[lo:hi])
		}
	}
	walk(doc, func(n *html.Node) {
		if n.Type != html.ElementNode {
			return
		}
		for _, a := range n.Attr {
			if (a.Key == "href" || a.Key == "xlink:href") && !strings.HasPrefix(a.Val, "#") {
				t.Errorf("<%s %s=%q> refers outside the file", n.Data, a.Key, a.Val)
			}
		}
	})
	// Print: page breaks, no dark backgrounds.
	if !strings.Contains(src, "@media print") || !strings.Contains(src, "break-before: page") {
		t.Error("no print stylesheet with page breaks")
	}
	for _, m := range regexp.MustCompile(`background(-color)?:\s*#([0-9a-fA-F]{6})`).FindAllStringSubmatch(src, -1) {
		if luminance(m[2]) < 0.8 {
			t.Errorf("dark background %s", m[0])
		}
	}
}

func luminance(hex string) float64 {
	var r, g, b int
	for i, p := range []*int{&r, &g, &b} {
		v := hex[2*i : 2*i+2]
		for _, c := range v {
			*p *= 16
			switch {
			case c >= '0' && c <= '9':
				*p += int(c - '0')
			case c >= 'a' && c <= 'f':
				*p += int(c-'a') + 10
			case c >= 'A' && c <= 'F':
				*p += int(c-'A') + 10
			}
		}
	}
	return (0.2126*float64(r) + 0.7152*float64(g) + 0.0722*float64(b)) / 255
}

func TestReportEnvironment(t *testing.T) {
	_, doc := renderFixture(t)
	env := textOf(byID(doc, anchorEnvironment))
	for _, s := range []string{"6.18.44-fixture", "Fixture CPU @ 2.0GHz", "QEMU TCG emulated CPU", "iptables backend", "legacy", "direct, scale mode, 2 nodes", "EMULATED (VM runner)", "native"} {
		if !strings.Contains(env, s) {
			t.Errorf("environment lacks %q", s)
		}
	}
}

func TestReportTablesHaveSpread(t *testing.T) {
	_, doc := renderFixture(t)
	ev := fixtureInputs(t).Evidence()
	for _, set := range []*FigureSet{ev.Native, ev.Emulated} {
		for _, e := range set.Entries() {
			row := byID(doc, e.Anchor())
			if row == nil {
				t.Fatalf("no table row for %s", e.Anchor())
			}
			text := textOf(row)
			for _, s := range []string{formatValue(e.Median, e.Unit), formatValue(e.Min, e.Unit), formatValue(e.Max, e.Unit), formatValue(e.Q1, e.Unit)} {
				if !strings.Contains(text, s) {
					t.Errorf("row %s lacks %q: %s", e.Anchor(), s, text)
				}
			}
		}
	}
}

func TestReportTrends(t *testing.T) {
	_, doc := renderFixture(t)
	trends := textOf(byID(doc, anchorTrends))
	if !strings.Contains(trends, "No significant change.") {
		t.Errorf("trends over an unchanged history do not say no significant change:\n%.600s", trends)
	}
	if strings.Contains(trends, "regression") && !strings.Contains(trends, "0 significant") {
		// "regression" may only appear in prose, never as a verdict.
		walk(byID(doc, anchorTrends), func(n *html.Node) {
			if c, _ := attr(n, "class"); c == "verdict-regression" {
				t.Errorf("an unchanged history flags a regression: %s", textOf(n.Parent))
			}
		})
	}
}

func TestRenderWithoutInputsSaysSo(t *testing.T) {
	var b bytes.Buffer
	if err := Render(&b, Inputs{}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"No bench results were given", "No conformance matrix was given"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("an empty report does not say %q", s)
		}
	}
}
