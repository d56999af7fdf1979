package reports

import (
	"bytes"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"proxyrig/conformance/matrix"
	"proxyrig/loadgen"
)

// The fixtures in testdata/ are built here, with loadgen's and matrix's
// own types, so they keep the shape of the real files: `go test
// ./reports -run TestFixtures -update` rewrites them, and without -update
// the test fails when they are stale.
var update = flag.Bool("update", false, "rewrite the testdata fixtures")

// fixtureModel is how a synthetic datapath behaves: costs as power laws
// in N, a per-packet overhead, and disruption counts.
type fixtureModel struct {
	syncFull100   float64 // ns at 100 Services
	syncExp       float64 // log-log slope of sync costs
	incr100       float64 // ns, incremental sync p50 at 100 Services
	prog100       float64 // ns, programming latency p50 at 100 Services
	rttOverhead   float64 // ns added to the first packet at 100 Services
	rttExp        float64 // growth of that overhead with N
	cpuRatio      float64 // CPU per packet vs direct
	disruptFailed float64
	attach        string
}

var fixtureModels = map[string]fixtureModel{
	"iptables": {syncFull100: 8e6, syncExp: 1.25, incr100: 4e6, prog100: 6e6, rttOverhead: 4e3, rttExp: 0.9, cpuRatio: 1.3, disruptFailed: 2},
	"nftables": {syncFull100: 10e6, syncExp: 1.0, incr100: 2e6, prog100: 4e6, rttOverhead: 5e3, rttExp: 0.05, cpuRatio: 1.15, disruptFailed: 0},
	"ebpf":     {syncFull100: 3e6, syncExp: 1.0, incr100: 0.3e6, prog100: 1e6, rttOverhead: 1e3, rttExp: 0, cpuRatio: 1.05, disruptFailed: 1, attach: "tcx"},
	"ipvs":     {syncFull100: 30e6, syncExp: 1.1, incr100: 15e6, prog100: 20e6, rttOverhead: 8e3, rttExp: 0, cpuRatio: 1.2, disruptFailed: 3},
}

