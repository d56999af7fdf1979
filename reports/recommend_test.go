package reports

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"

	"proxyrig/conformance/matrix"
	"proxyrig/loadgen"
)

func rankOf(t *testing.T, rk Ranking, dp string) Ranked {
	t.Helper()
	for _, r := range rk.Ranked {
		if r.Datapath == dp {
			return r
		}
	}
	t.Fatalf("%s is not ranked", dp)
	return Ranked{}
}

func costOf(t *testing.T, r Ranked, name string) Cost {
	t.Helper()
	c := r.CostNamed(name)
	if c == nil {
		t.Fatalf("%s has no cost %q", r.Datapath, name)
	}
	return *c
}

// ebpf is the cheapest in the fixture, but fails AFF-04: a cluster that
// needs affinity must not be told to pick it.
func TestRecommendFailingNeededItemRanksBelow(t *testing.T) {
	ev := fixtureInputs(t).Evidence()
	p := DefaultProfile()
	if got := Recommend(p, ev).Best(); got != "ebpf" {
		t.Fatalf("without needs, best = %q, want ebpf", got)
	}
	p.Needs = []string{"affinity"}
	rk := Recommend(p, ev)
	if rk.Best() == "ebpf" {
		t.Fatal("ebpf recommended although it fails a needed item (AFF-04)")
	}
	last := rk.Ranked[len(rk.Ranked)-1]
	if last.Datapath != "ebpf" || last.Tier != TierFailsANeed {
		t.Errorf("last = %s (tier %d), want ebpf failing a need", last.Datapath, last.Tier)
	}
	var gap *Gap
	for i, g := range last.Gaps {
		if g.Item == "AFF-04" {
			gap = &last.Gaps[i]
		}
	}
	if gap == nil || gap.Status != matrix.StatusFail || gap.Need != "affinity" || gap.Anchor != "cf-AFF-04-ebpf" {
		t.Errorf("AFF-04 gap = %+v, want a fail of need affinity linking to its detail", gap)
	}
	if len(last.Warnings) == 0 || !strings.Contains(last.Warnings[0], "fails 1 needed") {
		t.Errorf("warnings = %q", last.Warnings)
	}
}

// A deviation counts only when the item is needed.
func TestRecommendDeviationCountsWhenNeeded(t *testing.T) {
	ev := fixtureInputs(t).Evidence()
	p := DefaultProfile()
	without := rankOf(t, Recommend(p, ev), "nftables")
	p.Needs = []string{"nodeport"}
	with := rankOf(t, Recommend(p, ev), "nftables")
	if d := with.Score - without.Score; math.Abs(d-penaltyDeviation) > 1e-9 {
		t.Errorf("needing nodeport changed nftables' score by %v, want the NP-02 deviation's %v", d, penaltyDeviation)
	}
}

func TestRecommendMarksExtrapolation(t *testing.T) {
	// The native run only: the VM run stops at 1k Services, so anything
	// above is extrapolated for ipvs.
	in := fixtureInputs(t)
	var native []*loadgen.Results
	for _, r := range in.Bench {
		if !r.Run.Env.Emulated {
			native = append(native, r)
		}
	}
	ev := NewEvidence(native, in.allMatrices()...)
	for _, tc := range []struct {
		services int
		kind     string
	}{{1000, "measured"}, {2000, "interpolated"}, {50000, "extrapolated"}, {50, "extrapolated"}} {
		p := DefaultProfile()
		p.Services = tc.services
		rk := Recommend(p, ev)
		c := costOf(t, rankOf(t, rk, "iptables"), "full sync")
		if c.Estimate.Kind != tc.kind {
			t.Errorf("%d Services: kind %q, want %q", tc.services, c.Estimate.Kind, tc.kind)
		}
		hasNote := false
		for _, n := range rk.Notes {
			hasNote = hasNote || strings.Contains(n, "extrapolated")
		}
		if (tc.kind == "extrapolated") != hasNote {
			t.Errorf("%d Services: extrapolation note present = %v", tc.services, hasNote)
		}
		var b bytes.Buffer
		if err := rk.WriteText(&b); err != nil {
			t.Fatal(err)
		}
		if (tc.kind == "extrapolated") != strings.Contains(b.String(), "EXTRAPOLATED") {
			t.Errorf("%d Services: terminal output marks extrapolation = %v:\n%s", tc.services, tc.kind != "extrapolated", b.String())
		}
	}
}

