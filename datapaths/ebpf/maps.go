package ebpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/cilium/ebpf"
)

// This file applies a rendered state to the BPF maps: it sizes the maps
// when they are created, diffs the desired entries against what the maps
// hold (what the last sync wrote, or on a full sync what the kernel
// actually has) and writes only the difference, with batch operations
// where the kernel has them.

// Map capacities. The configuration maps are hash maps created with
// BPF_F_NO_PREALLOC, so a large max_entries costs nothing until entries
// exist: capacity is headroom, not memory. The LRU maps (ct, affinity,
// sock_revnat, sock_flows) are preallocated by the kernel, so their size is fixed
// and modest.
const (
	minConfigEntries = 1 << 16
	// configHeadroom: a map is created with room for this many times the
	// entries of the first sync, so a lab can grow after Build.
	configHeadroom  = 8
	minSrcRanges    = 1 << 10
	defaultCTSize   = 1 << 17
	affinitySize    = 1 << 16
	sockRevnatSize  = 1 << 16
	sockFlowSize    = 1 << 16
	netnsCookieSize = 1 << 12
)

// mapSizes are the max_entries of the maps whose size depends on the
// input.
type mapSizes struct {
	Services, Slots, Backends, Members, SrcRanges uint32
	Services6, Backends6, SrcRanges6              uint32
	CT                                            uint32 // ct and ct6 each
}

func capacityFor(n int, min uint32) uint32 {
	want := uint64(n) * configHeadroom
	c := uint64(min)
	for c < want {
		c *= 2
	}
	if c > 1<<28 {
		c = 1 << 28
	}
	return uint32(c)
}

func sizesFor(d *desired, ctSize uint32) mapSizes {
	if ctSize == 0 {
		ctSize = defaultCTSize
	}
	return mapSizes{
		Services:  capacityFor(len(d.Services), minConfigEntries),
		Slots:     capacityFor(len(d.Slots), minConfigEntries),
		Backends:  capacityFor(len(d.Backends), minConfigEntries),
		Members:   capacityFor(len(d.Members), minConfigEntries),
		SrcRanges: capacityFor(len(d.SrcRanges), minSrcRanges),
		// Both families live in a 64k-entry floor: a lab that turns
		// dual-stack later keeps its maps.
		Services6:  capacityFor(len(d.Services6), minConfigEntries),
		Backends6:  capacityFor(len(d.Backends6), minConfigEntries),
		SrcRanges6: capacityFor(len(d.SrcRanges6), minSrcRanges),
		CT:         ctSize,
	}
}

// MapFullError says a desired state does not fit in a map created by an
// earlier sync. It is never a silent drop: the sync fails and names the
// map, and the datapath must be cleaned up and recreated to grow.
type MapFullError struct {
	Map      string
	Need     int
	Capacity uint32
}

func (e *MapFullError) Error() string {
	return fmt.Sprintf("BPF map %s: %d entries needed, capacity %d (sized at the first sync with %dx headroom); recreate the datapath to grow it",
		e.Map, e.Need, e.Capacity, configHeadroom)
}

// checkCapacity fails when d does not fit the maps.
func checkCapacity(d *desired, s mapSizes) error {
	for _, c := range []struct {
		name string
		n    int
		cap  uint32
	}{
		{"services", len(d.Services), s.Services},
		{"slots", len(d.Slots), s.Slots},
		{"backends", len(d.Backends), s.Backends},
		{"members", len(d.Members), s.Members},
		{"src_ranges", len(d.SrcRanges), s.SrcRanges},
		{"services6", len(d.Services6), s.Services6},
		{"backends6", len(d.Backends6), s.Backends6},
		{"src_ranges6", len(d.SrcRanges6), s.SrcRanges6},
	} {
		if c.n > int(c.cap) {
			return &MapFullError{Map: c.name, Need: c.n, Capacity: c.cap}
		}
	}
	return nil
}

// parsedSpec parses the embedded object once per process: parsing the
// ELF and its BTF is the same work every time a datapath loads, and a
// process running many nodes (a lab, a benchmark) loads it per node.
var parsedSpec = sync.OnceValues(loadLb)