// fixtureRun builds one bench run of the given datapaths and scales.
// jitter scales the repetition noise; slow multiplies every time (an
// emulated CPU, or a regression).
func fixtureRun(seed uint64, started time.Time, dps []string, scales []int, emulated bool, slow float64) *loadgen.Results {
	rng := rand.New(rand.NewPCG(seed, 7))
	const reps, endpoints = 3, 5
	kernel, cpu := "6.18.44-fixture", "Fixture CPU @ 2.0GHz"
	if emulated {
		kernel, cpu = "6.12.0-vm", "QEMU TCG emulated CPU"
	}
	r := &loadgen.Results{
		Schema: loadgen.SchemaVersion,
		Run: loadgen.RunInfo{
			Started:  started,
			Finished: started.Add(10 * time.Minute),
			Command:  fmt.Sprintf("proxyrig bench --datapaths %v --services %v --reps %d", dps, scales, reps),
			Config: loadgen.Config{Datapaths: dps, Services: scales, Endpoints: endpoints, Reps: reps, Budget: 15 * time.Minute,
				Seed: 1, Nodes: 2, IPTablesBackend: "legacy"},
			Env: loadgen.Env{Kernel: kernel, GoVersion: "go1.26.8", CPUs: 2, CPUModel: cpu, MemTotal: 8 << 30, Governor: "unavailable",
				LoadAvgStart: [3]float64{0.1, 0.2, 0.3}, LoadAvgEnd: [3]float64{0.5, 0.4, 0.3}, Emulated: emulated},
			Topology:    loadgen.Topology{Name: "direct", Mode: "scale", Nodes: 2, DatapathNodes: []string{"node-00"}, Client: "prx-b-c-node-00"},
			MaxRSSBytes: 300 << 20,
		},
	}
	if emulated {
		r.Run.Notes = append(r.Run.Notes, "emulated: figures from the VM runner")
	}
	noisy := func(v float64) []float64 {
		out := make([]float64, reps)
		for i := range out {
			out[i] = math.Round(v * (1 + 0.06*(rng.Float64()-0.5)))
		}
		return out
	}
	for _, n := range scales {
		for _, dp := range dps {
			m := fixtureModels[dp]
			r.Run.Config.Services = scales
			r.Cells = append(r.Cells, loadgen.Cell{Datapath: dp, Services: n, Endpoints: endpoints, Status: "measured",
				LargestMeasuredScale: n, Backend: m.attach, DurationNs: int64(20 * time.Second)})
			x := float64(n) / 100
			grow := math.Pow(x, m.syncExp)
			base := loadgen.Figure{Datapath: dp, Services: n, Endpoints: endpoints, Topology: "direct", Kernel: kernel,
				IPTablesBackend: "legacy", Emulated: emulated, Reps: reps}
			add := func(metric, variant, stat, unit string, samples int, perRep []float64) {
				f := base
				f.Metric, f.Variant, f.Stat, f.Unit, f.Samples, f.PerRep = metric, variant, stat, unit, samples, perRep
				f.Spread = loadgen.SpreadOf(perRep)
				r.Figures = append(r.Figures, f)
			}
			add(loadgen.MetricSyncFull, "", "wall", "ns", 1, noisy(slow*m.syncFull100*grow))
			add(loadgen.MetricSyncFull, "", "cpu", "ns", 1, noisy(slow*0.8*m.syncFull100*grow))
			add(loadgen.MetricSyncIncremental, "all", "p50", "ns", 40, noisy(slow*m.incr100*grow))
			add(loadgen.MetricSyncIncremental, "all", "p99", "ns", 40, noisy(slow*2.5*m.incr100*grow))
			add(loadgen.MetricSyncIncremental, "all", "max", "ns", 40, noisy(slow*3*m.incr100*grow))
			for i, kind := range []string{"add-service", "replace-endpoint", "remove-last-endpoint", "all"} {
				k := 1 + 0.2*float64(i)
				add(loadgen.MetricProgrammingLatency, kind, "p50", "ns", 20, noisy(slow*k*m.prog100*grow))
				add(loadgen.MetricProgrammingLatency, kind, "p99", "ns", 20, noisy(slow*k*2*m.prog100*grow))
				add(loadgen.MetricProgrammingLatency, kind, "max", "ns", 20, noisy(slow*k*2.4*m.prog100*grow))
			}
			direct := 40e3 * slow
			over := slow * m.rttOverhead * math.Pow(x, m.rttExp)
			for _, pc := range []struct {
				stat string
				k    float64
			}{{"p50", 1}, {"p90", 1.6}, {"p99", 3}} {
				add(loadgen.MetricFirstPacketRTT, "vip", pc.stat, "ns", 200, noisy(pc.k*(direct+over)))
				add(loadgen.MetricFirstPacketRTT, "direct", pc.stat, "ns", 200, noisy(pc.k*direct*1.01))
				add(loadgen.MetricFirstPacketRTT, "baseline", pc.stat, "ns", 200, noisy(pc.k*direct))
				add(loadgen.MetricRRLatency, "udp-vip", pc.stat, "ns", 200, noisy(pc.k*30e3*slow))
			}
			crrDirect := 9000 / slow
			add(loadgen.MetricThroughput, "crr-vip", "rate", "conn/s", 9000, noisy(crrDirect/(1+over/direct)))
			add(loadgen.MetricThroughput, "crr-direct", "rate", "conn/s", 9000, noisy(crrDirect))
			add(loadgen.MetricThroughput, "crr-baseline", "rate", "conn/s", 9000, noisy(crrDirect*1.01))
			add(loadgen.MetricThroughput, "udp-vip", "rate", "pkt/s", 200000, noisy(200000/slow/m.cpuRatio))
			add(loadgen.MetricThroughput, "udp-direct", "rate", "pkt/s", 200000, noisy(200000/slow))
			add(loadgen.MetricThroughput, "udp-baseline", "rate", "pkt/s", 200000, noisy(205000/slow))
			add(loadgen.MetricCPUPerPacket, "udp-vip", "value", "ns/pkt", 200000, noisy(slow*2000*m.cpuRatio))
			add(loadgen.MetricCPUPerPacket, "udp-direct", "value", "ns/pkt", 200000, noisy(slow*2000))
			add(loadgen.MetricCPUPerPacket, "udp-baseline", "value", "ns/pkt", 200000, noisy(slow*1980))
			add(loadgen.MetricDisruption, "tcp", "failed", "connections", 500, []float64{m.disruptFailed, m.disruptFailed, m.disruptFailed + 1})
			add(loadgen.MetricDisruption, "tcp", "to-removed", "connections", 500, []float64{0, 0, 1})
			add(loadgen.MetricDisruption, "tcp", "connections", "connections", 500, []float64{500, 498, 502})
			add(loadgen.MetricDisruption, "udp", "stuck-flows", "flows", 8, []float64{0, 0, 0})
			add(loadgen.MetricDisruption, "", "changes", "changes", 15, []float64{15, 15, 15})
		}
	}
	return r
}

