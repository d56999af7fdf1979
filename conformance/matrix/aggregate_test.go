package matrix

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/onsi/ginkgo/v2/types"
)

// specBuilder makes synthetic ginkgo spec reports shaped like the suite's:
// datapath container, category container, case container labelled with
// the item, and an It.
type specBuilder struct{ line int }

func (b *specBuilder) spec(dp, item, text string, state types.SpecState, msg string) types.SpecReport {
	b.line++
	labels := [][]string{{DatapathLabelPrefix + dp}, {"category:X"}, nil}
	if item != "" {
		labels[2] = []string{item}
	}
	return types.SpecReport{
		ContainerHierarchyTexts:  []string{DatapathLabelPrefix + dp, "A. Something", item + " a case"},
		ContainerHierarchyLabels: labels,
		LeafNodeType:             types.NodeTypeIt,
		LeafNodeText:             text,
		LeafNodeLocation:         types.CodeLocation{FileName: "/build/conformance/flows_test.go", LineNumber: 100 + b.line},
		State:                    state,
		Failure:                  types.Failure{Message: msg},
		RunTime:                  time.Second,
	}
}

func report(specs ...types.SpecReport) types.Report {
	return types.Report{
		SuiteSucceeded: true,
		SuiteConfig:    types.SuiteConfig{ParallelTotal: 2},
		SpecReports:    specs,
	}
}

func mustLookup(t *testing.T, m *Matrix, item, dp string) Result {
	t.Helper()
	r, ok := m.Lookup(item, dp)
	if !ok {
		t.Fatalf("no result for %s on %s; results: %+v", item, dp, m.Results)
	}
	return r
}

func TestAggregatePassFailSkip(t *testing.T) {
	var b specBuilder
	m := FromReport(report(
		b.spec("iptables", "CIP-01", "pod to ClusterIP", types.SpecStatePassed, ""),
		b.spec("iptables", "CIP-01", "pod to ClusterIP over UDP", types.SpecStatePassed, ""),

		b.spec("iptables", "CIP-02", "spread", types.SpecStatePassed, ""),
		b.spec("iptables", "CIP-02", "spread from a node", types.SpecStateFailed, "endpoint pod-b1 never answered"),
		b.spec("iptables", "CIP-02", "after the failure", types.SpecStateSkipped, "Spec skipped because an earlier spec in an ordered container failed"),

		// Skip() in BeforeAll: the first spec carries the reason, the
		// others ginkgo's generic message.
		b.spec("iptables", "CIP-11", "sctp 1", types.SpecStateSkipped, "kernel lacks SCTP sockets"),
		b.spec("iptables", "CIP-11", "sctp 2", types.SpecStateSkipped, "Spec skipped because Skip() was called in BeforeAll"),

		// Timed out counts as failed and says so.
		b.spec("iptables", "NP-01", "slow", types.SpecStateTimedout, "A spec timeout occurred"),
	), Env{Kernel: "6.18.0"}, Options{})

	if r := mustLookup(t, m, "CIP-01", "iptables"); r.Status != StatusPass || r.Reason != "" || r.Duration != 2*time.Second ||
		r.Specs != (Counts{Passed: 2}) || r.Category != "A" {
		t.Errorf("CIP-01 = %+v, want a pass of 2 specs in 2s, category A", r)
	}
	r := mustLookup(t, m, "CIP-02", "iptables")
	if r.Status != StatusFail || r.Reason != "endpoint pod-b1 never answered" || r.Specs != (Counts{Passed: 1, Failed: 1, Skipped: 1}) {
		t.Errorf("CIP-02 = %+v, want fail with the failure message", r)
	}
	if !strings.HasSuffix(r.Spec, "spread from a node") || r.Location != "flows_test.go:104" {
		t.Errorf("CIP-02 names spec %q at %q, want the failing spec at flows_test.go:104", r.Spec, r.Location)
	}
	if r := mustLookup(t, m, "CIP-11", "iptables"); r.Status != StatusSkip || r.Reason != "kernel lacks SCTP sockets" {
		t.Errorf("CIP-11 = %+v, want skip with the real reason, not ginkgo's generic one", r)
	}
	if r := mustLookup(t, m, "NP-01", "iptables"); r.Status != StatusFail || !strings.HasPrefix(r.Reason, "timedout: ") {
		t.Errorf("NP-01 = %+v, want fail saying it timed out", r)
	}
	if !m.Failed() {
		t.Error("Failed() = false with failed items")
	}
	if m.Env.ParallelProcesses != 2 || m.Env.Kernel != "6.18.0" || m.Version != Version {
		t.Errorf("env/version not carried: %+v version %d", m.Env, m.Version)
	}
}