// loadSpec returns the collection spec with map sizes set: a copy of the
// parsed one, so the sizes of one datapath never leak into another's.
func loadSpec(s mapSizes) (*ebpf.CollectionSpec, error) {
	parsed, err := parsedSpec()
	if err != nil {
		return nil, err
	}
	spec := parsed.Copy()
	set := func(name string, n uint32) error {
		m, ok := spec.Maps[name]
		if !ok {
			return fmt.Errorf("BPF object has no map %q", name)
		}
		m.MaxEntries = n
		return nil
	}
	for name, n := range map[string]uint32{
		lbMapServices: s.Services, lbMapSlots: s.Slots, lbMapBackends: s.Backends,
		lbMapMembers: s.Members, lbMapSrcRanges: s.SrcRanges, lbMapCt: s.CT,
		lbMapServices6: s.Services6, lbMapBackends6: s.Backends6, lbMapSrcRanges6: s.SrcRanges6, lbMapCt6: s.CT,
		lbMapAffinity: affinitySize, lbMapSockRevnat: sockRevnatSize, lbMapNetnsCookies: netnsCookieSize,
		lbMapAffinity6: affinitySize, lbMapSockRevnat6: sockRevnatSize, lbMapSockFlows: sockFlowSize,
	} {
		if n == 0 {
			continue
		}
		if err := set(name, n); err != nil {
			return nil, err
		}
	}
	return spec, nil
}

// diff lists the keys to write (missing or different in have) and the
// keys to delete (in have, not wanted), each sorted by less (when not nil)
// so the writes are deterministic.
func diff[K comparable, V comparable](want, have map[K]V, less func(a, b K) int) (upd []K, del []K) {
	if len(have) == 0 && len(want) > 0 {
		// A first sync writes everything: one allocation.
		upd = make([]K, 0, len(want))
	}
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			upd = append(upd, k)
		}
	}
	for k := range have {
		if _, ok := want[k]; !ok {
			del = append(del, k)
		}
	}
	if less != nil {
		slices.SortFunc(upd, less)
		slices.SortFunc(del, less)
	}
	return upd, del
}

// sortBy is less, or nil (no sorting) when sorted is false.
func sortBy[K any](sorted bool, less func(a, b K) int) func(a, b K) int {
	if !sorted {
		return nil
	}
	return less
}

func cmpU32(a, b uint32) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// cmpAddr orders addresses as numbers (10.0.0.2 before 10.0.0.10), not as
// the host-order integers they are stored as.
// It compares the addresses as big-endian numbers, which is netip's order
// for IPv4 without building two netip.Addr per comparison.
func cmpAddr(a, b uint32) int { return cmpU32(numericBE32(a), numericBE32(b)) }

// numericBE32 is the number an address stored by be32 stands for.
func numericBE32(v uint32) uint32 {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return binary.BigEndian.Uint32(b[:])
}

func lessSvcKey(a, b lbSvcKey) int {
	if c := cmpAddr(a.Addr, b.Addr); c != 0 {
		return c
	}
	if c := cmpU32(uint32(portFromBE16(a.Port)), uint32(portFromBE16(b.Port))); c != 0 {
		return c
	}
	if c := cmpU32(uint32(a.Proto), uint32(b.Proto)); c != 0 {
		return c
	}
	return cmpU32(uint32(a.Scope), uint32(b.Scope))
}

func cmpAddr6(a, b [4]uint32) int { return addrFromBE128(a).Compare(addrFromBE128(b)) }

func lessSvc6Key(a, b lbSvc6Key) int {
	if c := cmpAddr6(a.Addr, b.Addr); c != 0 {
		return c
	}
	if c := cmpU32(uint32(portFromBE16(a.Port)), uint32(portFromBE16(b.Port))); c != 0 {
		return c
	}
	if c := cmpU32(uint32(a.Proto), uint32(b.Proto)); c != 0 {
		return c
	}
	return cmpU32(uint32(a.Scope), uint32(b.Scope))
}

func lessSrcRange6Key(a, b lbSrcRange6Key) int {
	if c := cmpU32(a.Id, b.Id); c != 0 {
		return c
	}
	if c := cmpAddr6(a.Addr, b.Addr); c != 0 {
		return c
	}
	return cmpU32(a.Prefixlen, b.Prefixlen)
}

