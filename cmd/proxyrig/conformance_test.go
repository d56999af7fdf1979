package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"proxyrig/conformance/matrix"
	"proxyrig/datapaths"
)

// These tests need no root: they drive `proxyrig conformance` against a
// stand-in for the compiled suite and synthetic matrices.

func TestSuiteArgv(t *testing.T) {
	o := conformanceOptions{datapath: "iptables", backend: "nft", labelFilter: "NP-04 || NP-05", out: "/o",
		suite: "/b/proxyrig-conformance.test", ginkgo: "/b/ginkgo", procs: 2, timeout: 30 * time.Minute}
	got := suiteArgv(o, false)
	want := []string{"/b/ginkgo", "run", "-p", "--procs=2", "--fail-on-pending", "--fail-on-empty", "--timeout=30m0s",
		"--junit-report=conformance-junit.xml", "--output-dir=/o", "--label-filter=datapath:iptables && (NP-04 || NP-05)", "--no-color",
		"/b/proxyrig-conformance.test", "--", "-test.run=^TestConformance$", "-matrix-out=/o/conformance-matrix.json", "-iptables-backend=nft"}
	if !slices.Equal(got, want) {
		t.Errorf("parallel argv:\n got %q\nwant %q", got, want)
	}

	// No ginkgo CLI (or one process): the test binary runs serially.
	o.ginkgo, o.backend, o.labelFilter, o.verbose = "", "", "", true
	got = suiteArgv(o, true)
	want = []string{"/b/proxyrig-conformance.test", "-test.run=^TestConformance$", "-ginkgo.fail-on-pending", "-ginkgo.fail-on-empty",
		"-ginkgo.timeout=30m0s", "-ginkgo.junit-report=/o/conformance-junit.xml", "-ginkgo.label-filter=datapath:iptables",
		"-ginkgo.v", "-matrix-out=/o/conformance-matrix.json"}
	if !slices.Equal(got, want) {
		t.Errorf("serial argv:\n got %q\nwant %q", got, want)
	}

	// Every datapath: no label filter at all.
	o.datapath = ""
	if got := strings.Join(suiteArgv(o, true), " "); strings.Contains(got, "label-filter") {
		t.Errorf("argv without --datapath filters: %s", got)
	}
}

// fakeSuite is a stand-in for the compiled suite: it writes the given
// matrix and a JUnit report where the flags say, and exits with code.
func fakeSuite(t *testing.T, m *matrix.Matrix, code int) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "matrix.json")
	if err := m.Save(src); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`#!/bin/sh
for a in "$@"; do
	case "$a" in
	-matrix-out=*) cp %q "${a#-matrix-out=}" ;;
	-ginkgo.junit-report=*) printf '<?xml version="1.0"?>\n<testsuites><testsuite name="s"><testcase name="a"></testcase></testsuite></testsuites>\n' > "${a#-ginkgo.junit-report=}" ;;
	esac
done
echo "suite progress"
exit %d
`, src, code)
	path := filepath.Join(dir, "proxyrig-conformance.test")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func sampleMatrix(status string) *matrix.Matrix {
	return &matrix.Matrix{
		Version: matrix.Version,
		Env:     matrix.Env{Kernel: "6.18.0", IPTablesBackend: "legacy"},
		Results: []matrix.Result{
			{Item: "CIP-01", Category: "A", Datapath: "iptables", Status: matrix.StatusPass},
			{Item: "CIP-02", Category: "A", Datapath: "iptables", Status: status, Reason: "endpoint pod-b1 never answered"},
			{Item: "CT-04", Category: "D", Datapath: "iptables", Status: matrix.StatusMissing, Reason: "no spec in the suite covers CT-04 on iptables"},
		},
	}
}

func TestRunSuiteSerially(t *testing.T) {
	out := t.TempDir()
	// A stale matrix from an earlier run must not survive.
	stale := sampleMatrix(matrix.StatusFail)
	if err := stale.Save(filepath.Join(out, conformanceMatrixFile)); err != nil {
		t.Fatal(err)
	}
	o := conformanceOptions{datapath: "iptables", out: out, suite: fakeSuite(t, sampleMatrix(matrix.StatusPass), 0), procs: 1, timeout: time.Minute}
	var progress bytes.Buffer
	m, code, err := runSuite(context.Background(), o, &progress)
	if err != nil {
		t.Fatalf("runSuite: %v\n%s", err, progress.String())
	}
	if code != 0 || m.Failed() {
		t.Errorf("code %d, failed %v; want a passing run", code, m.Failed())
	}
	if !strings.Contains(progress.String(), "suite progress") || !strings.Contains(progress.String(), "-ginkgo.label-filter=datapath:iptables") {
		t.Errorf("progress does not show the suite's output and command:\n%s", progress.String())
	}

	var table bytes.Buffer
	if err := printMatrix(&table, m, o, &code); err != nil {
		t.Errorf("printMatrix of a passing run: %v", err)
	}
	for _, want := range []string{"  CIP-02  Multiple", "  CT-04   Conntrack cleanup is precise", " ?\n", "Legend:", "Matrix: " + filepath.Join(out, conformanceMatrixFile)} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
}

