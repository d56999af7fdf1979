package iptables

import (
	"maps"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"
)

// appliedFamily remembers what the last successful sync wrote in one
// family: per Service, the hash of its rendered state and the nat chains
// it owned. It is all a partial sync needs, so partial syncs never read
// the kernel (kube-proxy keeps the same knowledge in its change trackers).
type appliedFamily struct {
	// services are the rendered Services (shared with the render, never
	// modified), sorted by name; only their hashes and chain names matter.
	services []ServiceChains
}

func newApplied(fr *FamilyRules) *appliedFamily {
	return &appliedFamily{services: sortedServices(fr)}
}

// sortedServices returns fr's Services when their names strictly increase,
// as Render makes them; otherwise a sorted copy with one entry per name
// (the last).
func sortedServices(fr *FamilyRules) []ServiceChains {
	s := fr.Services
	if fr.sorted {
		return s
	}
	strict := true
	for i := 1; i < len(s) && strict; i++ {
		strict = s[i-1].Service < s[i].Service
	}
	if strict {
		return s
	}
	out := slices.Clone(s)
	slices.SortStableFunc(out, func(a, b ServiceChains) int { return strings.Compare(a.Service, b.Service) })
	n := 0
	for i := range out {
		if i+1 < len(out) && out[i+1].Service == out[i].Service {
			continue
		}
		out[n] = out[i]
		n++
	}
	return out[:n]
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
// A full sync at 1,000 Services parses some 20,000 lines, counted as
// proxyrig's own time, so lines are cut from one string without a list
// of them and chain lines without strings.Fields.
func parseSave(out []byte) savedState {
	st := savedState{}
	var cur *savedTable
	text := string(out)
	for len(text) > 0 {
		line := text
		if i := strings.IndexByte(text, '\n'); i >= 0 {
			line, text = text[:i], text[i+1:]
		} else {
			text = ""
		}
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "*"):
			cur = &savedTable{chains: map[string]string{}}
			st[line[1:]] = cur
		case cur == nil:
		case strings.HasPrefix(line, ":"):
			if name, policy, ok := twoFields(line[1:]); ok {
				cur.chains[name] = policy
			}
		case strings.HasPrefix(line, "-A "):
			cur.rules = append(cur.rules, line)
		case line == "COMMIT":
			cur = nil
		}
	}
	return st
}

// twoFields returns the first two fields of s as strings.Fields splits
// them, without building the list of every field.
func twoFields(s string) (a, b string, ok bool) {
	var f [2]string
	n := 0
	for i := 0; i < len(s) && n < 2; {
		c := s[i]
		if c >= utf8.RuneSelf {
			// Unicode white space: leave it to strings.Fields.
			all := strings.Fields(s)
			if len(all) < 2 {
				return "", "", false
			}
			return all[0], all[1], true
		}
		if asciiSpace(c) {
			i++
			continue
		}
		j := i
		for j < len(s) && s[j] < utf8.RuneSelf && !asciiSpace(s[j]) {
			j++
		}
		if j < len(s) && s[j] >= utf8.RuneSelf {
			i = j // let the check above decide
			continue
		}
		f[n] = s[i:j]
		n++
		i = j
	}
	return f[0], f[1], n == 2
}

func asciiSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
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

// tableWriter collects one table of iptables-restore input and formats it
// once, into a buffer of the exact size: at 10,000 Services a full sync's
// input is tens of megabytes, which should be neither grown by doubling
// nor copied from part buffers.
//
// The input is the table's chain declarations (":NAME - [0:0]", which
// with --noflush creates the chain or empties it), then the inserted jump
// rules, the rules of the written chains, and the deletions, so that every
// chain exists before a rule refers to it and is flushed before -X.
type tableWriter struct {
	table   string
	inserts []string // whole "-I ..." or "-D ..." lines
	chains  []Chain  // declared, and their rules written
	removes []string // flushed (declared unless written) and deleted
	written int      // "-A" and "-I" lines
}

// chain writes a chain. Chain names never repeat in a rendered family:
// the top-level chains are distinct and a per-Service chain's name hashes
// the Service port's name, so nothing here looks for duplicates.
func (w *tableWriter) chain(c Chain) {
	w.chains = append(w.chains, c)
	w.written += len(c.Rules)
}