func TestAggregateEveryItemAppearsMissingOrBenchmark(t *testing.T) {
	var b specBuilder
	m := FromReport(report(
		b.spec("iptables", "CIP-01", "a", types.SpecStatePassed, ""),
		b.spec("nftables", "CIP-01", "a", types.SpecStatePassed, ""),
	), Env{}, Options{})

	items := Items()
	if got, want := len(m.Results), 2*len(items); got != want {
		t.Fatalf("%d results, want %d (every item × 2 datapaths)", got, want)
	}
	for _, dp := range []string{"iptables", "nftables"} {
		for _, it := range items {
			r := mustLookup(t, m, it.ID, dp)
			switch {
			case it.ID == "CIP-01":
				if r.Status != StatusPass {
					t.Errorf("%s on %s = %s", it.ID, dp, r.Status)
				}
			case it.Benchmark:
				if r.Status != StatusSkip || r.Reason != BenchmarkOwner {
					t.Errorf("benchmark %s on %s = %+v, want skip owned by the load generator", it.ID, dp, r)
				}
			default:
				if r.Status != StatusMissing || !strings.Contains(r.Reason, it.ID) {
					t.Errorf("%s on %s = %+v, want missing", it.ID, dp, r)
				}
			}
		}
	}
	if m.Failed() {
		t.Error("Failed() = true: missing items are gaps, not failures")
	}
}

func TestAggregateDeviation(t *testing.T) {
	var b specBuilder
	withEntry := b.spec("nftables", "CIP-06", "unallocated => DROP (documented nftables divergence)", types.SpecStatePassed, "")
	withEntry.ReportEntries = types.ReportEntries{{Name: DeviationEntry, Value: types.WrapEntryValue(`kube-proxy nftables: "Drop traffic to unallocated ClusterIPs"`)}}
	failedWithEntry := b.spec("nftables", "NP-02", "secondary => PASS (documented nftables divergence)", types.SpecStateFailed, "answered by pod-a1")
	failedWithEntry.ReportEntries = types.ReportEntries{{Name: DeviationEntry, Value: types.WrapEntryValue("nodeport-addresses=primary")}}

	rep := report(
		withEntry,
		b.spec("nftables", "CIP-06", "plain", types.SpecStatePassed, ""),
		failedWithEntry,
		b.spec("nftables", "NP-04", "localhost [cases_nodeport.go:187]", types.SpecStatePassed, ""),
		b.spec("iptables", "NP-04", "localhost [cases_nodeport.go:187]", types.SpecStatePassed, ""),
	)
	// In a parallel run the primary process sees specs decoded from JSON:
	// the entry's value must survive that.
	raw, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var decoded types.Report
	if err := json.Unmarshal(raw, &decoded); err != nil {
		t.Fatal(err)
	}
	lookup := func(s types.SpecReport, dp string) string {
		if dp == "nftables" && strings.Contains(s.LeafNodeText, "[cases_nodeport.go:187]") {
			return "nftables never serves localhost NodePorts"
		}
		return ""
	}
	for name, r := range map[string]types.Report{"in-process": rep, "decoded": decoded} {
		m := FromReport(r, Env{}, Options{Deviation: lookup})
		if r := mustLookup(t, m, "CIP-06", "nftables"); r.Status != StatusDeviation ||
			r.Reason != `documented nftables divergence: kube-proxy nftables: "Drop traffic to unallocated ClusterIPs"` ||
			!strings.Contains(r.Spec, "unallocated") {
			t.Errorf("%s: CIP-06 = %+v, want deviation from the report entry", name, r)
		}
		if r := mustLookup(t, m, "NP-02", "nftables"); r.Status != StatusFail || r.Reason != "answered by pod-a1" {
			t.Errorf("%s: NP-02 = %+v, want fail: a deviation counts only when it passes", name, r)
		}
		if r := mustLookup(t, m, "NP-04", "nftables"); r.Status != StatusDeviation || !strings.Contains(r.Reason, "never serves localhost") {
			t.Errorf("%s: NP-04 on nftables = %+v, want deviation from the lookup", name, r)
		}
		if r := mustLookup(t, m, "NP-04", "iptables"); r.Status != StatusPass {
			t.Errorf("%s: NP-04 on iptables = %+v, want pass", name, r)
		}
	}
}

func TestAggregatePartialSkipStillPasses(t *testing.T) {
	var b specBuilder
	m := FromReport(report(
		b.spec("iptables", "DS-03", "tcp", types.SpecStatePassed, ""),
		b.spec("iptables", "DS-03", "udp", types.SpecStatePassed, ""),
		b.spec("iptables", "DS-03", "sctp", types.SpecStateSkipped, "kernel lacks SCTP sockets"),
	), Env{}, Options{})
	r := mustLookup(t, m, "DS-03", "iptables")
	if r.Status != StatusPass || r.Reason != "1 of 3 specs skipped: kernel lacks SCTP sockets" {
		t.Errorf("DS-03 = %+v, want pass noting the skipped spec", r)
	}
}

