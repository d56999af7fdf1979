package fake_test

import (
	"slices"
	"testing"

	"proxyrig/datapaths"
	"proxyrig/datapaths/fake"
	"proxyrig/datapaths/flowtest"
	"proxyrig/model"
)

// TestFlowTablesAgainstTracer runs every packet-flow case through the
// reference tracer. The tables and the tracer are written independently
// (one from CONFORMANCE.md's expectations, one from kube-proxy's rules over
// model.Categorize), so agreement cross-checks both before any packet is
// sent in a lab.
func TestFlowTablesAgainstTracer(t *testing.T) {
	for _, c := range flowtest.All() {
		t.Run(c.Title(), func(t *testing.T) {
			cl, err := c.Cluster()
			if err != nil {
				t.Fatal(err)
			}
			traceFlows(t, &c, cl, c.Flows)
			for i, s := range c.Then {
				scl, err := c.StepCluster(i)
				if err != nil {
					t.Fatal(err)
				}
				t.Run(s.Name, func(t *testing.T) { traceFlows(t, &c, scl, s.Flows) })
			}
		})
	}
}

func traceFlows(t *testing.T, c *flowtest.Case, cl *model.Cluster, flows []flowtest.Flow) {
	t.Helper()
	for _, f := range flows {
		r, err := flowtest.Resolve(c, cl, f)
		if err != nil {
			t.Errorf("%s: %s: %v", f.Line, f.Name, err)
			continue
		}
		view := &datapaths.NodeView{Cluster: cl, Node: r.Node, Proxy: c.ProxyConfig()}
		got := fake.Trace(view, fake.Packet{Src: r.Src, Dst: r.Dst, Proto: r.Proto, Port: r.Port})
		// The tracer models kube-proxy's iptables mode.
		want, _ := f.Expect.For("iptables")
		if !matches(got, want) {
			t.Errorf("%s: %s (%s -> %s:%d/%s on %s):\n  table says  %s\n  tracer says %s",
				f.Line, f.Name, r.Src, r.Dst, r.Port, r.Proto, r.Node.Name, want, got)
		}
	}
}

func matches(got fake.Result, want flowtest.Expect) bool {
	if got.Verdict != want.Verdict {
		return false
	}
	if want.Verdict != flowtest.VerdictFWD {
		return true
	}
	return slices.Equal(got.Names(), want.Endpoints) && got.Masquerade == want.Masquerade
}
