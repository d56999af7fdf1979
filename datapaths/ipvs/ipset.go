package ipvs

import (
	"bytes"
	"slices"
	"sort"
	"strings"
)

// savedSet is one set as `ipset save` lists it.
type savedSet struct {
	typ     string
	entries map[string]bool
}

// parseIPSetSave reads `ipset save` output. Only create and add lines
// matter; anything else is skipped.
func parseIPSetSave(out []byte) map[string]*savedSet {
	sets := map[string]*savedSet{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[0] == "create":
			sets[f[1]] = &savedSet{typ: f[2], entries: map[string]bool{}}
		case len(f) >= 3 && f[0] == "add":
			if s := sets[f[1]]; s != nil {
				s.entries[f[2]] = true
			}
		}
	}
	return sets
}

// ipsetPlan is one `ipset restore -exist` payload and what it does.
type ipsetPlan struct {
	creates []string // create lines for sets missing from the kernel
	adds    []string // "add SET ENTRY"
	dels    []string // "del SET ENTRY"
}

func (p *ipsetPlan) empty() bool { return len(p.creates)+len(p.adds)+len(p.dels) == 0 }

// entries counts the entry writes.
func (p *ipsetPlan) entries() int { return len(p.adds) + len(p.dels) }

// createPayload creates the sets; it comes before iptables-restore, whose
// rules reference them.
func (p *ipsetPlan) createPayload() []byte { return lines(p.creates) }

// entryPayload adds and deletes entries. Deletions go first so a set near
// maxelem does not overflow in between.
func (p *ipsetPlan) entryPayload() []byte { return lines(slices.Concat(p.dels, p.adds)) }

func lines(ls []string) []byte {
	if len(ls) == 0 {
		return nil
	}
	var b bytes.Buffer
	for _, l := range ls {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// planIPSets diffs the desired sets against what is there. current is
// either the kernel's state (a full sync, from `ipset save`) or the last
// sync's (a partial sync); a set absent from current is created. A set of
// the right name but another type is destroyed and recreated, which only
// happens to leftovers of an incompatible version.
func planIPSets(st *State, current map[string]*savedSet) *ipsetPlan {
	p := &ipsetPlan{}
	for _, fs := range st.Families {
		for _, set := range fs.Sets {
			cur := current[set.Name]
			if cur != nil && cur.typ != set.Type {
				p.creates = append(p.creates, "destroy "+set.Name)
				cur = nil
			}
			if cur == nil {
				p.creates = append(p.creates, set.createLine())
				cur = &savedSet{entries: map[string]bool{}}
			}
			want := map[string]bool{}
			for _, e := range set.Entries {
				want[e] = true
				if !cur.entries[e] {
					p.adds = append(p.adds, "add "+set.Name+" "+e)
				}
			}
			var stale []string
			for e := range cur.entries {
				if !want[e] {
					stale = append(stale, "del "+set.Name+" "+e)
				}
			}
			sort.Strings(stale)
			p.dels = append(p.dels, stale...)
		}
	}
	return p
}

// destroyPayload destroys every set of ours that saved lists.
func destroyPayload(saved map[string]*savedSet) []byte {
	var names []string
	for name := range saved {
		if isOurSet(name) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	var ls []string
	for _, n := range names {
		ls = append(ls, "destroy "+n)
	}
	return lines(ls)
}
