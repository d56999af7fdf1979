package nftables

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"syscall"
	"time"

	"sigs.k8s.io/knftables"

	"proxyrig/model"
)

// staleChainDelay is how long a flushed, unreferenced per-Service chain
// waits before it is deleted. Kernels before 6.2 notice only a short while
// after a map element is deleted that the chain it pointed to is no longer
// referenced, so kube-proxy flushes stale chains in the sync that orphans
// them and deletes them in a later sync, at least a second afterwards.
const staleChainDelay = time.Second

// nftBaseChain is one chain attached to a netfilter hook.
type nftBaseChain struct {
	name      string
	chainType knftables.BaseChainType
	hook      knftables.BaseChainHook
	priority  knftables.BaseChainPriority
}

// nftablesBaseChains are kube-proxy's base chains. The source-range
// firewall must see the address the client used, so it runs just before
// DNAT (dstnat-10). Everything else runs at filter priority, after DNAT:
// a packet that a Service chain DNATed (a short-circuited one included)
// no longer carries a Service address, so only packets no Service chain
// took are checked for missing endpoints or unused ClusterIP ports.
var nftablesBaseChains = []nftBaseChain{
	{filterPreroutingPreDNATChain, knftables.FilterType, knftables.PreroutingHook, knftables.DNATPriority + "-10"},
	{filterOutputPreDNATChain, knftables.FilterType, knftables.OutputHook, knftables.DNATPriority + "-10"},
	{filterInputChain, knftables.FilterType, knftables.InputHook, knftables.FilterPriority},
	{filterForwardChain, knftables.FilterType, knftables.ForwardHook, knftables.FilterPriority},
	{filterOutputChain, knftables.FilterType, knftables.OutputHook, knftables.FilterPriority},
	{natPreroutingChain, knftables.NATType, knftables.PreroutingHook, knftables.DNATPriority},
	{natOutputChain, knftables.NATType, knftables.OutputHook, knftables.DNATPriority},
	{natPostroutingChain, knftables.NATType, knftables.PostroutingHook, knftables.SNATPriority},
}

// nftJumpChain is a regular chain jumped to from a base chain.
type nftJumpChain struct {
	dstChain, srcChain, extraArgs string
}

var nftablesJumpChains = []nftJumpChain{
	// reject is valid only in input, forward and output hooks on kernels
	// before 5.9, so the endpoint checks cannot share prerouting with the
	// firewall check; together the three hooks cover every path.
	{nodePortEndpointsCheckChain, filterInputChain, "ct state new"},
	{serviceEndpointsCheckChain, filterInputChain, "ct state new"},
	{serviceEndpointsCheckChain, filterForwardChain, "ct state new"},
	{serviceEndpointsCheckChain, filterOutputChain, "ct state new"},

	{firewallCheckChain, filterPreroutingPreDNATChain, "ct state new"},
	{firewallCheckChain, filterOutputPreDNATChain, "ct state new"},

	{servicesChain, natOutputChain, ""},
	{servicesChain, natPreroutingChain, ""},
	{masqueradingChain, natPostroutingChain, ""},

	{clusterIPsCheckChain, filterForwardChain, "ct state new"},
	{clusterIPsCheckChain, filterOutputChain, "ct state new"},
}

// containerNames are the maps and sets whose elements are diffed one by
// one on every sync, and flushed on a full one.
var containerNames = []struct {
	name  string
	isSet bool
}{
	{clusterIPsSet, true},
	{serviceIPsMap, false},
	{firewallIPsMap, false},
	{noEndpointServicesMap, false},
	{noEndpointNodePortsMap, false},
	{serviceNodePortsMap, false},
}

