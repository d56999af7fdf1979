package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// SchemaVersion names the results format; loadgen/schema/bench-v1.json is
// its JSON Schema. A change that removes or renames a field, or changes
// what one means, makes a new version.
const SchemaVersion = "proxyrig.bench/v1"

// Metric names, exactly as DESIGN.md §6 defines them.
const (
	MetricSyncFull           = "sync_full"
	MetricSyncIncremental    = "sync_incremental"
	MetricProgrammingLatency = "programming_latency"
	MetricFirstPacketRTT     = "first_packet_rtt"
	MetricRRLatency          = "rr_latency"
	MetricThroughput         = "throughput"
	MetricCPUPerPacket       = "cpu_per_packet"
	MetricDisruption         = "disruption"
)

// Results is one `proxyrig bench` run: one JSON file.
type Results struct {
	Schema  string   `json:"schema"`
	Run     RunInfo  `json:"run"`
	Cells   []Cell   `json:"cells"`
	Figures []Figure `json:"figures"`
}

// RunInfo is what the whole run shares.
type RunInfo struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Command is a command line that repeats this run.
	Command string `json:"command"`
	Config  Config `json:"config"`
	Env     Env    `json:"env"`
	// Topology describes the lab every figure was measured in.
	Topology Topology `json:"topology"`
	// MaxRSSBytes is the harness's peak resident set over the run.
	MaxRSSBytes uint64   `json:"maxRssBytes"`
	Notes       []string `json:"notes,omitempty"`
}

// Topology is the lab shape, recorded because it changes per-packet cost.
type Topology struct {
	Name          string   `json:"name"` // "direct" (flannel host-gw-like routing)
	Mode          string   `json:"mode"` // "scale": endpoints in one backend netns per node
	Nodes         int      `json:"nodes"`
	DatapathNodes []string `json:"datapathNodes"`
	// Client is where traffic comes from.
	Client string `json:"client"`
}

// Cell is one datapath at one scale: whether it was measured and why not.
type Cell struct {
	Datapath  string `json:"datapath"`
	Services  int    `json:"services"`
	Endpoints int    `json:"endpoints"`
	// Status is "measured", "partial" (some phases failed or ran out of
	// time; the figures that exist are sound), "skipped" or "failed".
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	// LargestMeasuredScale is the largest Service count at which this
	// datapath's full sync was measured in this run, so a skipped cell
	// still says how far the datapath got.
	LargestMeasuredScale int    `json:"largestMeasuredScale"`
	Backend              string `json:"backend,omitempty"`
	DurationNs           int64  `json:"durationNs"`
	// StealRatio is the share of the machine's CPU time that the
	// hypervisor took away while the cell ran (steal in /proc/stat): a
	// virtual machine's background load, which no run can control and
	// which widens every latency figure. 0 on bare metal.
	StealRatio float64  `json:"stealRatio"`
	Errors     []string `json:"errors,omitempty"`
	Notes      []string `json:"notes,omitempty"`
}

// Figure is one statistic of one metric for one datapath at one scale,
// with its value in every repetition and their spread. It carries its
// whole context, so a figure copied out of the file still means something.
type Figure struct {
	Metric string `json:"metric"`
	// Variant distinguishes measurements of one metric: "vip", "direct"
	// (to the endpoint, rules loaded), "baseline" (to the endpoint, empty
	// node), "udp-vip", "add-service", …
	Variant string `json:"variant"`
	// Stat is what was taken of the samples: "p50", "p90", "p99", "max",
	// "wall", "cpu", "rate", "value", …
	Stat string `json:"stat"`
	Unit string `json:"unit"`

	Datapath        string `json:"datapath"`
	Services        int    `json:"services"`
	Endpoints       int    `json:"endpoints"`
	Topology        string `json:"topology"`
	Kernel          string `json:"kernel"`
	IPTablesBackend string `json:"iptablesBackend"`
	Emulated        bool   `json:"emulated"`
	Reps            int    `json:"reps"`
	// Samples is how many samples each repetition's value summarises.
	Samples int `json:"samples"`

	PerRep []float64 `json:"perRep"`
	Spread
}

// benchName maps a metric onto a Go benchmark name.
var benchName = map[string]string{
	MetricSyncFull:           "SyncFull",
	MetricSyncIncremental:    "SyncIncremental",
	MetricProgrammingLatency: "ProgrammingLatency",
	MetricFirstPacketRTT:     "FirstPacketRTT",
	MetricRRLatency:          "RRLatency",
	MetricThroughput:         "Throughput",
	MetricCPUPerPacket:       "CPUPerPacket",
	MetricDisruption:         "Disruption",
}

// benchUnit is a figure's unit in Go benchmark format: benchstat reads
// any unit without spaces, and "-ns" suffixes tell it the values are
// times.
func benchUnit(f Figure) string {
	switch {
	case f.Metric == MetricSyncFull && f.Stat == "wall":
		return "ns/op"
	case f.Unit == "ns":
		return f.Stat + "-ns"
	case f.Stat == "value" || f.Stat == "rate" || f.Stat == f.Unit:
		return f.Unit
	}
	return f.Stat + "-" + f.Unit
}

