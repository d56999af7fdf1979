package matrix

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/onsi/ginkgo/v2/types"
	"golang.org/x/sys/unix"
)

// DeviationEntry names the ginkgo report entry a spec adds when it holds the
// datapath to a per-datapath expectation that kube-proxy documents
// (CONFORMANCE.md Appendix 1); the entry's value is the reason:
//
//	AddReportEntry(matrix.DeviationEntry, why)
//
// A spec that passes with such an entry makes its item a deviation.
const DeviationEntry = "conformance-deviation"

// DatapathLabelPrefix starts the label of each datapath's spec tree
// ("datapath:iptables").
const DatapathLabelPrefix = "datapath:"

// itemLabel matches CONFORMANCE.md item IDs used as spec labels.
var itemLabel = regexp.MustCompile(`^[A-Z]+-[0-9]+$`)

// maxReason caps a reason's length: failure messages can carry whole
// gomega dumps, and the matrix is read by tables and reports, not debuggers
// (the JUnit report keeps the full text).
const maxReason = 4000

// Options tune FromReport.
type Options struct {
	// Deviation, when set, returns the documented divergence a spec ran
	// under on datapath, or "". It serves specs that do not add a
	// DeviationEntry themselves: the suite looks the spec's table row up in
	// the packet-flow tables.
	Deviation func(spec types.SpecReport, datapath string) string
}