// elementStorage remembers the elements of one map or set as last written,
// so a sync adds, replaces and deletes only what differs; kube-proxy's
// nftElementStorage.
type elementStorage struct {
	family   knftables.Family
	name     string
	isSet    bool
	elements map[string]string // key joined by " . " -> value
	leftover map[string]bool   // keys not (yet) seen in this sync
	// owner is the Service that last wrote each key, so a partial sync
	// deletes a key a Service gave up only if no other Service took it.
	owner map[string]model.ServiceName
}

func newElementStorage(f knftables.Family, name string, isSet bool) *elementStorage {
	return &elementStorage{family: f, name: name, isSet: isSet, elements: map[string]string{}, leftover: map[string]bool{}, owner: map[string]model.ServiceName{}}
}

func (s *elementStorage) object() knftables.Object {
	if s.isSet {
		return &knftables.Set{Family: s.family, Table: kubeProxyTable, Name: s.name}
	}
	return &knftables.Map{Family: s.family, Table: kubeProxyTable, Name: s.name}
}

// reset forgets every element and flushes the container (full sync).
func (s *elementStorage) reset(tx *knftables.Transaction) {
	clear(s.elements)
	clear(s.leftover)
	clear(s.owner)
	tx.Flush(s.object())
}

// begin marks every known element as leftover until ensure sees it.
func (s *elementStorage) begin() {
	clear(s.leftover)
	for k := range s.elements {
		s.leftover[k] = true
	}
}

// ensureFor adds elem, on behalf of Service owner, unless it is there with
// the same value; a changed value is deleted and re-added, since nft
// cannot replace an element in place.
func (s *elementStorage) ensureFor(tx *knftables.Transaction, elem *knftables.Element, owner model.ServiceName) {
	key := strings.Join(elem.Key, " . ")
	s.owner[key] = owner
	value := strings.Join(elem.Value, " . ")
	if old, ok := s.elements[key]; ok {
		if old != value {
			tx.Delete(elem)
			tx.Add(elem)
			s.elements[key] = value
		}
		delete(s.leftover, key)
		return
	}
	tx.Add(elem)
	s.elements[key] = value
}

// removeFor deletes elem's key, which Service owner no longer has, unless
// another Service wrote it since.
func (s *elementStorage) removeFor(tx *knftables.Transaction, elem *knftables.Element, owner model.ServiceName) {
	key := strings.Join(elem.Key, " . ")
	if _, ok := s.elements[key]; !ok || s.owner[key] != owner {
		return
	}
	e := &knftables.Element{Family: s.family, Table: kubeProxyTable, Key: elem.Key}
	if s.isSet {
		e.Set = s.name
	} else {
		e.Map = s.name
	}
	tx.Delete(e)
	delete(s.elements, key)
	delete(s.owner, key)
}

// cleanup deletes the elements no Service claimed in this sync, in sorted
// order so the transaction text is deterministic.
func (s *elementStorage) cleanup(tx *knftables.Transaction) {
	for _, key := range slices.Sorted(maps.Keys(s.leftover)) {
		e := &knftables.Element{Family: s.family, Table: kubeProxyTable, Key: strings.Split(key, " . ")}
		if s.isSet {
			e.Set = s.name
		} else {
			e.Map = s.name
		}
		tx.Delete(e)
		delete(s.elements, key)
		delete(s.owner, key)
	}
	clear(s.leftover)
}

// familyApplied is what the proxier believes one family's table holds.
type familyApplied struct {
	base     string                              // BaseState.key() of the last full sync
	services map[model.ServiceName]*ServiceState // Service -> its state as written
	storages map[string]*elementStorage
	// staleChains are flushed per-Service chains waiting to be deleted.
	staleChains map[string]time.Time
}

func newFamilyApplied(f knftables.Family) *familyApplied {
	fa := &familyApplied{services: map[model.ServiceName]*ServiceState{}, storages: map[string]*elementStorage{}, staleChains: map[string]time.Time{}}
	for _, c := range containerNames {
		fa.storages[c.name] = newElementStorage(f, c.name, c.isSet)
	}
	return fa
}

