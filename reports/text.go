package reports

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// WriteText prints the ranking for a terminal: every datapath in order,
// each cost at the profile's scale with how it was obtained, the
// conformance gaps in the needed items, then the facts and notes.
func (r Ranking) WriteText(w io.Writer) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "Recommendation for %s\n", r.Profile)
	if best := r.Best(); best != "" {
		fmt.Fprintf(bw, "Pick: %s\n%s\n", best, r.Why())
	} else {
		fmt.Fprintf(bw, "Pick: none can be recommended on measurements (see below)\n")
	}
	for _, n := range r.Notes {
		fmt.Fprintf(bw, "Note: %s\n", n)
	}
	for _, rd := range r.Ranked {
		fmt.Fprintf(bw, "\n%2d. %-12s score %.2f (lower is better)%s\n", rd.Rank, rd.Datapath, rd.Score, tierText(rd.Tier))
		for _, c := range rd.Costs {
			val, vs, how := costColumns(c)
			fmt.Fprintf(bw, "    %-32s %12s  %-12s %s\n", c.Name, val, vs, how)
		}
		if rd.SyncDuty != nil {
			fmt.Fprintf(bw, "    %-32s %12s  %-12s %s\n", "sync duty at this churn", fmt.Sprintf("%.3f CPU", rd.SyncDuty.Value), "", kindText(*rd.SyncDuty))
		}
		for _, g := range rd.Gaps {
			item := g.Item
			if item == "" {
				item = "-"
			}
			fmt.Fprintf(bw, "    conformance %-8s %-9s (%s) %s\n", item, g.Status, g.Need, oneLine(g.Reason, 100))
		}
		for _, warning := range rd.Warnings {
			fmt.Fprintf(bw, "    ! %s\n", warning)
		}
	}
	if len(r.Facts) > 0 {
		fmt.Fprintf(bw, "\nFacts to weigh beside the ranking:\n")
		for _, f := range r.Facts {
			src := ""
			if f.Source != "" {
				src = " [" + f.Source + "]"
			}
			fmt.Fprintf(bw, "  - %s: %s%s\n", f.Datapath, f.Text, src)
		}
	}
	return bw.Flush()
}

func tierText(t int) string {
	switch t {
	case TierUnmeasured:
		return "  NOT MEASURED: ranked below every measured datapath"
	case TierFailsANeed:
		return "  FAILS A NEEDED ITEM: ranked last"
	}
	return ""
}

// costColumns formats a cost as value, comparison with the best, and how
// the value was obtained.
func costColumns(c Cost) (val, vs, how string) {
	if c.Missing {
		return "—", "", "not measured: counted as worse than the worst"
	}
	val = formatValue(c.Estimate.Value, c.Unit)
	vs = "best"
	if c.Ratio > 1.0001 {
		vs = formatRatio(c.Ratio) + " best"
	}
	how = kindText(c.Estimate)
	if c.Basis != "" {
		how += "; " + c.Basis
	}
	return val, vs, how
}

func kindText(e Estimate) string {
	switch e.Kind {
	case "extrapolated":
		return "EXTRAPOLATED (" + e.Note + ")"
	case "interpolated":
		lo, hi := e.From[0].Services, e.From[len(e.From)-1].Services
		s := fmt.Sprintf("interpolated between %s and %s", humanCount(lo), humanCount(hi))
		if e.Note != "" {
			s += "; " + e.Note
		}
		return s
	}
	s := "measured"
	if e.Note != "" {
		s += "; " + e.Note
	}
	return s
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len([]rune(s)) > n {
		s = string([]rune(s)[:n-1]) + "…"
	}
	return s
}