// DetectEnv describes the running machine. iptablesBackend is the suite's
// -iptables-backend flag ("" is the default, legacy).
func DetectEnv(iptablesBackend string) Env {
	env := Env{
		IPTablesBackend: cmp.Or(iptablesBackend, "legacy"),
		Emulated:        os.Getenv("PROXYRIG_EMULATED") == "1",
		Arch:            runtime.GOOS + "/" + runtime.GOARCH,
		CI:              os.Getenv("CI") == "true",
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err == nil {
		env.Kernel = unix.ByteSliceToString(uts.Release[:])
	}
	return env
}

// outcome is one spec's verdict as the matrix needs it.
type outcome struct {
	kind      string // passed, failed, skipped, notRun
	text      string
	location  string
	message   string
	deviation string
	duration  time.Duration
	items     []string
	datapaths []string
}

const (
	outcomePassed  = "passed"
	outcomeFailed  = "failed"
	outcomeSkipped = "skipped"
	outcomeNotRun  = "notRun"
)

// FromReport aggregates a ginkgo suite report (in a parallel run, the
// aggregated one ReportAfterSuite receives on process 1) into a matrix.
//
// Specs are grouped by their item label ("CIP-01") and datapath label
// ("datapath:iptables"). A datapath appears if at least one of its specs
// ran or was skipped with a reason; a datapath entirely filtered out by the
// label filter does not. For each such datapath every item of Items gets a
// result — missing when no spec covers it — and any other item label the
// suite uses gets one too.
func FromReport(r types.Report, env Env, opts Options) *Matrix {
	m := &Matrix{Version: Version, Generated: time.Now().UTC(), Env: env}
	m.Env.LabelFilter = r.SuiteConfig.LabelFilter
	m.Env.ParallelProcesses = r.SuiteConfig.ParallelTotal
	m.SuiteFailures = slices.Clone(r.SpecialSuiteFailureReasons)

	filter, err := types.ParseLabelFilter(r.SuiteConfig.LabelFilter)
	if err != nil {
		filter = nil
	}
	var outs []outcome
	for _, s := range r.SpecReports {
		if s.LeafNodeType != types.NodeTypeIt {
			if s.State.Is(types.SpecStateFailureStates) {
				m.SuiteFailures = append(m.SuiteFailures, fmt.Sprintf("%s (%s) %s: %s",
					s.LeafNodeType, shortLocation(s.LeafNodeLocation), s.State, firstNonEmpty(s.Failure.Message, s.State.String())))
			}
			continue
		}
		outs = append(outs, toOutcome(s, r.SuiteConfig, filter, opts))
	}
	slices.SortStableFunc(outs, func(a, b outcome) int {
		return cmp.Or(cmp.Compare(a.location, b.location), cmp.Compare(a.text, b.text))
	})
	m.Results, m.Unassigned = aggregate(outs)
	return m
}

// toOutcome classifies one spec.
func toOutcome(s types.SpecReport, cfg types.SuiteConfig, filter types.LabelFilter, opts Options) outcome {
	o := outcome{text: s.FullText(), location: shortLocation(s.LeafNodeLocation), duration: s.RunTime}
	for _, l := range s.Labels() {
		switch {
		case strings.HasPrefix(l, DatapathLabelPrefix):
			o.datapaths = append(o.datapaths, strings.TrimPrefix(l, DatapathLabelPrefix))
		case itemLabel.MatchString(l):
			o.items = append(o.items, l)
		}
	}
	switch {
	case s.State.Is(types.SpecStatePassed):
		o.kind = outcomePassed
		var whys []string
		for _, e := range s.ReportEntries {
			if e.Name == DeviationEntry {
				whys = appendNew(whys, entryText(e))
			}
		}
		if opts.Deviation != nil {
			for _, dp := range o.datapaths {
				whys = appendNew(whys, opts.Deviation(s, dp))
			}
		}
		o.deviation = strings.Join(whys, "; ")
	case s.State.Is(types.SpecStateFailureStates):
		o.kind = outcomeFailed
		o.message = firstNonEmpty(s.Failure.Message, s.State.String())
		if !s.State.Is(types.SpecStateFailed) {
			// Say "timedout", "panicked", "interrupted": the message alone
			// does not always.
			o.message = s.State.String() + ": " + o.message
		}
	case s.State.Is(types.SpecStatePending):
		o.kind = outcomeSkipped
		o.message = "pending: the spec is marked pending (not written yet)"
	case s.State.Is(types.SpecStateSkipped) && s.Failure.Message != "":
		o.kind = outcomeSkipped
		o.message = s.Failure.Message
	default:
		// Skipped without a reason: ginkgo never started it.
		o.kind = outcomeNotRun
		switch {
		case filter != nil && cfg.LabelFilter != "" && !filter(s.Labels()):
			o.message = fmt.Sprintf("not run: filtered out by the label filter %q", cfg.LabelFilter)
		case len(cfg.FocusStrings)+len(cfg.SkipStrings)+len(cfg.FocusFiles)+len(cfg.SkipFiles) > 0:
			o.message = "not run: not selected by -focus/-skip"
		default:
			o.message = "not run: the suite stopped before it (interrupted, timed out or failing fast)"
		}
	}
	return o
}

// aggregate groups outcomes by datapath and item and decides each result.
func aggregate(outs []outcome) ([]Result, []string) {
	type key struct{ item, dp string }
	groups := map[key][]outcome{}
	ran := map[string]bool{} // datapaths with at least one spec that started
	extra := map[string]bool{}
	var unassigned []string
	for _, o := range outs {
		for _, dp := range o.datapaths {
			if o.kind != outcomeNotRun {
				ran[dp] = true
				if len(o.items) == 0 {
					unassigned = appendNew(unassigned, o.text)
				}
			}
			for _, it := range o.items {
				groups[key{it, dp}] = append(groups[key{it, dp}], o)
				if _, ok := ItemByID(it); !ok {
					extra[it] = true
				}
			}
		}
	}
	dps := make([]string, 0, len(ran))
	for dp := range ran {
		dps = append(dps, dp)
	}
	slices.Sort(dps)

	items := Items()
	extras := make([]string, 0, len(extra))
	for it := range extra {
		extras = append(extras, it)
	}
	slices.Sort(extras)
	for _, id := range extras {
		c, _ := CategoryOf(id)
		items = append(items, Item{ID: id, Title: "(not in CONFORMANCE.md)", Category: c.Letter})
	}

	var results []Result
	for _, it := range items {
		for _, dp := range dps {
			results = append(results, decide(it, dp, groups[key{it.ID, dp}]))
		}
	}
	slices.Sort(unassigned)
	return results, unassigned
}

// decide turns one item's specs on one datapath into its result:
// any failure fails it; no spec run to a verdict skips it; a pass with a
// documented divergence is a deviation; otherwise it passes.
func decide(it Item, dp string, specs []outcome) Result {
	r := Result{Item: it.ID, Category: it.Category, Datapath: dp}
	if len(specs) == 0 {
		if it.Benchmark {
			r.Status, r.Reason = StatusSkip, BenchmarkOwner
		} else {
			r.Status, r.Reason = StatusMissing, fmt.Sprintf("no spec in the suite covers %s on %s", it.ID, dp)
		}
		return r
	}
	var firstFailed, firstDeviation, firstPassed, firstSkipped, firstNotRun *outcome
	var skipReasons, genericSkipReasons, deviations, notRunReasons []string
	for i := range specs {
		o := &specs[i]
		switch o.kind {
		case outcomePassed:
			r.Specs.Passed++
			firstPassed = cmp.Or(firstPassed, o)
			if o.deviation != "" {
				firstDeviation = cmp.Or(firstDeviation, o)
				deviations = appendNew(deviations, o.deviation)
			}
		case outcomeFailed:
			r.Specs.Failed++
			firstFailed = cmp.Or(firstFailed, o)
		case outcomeSkipped:
			r.Specs.Skipped++
			firstSkipped = cmp.Or(firstSkipped, o)
			// Ginkgo's own "Spec skipped because Skip() was called in
			// BeforeAll" follows the spec that carries the real reason.
			if strings.HasPrefix(o.message, "Spec skipped because") {
				genericSkipReasons = appendNew(genericSkipReasons, o.message)
			} else {
				skipReasons = appendNew(skipReasons, o.message)
			}
		case outcomeNotRun:
			r.Specs.NotRun++
			firstNotRun = cmp.Or(firstNotRun, o)
			notRunReasons = appendNew(notRunReasons, o.message)
		}
		if o.kind != outcomeNotRun {
			r.Duration += o.duration
		}
	}
	if len(skipReasons) == 0 {
		skipReasons = genericSkipReasons
	}
	decider := cmp.Or(firstFailed, firstDeviation, firstPassed, firstSkipped, firstNotRun)
	r.Spec, r.Location = decider.text, decider.location
	switch {
	case firstFailed != nil:
		r.Status, r.Reason = StatusFail, firstFailed.message
	case firstPassed == nil && firstSkipped != nil:
		r.Status, r.Reason = StatusSkip, strings.Join(skipReasons, "; ")
	case firstPassed == nil:
		r.Status, r.Reason = StatusSkip, strings.Join(notRunReasons, "; ")
	case firstDeviation != nil:
		r.Status, r.Reason = StatusDeviation, "documented "+dp+" divergence: "+strings.Join(deviations, "; ")
	default:
		r.Status = StatusPass
		if r.Specs.Skipped > 0 {
			r.Reason = fmt.Sprintf("%d of %d specs skipped: %s", r.Specs.Skipped, r.Specs.Passed+r.Specs.Skipped, strings.Join(skipReasons, "; "))
		}
	}
	r.Reason = truncate(r.Reason, maxReason)
	return r
}

func entryText(e types.ReportEntry) string {
	return firstNonEmpty(e.Value.String(), e.Value.Representation)
}

// shortLocation is "file.go:123": the directory is the builder's, not
// the reader's.
func shortLocation(cl types.CodeLocation) string {
	if cl.FileName == "" {
		return ""
	}
	return fmt.Sprintf("%s:%d", filepath.Base(cl.FileName), cl.LineNumber)
}

func appendNew(list []string, s string) []string {
	if s == "" || slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}

func firstNonEmpty(ss ...string) string {
	return cmp.Or(ss...)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "… (truncated; the JUnit report has the whole message)"
}