// lister lists object names ("chains", "sets") of one family's table; a
// missing table is a knftables not-found error.
type lister func(ctx context.Context, f knftables.Family, objectType string) ([]string, error)

// syncPlan is one sync's transaction and what it changes.
type syncPlan struct {
	tx   *knftables.Transaction
	full bool
	// changed are the Services whose chains the transaction rewrites, or
	// whose objects it removes.
	changed map[model.ServiceName]bool
	// services are the new per-family states, committed on success.
	services map[knftables.Family]map[model.ServiceName]*ServiceState
	// listTime is the part of planning spent listing the kernel's tables.
	listTime time.Duration
	// warnings are non-fatal problems (a failed listing: stale chains are
	// then left for a later sync), to be logged by the caller.
	warnings []error
}

// planSync builds the one transaction that makes both tables equal to rs:
// kube-proxy's syncProxyRules, for both families at once, so the whole
// sync commits or fails as a unit.
//
// A full sync rewrites everything, and asks the kernel which per-Service
// chains and affinity sets exist, so that leftovers of an earlier proxier
// or of a failed sync are flushed (chains) or deleted (sets) too.
//
// A partial sync touches only the Services whose rendered state changed
// (or that went away): their chains are flushed and rewritten, their map
// and set elements diffed against what they had, the chains and affinity
// sets they no longer have flushed or deleted. An unchanged Service costs
// a hash comparison, and the kernel is not asked anything: what the last
// syncs wrote is known, as the iptables datapath knows it.
//
// applied is updated in place for element storage and stale chains; the
// caller commits services and base on success and forces a full sync on
// failure, which resets both.
func planSync(ctx context.Context, tx *knftables.Transaction, rs *Ruleset, applied map[knftables.Family]*familyApplied, full, recreateBaseChains bool, list lister, now time.Time) *syncPlan {
	plan := &syncPlan{tx: tx, full: full, changed: map[model.ServiceName]bool{}, services: map[knftables.Family]map[model.ServiceName]*ServiceState{}}
	for _, fs := range rs.Families {
		fa := applied[fs.Family]
		if full {
			planFullFamily(ctx, plan, fs, fa, recreateBaseChains, list, now)
		} else {
			planPartialFamily(plan, fs, fa, now)
		}
	}
	return plan
}

// writeService adds a Service's chains (created and emptied), affinity
// sets and rules. Chains come first: map elements and rules refer to them.
func writeService(tx *knftables.Transaction, f knftables.Family, ss *ServiceState) {
	for _, c := range ss.Chains {
		ch := &knftables.Chain{Family: f, Table: kubeProxyTable, Name: c}
		tx.Add(ch)
		tx.Flush(ch)
	}
	for _, s := range ss.Sets {
		tx.Add(s)
	}
	for _, r := range ss.Rules {
		tx.Add(r)
	}
}