// Interpolation and extrapolation follow power laws on log-log axes.
func TestEstimateAtLogLog(t *testing.T) {
	pts := []sample{{N: 100, V: 1}, {N: 1000, V: 10}, {N: 10000, V: 1000}}
	for _, tc := range []struct {
		n    int
		want float64
		kind string
	}{
		{1000, 10, "measured"},
		{316, math.Pow(10, math.Log10(316)-2), "interpolated"},
		{3162, math.Pow(10, 1+2*(math.Log10(3162)-3)), "interpolated"},
		{100000, 100000, "extrapolated"}, // slope 2 continued
		{10, 0.1, "extrapolated"},        // slope 1 continued downward
	} {
		e, ok := estimateAt(pts, tc.n, growLinear)
		if !ok || e.Kind != tc.kind || math.Abs(e.Value-tc.want) > 1e-6*tc.want {
			t.Errorf("at %d: %+v, want %v (%s)", tc.n, e, tc.want, tc.kind)
		}
	}
	// A falling cost is not extrapolated to fall further.
	e, _ := estimateAt([]sample{{N: 100, V: 10}, {N: 1000, V: 5}}, 10000, growLinear)
	if e.Value != 5 || !strings.Contains(e.Note, "clamped") {
		t.Errorf("falling series extrapolated to %v (%q), want 5, clamped", e.Value, e.Note)
	}
	// One scale: the assumed growth, flagged.
	e, _ = estimateAt([]sample{{N: 100, V: 2}}, 1000, growLinear)
	if e.Value != 20 || e.Kind != "extrapolated" || !strings.Contains(e.Note, "single") {
		t.Errorf("single point: %+v", e)
	}
}

// A datapath with conformance results but no bench figures ranks below
// every measured one, however clean its conformance.
func TestRecommendUnmeasuredRanksBelowMeasured(t *testing.T) {
	in := fixtureInputs(t)
	m := fixtureMatrix([]string{"newpath"}, false, time.Now())
	ev := NewEvidence(in.Bench, append(in.allMatrices(), m)...)
	rk := Recommend(DefaultProfile(), ev)
	r := rankOf(t, rk, "newpath")
	if r.Tier != TierUnmeasured {
		t.Errorf("newpath tier = %d, want unmeasured", r.Tier)
	}
	for _, o := range rk.Ranked {
		if o.Tier == TierRanked && o.Rank > r.Rank {
			t.Errorf("measured %s ranks below unmeasured newpath", o.Datapath)
		}
	}
	for _, c := range r.Costs {
		if !c.Missing {
			t.Errorf("newpath has a cost %q it never measured", c.Name)
		}
	}
}

// ipvs, measured only in the VM, gets comparable values only by its ratio
// to iptables in the same VM run, and says so.
func TestRecommendEmulatedByRatio(t *testing.T) {
	ev := fixtureInputs(t).Evidence()
	rk := Recommend(DefaultProfile(), ev)
	r := rankOf(t, rk, "ipvs")
	if !r.EmulatedOnly {
		t.Error("ipvs not marked emulated-only")
	}
	c := costOf(t, r, "full sync")
	if c.Missing || !strings.Contains(c.Basis, "iptables") {
		t.Fatalf("ipvs full sync: %+v", c)
	}
	// The fixture's VM is 6× slower; ipvs' model is 30/8 × iptables at 100
	// Services with a flatter slope. The ratio at 1k in the VM, applied to
	// iptables' native figure, lands between the two native values; an
	// absolute emulated time (6× slower) would not.
	ipt := costOf(t, rankOf(t, rk, "iptables"), "full sync").Estimate.Value
	if c.Estimate.Value < ipt || c.Estimate.Value > 3*ipt {
		t.Errorf("ipvs full sync %v vs iptables %v: not a ratio-scaled value", c.Estimate.Value, ipt)
	}
	// Without a reference measured both ways there is no comparable value.
	var vmOnly []*loadgen.Results
	for _, r := range ev.Runs {
		if r.Run.Env.Emulated {
			cp := *r
			cp.Figures = nil
			for _, f := range r.Figures {
				if f.Datapath == "ipvs" {
					cp.Figures = append(cp.Figures, f)
				}
			}
			vmOnly = append(vmOnly, &cp)
		} else {
			vmOnly = append(vmOnly, r)
		}
	}
	r2 := rankOf(t, Recommend(DefaultProfile(), NewEvidence(vmOnly, ev.Matrices...)), "ipvs")
	if r2.Tier != TierUnmeasured {
		t.Errorf("ipvs without a VM reference: tier %d, want unmeasured", r2.Tier)
	}
}

