package loadgen

import (
	"fmt"
	"net/netip"
	"reflect"
	"testing"

	"proxyrig/model"
)

func TestGenerateValidAndDeterministic(t *testing.T) {
	for _, spec := range []Spec{
		{Services: 0},
		{Services: 1, EndpointsPerService: 1, Nodes: 1},
		{Services: 100, Seed: 7},
		{Services: 500, EndpointsPerService: 3, PortsPerService: 2, Nodes: 3, ITPLocalFraction: 0.1, Seed: 3},
		{Services: 3000, Mix: Mix{NodePort: 1}, Seed: 1}, // NodePort cap
	} {
		t.Run(fmt.Sprintf("%+v", spec), func(t *testing.T) {
			a, err := Generate(spec)
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Validate(); err != nil {
				t.Fatalf("generated cluster does not validate: %v", err)
			}
			b, err := Generate(spec)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(a, b) {
				t.Fatal("two generations with the same seed differ")
			}
			if len(a.Services) != spec.Services {
				t.Fatalf("got %d Services, want %d", len(a.Services), spec.Services)
			}
			d := spec.Defaults()
			seen := map[netip.AddrPort]string{}
			for _, s := range a.Services {
				for _, sp := range s.Ports {
					if len(sp.Endpoints) != d.EndpointsPerService {
						t.Fatalf("%s: %d endpoints, want %d", s.Name, len(sp.Endpoints), d.EndpointsPerService)
					}
					for _, ep := range sp.Endpoints {
						ap := netip.AddrPortFrom(ep.IP, uint16(ep.Port))
						if prev, dup := seen[ap]; dup {
							t.Fatalf("endpoint %s used by %s and %s", ap, prev, s.Name)
						}
						seen[ap] = s.Name.String()
						if !PodRange.Contains(ep.IP) {
							t.Fatalf("endpoint %s outside the pod range %s", ep.IP, PodRange)
						}
						if ep.Name != EndpointName(ap) {
							t.Fatalf("endpoint %s named %q", ap, ep.Name)
						}
						node := nodeIndex(ep.NodeName)
						found := false
						for _, p := range NodePrefixes(node, d.Nodes) {
							found = found || p.Contains(ep.IP)
						}
						if !found {
							t.Fatalf("endpoint %s on %s is outside its node's prefixes", ep.IP, ep.NodeName)
						}
					}
				}
			}
		})
	}
}

func TestGenerateSeedsDiffer(t *testing.T) {
	a, _ := Generate(Spec{Services: 200, Seed: 1})
	b, _ := Generate(Spec{Services: 200, Seed: 2})
	if reflect.DeepEqual(a, b) {
		t.Fatal("different seeds gave the same cluster")
	}
}

func TestGenerateMix(t *testing.T) {
	c, err := Generate(Spec{Services: 1000, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	count := map[model.ServiceType]int{}
	var udp, aff int
	for _, s := range c.Services {
		count[s.Type]++
		if s.Ports[0].Protocol == model.UDP {
			udp++
		}
		if s.SessionAffinity {
			aff++
		}
	}
	if count[model.ClusterIP] != 800 || count[model.NodePort] != 100 || count[model.LoadBalancer] != 100 {
		t.Fatalf("mix %v, want 800/100/100", count)
	}
	if udp != 100 || aff != 50 {
		t.Fatalf("udp %d affinity %d, want 100 and 50", udp, aff)
	}
}

// TestGenerate30k checks that the largest scale of the matrix fits the
// address plan: 30k Services × 5 endpoints, every IP:port distinct.
func TestGenerate30k(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: generating 150k endpoints takes a second")
	}
	c, err := Generate(Spec{Services: 30000, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 0 {
		t.Logf("warnings: %v", c.Warnings)
	}
}

func TestGenerateRejects(t *testing.T) {
	for _, spec := range []Spec{
		{Services: MaxServices + 1},
		{Services: 10, Nodes: MaxNodes + 1},
		{Services: 10, Mix: Mix{ClusterIP: -1, NodePort: 0.5}},
		{Services: 30000, EndpointsPerService: 1000},
	} {
		if _, err := Generate(spec); err == nil {
			t.Errorf("Generate(%+v) succeeded, want an error", spec)
		}
	}
}

func TestChurnDeterministicAndValid(t *testing.T) {
	spec := Spec{Services: 200, Seed: 11, PortsPerService: 2}
	run := func() []string {
		c, err := Generate(spec)
		if err != nil {
			t.Fatal(err)
		}
		ch, err := NewChurn(c, spec, 99, nil)
		if err != nil {
			t.Fatal(err)
		}
		var log []string
		for i := range 300 {
			change, err := ch.Next()
			if err != nil {
				t.Fatalf("change %d: %v", i, err)
			}
			if i%50 == 0 {
				if err := change.Cluster.Validate(); err != nil {
					t.Fatalf("after %s: %v", change, err)
				}
			}
			log = append(log, change.String())
		}
		if err := ch.Cluster().Validate(); err != nil {
			t.Fatal(err)
		}
		return log
	}
	a, b := run(), run()
	if !reflect.DeepEqual(a, b) {
		t.Fatal("two churns with the same seed differ")
	}
	kinds := map[string]bool{}
	for _, l := range a {
		var seq int
		var kind string
		fmt.Sscanf(l, "#%d %s", &seq, &kind)
		kinds[kind] = true
	}
	for k := range DefaultChurnWeights {
		if !kinds[string(k)] {
			t.Errorf("300 changes never made a %s", k)
		}
	}
}

func TestChurnCopyOnWrite(t *testing.T) {
	spec := Spec{Services: 20, Seed: 1}
	c, _ := Generate(spec)
	before, _ := Generate(spec)
	ch, err := NewChurn(c, spec, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		if _, err := ch.Next(); err != nil {
			t.Fatal(err)
		}
	}
	if !reflect.DeepEqual(c, before) {
		t.Fatal("churn modified the cluster it started from")
	}
}

func TestChurnExplicit(t *testing.T) {
	spec := Spec{Services: 10, Seed: 1}
	c, _ := Generate(spec)
	ch, _ := NewChurn(c, spec, 1, nil)
	add, err := ch.AddServiceWith(ServiceOptions{Endpoints: 1, Nodes: []int{0}})
	if err != nil {
		t.Fatal(err)
	}
	if len(add.Added) != 1 || !add.VIP.IsValid() || len(ch.Cluster().Services) != 11 {
		t.Fatalf("add: %+v", add)
	}
	swap, err := ch.ReplaceEndpointsOf(add.Service, 1, []int{0})
	if err != nil {
		t.Fatal(err)
	}
	if swap.Added[0] == add.Added[0] {
		t.Fatalf("replacement reused the address %s", swap.Added[0])
	}
	empty, err := ch.RemoveEndpointFrom(add.Service, swap.Added[0])
	if err != nil {
		t.Fatal(err)
	}
	if s := empty.Cluster.Service(Namespace, add.Service.Name); len(s.Ports[0].Endpoints) != 0 {
		t.Fatalf("endpoint not removed: %v", s.Ports[0].Endpoints)
	}
	if _, err := ch.RemoveServiceNamed(add.Service); err != nil {
		t.Fatal(err)
	}
	if err := ch.Cluster().Validate(); err != nil {
		t.Fatal(err)
	}
}