func (w *tableWriter) insert(j JumpRule) {
	// Position 1, as kube-proxy's EnsureRule(Prepend, ...).
	w.inserts = append(w.inserts, "-I "+j.Chain+" 1 "+j.Spec)
	w.written++
}

// remove flushes and deletes a chain (-X refuses a non-empty chain).
func (w *tableWriter) remove(name string) { w.removes = append(w.removes, name) }

// flushOnly returns the removed chains that are not written anyway, which
// need a declaration of their own.
func (w *tableWriter) flushOnly() []string {
	if len(w.removes) == 0 {
		return nil
	}
	written := make(map[string]bool, len(w.removes))
	for _, name := range w.removes {
		written[name] = false
	}
	for _, c := range w.chains {
		if _, ok := written[c.Name]; ok {
			written[c.Name] = true
		}
	}
	var out []string
	for _, name := range w.removes {
		if !written[name] {
			written[name] = true // declared once
			out = append(out, name)
		}
	}
	return out
}

const (
	declSuffix = " - [0:0]\n"
	commit     = "COMMIT\n"
)

// chainBytes is the size of c's rules as restore input.
func chainBytes(c Chain) int {
	n := len(c.Rules) * (len("-A \n") + len(c.Name))
	for _, r := range c.Rules {
		if r != "" {
			n += 1 + len(r)
		}
	}
	return n
}

// size is the exact length of the table's restore input.
func (w *tableWriter) size(flush []string) int {
	n := len("*\n") + len(w.table) + len(commit)
	for _, c := range w.chains {
		n += len(":") + len(c.Name) + len(declSuffix) + chainBytes(c)
	}
	for _, name := range flush {
		n += len(":") + len(name) + len(declSuffix)
	}
	for _, l := range w.inserts {
		n += len(l) + 1
	}
	for _, name := range w.removes {
		n += len("-X \n") + len(name)
	}
	return n
}

func appendDecl(b []byte, name string) []byte {
	b = append(b, ':')
	b = append(b, name...)
	return append(b, declSuffix...)
}

func (w *tableWriter) appendTo(b []byte, flush []string) []byte {
	b = append(b, '*')
	b = append(b, w.table...)
	b = append(b, '\n')
	for _, c := range w.chains {
		b = appendDecl(b, c.Name)
	}
	for _, name := range flush {
		b = appendDecl(b, name)
	}
	for _, l := range w.inserts {
		b = append(b, l...)
		b = append(b, '\n')
	}
	for _, c := range w.chains {
		for _, r := range c.Rules {
			b = append(b, "-A "...)
			b = append(b, c.Name...)
			if r != "" {
				b = append(b, ' ')
				b = append(b, r...)
			}
			b = append(b, '\n')
		}
	}
	for _, name := range w.removes {
		b = append(b, "-X "...)
		b = append(b, name...)
		b = append(b, '\n')
	}
	return append(b, commit...)
}