func TestRecommendChurnDuty(t *testing.T) {
	ev := fixtureInputs(t).Evidence()
	p := DefaultProfile()
	p.ChurnPerSec = 0
	calm := Recommend(p, ev)
	p.ChurnPerSec = 50
	busy := Recommend(p, ev)
	ipt := rankOf(t, busy, "iptables")
	if ipt.SyncDuty == nil || ipt.SyncDuty.Value < 1 {
		t.Fatalf("iptables at 50 changes/s: duty %+v, want ≥ 1 CPU", ipt.SyncDuty)
	}
	if !strings.Contains(strings.Join(ipt.Warnings, " "), "cannot keep up") {
		t.Errorf("no warning about churn: %q", ipt.Warnings)
	}
	if rankOf(t, calm, "iptables").SyncDuty != nil {
		t.Error("a duty without churn")
	}
}

func TestParseNeeds(t *testing.T) {
	got, err := ParseNeeds(" affinity, etp-local,affinity ")
	if err != nil || strings.Join(got, ",") != "affinity,etp-local" {
		t.Errorf("ParseNeeds = %v, %v", got, err)
	}
	if _, err := ParseNeeds("affinity,teleport"); err == nil || !strings.Contains(err.Error(), "teleport") {
		t.Errorf("unknown need: err = %v", err)
	}
	// Every need names real CONFORMANCE.md items.
	for _, n := range Needs() {
		for _, it := range n.Items {
			if _, ok := matrix.ItemByID(it); !ok {
				t.Errorf("need %s names unknown item %s", n.Name, it)
			}
		}
	}
}

func TestFactsPointAtEvidence(t *testing.T) {
	ev := fixtureInputs(t).Evidence()
	rk := Recommend(DefaultProfile(), ev)
	want := map[string]string{"ipvs": "KEP-5495", "nftables": "KEP-3866", "ebpf": "tcx", "iptables": "legacy"}
	for dp, s := range want {
		found := false
		for _, f := range rk.Facts {
			if f.Datapath == dp && (strings.Contains(f.Source, s) || strings.Contains(f.Text, s)) {
				found = true
				if f.Anchor == "" {
					t.Errorf("fact about %s has no anchor", dp)
				}
			}
		}
		if !found {
			t.Errorf("no fact about %s mentioning %s", dp, s)
		}
	}
	for _, f := range rk.Facts {
		if f.Datapath == "nftables" && strings.Contains(f.Text, "NP-02") && f.Anchor != "cf-NP-02-nftables" {
			t.Errorf("the NodePort fact points at %q, not the NP-02 detail", f.Anchor)
		}
	}
}

func TestKernelVersion(t *testing.T) {
	for in, want := range map[string][2]int{"6.18.44-fc-v595": {6, 18}, "5.15.0-91-generic": {5, 15}, "6.6": {6, 6}} {
		a, b, ok := kernelVersion(in)
		if !ok || a != want[0] || b != want[1] {
			t.Errorf("kernelVersion(%q) = %d.%d %v", in, a, b, ok)
		}
	}
}

func TestGapTally(t *testing.T) {
	gaps := func(statuses ...string) Ranked {
		var r Ranked
		for _, s := range statuses {
			r.Gaps = append(r.Gaps, Gap{Status: s})
		}
		return r
	}
	for _, c := range []struct {
		r    Ranked
		want string
	}{
		{gaps(), "no gaps in needed items"},
		{gaps(matrix.StatusDeviation), "1 deviation"},
		{gaps(matrix.StatusDeviation, matrix.StatusDeviation, matrix.StatusFail), "1 failure, 2 deviations"},
		{gaps(matrix.StatusSkip, matrix.StatusSkip, "not run"), "2 skipped, 1 not run"},
	} {
		if got := c.r.GapTally(); got != c.want {
			t.Errorf("GapTally = %q, want %q", got, c.want)
		}
	}
}
