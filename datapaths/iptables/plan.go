package iptables

import (
	"bytes"
	"slices"
	"sort"
	"strings"
)

// appliedFamily remembers what the last successful sync wrote in one
// family: per Service, the hash of its rendered state and the nat chains
// it owned. It is all a partial sync needs, so partial syncs never read
// the kernel (kube-proxy keeps the same knowledge in its change trackers).
type appliedFamily struct {
	services map[string]appliedService
}

type appliedService struct {
	hash string
	// chains are the rendered chains (shared with the render, never
	// modified); only their names matter here.
	chains []Chain
}

func newApplied(fr *FamilyRules) *appliedFamily {
	a := &appliedFamily{services: make(map[string]appliedService, len(fr.Services))}
	for _, s := range fr.Services {
		a.services[s.Service] = appliedService{hash: s.Hash, chains: s.Chains}
	}
	return a
}

// goneChains appends to out the chains of prev that next no longer has.
func goneChains(out []string, prev, next []Chain) []string {
	if len(prev) == 0 {
		return out
	}
	var have map[string]bool
	if len(next) > 16 {
		have = make(map[string]bool, len(next))
		for _, c := range next {
			have[c.Name] = true
		}
	}
	for _, c := range prev {
		found := have[c.Name]
		if have == nil {
			found = slices.ContainsFunc(next, func(n Chain) bool { return n.Name == c.Name })
		}
		if !found {
			out = append(out, tableNAT+" "+c.Name)
		}
	}
	return out
}

// savedTable is one table of iptables-save output.
type savedTable struct {
	// chains maps every chain to its policy ("-" for user-defined chains).
	chains map[string]string
	// rules are the "-A CHAIN ..." lines, verbatim.
	rules []string
}

// savedState is parsed iptables-save output, keyed by table name.
type savedState map[string]*savedTable

