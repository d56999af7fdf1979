package ebpf

import (
	"fmt"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// counterNames name the entries of the per-CPU stats map, in the order of
// the STAT_* enum in bpf/lb.h.
var counterNames = []string{
	"ct_new",          // new flows load-balanced at tc
	"ct_hit_forward",  // packets translated by a forward conntrack entry
	"ct_hit_reply",    // packets reverse-translated
	"reject_tcp",      // RSTs generated for Services without endpoints
	"reject_udp",      // ICMP port unreachables generated
	"drop_no_local",   // dropped: no endpoint for the traffic policy here
	"drop_src_range",  // dropped: loadBalancerSourceRanges
	"drop_snat_ports", // dropped: no free SNAT source port
	"drop_error",      // dropped: a helper failed or the maps disagreed
	"udp_resteer",     // UDP flows moved off a backend that left
	"sock_xlate",      // connect/sendmsg translated at the socket
	"sock_reject",     // connect/sendmsg refused: no endpoints
	"sock_resteer",    // UDP socket flows moved off a backend that left
}

// Counters returns the datapath's packet counters, summed over CPUs; nil
// before the first Sync.
func (d *Datapath) Counters() (map[string]uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return nil, nil
	}
	return readCounters(d.objs.Stats)
}

// ReadCounters reads the counters of the datapath pinned for a node's
// network namespace, from any process. Equivalent to:
// bpftool map dump pinned /sys/fs/bpf/<netns>/map_stats_<tag>
func ReadCounters(nodeNetns string) (map[string]uint64, error) {
	m, err := ebpf.LoadPinnedMap(mapPinPath(filepath.Join(BPFFSRoot, nodeNetns), lbMapStats), nil)
	if err != nil {
		return nil, fmt.Errorf("open stats map of netns %s: %w", nodeNetns, err)
	}
	defer m.Close()
	return readCounters(m)
}

func readCounters(m *ebpf.Map) (map[string]uint64, error) {
	out := make(map[string]uint64, len(counterNames))
	for i, name := range counterNames {
		var per []uint64
		if err := m.Lookup(uint32(i), &per); err != nil {
			return nil, fmt.Errorf("read counter %s: %w", name, err)
		}
		var n uint64
		for _, v := range per {
			n += v
		}
		out[name] = n
	}
	return out, nil
}