// payload formats the tables in order into one buffer.
func payload(ws ...*tableWriter) []byte {
	flush := make([][]string, len(ws))
	n := 0
	for i, w := range ws {
		flush[i] = w.flushOnly()
		n += w.size(flush[i])
	}
	b := make([]byte, 0, n)
	for i, w := range ws {
		b = w.appendTo(b, flush[i])
	}
	return b
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
	filter, nat := &tableWriter{table: tableFilter}, &tableWriter{table: tableNAT}
	writers := map[string]*tableWriter{tableFilter: filter, tableNAT: nat}

	if full {
		chains := len(fr.NAT)
		for _, s := range fr.Services {
			chains += len(s.Chains)
		}
		nat.chains = make([]Chain, 0, chains)
		have := map[string]map[string]bool{}
		for _, j := range fr.Jumps {
			if have[j.Table] == nil {
				have[j.Table] = saved.outsideRules(j.Table)
			}
			if !have[j.Table]["-A "+j.Chain+" "+j.Spec] {
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
	// beyond their hash. Both lists are sorted by name, so one walk pairs
	// each Service with its last state.
	services := sortedServices(fr)
	p.applied = &appliedFamily{services: services}
	var prev []ServiceChains
	if last != nil {
		prev = last.services
	}
	var deleted []string
	removed := func(s ServiceChains) {
		p.changed = append(p.changed, s.Service)
		deleted = goneChains(deleted, s.Chains, nil)
	}
	i := 0
	for _, s := range services {
		// Unchanged Services share their strings with the last render, so
		// equality is the cheap test; order is looked at only when it fails.
		for i < len(prev) && prev[i].Service != s.Service && prev[i].Service < s.Service {
			removed(prev[i])
			i++
		}
		var was *ServiceChains
		if i < len(prev) && prev[i].Service == s.Service {
			was = &prev[i]
			i++
		}
		if full || was == nil || was.Hash != s.Hash {
			p.changed = append(p.changed, s.Service)
			for _, c := range s.Chains {
				nat.chain(c)
			}
			if was != nil {
				deleted = goneChains(deleted, was.Chains, s.Chains)
			}
		}
	}
	for ; i < len(prev); i++ {
		removed(prev[i])
	}
	if full {
		for _, w := range []*tableWriter{filter, nat} {
			for _, c := range saved.strayChains(w.table, w.chains, fr.Services) {
				deleted = append(deleted, w.table+" "+c)
			}
		}
	}
	slices.Sort(deleted)
	deleted = slices.Compact(deleted)
	for _, d := range deleted {
		table, name, _ := strings.Cut(d, " ")
		writers[table].remove(name)
		p.deleted = append(p.deleted, name)
	}
	slices.Sort(p.changed)
	p.changed = slices.Compact(p.changed)

	// Filter first, then nat, as kube-proxy. iptables-restore commits each
	// table at its COMMIT: if nat fails, the old nat rules keep forwarding.
	p.payload = payload(filter, nat)
	p.written = filter.written + nat.written
	return p
}

// outsideRules returns the saved rules of the table's chains that are not
// KUBE-* chains (the built-in chains, where jump rules go), as a set.
func (st savedState) outsideRules(table string) map[string]bool {
	out := map[string]bool{}
	if t := st[table]; t != nil {
		for _, r := range t.rules {
			if !strings.HasPrefix(r, "-A KUBE-") {
				out[r] = true
			}
		}
	}
	return out
}

// strayChains lists KUBE-* chains in the table that neither the payload
// writes nor the desired Service chains include. A chain that a rule
// outside the KUBE-* chains still refers to is left alone: deleting it
// would make the whole restore fail, and it is not ours to unhook.
func (st savedState) strayChains(table string, written []Chain, services []ServiceChains) []string {
	t := st[table]
	if t == nil {
		return nil
	}
	referenced := map[string]bool{}
	for _, r := range t.rules {
		if strings.HasPrefix(r, "-A KUBE-") {
			continue // a rule of a KUBE-* chain, which the next test skips too
		}
		chain, target := ruleChainAndTarget(r)
		if !strings.HasPrefix(chain, "KUBE-") {
			referenced[target] = true
		}
	}
	stray := map[string]bool{}
	for name, policy := range t.chains {
		if policy == "-" && strings.HasPrefix(name, "KUBE-") && !referenced[name] {
			stray[name] = true
		}
	}
	if len(stray) == 0 {
		return nil
	}
	for _, c := range written {
		delete(stray, c.Name)
	}
	for _, s := range services {
		for _, c := range s.Chains {
			delete(stray, c.Name)
		}
	}
	return slices.Sorted(maps.Keys(stray))
}

// planCleanup builds the restore input that removes everything KUBE-* from
// the saved state: rules in other chains that jump to a KUBE-* chain, then
// the KUBE-* chains themselves. It returns nil when there is nothing to do.
func planCleanup(saved savedState) []byte {
	var ws []*tableWriter
	for _, table := range []string{tableFilter, tableNAT} {
		t := saved[table]
		if t == nil {
			continue
		}
		w := &tableWriter{table: table}
		for _, r := range t.rules {
			chain, target := ruleChainAndTarget(r)
			if !strings.HasPrefix(chain, "KUBE-") && strings.HasPrefix(target, "KUBE-") {
				// iptables-save output is valid restore input, so the saved
				// rule with -A turned into -D deletes exactly that rule.
				w.inserts = append(w.inserts, "-D"+strings.TrimPrefix(r, "-A"))
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
		if len(w.inserts) == 0 && len(names) == 0 {
			continue
		}
		ws = append(ws, w)
	}
	if len(ws) == 0 {
		return nil
	}
	return payload(ws...)
}