func lessSlotKey(a, b lbSlotKey) int {
	if c := cmpU32(a.Id, b.Id); c != 0 {
		return c
	}
	return cmpU32(a.Slot, b.Slot)
}

func lessMemberKey(a, b lbMemberKey) int {
	if c := cmpU32(a.Id, b.Id); c != 0 {
		return c
	}
	return cmpU32(a.BackendId, b.BackendId)
}

func lessSrcRangeKey(a, b lbSrcRangeKey) int {
	if c := cmpU32(a.Id, b.Id); c != 0 {
		return c
	}
	if c := cmpAddr(a.Addr, b.Addr); c != 0 {
		return c
	}
	return cmpU32(a.Prefixlen, b.Prefixlen)
}

// syncPlan is the ordered list of map operations one sync performs.
type syncPlan struct {
	backendsUpd, backendsDel   []uint32
	slotsUpd, slotsDel         []lbSlotKey
	membersUpd, membersDel     []lbMemberKey
	rangesUpd, rangesDel       []lbSrcRangeKey
	servicesUpd, servicesDel   []lbSvcKey
	backends6Upd, backends6Del []uint32
	ranges6Upd, ranges6Del     []lbSrcRange6Key
	services6Upd, services6Del []lbSvc6Key
	config                     bool
	// changed holds the Services ("ns/name") whose entries changed.
	changed map[string]bool
}

func (p *syncPlan) written() int {
	n := len(p.backendsUpd) + len(p.backendsDel) + len(p.slotsUpd) + len(p.slotsDel) +
		len(p.membersUpd) + len(p.membersDel) + len(p.rangesUpd) + len(p.rangesDel) +
		len(p.servicesUpd) + len(p.servicesDel) + len(p.backends6Upd) + len(p.backends6Del) +
		len(p.ranges6Upd) + len(p.ranges6Del) + len(p.services6Upd) + len(p.services6Del)
	if p.config {
		n++
	}
	return n
}

// planSync diffs want against have. owners (the previous desired state,
// may be nil) names the Services of entries that go away.
func planSync(want, have, owners *desired) *syncPlan {
	p := &syncPlan{changed: map[string]bool{}}
	p.config = want.Config != have.Config
	// Keys are sorted, so a plan writes in a reproducible order. Not into
	// empty maps (a first sync): that write is all or nothing (capacity is
	// checked first, a failure rolls back), and sorting its 100k+ keys
	// cost tens of milliseconds.
	sorted := have.objects() > 1 // objects counts the config entry too
	p.backendsUpd, p.backendsDel = diff(want.Backends, have.Backends, sortBy(sorted, cmpU32))
	p.slotsUpd, p.slotsDel = diff(want.Slots, have.Slots, sortBy(sorted, lessSlotKey))
	p.membersUpd, p.membersDel = diff(want.Members, have.Members, sortBy(sorted, lessMemberKey))
	p.rangesUpd, p.rangesDel = diff(want.SrcRanges, have.SrcRanges, sortBy(sorted, lessSrcRangeKey))
	p.servicesUpd, p.servicesDel = diff(want.Services, have.Services, sortBy(sorted, lessSvcKey))
	p.backends6Upd, p.backends6Del = diff(want.Backends6, have.Backends6, sortBy(sorted, cmpU32))
	p.ranges6Upd, p.ranges6Del = diff(want.SrcRanges6, have.SrcRanges6, sortBy(sorted, lessSrcRange6Key))
	p.services6Upd, p.services6Del = diff(want.Services6, have.Services6, sortBy(sorted, lessSvc6Key))
	p.markChanged(want, owners)
	return p
}

