package flowtest_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"proxyrig/datapaths"
	"proxyrig/datapaths/flowtest"
	"proxyrig/model"
)

// knownDatapaths are the names an override may use: the datapaths
// DESIGN.md plans. An override for anything else is a typo.
var knownDatapaths = []string{"iptables", "nftables", "ipvs", "ebpf", "ebpf-socket"}

// TestTablesAreWellFormed checks what the type system cannot: fixtures
// parse, every row carries its line, every reference resolves, and flow
// names are unique within a case (they name conformance specs).
func TestTablesAreWellFormed(t *testing.T) {
	for _, c := range flowtest.All() {
		t.Run(c.Title(), func(t *testing.T) {
			if c.Line == "" || c.Line == "?" {
				t.Errorf("case has no Line: set Line: getLine()")
			}
			if _, ok := flowtest.CategoryOf(c.ID); !ok {
				t.Errorf("ID %q belongs to no category", c.ID)
			}
			cl, err := c.Cluster()
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Flows) == 0 && !c.Concurrent {
				t.Errorf("case has no flows")
			}
			checkFlows(t, &c, cl, c.Flows)
			for i, s := range c.Then {
				if s.Line == "" {
					t.Errorf("step %q has no Line", s.Name)
				}
				scl, err := c.StepCluster(i)
				if err != nil {
					t.Fatal(err)
				}
				if len(s.Flows) == 0 {
					t.Errorf("step %q has no flows", s.Name)
				}
				checkFlows(t, &c, scl, s.Flows)
			}
			if c.Concurrent {
				for _, f := range c.Flows {
					if f.Expect.Verdict != flowtest.VerdictFWD {
						t.Errorf("%s: a concurrent case may only hold FWD flows", f.Line)
					}
				}
			}
		})
	}
}

func checkFlows(t *testing.T, c *flowtest.Case, cl *model.Cluster, flows []flowtest.Flow) {
	t.Helper()
	names := map[string]bool{}
	eps := flowtest.EndpointNames(cl)
	for _, f := range flows {
		where := f.Line
		if where == "" || where == "?" {
			where = c.Line + " " + f.Name
			t.Errorf("%s: flow has no Line: set Line: getLine()", where)
		}
		key := fmt.Sprintf("%s/%s/%d", f.Name, f.Protocol(), f.From.Index)
		if names[key] && !c.Concurrent {
			t.Errorf("%s: duplicate flow name %q", where, f.Name)
		}
		names[key] = true
		if f.Port <= 0 || f.Port > 65535 {
			t.Errorf("%s: port %d out of range", where, f.Port)
		}
		if _, err := flowtest.Resolve(c, cl, f); err != nil {
			t.Errorf("%s: %v", where, err)
		}
		for _, e := range append([]flowtest.Expect{f.Expect}, overrideExpects(f.Expect)...) {
			checkExpect(t, where, e, eps)
		}
		for _, o := range f.Expect.Overrides() {
			if !slices.Contains(knownDatapaths, o.Datapath) {
				t.Errorf("%s: override for unknown datapath %q", where, o.Datapath)
			}
			if o.Why == "" {
				t.Errorf("%s: override for %s does not say why", where, o.Datapath)
			}
		}
		if f.PayloadSize > 0 && f.Protocol() != model.UDP {
			t.Errorf("%s: PayloadSize is for UDP flows", where)
		}
	}
}

func overrideExpects(e flowtest.Expect) []flowtest.Expect {
	var out []flowtest.Expect
	for _, o := range e.Overrides() {
		out = append(out, o.Expect)
	}
	return out
}

func checkExpect(t *testing.T, where string, e flowtest.Expect, eps map[string]bool) {
	t.Helper()
	switch e.Verdict {
	case flowtest.VerdictFWD:
		if len(e.Endpoints) == 0 {
			t.Errorf("%s: FWD without endpoints", where)
		}
		for _, name := range e.Endpoints {
			if !eps[name] {
				t.Errorf("%s: FWD names %q, which is no endpoint of the fixture", where, name)
			}
		}
	case flowtest.VerdictREJECT, flowtest.VerdictDROP, flowtest.VerdictPASS:
		if len(e.Endpoints) > 0 || e.Masquerade || e.Uniform {
			t.Errorf("%s: %s with FWD details", where, e.Verdict)
		}
	default:
		t.Errorf("%s: invalid verdict %q", where, e.Verdict)
	}
}

