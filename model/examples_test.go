package model

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestExamplesParse parses every file in examples/: each must be valid, warn
// about nothing, and keep to the lab's address plan.
func TestExamplesParse(t *testing.T) {
	files, err := filepath.Glob("../examples/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 4 {
		t.Fatalf("found %d example files, want at least 4", len(files))
	}
	readme, err := os.ReadFile("../examples/README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			c, err := ParseFiles(f)
			if err != nil {
				t.Fatalf("ParseFiles:\n%v", err)
			}
			if len(c.Warnings) > 0 {
				t.Errorf("warnings: %q", c.Warnings)
			}
			if err := c.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
			if !strings.Contains(string(readme), "`"+filepath.Base(f)+"`") {
				t.Errorf("examples/README.md does not describe %s", filepath.Base(f))
			}
			checkAddressPlan(t, c)
		})
	}
}

// checkAddressPlan keeps examples inside the lab's ranges: nodes and pods
// in 198.18.0.0/16, VIPs in 198.19.0.0/16, node ports in 30000-32767.
func checkAddressPlan(t *testing.T, c *Cluster) {
	t.Helper()
	in := func(what, prefix string, s string) {
		if !strings.HasPrefix(s, prefix) {
			t.Errorf("%s %s is outside %s*", what, s, prefix)
		}
	}
	for _, n := range c.Nodes {
		if len(n.Addresses) == 0 {
			t.Errorf("node %s has no address", n.Name)
		}
		for _, a := range n.Addresses {
			in("node address", "198.18.0.", a.String())
		}
	}
	for _, s := range c.Services {
		for _, a := range slices.Concat(s.ClusterIPs, s.ExternalIPs, s.LoadBalancerIPs) {
			in("Service address", "198.19.", a.String())
		}
		for _, p := range s.Ports {
			if p.NodePort != 0 && (p.NodePort < 30000 || p.NodePort > 32767) {
				t.Errorf("node port %d outside 30000-32767", p.NodePort)
			}
			for _, ep := range p.Endpoints {
				switch ep.NodeName {
				case "node-a":
					in("node-a pod", "198.18.64.", ep.IP.String())
				case "node-b":
					in("node-b pod", "198.18.65.", ep.IP.String())
				default:
					t.Errorf("endpoint %s on unexpected node %q", ep, ep.NodeName)
				}
			}
		}
	}
}

func TestExampleContents(t *testing.T) {
	parse := func(t *testing.T, name string) *Cluster {
		t.Helper()
		c, err := ParseFiles("../examples/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	t.Run("hello", func(t *testing.T) {
		c := parse(t, "hello.yaml")
		hello := mustService(t, c, "default", "hello")
		if hello.Type != NodePort || hello.Ports[0].Port != 80 || hello.Ports[0].TargetPort != "8080" || hello.Ports[0].NodePort == 0 {
			t.Errorf("hello = %+v port %+v", hello, hello.Ports[0])
		}
		eps := hello.Ports[0].Endpoints
		if len(eps) != 3 {
			t.Fatalf("hello has %d endpoints, want 3", len(eps))
		}
		nodes := map[string]bool{}
		for _, ep := range eps {
			if !ep.Ready || !strings.HasPrefix(ep.Name, "hello-") || ep.Port != 8080 {
				t.Errorf("endpoint %+v", ep)
			}
			nodes[ep.NodeName] = true
		}
		if len(nodes) != 2 || len(c.Nodes) != 2 {
			t.Errorf("endpoints on %v, nodes %d; want 2 nodes", nodes, len(c.Nodes))
		}
		empty := mustService(t, c, "default", "empty")
		if len(empty.Ports[0].Endpoints) != 0 {
			t.Errorf("empty has endpoints")
		}
		if cat := Categorize(empty, empty.Ports[0], c.Nodes[0]); cat.HasAny {
			t.Errorf("empty: HasAny = true, want REJECT")
		}
	})
	t.Run("multiport", func(t *testing.T) {
		shop := mustService(t, parse(t, "multiport.yaml"), "default", "shop")
		got := map[string][]string{}
		for _, p := range shop.Ports {
			got[p.Name] = epStrings(p.Endpoints)
		}
		want := map[string][]string{
			"http":  {"198.18.64.20:8080", "198.18.65.20:8080"},
			"admin": {"198.18.64.21:9090"},
			"stats": {},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("endpoints by port (-want +got):\n%s", diff)
		}
	})
	t.Run("loadbalancer", func(t *testing.T) {
		c := parse(t, "loadbalancer.yaml")
		web := mustService(t, c, "default", "web")
		if web.Type != LoadBalancer || !web.ExternalPolicyLocal() || web.HealthCheckNodePort == 0 ||
			len(web.LoadBalancerIPs) != 1 || len(web.ExternalIPs) != 1 || len(web.LoadBalancerSourceRanges) != 1 ||
			!web.SessionAffinity || web.AffinityTimeout != 600*time.Second {
			t.Errorf("web = %+v", web)
		}
		// node-b has no local endpoint: external traffic there is dropped,
		// yet the Service has endpoints (DROP, not REJECT).
		cat := Categorize(web, web.Ports[0], c.Node("node-b"))
		if len(cat.Local) != 0 || !cat.HasAny || len(cat.Cluster) != 2 {
			t.Errorf("node-b categorization = %+v", cat)
		}
	})
	t.Run("terminating", func(t *testing.T) {
		c := parse(t, "terminating.yaml")
		node := c.Node("node-a")
		use := func(name string) []string {
			s := mustService(t, c, "default", name)
			cat := Categorize(s, s.Ports[0], node)
			var names []string
			for _, ep := range cat.Cluster {
				names = append(names, ep.Name)
			}
			return names
		}
		if got := use("rollout"); !cmp.Equal(got, []string{"rollout-new"}) {
			t.Errorf("rollout uses %v, want [rollout-new]", got)
		}
		if got := use("draining"); !cmp.Equal(got, []string{"draining-old-0"}) {
			t.Errorf("draining uses %v, want [draining-old-0]", got)
		}
		if got := use("gone"); got != nil {
			t.Errorf("gone uses %v, want nothing", got)
		}
	})
}