// fixtureMatrix is a conformance matrix: iptables passes everything it
// can run; nftables has its documented deviations; ebpf fails the
// affinity timeout.
func fixtureMatrix(dps []string, emulated bool, generated time.Time) *matrix.Matrix {
	m := &matrix.Matrix{Version: matrix.Version, Generated: generated,
		Env: matrix.Env{Kernel: "6.18.44-fixture", IPTablesBackend: "legacy", Emulated: emulated, Arch: "linux/amd64", ParallelProcesses: 2}}
	if emulated {
		m.Env.Kernel = "6.12.0-vm"
	}
	for _, it := range matrix.Items() {
		for _, dp := range dps {
			r := matrix.Result{Item: it.ID, Category: it.Category, Datapath: dp, Status: matrix.StatusPass,
				Duration: 1500 * time.Millisecond, Spec: it.Title, Location: "conformance/x_test.go:1", Specs: matrix.Counts{Passed: 2}}
			switch {
			case it.Benchmark:
				r.Status, r.Reason, r.Specs = matrix.StatusSkip, matrix.BenchmarkOwner, matrix.Counts{}
			case it.ID == "CIP-11":
				r.Status, r.Reason, r.Specs = matrix.StatusSkip, "kernel lacks SCTP sockets", matrix.Counts{Skipped: 1}
			case dp == "nftables" && (it.ID == "NP-02" || it.ID == "CIP-05" || it.ID == "CIP-06"):
				r.Status, r.Reason = matrix.StatusDeviation, "documented nftables divergence: NodePorts only on primary node IPs"
			case dp == "ebpf" && it.ID == "AFF-04":
				r.Status, r.Reason, r.Specs = matrix.StatusFail, "affinity kept after the timeout: want a new endpoint choice within 12s", matrix.Counts{Passed: 1, Failed: 1}
			case dp == "ipvs" && it.ID == "AFF-04":
				r.Status, r.Reason = matrix.StatusDeviation, "documented ipvs divergence: persistence expiry lags by ~2 s"
			case dp == "ebpf" && it.ID == "TOPO-03":
				r.Status, r.Reason = matrix.StatusMissing, "no spec in the suite covers TOPO-03 on ebpf"
			}
			m.Results = append(m.Results, r)
		}
	}
	return m
}

var fixtureStart = time.Date(2025, 11, 22, 21, 0, 0, 0, time.UTC)

// fixtureFiles are every testdata file and its contents.
func fixtureFiles(t *testing.T) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	bench := func(path string, r *loadgen.Results) {
		var b bytes.Buffer
		if err := r.WriteJSON(&b); err != nil {
			t.Fatal(err)
		}
		files[path] = b.Bytes()
	}
	mat := func(path string, m *matrix.Matrix) {
		dir := t.TempDir()
		if err := m.Save(filepath.Join(dir, "m.json")); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dir, "m.json"))
		if err != nil {
			t.Fatal(err)
		}
		files[path] = b
	}
	native := []string{"iptables", "nftables", "ebpf"}
	scales := []int{100, 1000, 5000}
	bench("testdata/results/bench/bench-20251122T210000Z.json", fixtureRun(1, fixtureStart, native, scales, false, 1))
	mat("testdata/results/conformance-matrix.json", fixtureMatrix(native, false, fixtureStart.Add(-30*time.Minute)))
	bench("testdata/results/vm/bench-20251122T213000Z.json", fixtureRun(2, fixtureStart.Add(30*time.Minute), []string{"iptables", "ipvs"}, []int{100, 1000}, true, 6))
	mat("testdata/results/vm/conformance-matrix.json", fixtureMatrix([]string{"ipvs"}, true, fixtureStart.Add(-20*time.Minute)))
	// A history of two earlier nights, measured like this run (smaller:
	// two datapaths, two scales): nothing changed, so nothing may be
	// flagged, and ebpf's first measurement has nothing to compare with.
	for i := range 2 {
		started := fixtureStart.Add(time.Duration(i-2) * 24 * time.Hour)
		bench(fmt.Sprintf("testdata/history/%s/bench/bench.json", started.Format("20060102")), fixtureRun(uint64(10+i), started, native[:2], scales[:2], false, 1))
	}
	return files
}

func TestFixturesUpToDate(t *testing.T) {
	for path, want := range fixtureFiles(t) {
		if err := loadgenValidate(path, want); err != nil {
			t.Errorf("fixture %s: %v", path, err)
		}
		if *update {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("fixture %s: %v (run: go test ./reports -run TestFixturesUpToDate -update)", path, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("fixture %s is stale: loadgen's or matrix's format changed; run: go test ./reports -run TestFixturesUpToDate -update", path)
		}
	}
}

// loadgenValidate checks bench fixtures against loadgen's JSON Schema.
func loadgenValidate(path string, b []byte) error {
	if filepath.Base(path) == "conformance-matrix.json" {
		return nil
	}
	return loadgen.ValidateJSON(b)
}

// fixtureInputs loads the testdata results as `proxyrig report` does,
// once per test binary: tests only read them.
func fixtureInputs(t *testing.T) Inputs {
	t.Helper()
	fixtureOnce.Do(func() {
		fixtureIn, fixtureErr = LoadDirs("testdata/results")
		if fixtureErr != nil {
			return
		}
		fixtureIn.History, fixtureErr = LoadHistory("testdata/history")
		fixtureIn.Generated = fixtureStart.Add(time.Hour)
	})
	if fixtureErr != nil {
		t.Fatal(fixtureErr)
	}
	return fixtureIn
}

var (
	fixtureOnce sync.Once
	fixtureIn   Inputs
	fixtureErr  error
)