func planFullFamily(ctx context.Context, plan *syncPlan, fs *FamilyState, fa *familyApplied, recreateBaseChains bool, list lister, now time.Time) {
	tx := plan.tx
	writeBase(tx, fs, recreateBaseChains)
	for _, c := range containerNames {
		fa.storages[c.name].reset(tx)
	}
	for _, st := range fa.storages {
		st.begin()
	}

	states := make(map[model.ServiceName]*ServiceState, len(fs.Services))
	activeChains := map[string]bool{}
	activeSets := map[string]bool{}
	for _, ss := range fs.Services {
		states[ss.Name] = ss
		plan.changed[ss.Name] = true
		writeService(tx, fs.Family, ss)
		for _, c := range ss.Chains {
			activeChains[c] = true
		}
		for _, s := range ss.Sets {
			activeSets[s.Name] = true
		}
		for _, e := range ss.Elements {
			fa.storages[e.Set+e.Map].ensureFor(tx, e, ss.Name)
		}
	}
	plan.services[fs.Family] = states
	// A removed Service changes too: its chains go stale and its
	// elements are gone with the flush.
	for name := range fa.services {
		if _, ok := states[name]; !ok {
			plan.changed[name] = true
		}
	}

	// Chains no Service uses any more: flush now, delete later. The
	// kernel's own list is the truth here, so leftovers of an earlier
	// proxier (or of a failed sync) are found too.
	t := time.Now()
	chains, err := list(ctx, fs.Family, "chains")
	plan.listTime += time.Since(t)
	switch {
	case err == nil:
		slices.Sort(chains)
		for _, c := range chains {
			if !isServiceChainName(c) {
				continue
			}
			if activeChains[c] {
				delete(fa.staleChains, c)
				continue
			}
			tx.Flush(&knftables.Chain{Family: fs.Family, Table: kubeProxyTable, Name: c})
			if _, ok := fa.staleChains[c]; !ok {
				fa.staleChains[c] = now
			}
		}
	case !isNotFound(err):
		plan.warnings = append(plan.warnings, fmt.Errorf("list %s chains (stale chains stay until a later sync): %w", fs.Family, err))
	}

	// Stale affinity sets can go at once: nothing refers to them after
	// this transaction rewrites or flushes the chains that did.
	t = time.Now()
	sets, err := list(ctx, fs.Family, "sets")
	plan.listTime += time.Since(t)
	switch {
	case err == nil:
		slices.Sort(sets)
		for _, s := range sets {
			if isAffinitySetName(s) && !activeSets[s] {
				tx.Delete(&knftables.Set{Family: fs.Family, Table: kubeProxyTable, Name: s})
			}
		}
	case !isNotFound(err):
		plan.warnings = append(plan.warnings, fmt.Errorf("list %s sets (stale affinity sets stay until a later sync): %w", fs.Family, err))
	}

	for _, c := range containerNames {
		fa.storages[c.name].cleanup(tx)
	}
}

func planPartialFamily(plan *syncPlan, fs *FamilyState, fa *familyApplied, now time.Time) {
	tx := plan.tx
	states := make(map[model.ServiceName]*ServiceState, len(fs.Services))
	// What changed Services had and no longer have.
	var goneChains, goneSets []string
	var goneElements []goneElement
	// Chains that changed Services (re)write in this transaction.
	rewritten := map[string]bool{}
	for _, ss := range fs.Services {
		states[ss.Name] = ss
		old := fa.services[ss.Name]
		if old != nil && (old == ss || old.Hash == ss.Hash) {
			continue
		}
		plan.changed[ss.Name] = true
		writeService(tx, fs.Family, ss)
		for _, c := range ss.Chains {
			rewritten[c] = true
		}
		for _, e := range ss.Elements {
			fa.storages[e.Set+e.Map].ensureFor(tx, e, ss.Name)
		}
		if old != nil {
			goneChains, goneSets, goneElements = diffService(old, ss, goneChains, goneSets, goneElements)
		}
	}
	plan.services[fs.Family] = states
	var removed []model.ServiceName
	for name := range fa.services {
		if _, ok := states[name]; !ok {
			removed = append(removed, name)
		}
	}
	slices.SortFunc(removed, func(a, b model.ServiceName) int { return strings.Compare(a.String(), b.String()) })
	for _, name := range removed {
		plan.changed[name] = true
		goneChains, goneSets, goneElements = diffService(fa.services[name], nil, goneChains, goneSets, goneElements)
	}

	// Chains no Service uses any more are flushed now and deleted by a
	// later sync; so are chains flushed by an earlier sync and not yet
	// deleted, as kube-proxy flushes them on every sync until then.
	for _, c := range goneChains {
		if !rewritten[c] {
			if _, ok := fa.staleChains[c]; !ok {
				fa.staleChains[c] = now
			}
		}
	}
	for _, c := range slices.Sorted(maps.Keys(fa.staleChains)) {
		if rewritten[c] {
			delete(fa.staleChains, c)
			continue
		}
		tx.Flush(&knftables.Chain{Family: fs.Family, Table: kubeProxyTable, Name: c})
	}
	// Affinity sets can go at once: the chains that referred to them are
	// rewritten or flushed above.
	slices.Sort(goneSets)
	for _, s := range slices.Compact(goneSets) {
		tx.Delete(&knftables.Set{Family: fs.Family, Table: kubeProxyTable, Name: s})
	}
	for _, e := range goneElements {
		fa.storages[e.Set+e.Map].removeFor(tx, e.Element, e.owner)
	}
}

