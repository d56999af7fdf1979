package nftables

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/knftables"

	"proxyrig/datapaths"
	"proxyrig/model"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current renderer")

func TestGolden(t *testing.T) {
	for _, c := range goldenCases() {
		t.Run(c.name, func(t *testing.T) {
			got, err := RulesetText(c.view)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", c.name+".golden")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run `go test ./datapaths/nftables -run TestGolden -update` to create it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("%s differs (-want +got); if the change is intended, rerun with -update:\n%s", path, diff)
			}
		})
	}
}

func TestRenderIsDeterministic(t *testing.T) {
	for _, c := range goldenCases() {
		a, err := RulesetText(c.view)
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := RulesetText(c.view); a != b {
			t.Errorf("%s: two renders differ", c.name)
		}
	}
}

func TestRenderRejectsEmptyView(t *testing.T) {
	if _, err := Render(nil); err == nil {
		t.Error("Render(nil) succeeded")
	}
	if _, err := Render(&datapaths.NodeView{}); err == nil {
		t.Error("Render without a cluster succeeded")
	}
}

// Objects counts one object per line of the ruleset (less the two tables).
func TestObjectsCountsEveryObject(t *testing.T) {
	for _, c := range goldenCases() {
		rs, err := Render(c.view)
		if err != nil {
			t.Fatal(err)
		}
		text, _ := RulesetText(c.view)
		lines := strings.Count(text, "\n") - len(families)
		if got := rs.Objects(); got != lines {
			t.Errorf("%s: Objects() = %d, the ruleset has %d objects", c.name, got, lines)
		}
	}
}