// parseSave reads iptables-save output. Lines it does not understand
// (comments, warnings that the tool mixed into its output) are skipped.
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
			f := strings.Fields(line[1:])
			if len(f) >= 2 {
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

// syncPlan is what one family's sync will write.
type syncPlan struct {
	full    bool
	payload []byte
	// written counts the rules in payload ("-A" and "-I" lines).
	written int
	// services rewritten (changed, added) or removed, by "namespace/name".
	changed []string
	// deleted lists the chains flushed and removed with -X.
	deleted []string
	// jumps lists the jump rules inserted because they were missing.
	jumps []JumpRule
	// applied is what the kernel holds once payload is restored.
	applied *appliedFamily
}

// restoreWriter accumulates one table of iptables-restore input, keeping
// chain declarations ahead of the rules that reference them.
type restoreWriter struct {
	chains, inserts, rules, deletes bytes.Buffer
	declared                        map[string]bool
	written                         int
}

func newRestoreWriter() *restoreWriter { return &restoreWriter{declared: map[string]bool{}} }

// declare writes ":NAME - [0:0]"; with --noflush this creates the chain or
// empties it if it exists.
func (w *restoreWriter) declare(name string) {
	if w.declared[name] {
		return
	}
	w.declared[name] = true
	w.chains.WriteByte(':')
	w.chains.WriteString(name)
	w.chains.WriteString(" - [0:0]\n")
}

func (w *restoreWriter) chain(c Chain) {
	w.declare(c.Name)
	for _, r := range c.Rules {
		w.rules.WriteString("-A ")
		w.rules.WriteString(c.Name)
		if r != "" {
			w.rules.WriteByte(' ')
			w.rules.WriteString(r)
		}
		w.rules.WriteByte('\n')
		w.written++
	}
}

// chainBytes is the size of c's rules as restore input.
func chainBytes(c Chain) int {
	n := 0
	for _, r := range c.Rules {
		n += len("-A  \n") + len(c.Name) + len(r)
	}
	return n
}

// len is the size of the table's restore input, give or take its header.
func (w *restoreWriter) len() int {
	return w.chains.Len() + w.inserts.Len() + w.rules.Len() + w.deletes.Len() + len("*filter\nCOMMIT\n")
}

func (w *restoreWriter) insert(j JumpRule) {
	// Position 1, as kube-proxy's EnsureRule(Prepend, ...).
	w.inserts.WriteString("-I " + j.Chain + " 1 " + j.Spec + "\n")
	w.written++
}

func (w *restoreWriter) remove(name string) {
	w.declare(name) // flush first: -X refuses a non-empty chain
	w.deletes.WriteString("-X " + name + "\n")
}

func (w *restoreWriter) writeTo(buf *bytes.Buffer, table string) {
	buf.WriteString("*" + table + "\n")
	buf.Write(w.chains.Bytes())
	buf.Write(w.inserts.Bytes())
	buf.Write(w.rules.Bytes())
	buf.Write(w.deletes.Bytes())
	buf.WriteString("COMMIT\n")
}

// planSync decides what to write for one family.
//
// A partial sync (full == false, last != nil) writes every filter chain and
// the top-level nat chains, which kube-proxy rewrites on every sync, plus
// the nat chains of Services whose hash changed, and flushes and deletes
// the chains that the last sync wrote and the desired state no longer has.
//
// A full sync writes everything, inserts the jump rules that saved (the
// current kernel state) lacks, and removes every stray KUBE-* chain in
// saved that nothing outside our chains refers to. saved may be nil, which
// means "an empty kernel".
func planSync(fr *FamilyRules, last *appliedFamily, full bool, saved savedState) *syncPlan {
	if last == nil {
		full = true
	}
	p := &syncPlan{full: full}
	filter, nat := newRestoreWriter(), newRestoreWriter()
	writers := map[string]*restoreWriter{tableFilter: filter, tableNAT: nat}

	if full {
		// Size the nat rules once: at 10,000 Services the restore input
		// is tens of megabytes, and growing it by doubling copies it over
		// and over.
		size, chains := 0, len(fr.NAT)
		for _, s := range fr.Services {
			chains += len(s.Chains)
			for _, c := range s.Chains {
				size += chainBytes(c)
			}
		}
		for _, c := range fr.NAT {
			size += chainBytes(c)
		}
		nat.rules.Grow(size)
		nat.declared = make(map[string]bool, chains)
		for _, j := range fr.Jumps {
			if !saved.hasRule(j.Table, "-A "+j.Chain+" "+j.Spec) {
				writers[j.Table].insert(j)
				p.jumps = append(p.jumps, j)
			}
		}
	}
	for _, c := range fr.Filter {
		filter.chain(c)
	}
	for _, c := range fr.NAT {
		nat.chain(c)
	}

	// Chain names hash the Service port's name, so a chain belongs to one
	// Service: the chains to delete are those that a changed or removed
	// Service had and no longer has. Unchanged Services are not looked at
	// beyond their hash.
	next := newApplied(fr)
	p.applied = next
	changed := map[string]bool{}
	var deleted []string
	for _, s := range fr.Services {
		prev, known := appliedService{}, false
		if last != nil {
			prev, known = last.services[s.Service]
		}
		if full || !known || prev.hash != s.Hash {
			changed[s.Service] = true
			for _, c := range s.Chains {
				nat.chain(c)
			}
			deleted = goneChains(deleted, prev.chains, s.Chains)
		}
	}
	if last != nil {
		for name, prev := range last.services {
			if _, ok := next.services[name]; !ok {
				changed[name] = true
				deleted = goneChains(deleted, prev.chains, nil)
			}
		}
	}
	if full {
		desired := map[string]bool{}
		for _, s := range fr.Services {
			for _, c := range s.Chains {
				desired[c.Name] = true
			}
		}
		for _, table := range []string{tableFilter, tableNAT} {
			for _, c := range saved.strayChains(table, writers[table].declared, desired) {
				deleted = append(deleted, table+" "+c)
			}
		}
	}
	sort.Strings(deleted)
	deleted = slices.Compact(deleted)
	for _, d := range deleted {
		table, name, _ := strings.Cut(d, " ")
		writers[table].remove(name)
		p.deleted = append(p.deleted, name)
	}

	for s := range changed {
		p.changed = append(p.changed, s)
	}
	sort.Strings(p.changed)

	var buf bytes.Buffer
	buf.Grow(filter.len() + nat.len() + 64)
	// Filter first, then nat, as kube-proxy. iptables-restore commits each
	// table at its COMMIT: if nat fails, the old nat rules keep forwarding.
	filter.writeTo(&buf, tableFilter)
	nat.writeTo(&buf, tableNAT)
	p.payload = buf.Bytes()
	p.written = filter.written + nat.written
	return p
}

func (st savedState) hasRule(table, line string) bool {
	t := st[table]
	return t != nil && slices.Contains(t.rules, line)
}

// strayChains lists KUBE-* chains in the table that neither the payload
// declares nor the desired Service chains include. A chain that a rule
// outside the KUBE-* chains still refers to is left alone: deleting it
// would make the whole restore fail, and it is not ours to unhook.
func (st savedState) strayChains(table string, declared, desired map[string]bool) []string {
	t := st[table]
	if t == nil {
		return nil
	}
	referenced := map[string]bool{}
	for _, r := range t.rules {
		chain, target := ruleChainAndTarget(r)
		if !strings.HasPrefix(chain, "KUBE-") {
			referenced[target] = true
		}
	}
	var out []string
	for name, policy := range t.chains {
		if policy != "-" || !strings.HasPrefix(name, "KUBE-") {
			continue
		}
		if declared[name] || desired[name] || referenced[name] {
			continue
		}
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// planCleanup builds the restore input that removes everything KUBE-* from
// the saved state: rules in other chains that jump to a KUBE-* chain, then
// the KUBE-* chains themselves. It returns nil when there is nothing to do.
func planCleanup(saved savedState) []byte {
	var buf bytes.Buffer
	for _, table := range []string{tableFilter, tableNAT} {
		t := saved[table]
		if t == nil {
			continue
		}
		w := newRestoreWriter()
		for _, r := range t.rules {
			chain, target := ruleChainAndTarget(r)
			if !strings.HasPrefix(chain, "KUBE-") && strings.HasPrefix(target, "KUBE-") {
				// iptables-save output is valid restore input, so the saved
				// rule with -A turned into -D deletes exactly that rule.
				w.inserts.WriteString("-D" + strings.TrimPrefix(r, "-A") + "\n")
			}
		}
		var names []string
		for name, policy := range t.chains {
			if policy == "-" && strings.HasPrefix(name, "KUBE-") {
				names = append(names, name)
			}
		}
		sort.Strings(names)
		for _, n := range names {
			w.remove(n)
		}
		if w.inserts.Len() == 0 && len(names) == 0 {
			continue
		}
		w.writeTo(&buf, table)
	}
	if buf.Len() == 0 {
		return nil
	}
	return buf.Bytes()
}