func TestRunSuiteFailures(t *testing.T) {
	o := conformanceOptions{out: t.TempDir(), procs: 1, timeout: time.Minute}

	// A failed item fails the command.
	o.suite = fakeSuite(t, sampleMatrix(matrix.StatusFail), 1)
	m, code, err := runSuite(context.Background(), o, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	err = printMatrix(&table, m, o, &code)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 {
		t.Errorf("printMatrix with a failed item = %v, want exit status 1", err)
	}
	if !strings.Contains(table.String(), "endpoint pod-b1 never answered") {
		t.Errorf("the failure's reason is not listed:\n%s", table.String())
	}

	// A suite that failed with no failed item (a crash) fails it too.
	if err := exitFor(sampleMatrix(matrix.StatusPass), 2); !errors.As(err, &ee) || ee.code != 1 {
		t.Errorf("exitFor(suite status 2) = %v, want exit status 1", err)
	}

	// Asking for a datapath the suite has no tree for is an error, not an
	// empty green table.
	o.datapath = "nosuch"
	zero := 0
	if err := printMatrix(&bytes.Buffer{}, sampleMatrix(matrix.StatusPass), o, &zero); err == nil || !strings.Contains(err.Error(), `no spec ran for datapath "nosuch"`) {
		t.Errorf("printMatrix for an absent datapath = %v", err)
	}

	// A suite that writes nothing is reported with its exit status.
	empty := filepath.Join(t.TempDir(), "proxyrig-conformance.test")
	if err := os.WriteFile(empty, []byte("#!/bin/sh\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	o.suite = empty
	if _, _, err := runSuite(context.Background(), o, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("runSuite with a suite that wrote nothing = %v", err)
	}

	// No compiled suite: say how to build one.
	o.suite = filepath.Join(t.TempDir(), "absent.test")
	if _, _, err := runSuite(context.Background(), o, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "make build") {
		t.Errorf("runSuite without a suite = %v", err)
	}
}

func TestCheckJUnit(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.xml", `<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="2"><testsuite name="x" tests="2"><testcase name="a"></testcase><testcase name="b"><skipped message="kernel lacks SCTP sockets"/></testcase></testsuite></testsuites>`)
	if n, err := checkJUnit(good); err != nil || n != 2 {
		t.Errorf("checkJUnit(good) = %d, %v", n, err)
	}
	for name, body := range map[string]string{
		"truncated.xml": `<testsuites><testsuite name="x"><testcase name="a">`,
		"empty.xml":     `<testsuites></testsuites>`,
		"other.xml":     `<html></html>`,
	} {
		if _, err := checkJUnit(write(name, body)); err == nil {
			t.Errorf("checkJUnit(%s) accepted it", name)
		}
	}
	if _, err := checkJUnit(filepath.Join(dir, "absent.xml")); err == nil {
		t.Error("checkJUnit of a missing file succeeded")
	}
}

func TestVMFixable(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{&datapaths.NotSupportedError{Datapath: "ipvs", Reason: "kernel lacks IPVS"}, "kernel lacks IPVS"},
		{fmt.Errorf("check: %w", &datapaths.NotSupportedError{Datapath: "x", Reason: "kernel lacks dummy interfaces"}), "kernel lacks dummy interfaces"},
		// The guest runs the host's own tools: a missing binary stays missing.
		{&datapaths.NotSupportedError{Datapath: "nftables", Reason: "nft not found"}, ""},
		{errors.New("kernel lacks IPVS"), ""}, // not a NotSupportedError
		{nil, ""},
	} {
		if got := vmFixable(c.err); got != c.want {
			t.Errorf("vmFixable(%v) = %q, want %q", c.err, got, c.want)
		}
	}
	if !kernelHasIPVS() {
		if got := needsVM(context.Background(), "ipvs", ""); got != "kernel lacks IPVS" {
			t.Errorf("needsVM(ipvs) on a kernel without IPVS = %q", got)
		}
	}
	if got := needsVM(context.Background(), "no-such-datapath", ""); got != "" {
		t.Errorf("needsVM(unknown) = %q, want none", got)
	}
}

func TestVMHints(t *testing.T) {
	t.Setenv("PROXYRIG_EMULATED", "")
	m := &matrix.Matrix{Version: matrix.Version, Results: []matrix.Result{
		{Item: "CIP-01", Datapath: "ipvs", Status: matrix.StatusSkip, Reason: "ipvs: not supported on this machine: kernel lacks IPVS"},
		{Item: "CIP-01", Datapath: "iptables", Status: matrix.StatusPass},
		{Item: "CIP-11", Datapath: "iptables", Status: matrix.StatusSkip, Reason: "kernel lacks SCTP sockets"},
	}}
	var buf bytes.Buffer
	writeVMHints(&buf, m)
	got := buf.String()
	if !strings.Contains(got, "proxyrig conformance --datapath ipvs") || !strings.Contains(got, "proxyrig vm -- proxyrig conformance --datapath ipvs") {
		t.Errorf("no VM hint for ipvs:\n%s", got)
	}
	if !strings.Contains(got, "proxyrig conformance --vm --datapath iptables --label-filter 'CIP-11'") {
		t.Errorf("no VM hint for iptables' SCTP item:\n%s", got)
	}
	if strings.Contains(got, "proxyrig conformance --datapath iptables") {
		t.Errorf("whole-datapath hint for iptables, which ran:\n%s", got)
	}
	t.Setenv("PROXYRIG_EMULATED", "1")
	buf.Reset()
	writeVMHints(&buf, m)
	if buf.Len() != 0 {
		t.Errorf("hint inside the VM:\n%s", buf.String())
	}
}

func TestShellQuote(t *testing.T) {
	got := shellQuote([]string{"/b/ginkgo", "--label-filter=datapath:iptables && (NP-04)", "it's", ""})
	want := `/b/ginkgo '--label-filter=datapath:iptables && (NP-04)' 'it'\''s' ''`
	if got != want {
		t.Errorf("shellQuote = %s, want %s", got, want)
	}
}