// goneElement is an element a Service no longer has.
type goneElement struct {
	*knftables.Element
	owner model.ServiceName
}

// diffService appends what old has and next (nil for a removed Service)
// does not: chains, affinity sets, and elements by container and key.
func diffService(old, next *ServiceState, chains, sets []string, elements []goneElement) ([]string, []string, []goneElement) {
	keep := map[string]bool{}
	if next != nil {
		for _, c := range next.Chains {
			keep["c|"+c] = true
		}
		for _, s := range next.Sets {
			keep["s|"+s.Name] = true
		}
		for _, e := range next.Elements {
			keep["e|"+e.Set+e.Map+"|"+strings.Join(e.Key, " . ")] = true
		}
	}
	for _, c := range old.Chains {
		if !keep["c|"+c] {
			chains = append(chains, c)
		}
	}
	for _, s := range old.Sets {
		if !keep["s|"+s.Name] {
			sets = append(sets, s.Name)
		}
	}
	for _, e := range old.Elements {
		if !keep["e|"+e.Set+e.Map+"|"+strings.Join(e.Key, " . ")] {
			elements = append(elements, goneElement{e, old.Name})
		}
	}
	return chains, sets, elements
}

// isNotFound is true for a missing table, whether nft said so (knftables'
// error) or netlink did (ENOENT).
func isNotFound(err error) bool {
	// knftables' netlink lister does not always wrap the errno
	// ("receiveAckAware: netlink receive: no such file or directory").
	return knftables.IsNotFound(err) || errors.Is(err, syscall.ENOENT) ||
		strings.HasSuffix(err.Error(), syscall.ENOENT.Error())
}

// staleChainBatch is how many due stale chains make a sync that changed
// Services delete them too (see Proxier.Sync).
const staleChainBatch = 256

// staleChainsDue counts the stale chains flushed at least staleChainDelay
// ago.
func staleChainsDue(applied map[knftables.Family]*familyApplied, now time.Time) int {
	n := 0
	for _, fa := range applied {
		if fa == nil {
			continue
		}
		for _, t := range fa.staleChains {
			if now.Sub(t) >= staleChainDelay {
				n++
			}
		}
	}
	return n
}

// planStaleChainDeletion returns a transaction deleting the stale chains
// that have been flushed for at least staleChainDelay, forgetting them
// whether or not it then succeeds: a chain that survives is found and
// flushed again by the next sync. nil means nothing is due.
func planStaleChainDeletion(tx *knftables.Transaction, applied map[knftables.Family]*familyApplied, now time.Time) *knftables.Transaction {
	n := 0
	for _, f := range families {
		fa := applied[f]
		if fa == nil {
			continue
		}
		for _, c := range slices.Sorted(maps.Keys(fa.staleChains)) {
			if now.Sub(fa.staleChains[c]) >= staleChainDelay {
				tx.Delete(&knftables.Chain{Family: f, Table: kubeProxyTable, Name: c})
				delete(fa.staleChains, c)
				n++
			}
		}
	}
	if n == 0 {
		return nil
	}
	return tx
}

