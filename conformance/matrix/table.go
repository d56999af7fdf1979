package matrix

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"
)

// Symbols are the table's one-character statuses.
var Symbols = map[string]string{
	StatusPass:      "✓",
	StatusDeviation: "≈",
	StatusFail:      "✗",
	StatusSkip:      "-",
	StatusMissing:   "?",
}

// Legend explains Symbols.
const Legend = "Legend: ✓ pass   ≈ deviation (a documented kube-proxy divergence)   ✗ fail   - skip   ? missing (no spec)"

// Table layout.
const (
	titleWidth       = 56 // runes of an item's title before "…"
	reasonLineWidth  = 160
	reasonMaxLines   = 6
	datapathMinWidth = 8
)

// WriteTable prints the matrix for a terminal: items as rows grouped by
// category, datapaths as columns, a legend and tallies, then every failure
// and deviation with its reason, the skip reasons, and the missing items.
func (m *Matrix) WriteTable(w io.Writer) error {
	bw := bufio.NewWriter(w)
	dps := m.Datapaths()
	fmt.Fprintf(bw, "Conformance matrix: kernel %s, iptables backend %s, %s", orUnknown(m.Env.Kernel), orUnknown(m.Env.IPTablesBackend), m.Env.Where())
	if !m.Generated.IsZero() {
		fmt.Fprintf(bw, ", %s", m.Generated.UTC().Format("2006-01-02 15:04 UTC"))
	}
	fmt.Fprintln(bw)
	if m.Env.LabelFilter != "" {
		fmt.Fprintf(bw, "Label filter: %s\n", m.Env.LabelFilter)
	}
	fmt.Fprintln(bw)
	if len(dps) == 0 {
		fmt.Fprintln(bw, "No results: no spec ran for any datapath.")
		m.writeSuiteFailures(bw)
		return bw.Flush()
	}

	idWidth := len("ITEM")
	for _, r := range m.Results {
		idWidth = max(idWidth, utf8.RuneCountInString(r.Item))
	}
	colWidth := make([]int, len(dps))
	for i, dp := range dps {
		colWidth[i] = max(datapathMinWidth, utf8.RuneCountInString(dp)) + 2
	}
	row := func(id, title string, cells []string) {
		line := "  " + pad(id, idWidth) + "  " + pad(title, titleWidth)
		for i, c := range cells {
			line += "  " + pad(c, colWidth[i])
		}
		fmt.Fprintln(bw, strings.TrimRight(line, " "))
	}
	row("ITEM", "TITLE", dps)

	titles := map[string]string{}
	for _, it := range Items() {
		titles[it.ID] = it.Title
	}
	lastCategory := "\x00"
	for _, id := range m.itemIDs() {
		cat := ""
		if c, ok := CategoryOf(id); ok {
			cat = c.Letter + ". " + c.Title
		}
		if cat != lastCategory {
			fmt.Fprintln(bw, cmpOr(cat, "Other"))
			lastCategory = cat
		}
		title := cmpOr(titles[id], "(not in CONFORMANCE.md)")
		cells := make([]string, len(dps))
		for i, dp := range dps {
			cells[i] = " "
			if r, ok := m.Lookup(id, dp); ok {
				cells[i] = Symbols[r.Status]
			}
		}
		row(id, clip(title, titleWidth), cells)
	}
	fmt.Fprintln(bw)
	fmt.Fprintln(bw, Legend)
	for _, dp := range dps {
		t := m.Tally(dp)
		var parts []string
		for _, s := range Statuses() {
			parts = append(parts, fmt.Sprintf("%d %s", t[s], s))
		}
		fmt.Fprintf(bw, "%s: %s\n", dp, strings.Join(parts, ", "))
	}

	m.writeDetails(bw, StatusFail, "Failures")
	m.writeDetails(bw, StatusDeviation, "Deviations (documented kube-proxy divergences)")
	m.writeGrouped(bw, StatusSkip, "Skipped")
	m.writeGrouped(bw, StatusMissing, "Missing (no spec covers the item)")
	if len(m.Unassigned) > 0 {
		fmt.Fprintf(bw, "\nSpecs without an item label (they count toward no item):\n")
		for _, s := range m.Unassigned {
			fmt.Fprintf(bw, "  %s\n", clip(s, reasonLineWidth))
		}
	}
	m.writeSuiteFailures(bw)
	return bw.Flush()
}