// TestEveryItemHasACase ties the tables to CONFORMANCE.md's item list.
func TestEveryItemHasACase(t *testing.T) {
	have := map[string]bool{}
	for _, c := range flowtest.All() {
		have[c.ID] = true
	}
	for _, cat := range flowtest.Categories() {
		for _, id := range cat.Items {
			if !have[id] {
				t.Errorf("category %s (%s): item %s has no case", cat.Letter, cat.Title, id)
			}
			if !strings.HasPrefix(id, cat.Prefix+"-") {
				t.Errorf("category %s lists %s, outside its prefix %s", cat.Letter, id, cat.Prefix)
			}
		}
		for _, c := range cat.Cases() {
			if !slices.Contains(cat.Items, c.ID) {
				t.Errorf("case %s is in category %s but not in its Items", c.Title(), cat.Letter)
			}
		}
	}
}

func TestExpectFor(t *testing.T) {
	e := flowtest.Pass().On("nftables", flowtest.Reject(), "documented")
	if got, why := e.For("nftables"); got.Verdict != flowtest.VerdictREJECT || why != "documented" {
		t.Errorf("For(nftables) = %v, %q; want REJECT, documented", got, why)
	}
	if got, why := e.For("iptables"); got.Verdict != flowtest.VerdictPASS || why != "" || len(got.Overrides()) != 0 {
		t.Errorf("For(iptables) = %v, %q; want plain PASS", got, why)
	}
	if s := flowtest.FWD("b", "a").Masq().String(); s != "FWD(a, b) masq" {
		t.Errorf("String() = %q", s)
	}
	// On must not alias the receiver's overrides.
	base := flowtest.Pass().On("ipvs", flowtest.Reject(), "x")
	a := base.On("nftables", flowtest.Drop(), "y")
	b := base.On("nftables", flowtest.Reject(), "z")
	if ga, _ := a.For("nftables"); ga.Verdict != flowtest.VerdictDROP {
		t.Errorf("a.For(nftables) = %v, want DROP", ga)
	}
	if gb, _ := b.For("nftables"); gb.Verdict != flowtest.VerdictREJECT {
		t.Errorf("b.For(nftables) = %v, want REJECT", gb)
	}
}

// TestProxyConfigDetector: the tables' proxy settings fill in the plan's
// pod range as the local-traffic detector, unless a case asks for none,
// exactly as the lab does (topologies makePlan).
func TestProxyConfigDetector(t *testing.T) {
	def := (&flowtest.Case{}).ProxyConfig()
	if len(def.ClusterCIDRs) != 2 || def.ClusterCIDRs[0] != flowtest.ClusterCIDR {
		t.Errorf("default ClusterCIDRs = %v, want the plan's pod ranges", def.ClusterCIDRs)
	}
	none := (&flowtest.Case{Proxy: datapaths.ProxyConfig{NoLocalTrafficDetector: true}}).ProxyConfig()
	if len(none.ClusterCIDRs) != 0 {
		t.Errorf("NoLocalTrafficDetector: ClusterCIDRs = %v, want none", none.ClusterCIDRs)
	}
	if len(none.ServiceCIDRs) == 0 {
		t.Errorf("NoLocalTrafficDetector: ServiceCIDRs lost their default")
	}
	for _, c := range flowtest.All() {
		if c.Proxy.NoLocalTrafficDetector && len(c.Proxy.ClusterCIDRs) > 0 {
			t.Errorf("%s (%s): NoLocalTrafficDetector with ClusterCIDRs set", c.Title(), c.Line)
		}
		for _, f := range c.AllFlows() {
			if f.ImplementationDefined != "" && c.Concurrent {
				t.Errorf("%s: a concurrent case cannot record an implementation-defined flow", f.Line)
			}
		}
	}
}

// A variant shares its base datapath's documented divergences.
func TestVariantSharesBaseOverrides(t *testing.T) {
	e := flowtest.Pass().On("nftables", flowtest.Reject(), "documented")
	if got, why := e.For("nftables-flat"); got.Verdict != flowtest.VerdictREJECT || why != "documented" {
		t.Errorf("nftables-flat: %v %q, want nftables' REJECT", got, why)
	}
	if got, why := e.For("iptables"); got.Verdict != flowtest.VerdictPASS || why != "" {
		t.Errorf("iptables: %v %q", got, why)
	}
}