func TestAggregateFilteredAndNotRun(t *testing.T) {
	var b specBuilder
	rep := report(
		b.spec("iptables", "CIP-01", "a", types.SpecStatePassed, ""),
		// Filtered out: skipped with no message.
		b.spec("iptables", "CIP-02", "b", types.SpecStateSkipped, ""),
		b.spec("nftables", "CIP-01", "a", types.SpecStateSkipped, ""),
		b.spec("nftables", "CIP-02", "b", types.SpecStateSkipped, ""),
	)
	rep.SuiteConfig.LabelFilter = "datapath:iptables && CIP-01"
	m := FromReport(rep, Env{}, Options{})
	if dps := m.Datapaths(); len(dps) != 1 || dps[0] != "iptables" {
		t.Errorf("datapaths = %v, want only iptables: nftables was filtered out entirely", dps)
	}
	r := mustLookup(t, m, "CIP-02", "iptables")
	if r.Status != StatusSkip || !strings.Contains(r.Reason, `filtered out by the label filter "datapath:iptables && CIP-01"`) ||
		r.Specs != (Counts{NotRun: 1}) || r.Duration != 0 {
		t.Errorf("CIP-02 = %+v, want skip saying it was filtered out", r)
	}
	if m.Env.LabelFilter != rep.SuiteConfig.LabelFilter {
		t.Errorf("label filter not recorded: %q", m.Env.LabelFilter)
	}

	// Without a filter, a spec that never started was cut short.
	rep.SuiteConfig.LabelFilter = ""
	m = FromReport(rep, Env{}, Options{})
	if r := mustLookup(t, m, "CIP-02", "iptables"); r.Status != StatusSkip || !strings.Contains(r.Reason, "suite stopped before it") {
		t.Errorf("CIP-02 without filter = %+v", r)
	}
}

func TestAggregatePendingAndSuiteFailures(t *testing.T) {
	var b specBuilder
	rep := report(
		b.spec("iptables", "AFF-01", "sticky", types.SpecStatePending, ""),
		b.spec("iptables", "", "a spec without an item label", types.SpecStatePassed, ""),
		b.spec("iptables", "ZZZ-01", "an item CONFORMANCE.md does not list", types.SpecStatePassed, ""),
		types.SpecReport{LeafNodeType: types.NodeTypeBeforeSuite, State: types.SpecStateFailed, Failure: types.Failure{Message: "no netns"},
			LeafNodeLocation: types.CodeLocation{FileName: "/x/suite_test.go", LineNumber: 7}},
	)
	rep.SpecialSuiteFailureReasons = []string{"Detected pending specs and --fail-on-pending is set"}
	m := FromReport(rep, Env{}, Options{})
	if r := mustLookup(t, m, "AFF-01", "iptables"); r.Status != StatusSkip || !strings.HasPrefix(r.Reason, "pending") {
		t.Errorf("AFF-01 = %+v, want skip: pending", r)
	}
	if len(m.Unassigned) != 1 || !strings.HasSuffix(m.Unassigned[0], "a spec without an item label") {
		t.Errorf("Unassigned = %q", m.Unassigned)
	}
	if r := mustLookup(t, m, "ZZZ-01", "iptables"); r.Status != StatusPass {
		t.Errorf("ZZZ-01 = %+v, want an extra pass", r)
	}
	if len(m.SuiteFailures) != 2 || !strings.Contains(m.SuiteFailures[1], "no netns") || !strings.Contains(m.SuiteFailures[1], "suite_test.go:7") {
		t.Errorf("SuiteFailures = %q", m.SuiteFailures)
	}
	if !m.Failed() {
		t.Error("Failed() = false with suite failures")
	}
}

func TestAggregateSpecWithTwoItems(t *testing.T) {
	var b specBuilder
	s := b.spec("iptables", "EPC-01", "ready preferred", types.SpecStateFailed, "terminating endpoint answered")
	s.LeafNodeLabels = []string{"EPC-04"}
	m := FromReport(report(s), Env{}, Options{})
	for _, item := range []string{"EPC-01", "EPC-04"} {
		if r := mustLookup(t, m, item, "iptables"); r.Status != StatusFail {
			t.Errorf("%s = %+v, want fail: the spec counts toward both items", item, r)
		}
	}
}

func TestTruncateKeepsRunes(t *testing.T) {
	s := strings.Repeat("⇒", 10) // 3 bytes each
	got := truncate(s, 10)
	if !strings.HasPrefix(got, "⇒⇒⇒…") {
		t.Errorf("truncate = %q, want whole runes then the marker", got)
	}
	if truncate("short", 10) != "short" {
		t.Error("truncate changed a short string")
	}
}
