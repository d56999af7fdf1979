package conformance

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/onsi/ginkgo/v2/types"

	"proxyrig/datapaths/flowtest"
)

// TestFlowDeviationFindsEveryOverride ties the matrix to the spec names: for
// every table row with a per-datapath override, the spec flowText names
// must lead flowDeviation to the override's reason on that datapath, and to
// nothing on the others. It needs no root.
func TestFlowDeviationFindsEveryOverride(t *testing.T) {
	overrides := 0
	for _, c := range flowtest.All() {
		for _, f := range c.AllFlows() {
			for _, dp := range []string{"iptables", "nftables", "ipvs", "ebpf"} {
				_, want := f.Expect.For(dp)
				s := types.SpecReport{LeafNodeText: flowText(dp, "", f)}
				if got := flowDeviation(s, dp); got != want {
					t.Errorf("%s %s on %s: flowDeviation = %q, want %q", f.Line, f, dp, got, want)
				}
				if want != "" {
					overrides++
				}
			}
		}
	}
	if overrides == 0 {
		t.Error("no table row has a per-datapath override: the test checks nothing")
	}
}

func TestFlowDeviationIgnoresOtherSpecs(t *testing.T) {
	for _, text := range []string{
		"",
		"health check answers 200",
		"[cases_nodeport.go:999999]",            // no such row
		"sends [cases_nodeport.go:12] and more", // tag not at the end
	} {
		if got := flowDeviation(types.SpecReport{LeafNodeText: text}, "nftables"); got != "" {
			t.Errorf("flowDeviation(%q) = %q, want none", text, got)
		}
	}
}

func TestMatrixPathDefault(t *testing.T) {
	old := *matrixOut
	t.Cleanup(func() { *matrixOut = old })

	*matrixOut = "/somewhere/m.json"
	if got := matrixPath(); got != "/somewhere/m.json" {
		t.Errorf("with -matrix-out: %s", got)
	}
	// A repository of its own, so that the test runs the same from a
	// compiled suite anywhere.
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("module proxyrig\n\ngo 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pkg := filepath.Join(root, "conformance")
	if err := os.Mkdir(pkg, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(pkg)
	*matrixOut = ""
	t.Setenv("OUT", "")
	if got := repoRoot(); got != root {
		t.Fatalf("repoRoot = %q, want %q", got, root)
	}
	if got, want := matrixPath(), filepath.Join(root, "out", matrixFile); got != want {
		t.Errorf("default = %s, want %s", got, want)
	}
	t.Setenv("OUT", "build/results")
	if got, want := matrixPath(), filepath.Join(root, "build/results", matrixFile); got != want {
		t.Errorf("relative OUT = %s, want %s", got, want)
	}
	t.Setenv("OUT", "/abs/out")
	if got := matrixPath(); !strings.HasPrefix(got, "/abs/out/") {
		t.Errorf("absolute OUT = %s", got)
	}

	// Outside any repository: ./out.
	elsewhere := t.TempDir()
	t.Chdir(elsewhere)
	t.Setenv("OUT", "")
	if got, want := matrixPath(), filepath.Join(elsewhere, "out", matrixFile); got != want {
		t.Errorf("outside a repository = %s, want %s", got, want)
	}
}
