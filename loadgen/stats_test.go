package loadgen

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestPercentileNearestRank(t *testing.T) {
	s := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, c := range []struct{ p, want float64 }{{0, 1}, {10, 1}, {50, 5}, {90, 9}, {99, 10}, {100, 10}} {
		if got := Percentile(s, c.p); got != c.want {
			t.Errorf("Percentile(1..10, %g) = %g, want %g", c.p, got, c.want)
		}
	}
	if Percentile(nil, 50) != 0 {
		t.Error("Percentile of nothing is not 0")
	}
	// p99 of 200 samples is the second largest.
	var big []float64
	for i := range 200 {
		big = append(big, float64(i))
	}
	if got := Percentile(big, 99); got != 197 {
		t.Errorf("p99 of 0..199 = %g, want 197", got)
	}
}

func TestSpreadOutliers(t *testing.T) {
	sp := SpreadOf([]float64{10, 11, 12, 11, 100})
	if sp.Median != 11 || sp.Min != 10 || sp.Max != 100 {
		t.Fatalf("spread %+v", sp)
	}
	if !slices.Equal(sp.Outliers, []int{4}) {
		t.Fatalf("outliers %v, want [4]", sp.Outliers)
	}
	if sp := SpreadOf([]float64{3, 1}); sp.Median != 2 || len(sp.Outliers) != 0 {
		t.Fatalf("spread of two %+v", sp)
	}
}

// sampleResults is a small, complete Results for format tests.
func sampleResults() *Results {
	rc := newRecorder(Figure{Datapath: "iptables", Services: 100, Endpoints: 5, Topology: "direct", Kernel: "6.18", IPTablesBackend: "legacy"})
	for rep := range 3 {
		rc.add(MetricSyncFull, "", "wall", "ns", 1, float64(1e6+rep))
		rc.add(MetricSyncFull, "", "cpu", "ns", 1, float64(9e5+rep))
		rc.addDist(MetricFirstPacketRTT, "vip", []time.Duration{90 * time.Microsecond, 100 * time.Microsecond, 200 * time.Microsecond}, "p50", "p90", "p99")
		rc.add(MetricThroughput, "crr-vip", "rate", "conn/s", 1000, 5000)
	}
	cfg := Config{Datapaths: []string{"iptables"}, Services: []int{100}}.Defaults()
	return &Results{
		Schema: SchemaVersion,
		Run: RunInfo{Started: time.Unix(0, 0).UTC(), Finished: time.Unix(60, 0).UTC(), Command: "proxyrig bench", Config: cfg,
			Env:      Env{Kernel: "6.18", GoVersion: "go1.26", CPUs: 2, Governor: "unavailable"},
			Topology: Topology{Name: "direct", Mode: "scale", Nodes: 2, DatapathNodes: []string{"node-00"}, Client: "client pod"}},
		Cells:   []Cell{{Datapath: "iptables", Services: 100, Endpoints: 5, Status: "measured", LargestMeasuredScale: 100, DurationNs: 1}},
		Figures: rc.finish(),
	}
}

func TestResultsValidateAgainstSchema(t *testing.T) {
	var buf bytes.Buffer
	if err := sampleResults().WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	if err := ValidateJSON(buf.Bytes()); err != nil {
		t.Fatalf("valid results rejected: %v", err)
	}
	// The validator must actually reject things.
	var doc map[string]any
	_ = json.Unmarshal(buf.Bytes(), &doc)
	figs := doc["figures"].([]any)
	f0 := figs[0].(map[string]any)
	f0["metric"] = "sync_fast"
	delete(f0, "reps")
	f0["surprise"] = 1
	bad, _ := json.Marshal(doc)
	err := ValidateJSON(bad)
	if err == nil {
		t.Fatal("invalid results accepted")
	}
	for _, want := range []string{"sync_fast", `"reps"`, `"surprise"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestBenchFormat(t *testing.T) {
	var buf bytes.Buffer
	if err := sampleResults().WriteBenchFormat(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"kernel: 6.18\n",
		"BenchmarkSyncFull/datapath=iptables/services=100/endpoints=5 1 1000000 ns/op 900000 cpu-ns\n",
		"BenchmarkFirstPacketRTT/datapath=iptables/services=100/endpoints=5/variant=vip 3 100000 p50-ns 200000 p90-ns 200000 p99-ns\n",
		"BenchmarkThroughput/datapath=iptables/services=100/endpoints=5/variant=crr-vip 1000 5000 conn/s\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("bench output lacks %q:\n%s", want, out)
		}
	}
	// One line per repetition, so benchstat sees the spread.
	if n := strings.Count(out, "BenchmarkSyncFull/"); n != 3 {
		t.Errorf("%d SyncFull lines, want 3", n)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "Benchmark") && len(strings.Fields(line))%2 != 0 {
			t.Errorf("line %q: want name, iterations, then value-unit pairs", line)
		}
	}
}

func BenchmarkGenerate(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run("services="+strconv.Itoa(n), func(b *testing.B) {
			for b.Loop() {
				if _, err := Generate(Spec{Services: n, Seed: 1}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkChurnNext(b *testing.B) {
	spec := Spec{Services: 10000, Seed: 1}
	c, _ := Generate(spec)
	ch, _ := NewChurn(c, spec, 1, nil)
	for b.Loop() {
		if _, err := ch.Next(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPercentiles(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	d := make([]time.Duration, 10000)
	for i := range d {
		d[i] = time.Duration(rng.IntN(1e6))
	}
	for b.Loop() {
		s := durationsNs(d)
		_ = Percentile(s, 50) + Percentile(s, 90) + Percentile(s, 99)
	}
}

// BenchmarkProbeLoopTCPConnect is the cost of one first_packet_rtt sample
// on loopback: what the harness adds to every connection it times.
func BenchmarkProbeLoopTCPConnect(b *testing.B) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Skip(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("ep-x 127.0.0.1:1\n"))
			c.Close()
		}
	}()
	dst := ln.Addr().(*net.TCPAddr).AddrPort()
	buf := make([]byte, 256)
	for b.Loop() {
		if x := tcpConnect(netip.AddrPortFrom(dst.Addr(), dst.Port()), time.Second, buf); x.outcome != okAnswered {
			b.Fatal(x.err)
		}
	}
}

func TestStealRatio(t *testing.T) {
	// user nice system idle iowait irq softirq steal guest guest_nice
	v0, err := parseStatCPU("cpu  100 0 50 800 0 0 10 40 7 0")
	if err != nil {
		t.Fatal(err)
	}
	v1, err := parseStatCPU("cpu  150 0 70 1500 0 0 20 100 9 0")
	if err != nil {
		t.Fatal(err)
	}
	before, after := ticksOf(v0), ticksOf(v1)
	// 50+20+700+10+60 = 840 ticks passed, 60 of them stolen; guest time is
	// inside user already and must not count twice.
	if got, want := after.stealRatio(before), 60.0/840; math.Abs(got-want) > 1e-12 {
		t.Errorf("steal ratio %v, want %v", got, want)
	}
	if got := after.stealRatio(after); got != 0 {
		t.Errorf("no time passed: steal ratio %v, want 0", got)
	}
	for _, bad := range []string{"", "intr 1 2 3", "cpu 1 2 3", "cpu 1 2 3 4 5 6 7 x"} {
		if _, err := parseStatCPU(bad); err == nil {
			t.Errorf("parseStatCPU(%q) accepted", bad)
		}
	}
	if _, err := readCPUTicks(); err != nil {
		t.Errorf("this machine's /proc/stat: %v", err)
	}
}
