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
	"flag"
	"os"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	// Datapaths under test register themselves in init. Add new ones here.
	_ "proxyrig/datapaths/iptables"
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
