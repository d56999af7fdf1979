package ipvs

import (
	"bytes"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// backend names the iptables flavour and its binaries.
type backend struct {
	name    string    // "legacy" or "nft"
	cmd     string    // iptables-legacy, for --version
	save    [2]string // IPv4, IPv6
	restore [2]string
}

func newBackend(name string) (backend, error) {
	switch name {
	case "", "legacy":
		name = "legacy"
	case "nft":
	default:
		return backend{}, fmt.Errorf("iptables backend %q: want \"legacy\" or \"nft\"", name)
	}
	return backend{
		name:    name,
		cmd:     "iptables-" + name,
		save:    [2]string{"iptables-" + name + "-save", "ip6tables-" + name + "-save"},
		restore: [2]string{"iptables-" + name + "-restore", "ip6tables-" + name + "-restore"},
	}, nil
}

func (b backend) label() string { return "iptables-" + b.name }

func (b backend) saveCmd(f Family) string {
	if f == IPv6 {
		return b.save[1]
	}
	return b.save[0]
}

func (b backend) restoreCmd(f Family) string {
	if f == IPv6 {
		return b.restore[1]
	}
	return b.restore[0]
}

func (b backend) binaries() []string {
	return []string{b.cmd, b.save[0], b.save[1], b.restore[0], b.restore[1]}
}

var versionRE = regexp.MustCompile(`v(\d+)\.(\d+)\.(\d+)`)

// supportsRandomFully mirrors kube-proxy's HasRandomFully: MASQUERADE
// --random-fully exists since iptables 1.6.2.
func supportsRandomFully(versionOutput string) bool {
	m := versionRE.FindStringSubmatch(versionOutput)
	if m == nil {
		return false
	}
	v := [3]int{}
	for i := range v {
		v[i], _ = strconv.Atoi(m[i+1])
	}
	min := [3]int{1, 6, 2}
	for i := range v {
		if v[i] != min[i] {
			return v[i] > min[i]
		}
	}
	return true
}

// savedTable is one table of iptables-save output.
type savedTable struct {
	chains map[string]string // chain -> policy ("-" for user chains)
	rules  []string          // "-A CHAIN ..." lines, verbatim
}

// savedState is parsed iptables-save output, keyed by table.
type savedState map[string]*savedTable

// parseSave reads iptables-save output, skipping what it does not know.
func parseSave(out []byte) savedState {
	st := savedState{}
	var cur *savedTable
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "*"):
			cur = &savedTable{chains: map[string]string{}}
			st[line[1:]] = cur
		case cur == nil:
		case strings.HasPrefix(line, ":"):
			if f := strings.Fields(line[1:]); len(f) >= 2 {
				cur.chains[f[0]] = f[1]
			}
		case strings.HasPrefix(line, "-A "):
			cur.rules = append(cur.rules, line)
		case line == "COMMIT":
			cur = nil
		}
	}
	return st
}

func (st savedState) hasRule(table, line string) bool {
	t := st[table]
	return t != nil && slices.Contains(t.rules, line)
}

// restorePayload is the iptables-restore --noflush input that makes one
// family's chains equal to the desired ones: every chain is declared
// (which creates it or flushes it) and refilled. With full, jump rules
// that saved lacks are inserted at the top of their built-in chain; saved
// may be nil, meaning an empty kernel. nat comes before filter, as in
// kube-proxy's IPVS mode.
func restorePayload(fs *FamilyState, full bool, saved savedState) (payload []byte, rules int) {
	var buf bytes.Buffer
	for _, table := range []string{tableNAT, tableFilter} {
		chains := fs.NAT
		if table == tableFilter {
			chains = fs.Filter
		}
		buf.WriteString("*" + table + "\n")
		for _, c := range chains {
			buf.WriteString(":" + c.Name + " - [0:0]\n")
		}
		if full {
			for _, j := range fs.Jumps {
				if j.Table == table && !saved.hasRule(table, "-A "+j.Chain+" "+j.Spec) {
					// Position 1, as kube-proxy's EnsureRule(Prepend, ...).
					buf.WriteString("-I " + j.Chain + " 1 " + j.Spec + "\n")
					rules++
				}
			}
		}
		for _, c := range chains {
			for _, r := range c.Rules {
				buf.WriteString("-A " + c.Name + " " + r + "\n")
				rules++
			}
		}
		buf.WriteString("COMMIT\n")
	}
	return buf.Bytes(), rules
}

// ruleChainAndTarget returns the chain a saved "-A" line belongs to and
// the chain it jumps or goes to ("" if none).
func ruleChainAndTarget(line string) (chain, target string) {
	f := strings.Fields(line)
	if len(f) >= 2 {
		chain = f[1]
	}
	for i := 2; i+1 < len(f); i++ {
		if f[i] == "-j" || f[i] == "-g" {
			target = f[i+1]
		}
	}
	return chain, target
}

// cleanupPayload removes what this datapath installs from saved state:
// rules elsewhere that jump to our chains, then our chains themselves
// (kube-proxy's cleanupIptablesLeftovers). Chains of other datapaths
// (KUBE-SVC-* of iptables mode, say) are left alone. It returns nil when
// there is nothing to remove.
func cleanupPayload(saved savedState) []byte {
	var buf bytes.Buffer
	for _, table := range []string{tableNAT, tableFilter} {
		t := saved[table]
		if t == nil {
			continue
		}
		ours := natChains
		if table == tableFilter {
			ours = filterChains
		}
		var deletes, declares, removes []string
		for _, r := range t.rules {
			chain, target := ruleChainAndTarget(r)
			if !slices.Contains(ours, chain) && slices.Contains(ours, target) {
				// iptables-save output is valid restore input, so the saved
				// rule with -A turned into -D deletes exactly that rule.
				deletes = append(deletes, "-D"+strings.TrimPrefix(r, "-A"))
			}
		}
		var present []string
		for name := range t.chains {
			if slices.Contains(ours, name) {
				present = append(present, name)
			}
		}
		sort.Strings(present)
		for _, n := range present {
			// Declaring flushes, so -X finds the chain empty.
			declares = append(declares, ":"+n+" - [0:0]")
			removes = append(removes, "-X "+n)
		}
		if len(deletes)+len(present) == 0 {
			continue
		}
		buf.WriteString("*" + table + "\n")
		for _, l := range slices.Concat(declares, deletes, removes) {
			buf.WriteString(l + "\n")
		}
		buf.WriteString("COMMIT\n")
	}
	if buf.Len() == 0 {
		return nil
	}
	return buf.Bytes()
}
