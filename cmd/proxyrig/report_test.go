package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// These tests need no root: `proxyrig report` and `proxyrig recommend`
// read the reports package's fixtures.

const reportFixtures = "../../reports/testdata"

func TestParseChurn(t *testing.T) {
	for in, want := range map[string]float64{"5": 5, "5/s": 5, "0.5/s": 0.5, "300/min": 5, " 12 / s ": 12} {
		got, err := parseChurn(in)
		if err != nil || got != want {
			t.Errorf("parseChurn(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "fast", "-1", "5/h"} {
		if _, err := parseChurn(in); err == nil {
			t.Errorf("parseChurn(%q) accepted", in)
		}
	}
}

func TestRunReport(t *testing.T) {
	out := filepath.Join(t.TempDir(), "sub", "report.html")
	// Flags after the directory, as `proxyrig report DIR --out FILE`.
	err := runReport(context.Background(), []string{"--history", filepath.Join(reportFixtures, "history"),
		"--services", "5000", filepath.Join(reportFixtures, "results"), "--need", "affinity", "--out", out})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"5k Services × 5 endpoints", "needs affinity", `id="trends"`, `id="conformance"`} {
		if !strings.Contains(string(b), s) {
			t.Errorf("report lacks %q", s)
		}
	}
	// A history directory without runs yet (the first night) is no error.
	if err := runReport(context.Background(), []string{"--out", out, "--history", t.TempDir(), filepath.Join(reportFixtures, "results")}); err != nil {
		t.Errorf("empty history: %v", err)
	}
}

func TestRunReportUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"--need", "teleport", "x"}, {"--services", "0", "x"}} {
		if err := runReport(context.Background(), args); err == nil {
			t.Errorf("report %q: no error", args)
		}
	}
	if err := runRecommend(context.Background(), []string{"--results", t.TempDir()}); err == nil {
		t.Error("recommend from an empty directory: no error")
	}
}

func TestRunRecommend(t *testing.T) {
	// runRecommend prints to stdout; capture it through a pipe.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	done := make(chan string)
	go func() {
		var b strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		done <- b.String()
	}()
	err = runRecommend(context.Background(), []string{"--services", "10000", "--churn", "5/s", "--need", "affinity,etp-local", "--results", filepath.Join(reportFixtures, "results")})
	os.Stdout = stdout
	w.Close()
	text := <-done
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"Recommendation for 10k Services × 5 endpoints, 5 changes/s, needs affinity, etp-local", "Pick: ", "EXTRAPOLATED", "AFF-04", "KEP-5495"} {
		if !strings.Contains(text, s) {
			t.Errorf("output lacks %q:\n%s", s, text)
		}
	}
	if strings.Contains(text, "Pick: ebpf") {
		t.Errorf("recommends ebpf, which fails the needed AFF-04:\n%s", text)
	}
}
