package ebpf

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/cilium/ebpf"

	"proxyrig/datapaths"
)

var _ datapaths.ConntrackFlusher = (*Datapath)(nil)

// FlushConntrack empties the datapath's own connection tracking (the ct
// and ct6 maps), as conntrack -F empties the kernel's: every flow after
// it is load-balanced afresh. Frontends, backends and affinity stay. The
// load generator calls it with its kernel flush, so a probe reusing a
// 5-tuple of an earlier sample is not answered by that sample's backend.
// Equivalent to: bpftool map delete pinned …/ct key … (for every key).
func (d *Datapath) FlushConntrack(ctx context.Context) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return 0, nil
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	n4, err := flushMap[lbCtKey, lbCtEntry](d.objs.Ct, lbMapCt)
	if err != nil {
		return n4, fmt.Errorf("flush eBPF conntrack in netns %s: %w", d.cfg.NS.Name, err)
	}
	n6, err := flushMap[lbCt6Key, lbCt6Entry](d.objs.Ct6, lbMapCt6)
	if err != nil {
		return n4 + n6, fmt.Errorf("flush eBPF conntrack in netns %s: %w", d.cfg.NS.Name, err)
	}
	return n4 + n6, nil
}

// flushMap deletes every entry of a map that traffic may be filling at
// the same time: what arrives after the read is a new flow, and is kept.
func flushMap[K comparable, V any](m *ebpf.Map, name string) (int, error) {
	have, err := readAll[K, V](m, name)
	if errors.Is(err, ebpf.ErrIterationAborted) {
		// Entries came and went faster than the walk: once more.
		have, err = readAll[K, V](m, name)
	}
	if err != nil {
		return 0, err
	}
	return len(have), remove(m, name, slices.Collect(maps.Keys(have)))
}
