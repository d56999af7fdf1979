package loadgen

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"proxyrig/datapaths"
	"proxyrig/model"
	"proxyrig/topologies"
)

// soak churns a small scale lab (iptables, 2 nodes, 40 Services × 3
// endpoints) for d: changes at a steady rate, each synced, each changed
// Service probed, a forced full resync every 20 changes. It samples the
// process's resident memory, open descriptors and goroutines once a
// second and checks that the last quarter of the run stays within a
// generous bound of the first quarter: a leak per sync or per probe grows
// without bound, a warm cache does not. It is a bound check, not a timing
// assertion: a slow machine makes fewer changes, never a failure.
func soak(t *testing.T, d time.Duration) {
	requireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), d+3*time.Minute)
	defer cancel()

	spec := Spec{Services: 40, EndpointsPerService: 3, Nodes: 2, Seed: 8, UDPFraction: -1}.Defaults()
	c, err := Generate(spec)
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("soak%d", os.Getpid()%100000)
	backends := map[string][]netip.Prefix{}
	for i := range spec.Nodes {
		backends[NodeName(i)] = NodePrefixes(i, spec.Nodes)
	}
	node := NodeName(0)
	lab, err := topologies.BuildScale(ctx, c, topologies.ScaleOptions{
		Name:          name,
		Datapath:      "iptables",
		DatapathNodes: []string{node},
		Proxy: datapaths.ProxyConfig{
			ClusterCIDRs: []netip.Prefix{PodRange},
			ServiceCIDRs: []netip.Prefix{topologies.ServiceCIDR},
		},
		Backends:       backends,
		ExternalRoutes: []netip.Prefix{LoadBalancerRange},
	})
	if err != nil {
		_, _ = topologies.Cleanup(context.Background(), name)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(context.Background()); err != nil {
			t.Errorf("close the lab: %v", err)
			_, _ = topologies.Cleanup(context.Background(), name)
		}
	})
	dp := lab.Datapath(node)
	sync := func(cl *model.Cluster, force bool) error {
		prepared, err := lab.Prepare(cl)
		if err != nil {
			return err
		}
		_, err = dp.Sync(ctx, lab.View(node, prepared), datapaths.SyncOptions{ForceFull: force})
		return err
	}
	if err := sync(c, true); err != nil {
		t.Fatalf("first sync: %v", err)
	}
	ch, err := NewChurn(c, spec, 9, nil)
	if err != nil {
		t.Fatal(err)
	}

	var samples []sample
	start := time.Now()
	next := start
	changes, probes, answered := 0, 0, 0
	for time.Since(start) < d {
		if time.Now().After(next) {
			s, err := takeSample()
			if err != nil {
				t.Fatal(err)
			}
			samples = append(samples, s)
			next = next.Add(time.Second)
		}
		change, err := ch.Next()
		if err != nil {
			t.Fatalf("churn: %v", err)
		}
		changes++
		if err := sync(change.Cluster, changes%20 == 0); err != nil {
			t.Fatalf("sync after change %d (%s): %v", changes, change, err)
		}
		if change.VIP.IsValid() && change.Kind != RemoveService {
			probes++
			res := topologies.Probe(ctx, lab.ClientNS(node), topologies.ProbeSpec{Proto: string(change.Protocol), Dst: change.VIP, Timeout: time.Second})
			if res.Outcome == topologies.Answered {
				answered++
			}
		}
		time.Sleep(20 * time.Millisecond) // a steady rate, not a CPU hog
	}
	t.Logf("%d changes, %d probes (%d answered), %d samples over %v", changes, probes, answered, len(samples), time.Since(start).Round(time.Second))
	if probes > 0 && answered == 0 {
		t.Errorf("no probe was answered: the lab is not forwarding, so the soak proves little")
	}
	checkBounded(t, samples)
}

type sample struct {
	rssKiB     int
	fds        int
	goroutines int
}

func takeSample() (sample, error) {
	runtime.GC() // compare live memory, not the collector's schedule
	s := sample{goroutines: runtime.NumGoroutine()}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return s, err
	}
	s.fds = len(fds)
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			s.rssKiB, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return s, nil
}

// checkBounded compares the medians of the first and last quarter of the
// samples: descriptors and goroutines may grow by a small constant (a
// connection in flight), memory by half plus 64 MiB (the heap settling).
func checkBounded(t *testing.T, samples []sample) {
	t.Helper()
	if len(samples) < 8 {
		t.Fatalf("only %d samples: too few to compare", len(samples))
	}
	q := len(samples) / 4
	early, late := samples[:q], samples[len(samples)-q:]
	med := func(ss []sample, f func(sample) int) int {
		v := make([]int, len(ss))
		for i, s := range ss {
			v[i] = f(s)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	for _, m := range []struct {
		what  string
		get   func(sample) int
		slack func(int) int
	}{
		{"open file descriptors", func(s sample) int { return s.fds }, func(int) int { return 16 }},
		{"goroutines", func(s sample) int { return s.goroutines }, func(int) int { return 16 }},
		{"resident memory (KiB)", func(s sample) int { return s.rssKiB }, func(v int) int { return v/2 + 64*1024 }},
	} {
		e, l := med(early, m.get), med(late, m.get)
		t.Logf("%s: early median %d, late median %d", m.what, e, l)
		if l > e+m.slack(e) {
			t.Errorf("%s grew from %d to %d over the soak (allowed: +%d): a leak per sync or per probe", m.what, e, l, m.slack(e))
		}
	}
}

// TestSoakShort churns a lab for 20 seconds; the nightly job runs the
// same for 10 minutes (TestSoakLong).
func TestSoakShort(t *testing.T) { soak(t, 20*time.Second) }