// writeDetails lists each result of one status with its spec and reason.
func (m *Matrix) writeDetails(w io.Writer, status, heading string) {
	var rs []Result
	for _, r := range m.Results {
		if r.Status == status {
			rs = append(rs, r)
		}
	}
	if len(rs) == 0 {
		return
	}
	fmt.Fprintf(w, "\n%s:\n", heading)
	for _, r := range rs {
		fmt.Fprintf(w, "  %s %s on %s", Symbols[status], r.Item, r.Datapath)
		if status == StatusFail {
			fmt.Fprintf(w, " (%d of %d specs failed)", r.Specs.Failed, r.Specs.Total()-r.Specs.NotRun)
		}
		fmt.Fprintln(w)
		if r.Spec != "" {
			loc := ""
			if r.Location != "" {
				loc = " [" + r.Location + "]"
			}
			fmt.Fprintf(w, "      spec: %s%s\n", clipMiddle(r.Spec, reasonLineWidth), loc)
		}
		for _, line := range reasonLines(r.Reason) {
			fmt.Fprintf(w, "      %s\n", line)
		}
	}
}

// writeGrouped lists the results of one status grouped by reason, since
// skips and gaps usually share a handful of reasons.
func (m *Matrix) writeGrouped(w io.Writer, status, heading string) {
	type group struct {
		reason string
		byDP   map[string][]string
	}
	var groups []*group
	for _, r := range m.Results {
		if r.Status != status {
			continue
		}
		reason := r.Reason
		if status == StatusMissing {
			reason = "" // every one says "no spec covers X on D"
		}
		i := slices.IndexFunc(groups, func(g *group) bool { return g.reason == reason })
		if i < 0 {
			groups = append(groups, &group{reason: reason, byDP: map[string][]string{}})
			i = len(groups) - 1
		}
		groups[i].byDP[r.Datapath] = append(groups[i].byDP[r.Datapath], r.Item)
	}
	if len(groups) == 0 {
		return
	}
	fmt.Fprintf(w, "\n%s:\n", heading)
	for _, g := range groups {
		indent := "  "
		if g.reason != "" {
			lines := reasonLines(g.reason)
			fmt.Fprintf(w, "  %s %s\n", Symbols[status], lines[0])
			for _, l := range lines[1:] {
				fmt.Fprintf(w, "    %s\n", l)
			}
			indent = "      "
		}
		for _, dp := range m.Datapaths() {
			if items := g.byDP[dp]; len(items) > 0 {
				fmt.Fprintf(w, "%s%s: %s\n", indent, dp, strings.Join(items, " "))
			}
		}
	}
}

func (m *Matrix) writeSuiteFailures(w io.Writer) {
	if len(m.SuiteFailures) == 0 {
		return
	}
	fmt.Fprintf(w, "\nSuite failures:\n")
	for _, f := range m.SuiteFailures {
		for i, line := range reasonLines(f) {
			if i == 0 {
				fmt.Fprintf(w, "  ✗ %s\n", line)
			} else {
				fmt.Fprintf(w, "    %s\n", line)
			}
		}
	}
}

// itemIDs lists the matrix's items: CONFORMANCE.md's in order, then any
// others the results carry.
func (m *Matrix) itemIDs() []string {
	have := map[string]bool{}
	for _, r := range m.Results {
		have[r.Item] = true
	}
	var ids []string
	for _, it := range Items() {
		if have[it.ID] {
			ids = append(ids, it.ID)
			delete(have, it.ID)
		}
	}
	var rest []string
	for id := range have {
		rest = append(rest, id)
	}
	slices.Sort(rest)
	return append(ids, rest...)
}

// reasonLines is a reason cut to a few non-empty lines that fit a
// terminal.
func reasonLines(s string) []string {
	var out []string
	for line := range strings.SplitSeq(strings.TrimSpace(s), "\n") {
		line = strings.TrimRight(line, " \t")
		if strings.TrimSpace(line) == "" {
			continue
		}
		if len(out) == reasonMaxLines {
			out = append(out, "…")
			break
		}
		out = append(out, clip(line, reasonLineWidth))
	}
	if len(out) == 0 {
		out = []string{"(no reason recorded)"}
	}
	return out
}

// clip shortens s to n runes, ending in "…" when cut.
func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// clipMiddle shortens s to n runes by cutting out its middle: a spec's
// text starts with its item and ends with its table row, both worth
// keeping.
func clipMiddle(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	head := (n - 1) / 3
	tail := n - 1 - head
	return string(r[:head]) + "…" + string(r[len(r)-tail:])
}

// pad right-pads s with spaces to n runes.
func pad(s string, n int) string {
	if c := utf8.RuneCountInString(s); c < n {
		return s + strings.Repeat(" ", n-c)
	}
	return s
}

func orUnknown(s string) string { return cmpOr(s, "unknown") }

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