// planSyncTouched is planSync for an incremental render: only the keys it
// touched can differ from have, which must hold the render it is
// relative to (want.touched.base).
func planSyncTouched(want, have, owners *desired) *syncPlan {
	t := want.touched
	p := &syncPlan{changed: map[string]bool{}}
	p.config = want.Config != have.Config
	p.backendsUpd, p.backendsDel = diffKeys(want.Backends, have.Backends, t.backends, cmpU32)
	p.slotsUpd, p.slotsDel = diffKeys(want.Slots, have.Slots, t.slots, lessSlotKey)
	p.membersUpd, p.membersDel = diffKeys(want.Members, have.Members, t.members, lessMemberKey)
	p.rangesUpd, p.rangesDel = diffKeys(want.SrcRanges, have.SrcRanges, t.ranges, lessSrcRangeKey)
	p.servicesUpd, p.servicesDel = diffKeys(want.Services, have.Services, t.services, lessSvcKey)
	p.backends6Upd, p.backends6Del = diffKeys(want.Backends6, have.Backends6, t.backends6, cmpU32)
	p.ranges6Upd, p.ranges6Del = diffKeys(want.SrcRanges6, have.SrcRanges6, t.ranges6, lessSrcRange6Key)
	p.services6Upd, p.services6Del = diffKeys(want.Services6, have.Services6, t.services6, lessSvc6Key)
	p.markChanged(want, owners)
	return p
}

// diffKeys is diff restricted to keys.
func diffKeys[K comparable, V comparable](want, have map[K]V, keys keySet[K], less func(a, b K) int) (upd []K, del []K) {
	for k := range keys {
		wv, wok := want[k]
		hv, hok := have[k]
		switch {
		case wok && (!hok || hv != wv):
			upd = append(upd, k)
		case !wok && hok:
			del = append(del, k)
		}
	}
	slices.SortFunc(upd, less)
	slices.SortFunc(del, less)
	return upd, del
}

// markChanged names the Services whose entries the plan writes.
func (p *syncPlan) markChanged(want, owners *desired) {
	groupOwner := func(id uint32) string {
		if o, ok := want.groupOwner[id]; ok {
			return o
		}
		if owners != nil {
			return owners.groupOwner[id]
		}
		return ""
	}
	svcOwner := func(k lbSvcKey) string {
		if o, ok := want.svcOwner[k]; ok {
			return o
		}
		if owners != nil {
			return owners.svcOwner[k]
		}
		return ""
	}
	svcOwner6 := func(k lbSvc6Key) string {
		if o, ok := want.svcOwner6[k]; ok {
			return o
		}
		if owners != nil {
			return owners.svcOwner6[k]
		}
		return ""
	}
	mark := func(o string) {
		if o != "" {
			p.changed[o] = true
		}
	}
	for _, ks := range [][]lbSvcKey{p.servicesUpd, p.servicesDel} {
		for _, k := range ks {
			mark(svcOwner(k))
		}
	}
	for _, ks := range [][]lbSvc6Key{p.services6Upd, p.services6Del} {
		for _, k := range ks {
			mark(svcOwner6(k))
		}
	}
	for _, ks := range [][]lbSrcRange6Key{p.ranges6Upd, p.ranges6Del} {
		for _, k := range ks {
			mark(groupOwner(k.Id))
		}
	}
	for _, ks := range [][]lbSlotKey{p.slotsUpd, p.slotsDel} {
		for _, k := range ks {
			mark(groupOwner(k.Id))
		}
	}
	for _, ks := range [][]lbMemberKey{p.membersUpd, p.membersDel} {
		for _, k := range ks {
			mark(groupOwner(k.Id))
		}
	}
	for _, ks := range [][]lbSrcRangeKey{p.rangesUpd, p.rangesDel} {
		for _, k := range ks {
			mark(groupOwner(k.Id))
		}
	}
}