// writeBase adds kube-proxy's setupNFTables to tx: the table, the base and
// top-level chains (flushed and refilled), the maps and sets, and the
// fixed rules. recreateBaseChains deletes the base chains first (once per
// proxier), because a chain's hook or priority cannot be changed in place,
// so a table left by another version could otherwise fail every sync.
func writeBase(tx *knftables.Transaction, fs *FamilyState, recreateBaseChains bool) {
	f := fs.Family
	ipX, addrType, noLocalhost := "ip", "ipv4_addr", "ip daddr != 127.0.0.0/8"
	if f == knftables.IPv6Family {
		ipX, addrType, noLocalhost = "ip6", "ipv6_addr", "ip6 daddr != ::1"
	}
	chain := func(name string) *knftables.Chain {
		return &knftables.Chain{Family: f, Table: kubeProxyTable, Name: name}
	}
	rule := func(ch, comment string, words ...any) {
		r := &knftables.Rule{Family: f, Table: kubeProxyTable, Chain: ch, Rule: knftables.Concat(words...)}
		if comment != "" {
			r.Comment = knftables.PtrTo(comment)
		}
		tx.Add(r)
	}
	created := map[string]bool{}
	ensureChain := func(name string) {
		if created[name] {
			return
		}
		created[name] = true
		tx.Add(chain(name))
		tx.Flush(chain(name))
	}

	tx.Add(&knftables.Table{Family: f, Name: kubeProxyTable, Comment: knftables.PtrTo("rules for kube-proxy")})

	if recreateBaseChains {
		// add+delete: delete alone fails when the chain does not exist.
		for _, bc := range nftablesBaseChains {
			tx.Add(chain(bc.name))
			tx.Delete(chain(bc.name))
		}
	}
	for _, bc := range nftablesBaseChains {
		c := chain(bc.name)
		c.Type, c.Hook, c.Priority = knftables.PtrTo(bc.chainType), knftables.PtrTo(bc.hook), knftables.PtrTo(bc.priority)
		tx.Add(c)
		tx.Flush(c)
	}

	for _, j := range nftablesJumpChains {
		ensureChain(j.dstChain)
		rule(j.srcChain, "", j.extraArgs, "jump", j.dstChain)
	}
	for _, c := range []string{servicesChain, clusterIPsCheckChain, masqueradingChain, markMasqChain} {
		ensureChain(c)
	}

	// Mark in the Service chains, masquerade in postrouting, and clear the
	// mark so a packet that loops through again is judged afresh.
	rule(markMasqChain, "", "mark", "set", "mark", "or", masqueradeMark)
	rule(masqueradingChain, "", "mark", "and", masqueradeMark, "==", "0", "return")
	rule(masqueradingChain, "", "mark", "set", "mark", "xor", masqueradeMark)
	// Always fully-random: nft has had it as long as kube-proxy has used nft.
	rule(masqueradingChain, "", "masquerade fully-random")

	tx.Add(&knftables.Set{Family: f, Table: kubeProxyTable, Name: clusterIPsSet, Type: addrType, Comment: knftables.PtrTo("Active ClusterIPs")})
	// Runs after DNAT: whatever still goes to a ClusterIP matched no port.
	rule(clusterIPsCheckChain, "Reject traffic to invalid ports of ClusterIPs", ipX, "daddr", "@", clusterIPsSet, "reject")
	if len(fs.Base.ServiceCIDRs) > 0 {
		cidrs := make([]string, len(fs.Base.ServiceCIDRs))
		for i, p := range fs.Base.ServiceCIDRs {
			cidrs[i] = p.String()
		}
		rule(clusterIPsCheckChain, "Drop traffic to unallocated ClusterIPs", ipX, "daddr", "{", strings.Join(cidrs, ","), "}", "drop")
	}

	nodePortIPs := &knftables.Set{Family: f, Table: kubeProxyTable, Name: nodePortIPsSet, Type: addrType, Comment: knftables.PtrTo("IPs that accept NodePort traffic")}
	tx.Add(nodePortIPs)
	if fs.Base.NodePortMatchAll {
		tx.Delete(&knftables.Set{Family: f, Table: kubeProxyTable, Name: nodePortIPsSet})
	} else {
		tx.Flush(&knftables.Set{Family: f, Table: kubeProxyTable, Name: nodePortIPsSet})
		for _, ip := range fs.Base.NodePortIPs {
			tx.Add(&knftables.Element{Family: f, Table: kubeProxyTable, Set: nodePortIPsSet, Key: []string{ip.String()}})
		}
	}

	tx.Add(&knftables.Map{Family: f, Table: kubeProxyTable, Name: noEndpointServicesMap,
		Type: addrType + " . inet_proto . inet_service : verdict", Comment: knftables.PtrTo("vmap to drop or reject packets to services with no endpoints")})
	tx.Add(&knftables.Map{Family: f, Table: kubeProxyTable, Name: noEndpointNodePortsMap,
		Type: "inet_proto . inet_service : verdict", Comment: knftables.PtrTo("vmap to drop or reject packets to service nodeports with no endpoints")})

	reject := chain(rejectChain)
	reject.Comment = knftables.PtrTo("helper for @no-endpoint-services / @no-endpoint-nodeports")
	tx.Add(reject)
	tx.Flush(chain(rejectChain))
	rule(rejectChain, "", "reject")

	rule(serviceEndpointsCheckChain, "", ipX, "daddr", ".", "meta l4proto", ".", "th dport", "vmap", "@", noEndpointServicesMap)
	if fs.Base.NodePortMatchAll {
		rule(nodePortEndpointsCheckChain, "", noLocalhost, "meta l4proto . th dport", "vmap", "@", noEndpointNodePortsMap)
	} else {
		rule(nodePortEndpointsCheckChain, "", ipX, "daddr", "@", nodePortIPsSet, "meta l4proto . th dport", "vmap", "@", noEndpointNodePortsMap)
	}

	tx.Add(&knftables.Map{Family: f, Table: kubeProxyTable, Name: firewallIPsMap,
		Type: addrType + " . inet_proto . inet_service : verdict", Comment: knftables.PtrTo("destinations that are subject to LoadBalancerSourceRanges")})
	ensureChain(firewallCheckChain)
	rule(firewallCheckChain, "", ipX, "daddr", ".", "meta l4proto", ".", "th dport", "vmap", "@", firewallIPsMap)

	tx.Add(&knftables.Map{Family: f, Table: kubeProxyTable, Name: serviceIPsMap,
		Type: addrType + " . inet_proto . inet_service : verdict", Comment: knftables.PtrTo("ClusterIP, ExternalIP and LoadBalancer IP traffic")})
	tx.Add(&knftables.Map{Family: f, Table: kubeProxyTable, Name: serviceNodePortsMap,
		Type: "inet_proto . inet_service : verdict", Comment: knftables.PtrTo("NodePort traffic")})
	rule(servicesChain, "", ipX, "daddr", ".", "meta l4proto", ".", "th dport", "vmap", "@", serviceIPsMap)
	if fs.Base.NodePortMatchAll {
		rule(servicesChain, "", "fib daddr type local", noLocalhost, "meta l4proto . th dport", "vmap", "@", serviceNodePortsMap)
	} else {
		rule(servicesChain, "", ipX, "daddr @nodeport-ips", "meta l4proto . th dport", "vmap", "@", serviceNodePortsMap)
	}
}

// cleanupTransaction removes both tables. add+delete, so a missing table
// is not an error. Equivalent to: nft delete table ip kube-proxy; nft
// delete table ip6 kube-proxy.
func cleanupTransaction(tx *knftables.Transaction) {
	for _, f := range families {
		t := &knftables.Table{Family: f, Name: kubeProxyTable}
		tx.Add(t)
		tx.Delete(&knftables.Table{Family: f, Name: kubeProxyTable})
	}
}
