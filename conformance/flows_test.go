package conformance

import (
	"fmt"
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"proxyrig/conformance/matrix"
	"proxyrig/datapaths"
	"proxyrig/datapaths/fake"
	"proxyrig/datapaths/flowtest"
	"proxyrig/model"
	"proxyrig/topologies/vm"
)

// The spec tree is built once per registered datapath, from the same
// tables: a datapath joins the suite by registering itself (and being
// imported in conformance_suite_test.go), nothing else.
var _ = describeDatapaths()

// excluded are registered names that are not datapaths under test.
var excluded = []string{fake.Name}

func describeDatapaths() bool {
	for _, dp := range datapaths.Names() {
		if slices.Contains(excluded, dp) {
			continue
		}
		Describe("datapath:"+dp, Label("datapath:"+dp), func() {
			for _, cat := range flowtest.Categories() {
				Describe(fmt.Sprintf("%s. %s", cat.Letter, cat.Title), Label("category:"+cat.Prefix), func() {
					for _, c := range cat.Cases() {
						describeCase(dp, c)
					}
				})
			}
			// Items that are behaviours over time rather than single
			// flows (conntrack, affinity, health checks, sync).
			for _, b := range behaviourCategories() {
				Describe(fmt.Sprintf("%s. %s", b.Letter, b.Title), Label("category:"+b.Prefix), func() {
					b.Specs(dp)
				})
			}
		})
	}
	return true
}

// Time limits. They bound a hung spec; no assertion depends on how fast
// anything is. Inside the VM runner (emulated CPU, several times slower,
// and a busy host makes it slower still) the bound is five times longer:
// a limit is there to catch a hang, never a slow machine.
var (
	buildTimeout = emulatedScale(3 * time.Minute)
	specTimeout  = emulatedScale(3 * time.Minute)
)

func emulatedScale(d time.Duration) time.Duration {
	if vm.Emulated() {
		return 5 * d
	}
	return d
}

// describeCase is one case: a lab shared read-only by the case's flows
// (Ordered + BeforeAll), and its steps applied in order. Every spec applies
// the cluster state it needs before sending, so a focused or filtered run of
// a single spec still sees the right state.
func describeCase(dp string, c flowtest.Case) {
	labels := Label(c.ID)
	if slices.Contains(c.Protocols(), model.SCTP) {
		// SCTP cases can only run where the kernel has SCTP sockets, i.e.
		// in the VM runner; the label lets make test select them there.
		labels = Label(c.ID, "proto:SCTP")
	}
	Describe(c.Title(), Ordered, labels, func() {
		var h *harness
		BeforeAll(func(ctx SpecContext) {
			h = newHarness(ctx, dp, &c)
		}, NodeTimeout(buildTimeout))

		if c.Concurrent {
			It(fmt.Sprintf("sends all %d flows at once [%s]", len(c.Flows), c.Line), func(ctx SpecContext) {
				h.ensureStep(ctx, -1)
				h.checkConcurrent(ctx, c.Flows)
			}, SpecTimeout(specTimeout))
		} else {
			for _, f := range c.Flows {
				It(flowText(dp, "", f), func(ctx SpecContext) {
					h.ensureStep(ctx, -1)
					checkFlow(ctx, h, dp, f)
				}, SpecTimeout(specTimeout))
			}
		}
		for i, s := range c.Then {
			for _, f := range s.Flows {
				It(flowText(dp, s.Name, f), func(ctx SpecContext) {
					h.ensureStep(ctx, i)
					checkFlow(ctx, h, dp, f)
				}, SpecTimeout(specTimeout))
			}
			if len(s.FreePorts) > 0 {
				It(fmt.Sprintf("after %s: the node holds no socket on %s [%s]", s.Name, portList(s.FreePorts), s.Line), func(ctx SpecContext) {
					h.ensureStep(ctx, i)
					h.checkPortsFree(ctx, s.FreePorts)
				}, SpecTimeout(specTimeout))
			}
		}
	})
}

// flowText names a flow's spec: what is sent, what must happen on this
// datapath, and the table row.
func flowText(dp, step string, f flowtest.Flow) string {
	want, why := f.Expect.For(dp)
	s := f.String() + " => " + want.String()
	if why != "" {
		s += " (documented " + dp + " divergence)"
	}
	if f.ImplementationDefined != "" {
		s += " (implementation-defined: recorded, not judged)"
	}
	if step != "" {
		s = "after " + step + ": " + s
	}
	return s + " [" + f.Line + "]"
}

// reportImplementationDefined names the report entry that records what a
// datapath did with a flow whose outcome Kubernetes leaves open.
const reportImplementationDefined = "implementation-defined"

// checkFlow sends a flow's traffic and checks it. A flow whose outcome is
// implementation-defined (ETP-06) is still sent and compared with
// kube-proxy's; the outcome is recorded in the report, and a difference
// makes the item a deviation in the matrix rather than a failure:
// Kubernetes does not require kube-proxy's answer there.
func checkFlow(ctx SpecContext, h *harness, dp string, f flowtest.Flow) {
	if f.ImplementationDefined == "" {
		h.check(ctx, f)
		return
	}
	want, _ := f.Expect.For(dp)
	err := InterceptGomegaFailure(func() { h.check(ctx, f) })
	if err == nil {
		AddReportEntry(reportImplementationDefined, fmt.Sprintf("%s: as kube-proxy (%s)", f, want))
		return
	}
	msg := fmt.Sprintf("%s: differs from kube-proxy's %s, which Kubernetes does not require (%s): %v", f, want, f.ImplementationDefined, err)
	By(msg)
	AddReportEntry(reportImplementationDefined, msg)
	AddReportEntry(matrix.DeviationEntry, "implementation-defined, differs from kube-proxy: "+f.ImplementationDefined)
}

func portList(ps []flowtest.PortProto) string {
	var s []string
	for _, p := range ps {
		s = append(s, fmt.Sprintf("%d/%s", p.Port, p.Proto))
	}
	return strings.Join(s, ", ")
}
