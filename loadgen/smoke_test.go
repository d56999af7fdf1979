package loadgen

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	_ "proxyrig/datapaths/iptables" // registers "iptables"
	"proxyrig/internal/netnsutil"
	"proxyrig/topologies"
)

// requireRoot skips without root, except under CI=true where this machine
// is expected to run it.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true but not root: the bench smoke test needs root to create network namespaces")
		}
		t.Skip("needs root to create network namespaces and program iptables")
	}
}

// TestBenchSmoke runs the whole bench, small: iptables at 50 Services × 2
// endpoints, quick, two repetitions. It checks that every metric is there
// and sane, that the output validates against the schema and that no
// namespace is left behind; never how fast anything was.
func TestBenchSmoke(t *testing.T) {
	requireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var phases []string
	res, err := Run(ctx, Config{
		Datapaths: []string{"iptables", "no-such-datapath"},
		Services:  []int{50},
		Endpoints: 2,
		Reps:      2,
		Quick:     true,
		Budget:    2 * time.Minute,
		Samples:   Samples{Disruption: 3 * time.Second, ChurnRate: 50},
		Progress:  func(p Progress) { phases = append(phases, p.Phase) },
	})
	if err != nil {
		t.Fatal(err)
	}
	// Whatever happened, no lab may survive the run. Clean up only the
	// bench's own labs: other tests may have labs up on this machine.
	left, err := netnsutil.List(topologies.Prefix + "bench")
	if err != nil || len(left) > 0 {
		t.Errorf("namespaces left behind: %v %v", left, err)
		for _, ns := range left {
			lab, _, _ := strings.Cut(strings.TrimPrefix(ns, topologies.Prefix), "-")
			_, _ = topologies.Cleanup(context.Background(), lab)
		}
	}

	var js bytes.Buffer
	if err := res.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	if err := ValidateJSON(js.Bytes()); err != nil {
		t.Errorf("results do not validate against the schema: %v", err)
	}
	var bench bytes.Buffer
	if err := res.WriteBenchFormat(&bench); err != nil {
		t.Fatal(err)
	}
	res.Summary(&bench)
	t.Log(bench.String())

	if len(res.Cells) != 2 {
		t.Fatalf("%d cells, want 2: %+v", len(res.Cells), res.Cells)
	}
	for _, c := range res.Cells {
		switch c.Datapath {
		case "iptables":
			if c.Status != "measured" {
				t.Errorf("iptables cell %s: %s %v", c.Status, c.Reason, c.Errors)
			}
			if !strings.HasPrefix(c.Backend, "iptables-") {
				t.Errorf("iptables cell records backend %q", c.Backend)
			}
		case "no-such-datapath":
			if c.Status != "skipped" || c.Reason == "" {
				t.Errorf("unknown datapath: status %s reason %q, want skipped with a reason", c.Status, c.Reason)
			}
		}
	}

	get := func(metric, variant, stat string) *Figure {
		for i := range res.Figures {
			f := &res.Figures[i]
			if f.Datapath == "iptables" && f.Metric == metric && f.Variant == variant && f.Stat == stat {
				return f
			}
		}
		t.Errorf("no figure %s/%s %s", metric, variant, stat)
		return nil
	}
	positive := func(metric, variant string, stats ...string) {
		for _, st := range stats {
			if f := get(metric, variant, st); f != nil {
				if f.Reps != 2 || len(f.PerRep) != 2 {
					t.Errorf("%s/%s %s: %d reps, want 2", metric, variant, st, f.Reps)
				}
				for _, v := range f.PerRep {
					if !(v > 0) {
						t.Errorf("%s/%s %s: a repetition is %v, want > 0", metric, variant, st, v)
					}
				}
				if f.Min > f.Median || f.Median > f.Max {
					t.Errorf("%s/%s %s: spread out of order %+v", metric, variant, st, f.Spread)
				}
				if f.Kernel == "" || f.Topology == "" || f.IPTablesBackend == "" || f.Services != 50 || f.Endpoints != 2 {
					t.Errorf("%s/%s %s: context missing: %+v", metric, variant, st, f)
				}
			}
		}
	}
	ordered := func(metric, variant string) {
		p50, p90, p99 := get(metric, variant, "p50"), get(metric, variant, "p90"), get(metric, variant, "p99")
		if p50 == nil || p90 == nil || p99 == nil {
			return
		}
		for i := range p50.PerRep {
			if !(p50.PerRep[i] <= p90.PerRep[i] && p90.PerRep[i] <= p99.PerRep[i]) {
				t.Errorf("%s/%s rep %d: p50 %v, p90 %v, p99 %v out of order", metric, variant, i, p50.PerRep[i], p90.PerRep[i], p99.PerRep[i])
			}
		}
	}
	positive(MetricSyncFull, "", "wall", "cpu", "objects", "overhead")
	positive(MetricSyncIncremental, "all", "p50", "p99", "overhead", "overhead-max")
	positive(MetricProgrammingLatency, "all", "p50", "p99")
	positive(MetricProgrammingLatency, "add-service", "p50")
	positive(MetricProgrammingLatency, "replace-endpoint", "p50")
	positive(MetricProgrammingLatency, "remove-last-endpoint", "p50")
	for _, v := range []string{"baseline", "vip", "direct"} {
		positive(MetricFirstPacketRTT, v, "p50", "p90", "p99")
		ordered(MetricFirstPacketRTT, v)
	}
	for _, v := range []string{"udp-baseline", "udp-vip", "udp-direct", "tcp-baseline", "tcp-vip", "tcp-direct"} {
		positive(MetricRRLatency, v, "p50", "p99")
		ordered(MetricRRLatency, v)
	}
	for _, v := range []string{"crr-baseline", "crr-vip", "crr-direct", "udp-baseline", "udp-vip", "udp-direct"} {
		positive(MetricThroughput, v, "rate")
		positive(MetricCPUPerPacket, v, "value")
	}
	if f := get(MetricDisruption, "tcp", "connections"); f != nil && f.Median <= 0 {
		t.Errorf("disruption made no connections")
	}
	for _, st := range []string{"failed", "to-removed"} {
		get(MetricDisruption, "tcp", st)
	}
	get(MetricDisruption, "udp", "stuck-flows")
	if !strings.Contains(bench.String(), "BenchmarkSyncFull/datapath=iptables/services=50/endpoints=2 1 ") {
		t.Errorf("no SyncFull line in Go benchmark format")
	}
	if len(phases) == 0 {
		t.Error("no progress reported")
	}
}
