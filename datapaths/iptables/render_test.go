package iptables

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"proxyrig/datapaths"
	"proxyrig/model"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current renderer")

func TestGolden(t *testing.T) {
	for _, c := range goldenCases() {
		t.Run(c.name, func(t *testing.T) {
			got, err := RestoreText(c.view, c.env)
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
				t.Fatalf("%v (run `go test ./datapaths/iptables -run TestGolden -update` to create it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("%s differs (-want +got); if the change is intended, rerun with -update:\n%s", path, diff)
			}
		})
	}
}

func TestRenderIsDeterministic(t *testing.T) {
	for _, c := range goldenCases() {
		a, err := RestoreText(c.view, c.env)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := RestoreText(c.view, c.env)
		if a != b {
			t.Errorf("%s: two renders differ", c.name)
		}
	}
}

func TestRenderRejectsEmptyView(t *testing.T) {
	if _, err := Render(nil, Env{}); err == nil {
		t.Error("Render(nil) succeeded")
	}
	if _, err := Render(&datapaths.NodeView{}, Env{}); err == nil {
		t.Error("Render without a cluster succeeded")
	}
}

// rulesOf returns every "-A" line of a family's full restore text.
func rulesOf(t *testing.T, v *datapaths.NodeView, f Family) string {
	t.Helper()
	rs, err := Render(v, goldenEnv)
	if err != nil {
		t.Fatal(err)
	}
	return string(planSync(rs.Family(f), nil, true, nil).payload)
}

func TestHeadlessAndExternalNameRenderNothing(t *testing.T) {
	base := rulesOf(t, view(), IPv4)
	for _, c := range goldenCases() {
		if c.name != "headless-externalname" {
			continue
		}
		for _, f := range families {
			rs, _ := Render(c.view, c.env)
			if n := len(rs.Family(f).Services); n != 0 {
				t.Errorf("%s: %d services rendered, want 0", f, n)
			}
		}
		if got := rulesOf(t, c.view, IPv4); got != base {
			t.Errorf("headless/ExternalName changed the rules:\n%s", cmp.Diff(base, got))
		}
	}
}

func TestFamiliesAreSeparate(t *testing.T) {
	for _, c := range goldenCases() {
		if c.name != "ipv6" {
			continue
		}
		v4, v6 := rulesOf(t, c.view, IPv4), rulesOf(t, c.view, IPv6)
		if strings.Contains(v4, "2001:db8") {
			t.Errorf("IPv6 address in the IPv4 rules:\n%s", v4)
		}
		if strings.Contains(v6, "198.1") {
			t.Errorf("IPv4 address in the IPv6 rules:\n%s", v6)
		}
		for _, want := range []string{"-d 2001:db8:19::10 --dport 80", "--to-destination [2001:db8:64::10]:8080", "! -d ::1/128", "! -s 2001:db8:64::/48"} {
			if !strings.Contains(v6, want) {
				t.Errorf("IPv6 rules lack %q", want)
			}
		}
	}
}

func TestLargeClusterModeDropsEndpointComments(t *testing.T) {
	var eps []*model.Endpoint
	for i := range largeClusterEndpointsThreshold + 1 {
		eps = append(eps, ep(fmt.Sprintf("198.18.%d.%d", 64+i/250, 1+i%250), 8080, nodeB))
	}
	v := view(service("default", "big", model.ClusterIP, addrs("198.19.0.50"), port("http", model.TCP, 80, 0, eps...)))
	rs, err := Render(v, goldenEnv)
	if err != nil {
		t.Fatal(err)
	}
	fr := rs.Family(IPv4)
	if !fr.LargeCluster {
		t.Fatal("large cluster mode not detected")
	}
	for _, c := range fr.Services[0].Chains {
		for i, r := range c.Rules {
			if strings.HasPrefix(c.Name, sepChainPrefix) && strings.Contains(r, "--comment") {
				t.Fatalf("%s rule %d keeps its comment in large cluster mode: %s", c.Name, i, r)
			}
			if strings.HasPrefix(c.Name, svcChainPrefix) && i > 0 && strings.Contains(r, "--comment") {
				t.Fatalf("%s rule %d keeps its comment in large cluster mode: %s", c.Name, i, r)
			}
		}
	}
	// The ClusterIP masquerade rule keeps its comment, as in kube-proxy.
	if r := fr.Services[0].Chains[0].Rules[0]; !strings.Contains(r, `"default/big:http cluster IP"`) {
		t.Errorf("masquerade rule lost its comment: %s", r)
	}
	// 1001 endpoints: the first rule picks with probability 1/1001.
	if r := fr.Services[0].Chains[0].Rules[1]; !strings.Contains(r, "--probability 0.0009990010") {
		t.Errorf("first endpoint rule: %s", r)
	}
}

// The hash covers everything a Service renders, so a change that only
// touches its top-level rules (a new external IP) still counts as a change.
func TestServiceHashCoversTopLevelRules(t *testing.T) {
	mk := func(ext ...string) string {
		s := service("default", "web", model.ClusterIP, addrs("198.19.0.10"), port("http", model.TCP, 80, 0))
		s.ExternalIPs = addrs(ext...)
		rs, err := Render(view(s), goldenEnv)
		if err != nil {
			t.Fatal(err)
		}
		return rs.Family(IPv4).Services[0].Hash
	}
	if mk() == mk("198.19.100.1") {
		t.Error("adding an external IP to an endpoint-less Service did not change its hash")
	}
	if mk("198.19.100.1") != mk("198.19.100.1") {
		t.Error("hash is not stable")
	}
}