// lines returns the ruleset lines of one family that contain all of the
// given substrings.
func grepRuleset(t *testing.T, v *datapaths.NodeView, f knftables.Family, subs ...string) []string {
	t.Helper()
	text, err := RulesetText(v)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if !strings.Contains(l, " "+string(f)+" kube-proxy ") {
			continue
		}
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(l, s)
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

func caseView(t *testing.T, name string) *datapaths.NodeView {
	t.Helper()
	for _, c := range goldenCases() {
		if c.name == name {
			return c.view
		}
	}
	t.Fatalf("no golden case %q", name)
	return nil
}

func TestHeadlessAndExternalNameRenderNothing(t *testing.T) {
	base, _ := RulesetText(view())
	got, err := RulesetText(caseView(t, "headless-externalname"))
	if err != nil {
		t.Fatal(err)
	}
	if got != base {
		t.Errorf("headless/ExternalName Services changed the ruleset:\n%s", cmp.Diff(base, got))
	}
}

func TestFamiliesAreSeparate(t *testing.T) {
	text, err := RulesetText(caseView(t, "ipv6-dual-stack"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(text, "\n") {
		switch {
		case strings.Contains(l, " ip kube-proxy ") && strings.Contains(l, "2001:db8"):
			t.Errorf("IPv6 address in the ip table: %s", l)
		case strings.Contains(l, " ip6 kube-proxy ") && strings.Contains(l, "198.1"):
			t.Errorf("IPv4 address in the ip6 table: %s", l)
		}
	}
	v := caseView(t, "ipv6-dual-stack")
	for _, want := range [][]string{
		{"service-ips", "2001:db8:19::10 . tcp . 80"},
		{"dnat to [2001:db8:64::10]:8080"},
		{"ip6 saddr != 2001:db8:64::/48 jump mark-for-masquerade"},
		{"nodeport-ips { 2001:db8:18::2 }"},
		{"ip6 saddr != { 2001:db8:18::/64 , 2001:db8:200::31 } drop"},
	} {
		if len(grepRuleset(t, v, knftables.IPv6Family, want...)) == 0 {
			t.Errorf("the ip6 table lacks %q", want)
		}
	}
}

// The nftables-mode divergences from iptables mode, as rules.
func TestDivergencesFromIPTables(t *testing.T) {
	v := caseView(t, "nodeport")
	checks := []struct {
		what string
		subs []string
		want int
	}{
		{"CIP-05: wrong ports of a ClusterIP are rejected", []string{"cluster-ips-check ip daddr @cluster-ips reject"}, 1},
		{"CIP-06: unallocated ClusterIPs are dropped", []string{"cluster-ips-check ip daddr { 198.19.0.0/16 } drop"}, 1},
		{"NP-02: only the primary IP accepts NodePorts", []string{"add element ip kube-proxy nodeport-ips { 198.18.0.2 }"}, 1},
		{"NP-02: the secondary IP does not", []string{"nodeport-ips { 198.18.1.2 }"}, 0},
		{"NP-04: no localhost NodePorts", []string{"127.0.0.1"}, 0},
		{"MASQ-05: always fully-random", []string{"masquerading masquerade fully-random"}, 1},
	}
	for _, c := range checks {
		if got := len(grepRuleset(t, v, knftables.IPv4Family, c.subs...)); got != c.want {
			t.Errorf("%s: %d lines match %q, want %d", c.what, got, c.subs, c.want)
		}
	}
	// LocalhostNodePorts is an iptables flag: no effect here, and no
	// route_localnet either.
	if l := grepRuleset(t, caseView(t, "nodeport-match-all"), knftables.IPv4Family, "services fib daddr type local ip daddr != 127.0.0.0/8"); len(l) != 1 {
		t.Errorf("match-all NodePorts do not exclude localhost: %q", l)
	}
}

// kube-proxy's hashed names, from its own tests: the same Service port and
// endpoint must give the same chain names here.
func TestChainNamesMatchKubeProxy(t *testing.T) {
	svc := model.ServiceName{Namespace: "ns1", Name: "svc1"}
	if got, want := servicePortChainNameBase(svc, "tcp", "p80"), "ULMVA6XW-ns1/svc1/tcp/p80"; got != want {
		t.Errorf("service chain base = %q, want %q", got, want)
	}
	if got, want := servicePortEndpointChainNameBase(svc, "tcp", "p80", netipAddrPort("10.180.0.1:80")), "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"; got != want {
		t.Errorf("endpoint chain base = %q, want %q", got, want)
	}
	long := strings.Repeat("a", 63)
	name := servicePortEndpointChainNameBase(model.ServiceName{Namespace: long, Name: long}, "sctp", long, netipAddrPort("[2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff]:65535"))
	if len(name) != chainNameBaseLengthMax || !strings.HasSuffix(name, "...") {
		t.Errorf("a 252-byte endpoint name is not truncated to %d bytes with \"...\": %d bytes, %q", chainNameBaseLengthMax, len(name), name)
	}
	if !strings.Contains(name, "__2001.db8") {
		t.Errorf("IPv6 colons not replaced: %q", name)
	}
}

// The hash covers everything a Service renders: a change that only touches
// a map element (a new external IP) still counts as a change.
func TestServiceHashCoversElements(t *testing.T) {
	mk := func(ext ...string) uint64 {
		s := service("default", "web", model.ClusterIP, addrs("198.19.0.10"), port("http", model.TCP, 80, 0, ep("198.18.64.10", 80, nodeA)))
		s.ExternalIPs = addrs(ext...)
		rs, err := Render(view(s))
		if err != nil {
			t.Fatal(err)
		}
		return rs.Family(knftables.IPv4Family).Services[0].Hash
	}
	if mk() == mk("198.19.100.1") {
		t.Error("adding an external IP did not change the Service's hash")
	}
	if mk("198.19.100.1") != mk("198.19.100.1") {
		t.Error("hash is not stable")
	}
}

func netipAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// NoLocalTrafficDetector wins over ClusterCIDRs, should both be set.
func TestNoLocalTrafficDetector(t *testing.T) {
	v := caseView(t, "clusterip-simple")
	with := *v
	with.Proxy.NoLocalTrafficDetector = true
	if l := grepRuleset(t, &with, knftables.IPv4Family, "ip saddr != 198.18.64.0/18"); len(l) != 0 {
		t.Errorf("masquerade still uses the pod CIDR: %q", l)
	}
	if l := grepRuleset(t, v, knftables.IPv4Family, "ip saddr != 198.18.64.0/18"); len(l) != 1 {
		t.Errorf("without the flag the pod CIDR is not used: %q", l)
	}
}
