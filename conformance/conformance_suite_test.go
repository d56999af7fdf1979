// Package conformance checks every registered datapath against Kubernetes'
// Service semantics with real packets: for each case of the shared
// packet-flow tables (datapaths/flowtest) it builds a lab of network
// namespaces, programs the datapath on every node, and sends traffic from
// the case's sources. One spec tree is instantiated per datapath, labelled
// "datapath:<name>", so
//
//	go test ./conformance -ginkgo.label-filter=datapath:iptables
//
// runs the suite against one of them. See README.md.
package conformance

import (
	"bytes"
	"cmp"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
	. "github.com/onsi/gomega"

	"proxyrig/conformance/matrix"
	"proxyrig/datapaths/flowtest"

	// Datapaths under test register themselves in init. Add new ones here.
	_ "proxyrig/datapaths/ebpf"
	_ "proxyrig/datapaths/iptables"
	_ "proxyrig/datapaths/ipvs"
	_ "proxyrig/datapaths/nftables"
)

// iptablesBackend picks the iptables flavour ("legacy", "nft") for
// datapaths built on iptables: go test ./conformance -iptables-backend=nft.
var iptablesBackend = flag.String("iptables-backend", "", "iptables backend for iptables-based datapaths: legacy (default) or nft")

func TestConformance(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Service datapath conformance")
}

// inCI is true when the environment variable CI is "true": then a skip of
// something this machine can run is a failure, so a broken environment
// cannot pass for a green run.
func inCI() bool { return os.Getenv("CI") == "true" }

// skipUnlessCI skips with reason, or fails when running in CI, for things
// this machine could run but the current environment prevents.
func skipUnlessCI(reason string) {
	if inCI() {
		Fail("CI=true and this would be skipped: " + reason)
	}
	Skip(reason)
}

// requireRoot skips (or fails in CI) when the suite cannot make namespaces.
func requireRoot() {
	if os.Geteuid() != 0 {
		skipUnlessCI("conformance needs root to create network namespaces (run as root, e.g. sudo -E go test ./conformance)")
	}
}

// The conformance matrix (conformance/matrix): item × datapath → pass, fail,
// skip, deviation or missing, written after every run for the CLI and the
// reports. See README.md, "The matrix".

// matrixOut is where the matrix goes: go test ./conformance -matrix-out=FILE.
var matrixOut = flag.String("matrix-out", "", "write the conformance matrix (JSON) to this file (default: $OUT/conformance-matrix.json, else out/conformance-matrix.json at the repository root)")

// matrixFile is the default name of the matrix in its directory.
const matrixFile = "conformance-matrix.json"

// In a parallel run ReportAfterSuite runs once, on process 1, with every
// process's spec reports: the matrix is written once and covers them all.
var _ = ReportAfterSuite("conformance matrix", func(r Report) {
	m := matrix.FromReport(r, matrix.DetectEnv(*iptablesBackend), matrix.Options{Deviation: flowDeviation})
	path := matrixPath()
	Expect(m.Save(path)).To(Succeed(), "write the conformance matrix")
	fmt.Fprintf(GinkgoWriter, "conformance matrix: %s\n", path)
})

// matrixPath resolves -matrix-out's default. go test runs the suite in
// the package directory, so a relative $OUT, like the Makefile's "out", is
// taken from the repository root.
func matrixPath() string {
	if *matrixOut != "" {
		return *matrixOut
	}
	base := repoRoot()
	if base == "" {
		base, _ = os.Getwd()
	}
	out := cmp.Or(os.Getenv("OUT"), "out")
	if !filepath.IsAbs(out) {
		out = filepath.Join(base, out)
	}
	return filepath.Join(out, matrixFile)
}

// repoRoot is the nearest directory at or above the working directory
// holding proxyrig's go.mod, or "" (a compiled suite run elsewhere).
func repoRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.HasPrefix(b, []byte("module proxyrig\n")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// recordDeviation marks the running spec as holding the datapath to a
// per-datapath expectation that kube-proxy itself documents (CONFORMANCE.md
// Appendix 1), with the reason. If the spec passes, its item is a
// deviation in the matrix rather than a plain pass. Specs built from
// packet-flow table rows need not call it: flowDeviation finds their
// overrides from the row.
func recordDeviation(why string) {
	AddReportEntry(matrix.DeviationEntry, why, ReportEntryVisibilityFailureOrVerbose)
}

// rowTag is the "[cases_nodeport.go:123]" that ends the text of a spec
// built from a packet-flow table row (flowText), or of a case's
// concurrent spec.
var rowTag = regexp.MustCompile(`\[([^\[\]\s]+\.go:[0-9]+)\]\s*$`)

// flowRows maps each table row's Line to its flows: a flow's own row, and
// a case's row to all the case's flows (the concurrent spec sends them all).
var flowRows = sync.OnceValue(func() map[string][]flowtest.Flow {
	rows := map[string][]flowtest.Flow{}
	for _, c := range flowtest.All() {
		for _, f := range c.AllFlows() {
			rows[f.Line] = append(rows[f.Line], f)
			rows[c.Line] = append(rows[c.Line], f)
		}
	}
	return rows
})

// flowDeviation returns the documented divergence a table-row spec ran
// under on datapath dp, or "": the reason of every override for dp on the
// row's flows.
func flowDeviation(s types.SpecReport, dp string) string {
	tag := rowTag.FindStringSubmatch(s.LeafNodeText)
	if tag == nil {
		return ""
	}
	var whys []string
	for _, f := range flowRows()[tag[1]] {
		if _, why := f.Expect.For(dp); why != "" && !slices.Contains(whys, why) {
			whys = append(whys, why)
		}
	}
	return strings.Join(whys, "; ")
}
