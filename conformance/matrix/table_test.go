package matrix

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/onsi/ginkgo/v2/types"
)

func TestWriteTable(t *testing.T) {
	m := &Matrix{
		Version:   Version,
		Generated: time.Date(2025, 11, 22, 21, 5, 0, 0, time.UTC),
		Env:       Env{Kernel: "6.18.0", IPTablesBackend: "legacy"},
		Results: []Result{
			{Item: "CIP-01", Category: "A", Datapath: "iptables", Status: StatusPass},
			{Item: "CIP-01", Category: "A", Datapath: "nftables", Status: StatusPass},
			{Item: "CIP-05", Category: "A", Datapath: "iptables", Status: StatusPass},
			{Item: "CIP-05", Category: "A", Datapath: "nftables", Status: StatusDeviation, Spec: "wrong port => REJECT", Location: "flows_test.go:70",
				Reason: `documented nftables divergence: kube-proxy nftables: "Reject traffic to invalid ports of ClusterIPs"`},
			{Item: "CIP-11", Category: "A", Datapath: "iptables", Status: StatusSkip, Reason: "kernel lacks SCTP sockets"},
			{Item: "CIP-11", Category: "A", Datapath: "nftables", Status: StatusSkip, Reason: "kernel lacks SCTP sockets"},
			{Item: "NP-02", Category: "E", Datapath: "iptables", Status: StatusFail, Spec: "external to the secondary address", Location: "flows_test.go:80",
				Reason: "want FWD(pod-a1)\n\n  3× timed out", Specs: Counts{Passed: 3, Failed: 1}},
			{Item: "NP-02", Category: "E", Datapath: "nftables", Status: StatusPass},
			{Item: "CT-01", Category: "D", Datapath: "iptables", Status: StatusMissing, Reason: "no spec in the suite covers CT-01 on iptables"},
			{Item: "CT-01", Category: "D", Datapath: "nftables", Status: StatusMissing, Reason: "no spec in the suite covers CT-01 on nftables"},
		},
	}
	var buf bytes.Buffer
	if err := m.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	want := `Conformance matrix: kernel 6.18.0, iptables backend legacy, native, 2025-11-22 21:05 UTC

  ITEM    TITLE                                                     iptables    nftables
A. ClusterIP basics
  CIP-01  Pod→ClusterIP is DNATed to an endpoint without SNAT       ✓           ✓
  CIP-05  Wrong port / wrong protocol on a live ClusterIP is not …  ✓           ≈
  CIP-11  SCTP services                                             -           -
D. Conntrack behaviour & endpoint churn
  CT-01   UDP flows re-steer after their endpoint is removed (sta…  ?           ?
E. NodePort
  NP-02   Which node addresses accept NodePorts                     ✗           ✓

Legend: ✓ pass   ≈ deviation (a documented kube-proxy divergence)   ✗ fail   - skip   ? missing (no spec)
iptables: 2 pass, 0 deviation, 1 fail, 1 skip, 1 missing
nftables: 2 pass, 1 deviation, 0 fail, 1 skip, 1 missing

Failures:
  ✗ NP-02 on iptables (1 of 4 specs failed)
      spec: external to the secondary address [flows_test.go:80]
      want FWD(pod-a1)
        3× timed out

Deviations (documented kube-proxy divergences):
  ≈ CIP-05 on nftables
      spec: wrong port => REJECT [flows_test.go:70]
      documented nftables divergence: kube-proxy nftables: "Reject traffic to invalid ports of ClusterIPs"

Skipped:
  - kernel lacks SCTP sockets
      iptables: CIP-11
      nftables: CIP-11

Missing (no spec covers the item):
  iptables: CT-01
  nftables: CT-01
`
	if diff := cmp.Diff(want, buf.String()); diff != "" {
		t.Errorf("table (-want +got):\n%s", diff)
	}
}

// An item no spec covers must be visible in the table, never absent.
func TestWriteTableShowsMissingItems(t *testing.T) {
	var b specBuilder
	m := FromReport(report(b.spec("iptables", "CIP-01", "a", types.SpecStatePassed, "")), Env{}, Options{})
	var buf bytes.Buffer
	if err := m.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, it := range Items() {
		if !strings.Contains(out, "  "+it.ID+" ") {
			t.Errorf("item %s has no row", it.ID)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "  CT-04 ") && !strings.HasSuffix(line, "?") {
			t.Errorf("CT-04 row %q does not show ? (missing)", line)
		}
		if strings.HasPrefix(line, "  SYNC-07 ") && !strings.HasSuffix(line, "-") {
			t.Errorf("SYNC-07 row %q does not show - (benchmark, skipped)", line)
		}
	}
	if !strings.Contains(out, "Missing (no spec covers the item):\n  iptables: CIP-02 CIP-03") {
		t.Errorf("missing items are not listed:\n%s", out)
	}
	if !strings.Contains(out, "  - "+BenchmarkOwner+"\n      iptables: SYNC-05 SYNC-06 SYNC-07\n") {
		t.Errorf("benchmarks are not listed as skipped with their owner:\n%s", out)
	}
}

func TestWriteTableEmpty(t *testing.T) {
	m := &Matrix{Version: Version, SuiteFailures: []string{"Detected pending specs"}}
	var buf bytes.Buffer
	if err := m.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	if out := buf.String(); !strings.Contains(out, "No results") || !strings.Contains(out, "✗ Detected pending specs") {
		t.Errorf("empty matrix printed:\n%s", out)
	}
}

func TestReasonLines(t *testing.T) {
	long := strings.Repeat("x", 500)
	got := reasonLines("a\n\n" + long + "\nb\nc\nd\ne\nf\ng")
	if len(got) != reasonMaxLines+1 || got[len(got)-1] != "…" {
		t.Errorf("reasonLines = %q, want %d lines and an ellipsis", got, reasonMaxLines)
	}
	if n := len([]rune(got[1])); n != reasonLineWidth {
		t.Errorf("long line is %d runes, want %d", n, reasonLineWidth)
	}
	if got := reasonLines(" "); len(got) != 1 || got[0] != "(no reason recorded)" {
		t.Errorf("reasonLines(blank) = %q", got)
	}
}

func TestClipMiddle(t *testing.T) {
	s := "datapath:iptables B. No endpoints " + strings.Repeat("x", 200) + " [cases_noendpoints.go:377]"
	got := clipMiddle(s, 60)
	if n := len([]rune(got)); n != 60 {
		t.Errorf("clipMiddle gave %d runes, want 60", n)
	}
	if !strings.HasPrefix(got, "datapath:iptables") || !strings.HasSuffix(got, "[cases_noendpoints.go:377]") || !strings.Contains(got, "…") {
		t.Errorf("clipMiddle = %q, want both ends kept", got)
	}
	if clipMiddle("short", 60) != "short" {
		t.Error("clipMiddle changed a short string")
	}
}
