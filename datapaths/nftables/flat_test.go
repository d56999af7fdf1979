package nftables

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/knftables"

	"proxyrig/datapaths"
	"proxyrig/model"
)

// The flat variant's rulesets are pinned like kube-proxy's; they live next
// to them as testdata/flat-<case>.golden, so the privileged
// TestIntegrationGoldensLoad feeds them to nft --check as well.
func TestFlatGolden(t *testing.T) {
	for _, c := range goldenCases() {
		t.Run(c.name, func(t *testing.T) {
			got, err := FlatRulesetText(c.view)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", "flat-"+c.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run `go test ./datapaths/nftables -run 'TestFlatGolden' -update` to create it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("%s differs (-want +got); if the change is intended, rerun with -update:\n%s", path, diff)
			}
		})
	}
}

// dispatchRE matches the endpoint-dispatch rules, in either layout:
// kube-proxy's "numgen ... vmap { ... }", flat's "numgen ... == 0 goto ..."
// and its unconditional last "goto endpoint-...".
var dispatchRE = regexp.MustCompile(`^add rule (ip|ip6) kube-proxy \S+ (numgen random mod .*|goto endpoint-\S+)$`)

// The flat layout differs from kube-proxy's in the dispatch rules only:
// with those taken out, both rulesets are the same, line for line.
func TestFlatDiffersOnlyInDispatch(t *testing.T) {
	strip := func(text string) []string {
		var out []string
		for _, l := range strings.Split(text, "\n") {
			if !dispatchRE.MatchString(l) {
				out = append(out, l)
			}
		}
		return out
	}
	for _, c := range goldenCases() {
		kp, err := RulesetText(c.view)
		if err != nil {
			t.Fatal(err)
		}
		flat, err := FlatRulesetText(c.view)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(strip(kp), strip(flat)); diff != "" {
			t.Errorf("%s: the layouts differ beyond endpoint dispatch (-kube-proxy +flat):\n%s", c.name, diff)
		}
		if strings.Contains(flat, "vmap {") {
			t.Errorf("%s: the flat ruleset still has an anonymous verdict map", c.name)
		}
	}
}

var (
	vmapRE    = regexp.MustCompile(`numgen random mod (\d+) vmap \{ (.*) \}$`)
	vmapEltRE = regexp.MustCompile(`(\d+) : goto (\S+)`)
	cascadeRE = regexp.MustCompile(`^numgen random mod (\d+) == 0 goto (\S+)$`)
	lastRE    = regexp.MustCompile(`^goto (endpoint-\S+)$`)
)

// Every policy chain spreads new connections over the same endpoints, each
// with probability 1/n, in both layouts.
func TestFlatSpreadsEvenly(t *testing.T) {
	type key struct {
		family knftables.Family
		chain  string
	}
	for _, c := range goldenCases() {
		kp, err := renderLayout(c.view, nil, layoutKubeProxy)
		if err != nil {
			t.Fatal(err)
		}
		flat, err := renderLayout(c.view, nil, layoutFlat)
		if err != nil {
			t.Fatal(err)
		}
		want := map[key]map[string]float64{}
		for _, fs := range kp.Families {
			for _, ss := range fs.Services {
				for _, r := range ss.Rules {
					m := vmapRE.FindStringSubmatch(r.Rule)
					if m == nil {
						continue
					}
					n, _ := strconv.Atoi(m[1])
					p := map[string]float64{}
					for _, e := range vmapEltRE.FindAllStringSubmatch(m[2], -1) {
						p[e[2]] += 1 / float64(n)
					}
					want[key{fs.Family, r.Chain}] = p
				}
			}
		}
		got := map[key]map[string]float64{}
		for _, fs := range flat.Families {
			for _, ss := range fs.Services {
				// The probability that a packet is still undecided when it
				// reaches the next rule of each chain.
				left := map[string]float64{}
				for _, r := range ss.Rules {
					k := key{fs.Family, r.Chain}
					if _, ok := left[r.Chain]; !ok {
						left[r.Chain] = 1
					}
					if m := cascadeRE.FindStringSubmatch(r.Rule); m != nil {
						n, _ := strconv.Atoi(m[1])
						if got[k] == nil {
							got[k] = map[string]float64{}
						}
						got[k][m[2]] += left[r.Chain] / float64(n)
						left[r.Chain] -= left[r.Chain] / float64(n)
					} else if m := lastRE.FindStringSubmatch(r.Rule); m != nil && !strings.HasPrefix(r.Chain, "endpoint-") && !strings.HasPrefix(r.Chain, "external-") {
						if got[k] == nil {
							got[k] = map[string]float64{}
						}
						got[k][m[1]] += left[r.Chain]
						left[r.Chain] = 0
					}
				}
			}
		}
		if len(got) != len(want) {
			t.Errorf("%s: %d dispatching chains in flat, %d in kube-proxy's layout", c.name, len(got), len(want))
		}
		for k, w := range want {
			g := got[k]
			if len(g) != len(w) {
				t.Errorf("%s: %s %s dispatches to %v, want %v", c.name, k.family, k.chain, g, w)
				continue
			}
			for ep, p := range w {
				if math.Abs(g[ep]-p) > 1e-9 {
					t.Errorf("%s: %s %s picks %s with probability %v, want %v", c.name, k.family, k.chain, ep, g[ep], p)
				}
			}
		}
	}
}

// A partial sync of the flat layout writes as little as kube-proxy's.
func TestFlatPartialSyncAtScale(t *testing.T) {
	fake := newFakeClient()
	p := newFlatProxier(datapaths.Config{Node: "node-a"}, fake)
	if p.Name() != FlatName {
		t.Fatalf("Name() = %q", p.Name())
	}
	v := scaleView(2000)
	stats, err := p.Sync(context.Background(), v, datapaths.SyncOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !stats.Full || stats.Backend != FlatName {
		t.Errorf("first sync: %+v", stats)
	}
	if strings.Contains(fake.Dump(), "vmap {") {
		t.Error("the flat proxier wrote an anonymous verdict map")
	}
	p.now = func() time.Time { return time.Now().Add(time.Hour) }
	eps := append([]*model.Endpoint(nil), v.Cluster.Services[0].Ports[0].Endpoints[1:]...)
	v2 := withEndpoints(v, 0, append(eps, ep("198.18.127.250", 8080, nodeB))...)
	stats, err = p.Sync(context.Background(), v2, datapaths.SyncOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if stats.Full || stats.ChangedServices != 1 || stats.Written > 40 {
		t.Errorf("one endpoint replaced: %+v, want a partial sync of one Service writing a few operations", stats)
	}
}