// apply performs the plan. The order keeps every lookup chain complete
// while it runs: a packet may see the old or the new entry of any one
// map, but never a frontend whose slots or backends are not written yet.
// New backends, slots, members and ranges go first, then the frontends
// that use them; frontends that go away are deleted before what they used.
//
// With injectFault, the apply fails halfway, after the backends, slots and
// members are written and before any frontend changes, with an error the
// kernel itself returns (datapaths.FaultInjector).
func (p *syncPlan) apply(m *lbMaps, want *desired, injectFault bool) error {
	if err := update(m.Backends, "backends", p.backendsUpd, want.Backends); err != nil {
		return err
	}
	if err := update(m.Backends6, "backends6", p.backends6Upd, want.Backends6); err != nil {
		return err
	}
	if err := both(len(p.slotsUpd)+len(p.membersUpd) >= concurrentWrites,
		func() error { return update(m.Slots, "slots", p.slotsUpd, want.Slots) },
		func() error { return update(m.Members, "members", p.membersUpd, want.Members) },
	); err != nil {
		return err
	}
	if injectFault {
		// config is a one-entry array: the kernel refuses index 1 (E2BIG).
		if err := m.Config.Update(uint32(1), want.Config, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("injected fault: update config[1]: %w", err)
		}
		return errors.New("injected fault: the kernel accepted config[1]")
	}
	// LPM tries have no batch operations.
	for _, k := range p.rangesUpd {
		if err := m.SrcRanges.Update(k, want.SrcRanges[k], ebpf.UpdateAny); err != nil {
			return fmt.Errorf("update src_ranges: %w", err)
		}
	}
	for _, k := range p.ranges6Upd {
		if err := m.SrcRanges6.Update(k, want.SrcRanges6[k], ebpf.UpdateAny); err != nil {
			return fmt.Errorf("update src_ranges6: %w", err)
		}
	}
	if p.config {
		if err := m.Config.Update(uint32(0), want.Config, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("update config: %w", err)
		}
	}
	if err := update(m.Services, "services", p.servicesUpd, want.Services); err != nil {
		return err
	}
	if err := update(m.Services6, "services6", p.services6Upd, want.Services6); err != nil {
		return err
	}
	if err := remove(m.Services, "services", p.servicesDel); err != nil {
		return err
	}
	if err := remove(m.Services6, "services6", p.services6Del); err != nil {
		return err
	}
	for _, k := range p.rangesDel {
		if err := m.SrcRanges.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete from src_ranges: %w", err)
		}
	}
	for _, k := range p.ranges6Del {
		if err := m.SrcRanges6.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete from src_ranges6: %w", err)
		}
	}
	if err := remove(m.Members, "members", p.membersDel); err != nil {
		return err
	}
	if err := remove(m.Slots, "slots", p.slotsDel); err != nil {
		return err
	}
	if err := remove(m.Backends6, "backends6", p.backends6Del); err != nil {
		return err
	}
	return remove(m.Backends, "backends", p.backendsDel)
}

// concurrentWrites is the number of slot and member entries from which
// apply writes the two maps side by side (a full sync's 50k each) rather
// than one after the other: each batch is a syscall that the kernel runs
// on one CPU, and neither map refers to the other.
const concurrentWrites = 4096

// both runs a and b, at the same time when concurrently is set, and
// returns their errors.
func both(concurrently bool, a, b func() error) error {
	if !concurrently {
		if err := a(); err != nil {
			return err
		}
		return b()
	}
	errb := make(chan error, 1)
	go func() { errb <- b() }()
	erra := a()
	return errors.Join(erra, <-errb)
}

// update writes keys (with their values from want) in one batch, or one
// by one where the kernel has no batch operations for the map.
func update[K comparable, V any](m *ebpf.Map, name string, keys []K, want map[K]V) error {
	if len(keys) == 0 {
		return nil
	}
	vals := make([]V, len(keys))
	for i, k := range keys {
		vals[i] = want[k]
	}
	if len(keys) > 1 {
		_, err := m.BatchUpdate(keys, vals, nil)
		if err == nil {
			return nil
		}
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("batch update of %d entries in %s: %w", len(keys), name, err)
		}
	}
	for i, k := range keys {
		if err := m.Update(k, vals[i], ebpf.UpdateAny); err != nil {
			return fmt.Errorf("update %s: %w", name, err)
		}
	}
	return nil
}

// remove deletes keys, tolerating keys already gone (an LRU map, or a
// repair that raced with nothing).
func remove[K comparable](m *ebpf.Map, name string, keys []K) error {
	if len(keys) == 0 {
		return nil
	}
	if len(keys) > 1 {
		_, err := m.BatchDelete(keys, nil)
		if err == nil {
			return nil
		}
		if !errors.Is(err, ebpf.ErrNotSupported) && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("batch delete of %d entries from %s: %w", len(keys), name, err)
		}
	}
	for _, k := range keys {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete from %s: %w", name, err)
		}
	}
	return nil
}

