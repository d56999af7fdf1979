package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"proxyrig/conformance/matrix"
)

// TestRunQuick runs the main job end to end at the smallest scale: one
// datapath (iptables), a handful of conformance items, one bench scale,
// and no VM (the VM runner is exercised by make conformance-vm). It needs
// root and the compiled suite (make build).
func TestRunQuick(t *testing.T) {
	if os.Geteuid() != 0 {
		skipUnlessCIRun(t, "needs root: proxyrig run builds network namespaces")
	}
	suite, _ := filepath.Abs("../../bin/" + conformanceSuiteName)
	if _, err := os.Stat(suite); err != nil {
		skipUnlessCIRun(t, "no compiled conformance suite at "+suite+" (make build)")
	}
	args := []string{"--quick", "--no-vm", "--datapaths", "iptables", "--services", "20", "--reps", "2",
		"--label-filter", "CIP-01 || NOEP-01", "--suite", suite}
	if g, _ := filepath.Abs("../../bin/ginkgo"); g != "" {
		if _, err := os.Stat(g); err == nil {
			args = append(args, "--ginkgo", g)
		}
	}
	out := filepath.Join(t.TempDir(), "run")
	args = append(args, "--out", out)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := runMain(ctx, args); err != nil {
		t.Errorf("proxyrig run %s: %v", strings.Join(args, " "), err)
	}

	html, err := os.ReadFile(filepath.Join(out, runReportFile))
	if err != nil {
		t.Fatalf("no report: %v", err)
	}
	for _, h := range []string{"Summary", "Recommendation", "Conformance matrix", "Charts", "Tables of every figure", "Environment"} {
		if !strings.Contains(string(html), "<h2>"+h) {
			t.Errorf("report lacks the section %q", h)
		}
	}
	if !strings.Contains(string(html), "iptables") {
		t.Error("report never names iptables")
	}
	m, err := matrix.Load(filepath.Join(out, runConfDir, conformanceMatrixFile))
	if err != nil {
		t.Errorf("no conformance matrix next to the report: %v", err)
	} else if r, ok := m.Lookup("CIP-01", "iptables"); !ok || r.Status != matrix.StatusPass {
		t.Errorf("CIP-01 on iptables = %+v, %v; want a pass", r, ok)
	}
	bench, _ := filepath.Glob(filepath.Join(out, runBenchDir, "bench-*.json"))
	if len(bench) == 0 {
		t.Error("no bench JSON next to the report")
	}
	for _, f := range []string{runDoctorFile, runStepsFile} {
		b, err := os.ReadFile(filepath.Join(out, f))
		if err != nil || !json.Valid(b) {
			t.Errorf("%s: missing or not JSON (%v)", f, err)
		}
	}
}

func skipUnlessCIRun(t *testing.T, reason string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true and this would be skipped: " + reason)
	}
	t.Skip(reason)
}

// TestMergeVMResults needs no root: the VM's SCTP verdicts replace the
// native skips, and combine with native items that ran in part.
func TestMergeVMResults(t *testing.T) {
	nat := &matrix.Matrix{Version: matrix.Version, Generated: time.Now().Add(-time.Hour), Results: []matrix.Result{
		{Item: "CIP-01", Datapath: "iptables", Status: matrix.StatusPass, Specs: matrix.Counts{Passed: 2}},
		{Item: "CIP-11", Datapath: "iptables", Status: matrix.StatusSkip, Reason: "kernel lacks SCTP sockets", Specs: matrix.Counts{Skipped: 1}},
		{Item: "NP-01", Datapath: "iptables", Status: matrix.StatusPass, Reason: "1 of 3 specs skipped: kernel lacks SCTP sockets", Specs: matrix.Counts{Passed: 2, Skipped: 1}},
	}}
	vmm := &matrix.Matrix{Version: matrix.Version, Generated: time.Now().Add(-time.Minute), Env: matrix.Env{Emulated: true, Kernel: "6.1.0"}, Results: []matrix.Result{
		{Item: "CIP-01", Datapath: "iptables", Status: matrix.StatusSkip, Specs: matrix.Counts{NotRun: 2}},
		{Item: "CIP-11", Datapath: "iptables", Status: matrix.StatusPass, Specs: matrix.Counts{Passed: 1}},
		{Item: "NP-01", Datapath: "iptables", Status: matrix.StatusFail, Reason: "no reply", Specs: matrix.Counts{Failed: 1, NotRun: 2}},
	}}
	m := mergeVMResults(nat, vmm)
	if !m.Generated.After(vmm.Generated) {
		t.Errorf("merged matrix dated %v, not after the VM's %v: the report would pick the VM's", m.Generated, vmm.Generated)
	}
	want := map[string]string{"CIP-01": matrix.StatusPass, "CIP-11": matrix.StatusPass, "NP-01": matrix.StatusFail}
	for item, status := range want {
		r, ok := m.Lookup(item, "iptables")
		if !ok || r.Status != status {
			t.Errorf("%s = %+v; want %s", item, r, status)
		}
	}
	if r, _ := m.Lookup("CIP-11", "iptables"); !strings.Contains(r.Reason, "VM runner") {
		t.Errorf("CIP-11 from the VM does not say so: %q", r.Reason)
	}
	if r, _ := m.Lookup("NP-01", "iptables"); r.Specs != (matrix.Counts{Passed: 2, Failed: 1}) {
		t.Errorf("NP-01 counts = %+v", r.Specs)
	}
	if r, _ := m.Lookup("CIP-11", "iptables"); nat.Results[1].Status != matrix.StatusSkip || r.Status == nat.Results[1].Status {
		t.Error("merge changed the native matrix in place")
	}
}

// TestDatapathSelection needs no root.
func TestDatapathSelection(t *testing.T) {
	if got := strings.Join(datapathSelection([]string{"iptables"}, "proto:SCTP"), " "); got != "--datapath iptables --label-filter proto:SCTP" {
		t.Errorf("one datapath: %q", got)
	}
	if got := strings.Join(datapathSelection([]string{"iptables", "nftables"}, "a || b"), " "); got != "--label-filter (datapath:iptables || datapath:nftables) && (a || b)" {
		t.Errorf("two datapaths: %q", got)
	}
}