// WriteBenchFormat writes the results in Go benchmark format: a header of
// "key: value" configuration lines (benchstat keys results by them), then,
// for every metric, variant, datapath and scale, one line per repetition
// holding every statistic of that repetition. benchstat then shows the
// median and the spread across repetitions.
func (r *Results) WriteBenchFormat(w io.Writer) error {
	env := r.Run.Env
	fmt.Fprintf(w, "goos: linux\ngoarch: %s\npkg: proxyrig/loadgen\n", goarch())
	if env.CPUModel != "" {
		fmt.Fprintf(w, "cpu: %s\n", env.CPUModel)
	}
	fmt.Fprintf(w, "kernel: %s\ntopology: %s\nemulated: %t\niptables-backend: %s\ngovernor: %s\nreps: %d\n",
		env.Kernel, r.Run.Topology.Name, env.Emulated, r.Run.Config.IPTablesBackend, env.Governor, r.Run.Config.Reps)
	type key struct {
		metric, variant, datapath string
		services, endpoints       int
	}
	groups := map[key][]Figure{}
	var keys []key
	for _, f := range r.Figures {
		k := key{f.Metric, f.Variant, f.Datapath, f.Services, f.Endpoints}
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], f)
	}
	for _, k := range keys {
		figs := groups[k]
		name := fmt.Sprintf("Benchmark%s/datapath=%s/services=%d/endpoints=%d", benchName[k.metric], k.datapath, k.services, k.endpoints)
		if k.variant != "" {
			name += "/variant=" + k.variant
		}
		reps := 0
		for _, f := range figs {
			reps = max(reps, len(f.PerRep))
		}
		for rep := range reps {
			var b strings.Builder
			iters := 1
			for _, f := range figs {
				if rep < len(f.PerRep) {
					iters = max(iters, f.Samples)
				}
			}
			fmt.Fprintf(&b, "%s %d", name, iters)
			for _, f := range figs {
				if rep < len(f.PerRep) {
					fmt.Fprintf(&b, " %s %s", formatValue(f.PerRep[rep]), benchUnit(f))
				}
			}
			if _, err := fmt.Fprintln(w, b.String()); err != nil {
				return err
			}
		}
	}
	return nil
}

func formatValue(v float64) string {
	if v == float64(int64(v)) {
		return fmt.Sprintf("%d", int64(v))
	}
	return fmt.Sprintf("%.4g", v)
}

// WriteJSON writes the results as indented JSON.
func (r *Results) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// Summary is a short table of the headline figures (medians across
// repetitions), for people.
func (r *Results) Summary(w io.Writer) {
	want := []struct{ metric, variant, stat string }{
		{MetricSyncFull, "", "wall"},
		{MetricSyncIncremental, "all", "p50"},
		{MetricProgrammingLatency, "all", "p50"},
		{MetricFirstPacketRTT, "baseline", "p50"},
		{MetricFirstPacketRTT, "vip", "p50"},
		{MetricFirstPacketRTT, "vip", "p99"},
		{MetricRRLatency, "udp-vip", "p50"},
		{MetricThroughput, "crr-vip", "rate"},
		{MetricThroughput, "udp-vip", "rate"},
		{MetricCPUPerPacket, "udp-vip", "value"},
	}
	fmt.Fprintf(w, "%-12s %8s  %-34s %14s  %s\n", "DATAPATH", "SERVICES", "FIGURE", "MEDIAN", "SPREAD (min-max)")
	cells := append([]Cell(nil), r.Cells...)
	sort.SliceStable(cells, func(i, j int) bool {
		if cells[i].Datapath != cells[j].Datapath {
			return cells[i].Datapath < cells[j].Datapath
		}
		return cells[i].Services < cells[j].Services
	})
	for _, c := range cells {
		if c.Status == "skipped" || c.Status == "failed" {
			fmt.Fprintf(w, "%-12s %8d  %s: %s\n", c.Datapath, c.Services, strings.ToUpper(c.Status), c.Reason)
			continue
		}
		for _, wnt := range want {
			for _, f := range r.Figures {
				if f.Datapath == c.Datapath && f.Services == c.Services && f.Metric == wnt.metric && f.Variant == wnt.variant && f.Stat == wnt.stat {
					label := f.Metric
					if f.Variant != "" {
						label += "/" + f.Variant
					}
					label += " " + f.Stat
					fmt.Fprintf(w, "%-12s %8d  %-34s %14s  %s-%s\n", c.Datapath, c.Services, label,
						human(f.Median, f.Unit), human(f.Min, f.Unit), human(f.Max, f.Unit))
				}
			}
		}
		if c.Status == "partial" {
			fmt.Fprintf(w, "%-12s %8d  PARTIAL: %s\n", c.Datapath, c.Services, c.Reason)
		}
	}
}

// human formats a value with its unit for the summary table.
func human(v float64, unit string) string {
	if unit == "ns" {
		return time.Duration(int64(v)).Round(time.Microsecond).String()
	}
	if strings.HasPrefix(unit, "ns/") {
		return time.Duration(int64(v)).String() + unit[2:]
	}
	return fmt.Sprintf("%.0f %s", v, unit)
}
