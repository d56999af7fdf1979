package nftables

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"sigs.k8s.io/knftables"

	"proxyrig/datapaths"
)

var (
	_ datapaths.FaultInjector = (*Proxier)(nil)
	_ datapaths.FaultKinds    = (*Proxier)(nil)
	_ datapaths.StateDumper   = (*Proxier)(nil)
)

// faultChain is a chain no sync ever creates.
const faultChain = "proxyrig-fault"

// FailNextSync implements datapaths.FaultInjector: the next Sync's
// transaction, full or partial, ends with a flush of a chain that does not
// exist, so nft rejects the whole transaction inside the real apply path
// and the kernel keeps the previous ruleset. The Sync after it is full.
func (p *Proxier) FailNextSync() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	prev := p.hookTransaction
	p.hookTransaction = func(tx *knftables.Transaction) {
		// One shot; Sync calls the hook with p.mu held.
		p.hookTransaction = prev
		if prev != nil {
			prev(tx)
		}
		tx.Flush(&knftables.Chain{Family: knftables.IPv4Family, Table: kubeProxyTable, Name: faultChain})
	}
	return "the transaction flushes the missing chain ip kube-proxy " + faultChain + ", so nft rejects all of it"
}

// Faults implements datapaths.FaultKinds. The apply path is one nft
// transaction (knftables runs the nft binary, which speaks netlink
// itself); conntrack cleanup does not fail a sync, as in kube-proxy.
func (p *Proxier) Faults() []string { return []string{datapaths.FaultNFTTransaction} }

// InjectFault implements datapaths.FaultKinds.
func (p *Proxier) InjectFault(kind string) (datapaths.Fault, error) {
	switch kind {
	case datapaths.FaultNFTTransaction:
		return datapaths.Fault{Kind: kind, Desc: p.FailNextSync(), Cause: faultChain}, nil
	}
	return datapaths.Fault{}, fmt.Errorf("nftables datapath: no fault kind %q (have %v)", kind, p.Faults())
}

// DumpState implements datapaths.StateDumper: both kube-proxy tables,
// canonicalized by CanonicalRuleset. A missing table prints as such.
// Equivalent to: nft list table ip kube-proxy; nft list table ip6 kube-proxy
func (p *Proxier) DumpState(ctx context.Context) (string, error) {
	var b strings.Builder
	for _, f := range families {
		out, err := p.cfg.NS.Run(ctx, nil, "nft", "list", "table", string(f), kubeProxyTable)
		if err != nil {
			if strings.Contains(err.Error(), "No such file or directory") {
				fmt.Fprintf(&b, "# no table %s %s\n", f, kubeProxyTable)
				continue
			}
			return "", fmt.Errorf("dump nftables table %s %s in netns %s: %w", f, kubeProxyTable, p.cfg.NS.Name, err)
		}
		b.WriteString(CanonicalRuleset(string(out)))
	}
	return b.String(), nil
}

var counterRE = regexp.MustCompile(`counter packets \d+ bytes \d+`)

// CanonicalRuleset normalizes `nft list table` output so that equal
// tables print equally whatever order their objects were created in: the
// table's chains, sets and maps are sorted by their header line, the
// elements of each set or map are sorted, and counters are zeroed. Rules
// keep their order: in a chain, order is meaning.
func CanonicalRuleset(list string) string {
	lines := strings.Split(strings.TrimRight(list, "\n"), "\n")
	var head, tail string
	var blocks [][]string
	var cur []string
	depth := 0
	for _, l := range lines {
		l = counterRE.ReplaceAllString(l, "counter packets 0 bytes 0")
		trimmed := strings.TrimSpace(l)
		switch {
		case depth == 0:
			head = l
		case depth == 1 && trimmed == "}":
			tail = l
		case depth == 1 && trimmed == "":
		default:
			cur = append(cur, l)
		}
		depth += strings.Count(l, "{") - strings.Count(l, "}")
		if depth == 1 && len(cur) > 0 && trimmed != "" && (strings.HasSuffix(trimmed, "}") || !strings.Contains(strings.Join(cur, ""), "{")) {
			blocks = append(blocks, canonicalBlock(cur))
			cur = nil
		}
	}
	if len(cur) > 0 {
		blocks = append(blocks, canonicalBlock(cur))
	}
	slices.SortFunc(blocks, func(a, b []string) int { return strings.Compare(a[0], b[0]) })
	var b strings.Builder
	b.WriteString(head + "\n")
	for _, bl := range blocks {
		for _, l := range bl {
			b.WriteString(l + "\n")
		}
	}
	b.WriteString(tail + "\n")
	return b.String()
}

// canonicalBlock sorts the elements of a set or map block; other lines
// stay as they are.
func canonicalBlock(block []string) []string {
	var out []string
	for i := 0; i < len(block); i++ {
		l := block[i]
		t := strings.TrimSpace(l)
		if !strings.HasPrefix(t, "elements = {") {
			out = append(out, l)
			continue
		}
		// Collect up to the closing brace of the element list.
		text := strings.TrimPrefix(t, "elements = {")
		for !strings.HasSuffix(strings.TrimSpace(text), "}") && i+1 < len(block) {
			i++
			text += " " + strings.TrimSpace(block[i])
		}
		text = strings.TrimSuffix(strings.TrimSpace(text), "}")
		var elems []string
		for _, e := range strings.Split(text, ",") {
			if e = strings.Join(strings.Fields(e), " "); e != "" {
				elems = append(elems, e)
			}
		}
		slices.Sort(elems)
		out = append(out, "\t\telements = {")
		for _, e := range elems {
			out = append(out, "\t\t\t"+e+",")
		}
		out = append(out, "\t\t}")
	}
	return out
}

// WipeState implements datapaths.StateDumper: it deletes the IPv4
// kube-proxy table behind the datapath's back.
func (p *Proxier) WipeState(ctx context.Context) (string, error) {
	argv := []string{"nft", "delete", "table", "ip", kubeProxyTable}
	if _, err := p.cfg.NS.Run(ctx, nil, argv...); err != nil {
		return "", fmt.Errorf("wipe in netns %s: %w", p.cfg.NS.Name, err)
	}
	return strings.Join(argv, " "), nil
}