// readMaps reads back what the kernel's configuration maps hold, for a
// full sync that must repair what was changed out of band.
func readMaps(m *lbMaps) (*desired, error) {
	have := &desired{}
	var err error
	if have.Services, err = readAll[lbSvcKey, lbSvcValue](m.Services, "services"); err != nil {
		return nil, err
	}
	if have.Slots, err = readAll[lbSlotKey, uint32](m.Slots, "slots"); err != nil {
		return nil, err
	}
	if have.Backends, err = readAll[uint32, lbBackend](m.Backends, "backends"); err != nil {
		return nil, err
	}
	if have.Members, err = readAll[lbMemberKey, uint32](m.Members, "members"); err != nil {
		return nil, err
	}
	if have.SrcRanges, err = readAll[lbSrcRangeKey, uint8](m.SrcRanges, "src_ranges"); err != nil {
		return nil, err
	}
	if have.Services6, err = readAll[lbSvc6Key, lbSvcValue](m.Services6, "services6"); err != nil {
		return nil, err
	}
	if have.Backends6, err = readAll[uint32, lbBackend6](m.Backends6, "backends6"); err != nil {
		return nil, err
	}
	if have.SrcRanges6, err = readAll[lbSrcRange6Key, uint8](m.SrcRanges6, "src_ranges6"); err != nil {
		return nil, err
	}
	if err := m.Config.Lookup(uint32(0), &have.Config); err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return have, nil
}

func readAll[K comparable, V any](m *ebpf.Map, name string) (map[K]V, error) {
	out := map[K]V{}
	var k K
	var v V
	it := m.Iterate()
	for it.Next(&k, &v) {
		out[k] = v
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return out, nil
}

// cloneDesired copies the maps of d, so a later change to one is not a
// change to the other.
func cloneDesired(d *desired) *desired {
	c := *d
	c.Services = maps.Clone(d.Services)
	c.Slots = maps.Clone(d.Slots)
	c.Backends = maps.Clone(d.Backends)
	c.Members = maps.Clone(d.Members)
	c.SrcRanges = maps.Clone(d.SrcRanges)
	c.Services6 = maps.Clone(d.Services6)
	c.Backends6 = maps.Clone(d.Backends6)
	c.SrcRanges6 = maps.Clone(d.SrcRanges6)
	// An incremental render changes its output's maps in place, owners
	// included.
	c.groupOwner = maps.Clone(d.groupOwner)
	c.svcOwner = maps.Clone(d.svcOwner)
	c.svcOwner6 = maps.Clone(d.svcOwner6)
	c.groupName = maps.Clone(d.groupName)
	c.Warnings = slices.Clone(d.Warnings)
	c.touched = nil
	return &c
}

// patch makes d, which held render want.touched.base, equal to want, by
// copying the keys the incremental render touched.
func (d *desired) patch(want *desired) {
	t := want.touched
	d.Config = want.Config
	d.localhostNodePorts = want.localhostNodePorts
	d.Warnings = slices.Clone(want.Warnings)
	d.gen = want.gen
	patchKeys(d.Services, want.Services, t.services)
	patchKeys(d.svcOwner, want.svcOwner, t.services)
	patchKeys(d.Services6, want.Services6, t.services6)
	patchKeys(d.svcOwner6, want.svcOwner6, t.services6)
	patchKeys(d.Slots, want.Slots, t.slots)
	patchKeys(d.Members, want.Members, t.members)
	patchKeys(d.Backends, want.Backends, t.backends)
	patchKeys(d.Backends6, want.Backends6, t.backends6)
	patchKeys(d.SrcRanges, want.SrcRanges, t.ranges)
	patchKeys(d.SrcRanges6, want.SrcRanges6, t.ranges6)
	patchKeys(d.groupOwner, want.groupOwner, t.groups)
	patchKeys(d.groupName, want.groupName, t.groups)
}

func patchKeys[K comparable, V any](dst, src map[K]V, keys keySet[K]) {
	for k := range keys {
		if v, ok := src[k]; ok {
			dst[k] = v
		} else {
			delete(dst, k)
		}
	}
}
