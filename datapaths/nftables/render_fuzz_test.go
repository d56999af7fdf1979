package nftables

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"

	"proxyrig/datapaths"
	"proxyrig/internal/fuzzcluster"
)

// FuzzRender renders clusters built from fuzz input (examples/*.yaml and
// loadgen's seeded clusters, edited byte by byte), in both layouts, and
// checks what must hold for every valid cluster: no panic; the transaction
// applies to knftables' fake; two renders of equal input are identical;
// the input is not modified; every chain jumped to exists in its table;
// names and comments fit nft's limits (a longer comment makes nft refuse
// the whole transaction); every ClusterIP is in the cluster-ips set.
//
// Run: go test -run '^$' -fuzz '^FuzzRender$' -fuzztime 30s ./datapaths/nftables
func FuzzRender(f *testing.F) {
	fuzzcluster.AddSeeds(f, "../..")
	f.Fuzz(func(t *testing.T, yaml []byte, seed uint64, size uint16, ops []byte) {
		view, ok := fuzzcluster.View(fuzzcluster.Input{YAML: yaml, Seed: seed, Size: size, Ops: ops})
		if !ok {
			t.Skip("not a valid cluster")
		}
		checkRender(t, view, "nftables", RulesetText)
		checkRender(t, view, "nftables-flat", FlatRulesetText)
	})
}

func checkRender(t *testing.T, view *datapaths.NodeView, layout string, text func(*datapaths.NodeView) (string, error)) {
	t.Helper()
	before := view.Cluster.Clone()
	a, err := text(view)
	if err != nil {
		t.Fatalf("%s: %v", layout, err)
	}
	if !reflect.DeepEqual(before, view.Cluster) {
		t.Fatalf("%s: rendering modified the cluster it was given", layout)
	}
	again := *view
	again.Cluster = before
	b, err := text(&again)
	if err != nil {
		t.Fatalf("%s: second render: %v", layout, err)
	}
	if a != b {
		t.Fatalf("%s: two renders of one cluster differ:\n%s\n---\n%s", layout, a, b)
	}
	for _, p := range rulesetProblems(a) {
		t.Errorf("%s: %s", layout, p)
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(a, "\n") {
		if strings.Contains(l, " cluster-ips { ") {
			lines[l] = true
		}
	}
	for _, svc := range view.Cluster.Services {
		if !svc.IsProxied() {
			continue
		}
		for _, ip := range svc.ClusterIPs {
			fam := "ip"
			if ip.Is6() {
				fam = "ip6"
			}
			if !lines["add element "+fam+" kube-proxy cluster-ips { "+ip.String()+" }"] {
				t.Errorf("%s: ClusterIP %s of %s is not in the cluster-ips set", layout, ip, svc.Name)
			}
		}
	}
	if t.Failed() {
		t.Logf("%s ruleset:\n%s", layout, a)
	}
}

// rulesetProblems checks a dump of `nft -f` lines: every jump or goto
// names a chain of its own table, and names and comments fit nft's limits.
func rulesetProblems(text string) []string {
	var probs []string
	chains := map[string]bool{}
	type jump struct{ table, target, line string }
	var jumps []jump
	for _, line := range strings.Split(text, "\n") {
		if line == "" {
			continue
		}
		words, ok := fuzzcluster.Words(line)
		if !ok {
			probs = append(probs, "unparseable line: "+line)
			continue
		}
		if len(words) < 4 || words[0] != "add" {
			continue
		}
		table := words[2] + " " + words[3]
		if words[1] == "chain" && len(words) > 4 {
			chains[table+" "+words[4]] = true
			if len(words[4]) >= knftables.NameLengthMax {
				probs = append(probs, "chain name over nft's limit: "+words[4])
			}
		}
		for k := 4; k+1 < len(words); k++ {
			switch words[k] {
			case "jump", "goto":
				jumps = append(jumps, jump{table, strings.TrimSuffix(strings.TrimSuffix(words[k+1], ","), ";"), line})
			case "comment":
				if len(words[k+1]) > knftables.CommentLengthMax {
					probs = append(probs, "comment over nft's 128 characters (nft refuses the whole transaction): "+line)
				}
			}
		}
	}
	for _, j := range jumps {
		if !chains[j.table+" "+j.target] {
			probs = append(probs, "jump to undefined chain "+j.target+": "+j.line)
		}
	}
	if len(probs) > 20 {
		probs = probs[:20]
	}
	return probs
}

// TestExtremeInputs renders each extreme but legal cluster (one Service
// with 100k endpoints, 30k Services on one port, 100 ports, names at their
// length limits, IPv6 only) with the fuzz target's checks. It asserts no
// duration, but a renderer that is quadratic in any of them makes it run
// for minutes.
func TestExtremeInputs(t *testing.T) {
	for _, e := range fuzzcluster.Extremes(fuzzcluster.DefaultSizes) {
		t.Run(e.Name, func(t *testing.T) {
			// knftables' fake looks each element up with a linear scan, so
			// applying 30k Services' elements to it takes many minutes: the
			// transaction's text is checked instead (the fuzz target does
			// apply it, at its small sizes).
			checkRender(t, e.View, "nftables", transactionText(layoutKubeProxy))
			checkRender(t, e.View, "nftables-flat", transactionText(layoutFlat))
		})
	}
}

// transactionText is the `nft -f` text of the full sync of view into an
// empty node, without applying it to the fake.
func transactionText(lay layout) func(*datapaths.NodeView) (string, error) {
	return func(view *datapaths.NodeView) (string, error) {
		tx, err := fullTransactionLayout(context.Background(), newFakeClient(), view, lay)
		if err != nil {
			return "", err
		}
		return tx.String(), nil
	}
}
