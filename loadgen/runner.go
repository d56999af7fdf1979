package loadgen

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"proxyrig/datapaths"
	"proxyrig/topologies"
)

// Config is one benchmark run: which datapaths, at which scales, how
// carefully. The zero value of a field means its default (see Defaults).
type Config struct {
	// Datapaths are registered datapath names, measured in this order at
	// every scale.
	Datapaths []string `json:"datapaths"`
	// Services are the scales (N), measured smallest first.
	Services []int `json:"services"`
	// Endpoints per Service (E), default 5.
	Endpoints int `json:"endpoints"`
	// Reps is how many times each measurement is repeated (default 3);
	// every figure reports each repetition and their spread.
	Reps int `json:"reps"`
	// Quick takes fewer samples per repetition (for smoke tests and a first
	// look): the figures are noisier, never different in kind.
	Quick bool `json:"quick"`
	// Budget is the wall time the run may take (default 15 min). A cell
	// predicted not to fit in what is left is skipped, with the reason; a
	// cell that runs out of time mid-way keeps what it measured.
	Budget time.Duration `json:"budgetNs"`
	// Seed makes clusters and churn reproducible (default 1).
	Seed uint64 `json:"seed"`
	// Nodes in the lab (default 2). Only the first runs the datapath: its
	// Sync is what sync_* measure, undisturbed by a second one competing
	// for the CPU. The others only route to their backends.
	Nodes int `json:"nodes"`
	// IPTablesBackend is "legacy" (default) or "nft".
	IPTablesBackend string            `json:"iptablesBackend"`
	DatapathOptions map[string]string `json:"datapathOptions,omitempty"`
	// Spec shapes the generated clusters; its Services, Endpoints, Nodes
	// and Seed are set per cell from the fields above.
	Spec Spec `json:"spec"`
	// Samples sets how much each measurement samples; zero fields get
	// defaults that depend on Quick.
	Samples Samples `json:"samples"`
	// Command is recorded in the results as the way to repeat the run.
	Command string `json:"-"`

	Logger *slog.Logger `json:"-"`
	// Progress, if set, is called whenever the run moves on (from the
	// Run goroutine; it must not block for long).
	Progress func(Progress) `json:"-"`
}

// Samples sets sample sizes. Every count is per repetition.
type Samples struct {
	// FirstPacket is connections per target kind (VIP, direct).
	FirstPacket int `json:"firstPacket"`
	// RR is request/response exchanges per kind.
	RR int `json:"rr"`
	// Throughput is how long each rate measurement runs.
	Throughput time.Duration `json:"throughputNs"`
	// Incremental is single changes synced for sync_incremental.
	Incremental int `json:"incremental"`
	// Programming is programming-latency cycles; each gives three samples
	// (add-service, replace-endpoint, remove-last-endpoint).
	Programming int `json:"programming"`
	// PhaseCap bounds the time one repetition of sync_incremental or
	// programming_latency may take at large scales; the sample count
	// actually reached is recorded with every figure.
	PhaseCap time.Duration `json:"phaseCapNs"`
	// Disruption bounds how long one rolling update (every endpoint of a
	// TCP and a UDP Service replaced, three changes each) may run, and
	// ChurnRate is its highest rate in changes per second. Negative
	// Disruption turns the test off.
	Disruption time.Duration `json:"disruptionNs"`
	ChurnRate  float64       `json:"churnRate"`
}

// Defaults fills in unset fields.
func (c Config) Defaults() Config {
	if c.Endpoints == 0 {
		c.Endpoints = 5
	}
	if c.Reps == 0 {
		c.Reps = 3
	}
	if c.Budget == 0 {
		c.Budget = 15 * time.Minute
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.Nodes == 0 {
		c.Nodes = 2
	}
	if c.IPTablesBackend == "" {
		c.IPTablesBackend = "legacy"
	}
	if len(c.Services) == 0 {
		c.Services = []int{100, 1000, 5000}
	}
	c.Services = slices.Clone(c.Services)
	slices.Sort(c.Services)
	s := &c.Samples
	def := func(v *int, normal, quick int) {
		if *v == 0 {
			*v = normal
			if c.Quick {
				*v = quick
			}
		}
	}
	def(&s.FirstPacket, 1000, 150)
	def(&s.RR, 1000, 150)
	def(&s.Incremental, 40, 8)
	def(&s.Programming, 8, 2)
	if s.Throughput == 0 {
		s.Throughput = 2 * time.Second
		if c.Quick {
			s.Throughput = 400 * time.Millisecond
		}
	}
	if s.PhaseCap == 0 {
		s.PhaseCap = 60 * time.Second
		if c.Quick {
			s.PhaseCap = 15 * time.Second
		}
	}
	if s.Disruption == 0 {
		s.Disruption = 20 * time.Second
		if c.Quick {
			s.Disruption = 3 * time.Second
		}
	}
	if s.Disruption < 0 {
		s.Disruption = 0
	}
	if s.ChurnRate == 0 {
		s.ChurnRate = 10
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Progress is a snapshot of a run, for a progress bar.
type Progress struct {
	Cell, Cells int // 1-based index of the current cell, and how many
	Datapath    string
	Services    int
	Phase       string
	Elapsed     time.Duration
	// ETA is the predicted time left; Fraction the predicted share done.
	ETA      time.Duration
	Fraction float64
}

// runner holds one run's state.
type runner struct {
	cfg   Config
	res   *Results
	start time.Time
	lab   string

	mu sync.Mutex
	// measured[dp] are the cells of dp measured so far, in scale order:
	// what predictions extrapolate from.
	measured map[string][]cellCost
	progress Progress
	cellPred time.Duration // predicted time of the current cell
	cellT0   time.Time
}

// cellCost is what a measured cell took, by phase.
type cellCost struct {
	services int
	syncFull time.Duration // median full sync
	// fullPhase, incPhase and progPhase are the wall times of the
	// sync_full, sync_incremental and programming_latency phases; total is
	// the whole cell.
	fullPhase, incPhase, progPhase time.Duration
	total                          time.Duration
}

// Run measures every datapath at every scale and returns the results. It
// fails only for a bad configuration; a datapath that cannot run or fails
// is recorded in its cells and the others are measured all the same.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	cfg = cfg.Defaults()
	if len(cfg.Datapaths) == 0 {
		return nil, errors.New("bench: no datapaths given")
	}
	if cfg.Reps < 1 {
		return nil, fmt.Errorf("bench: reps %d: want at least 1", cfg.Reps)
	}
	for _, n := range cfg.Services {
		spec := cfg.Spec
		spec.Services, spec.EndpointsPerService, spec.Nodes, spec.Seed = n, cfg.Endpoints, cfg.Nodes, cfg.Seed
		if err := spec.Defaults().Check(); err != nil {
			return nil, fmt.Errorf("bench: scale %d: %w", n, err)
		}
	}
	var rnd [3]byte
	_, _ = rand.Read(rnd[:])
	r := &runner{
		cfg:      cfg,
		start:    time.Now(),
		lab:      "bench" + hex.EncodeToString(rnd[:]),
		measured: map[string][]cellCost{},
	}
	r.res = &Results{
		Schema: SchemaVersion,
		Run: RunInfo{
			Started: r.start,
			Command: cfg.Command,
			Config:  cfg,
			Env:     readEnv(),
			Topology: Topology{
				Name:          "direct",
				Mode:          "scale",
				Nodes:         cfg.Nodes,
				DatapathNodes: []string{NodeName(0)},
				Client:        "client pod on " + NodeName(0) + " (" + topologies.ClientPodBase.Next().String() + ")",
			},
		},
	}
	r.res.Run.Notes = append(r.res.Run.Notes,
		fmt.Sprintf("each cell has N generated Services plus one request/response Service (%s/rr) for rr_latency over TCP", Namespace),
		"compare figures only within this run: baseline, direct and VIP figures of a cell were measured minutes apart at most, on the same lab")
	if r.res.Run.Env.Emulated {
		r.res.Run.Notes = append(r.res.Run.Notes, "EMULATED: measured inside proxyrig's VM; timings are not comparable with native runs")
	}
	if la := r.res.Run.Env.LoadAvgStart; la[0] > 0.5*float64(r.res.Run.Env.CPUs) {
		r.res.Run.Notes = append(r.res.Run.Notes, fmt.Sprintf("the machine was busy when the run started (1-minute load average %.2f on %d CPUs): figures are noisier", la[0], r.res.Run.Env.CPUs))
	}

	// Datapaths this machine cannot run are skipped at every scale, with
	// the datapath's own reason.
	unsupported := map[string]string{}
	for _, dp := range cfg.Datapaths {
		reg, err := datapaths.Lookup(dp)
		if err != nil {
			unsupported[dp] = err.Error()
			continue
		}
		if reg.Check != nil {
			if err := reg.Check(ctx, datapaths.Config{IPTablesBackend: cfg.IPTablesBackend, Options: cfg.DatapathOptions}); err != nil {
				unsupported[dp] = "cannot run here: " + err.Error()
			}
		}
	}

	cells := len(cfg.Services) * len(cfg.Datapaths)
	i := 0
	stopped := map[string]string{} // datapath -> why larger scales are skipped
	for _, n := range cfg.Services {
		for _, dp := range cfg.Datapaths {
			i++
			cell := Cell{Datapath: dp, Services: n, Endpoints: cfg.Endpoints}
			r.setProgress(func(p *Progress) {
				p.Cell, p.Cells, p.Datapath, p.Services, p.Phase = i, cells, dp, n, "starting"
			})
			remaining := cfg.Budget - time.Since(r.start)
			pred := r.predict(dp, n)
			switch {
			case ctx.Err() != nil:
				cell.Status, cell.Reason = "skipped", "run interrupted: "+ctx.Err().Error()
			case unsupported[dp] != "":
				cell.Status, cell.Reason = "skipped", unsupported[dp]
			case stopped[dp] != "":
				cell.Status, cell.Reason = "skipped", stopped[dp]
			case remaining <= 0:
				cell.Status, cell.Reason = "skipped", fmt.Sprintf("the time budget of %s is used up", cfg.Budget)
			case pred.known && pred.total > remaining:
				cell.Status = "skipped"
				cell.Reason = fmt.Sprintf("predicted to take %s (full sync about %s, extrapolated from %d Services) but only %s of the %s budget is left",
					pred.total.Round(time.Second), pred.syncFull.Round(time.Millisecond), pred.from, remaining.Round(time.Second), cfg.Budget)
				if n > 10*pred.from {
					// A fixed cost (loading programs, spawning a tool)
					// dominates small scales; scaling it 10x and more
					// overestimates.
					cell.Reason += fmt.Sprintf("; a scale between %d and %d would give a closer prediction", pred.from, n)
				}
			default:
				r.mu.Lock()
				r.cellPred, r.cellT0 = pred.total, time.Now()
				r.mu.Unlock()
				cctx, cancel := context.WithTimeout(ctx, remaining)
				r.runCell(cctx, &cell)
				cancel()
			}
			if cell.Status != "measured" && cell.Status != "partial" {
				if _, ok := stopped[dp]; !ok && cell.Status == "skipped" && unsupported[dp] == "" && ctx.Err() == nil {
					stopped[dp] = fmt.Sprintf("skipped at %d Services already (%s)", n, cell.Reason)
				}
			}
			cell.LargestMeasuredScale = r.largestMeasured(dp)
			r.res.Cells = append(r.res.Cells, cell)
		}
	}
	r.res.Run.Finished = time.Now()
	r.res.Run.Env.LoadAvgEnd = readLoadAvg()
	r.res.Run.MaxRSSBytes = maxRSS()
	return r.res, nil
}

func (r *runner) largestMeasured(dp string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := 0
	for _, c := range r.measured[dp] {
		m = max(m, c.services)
	}
	return m
}

type prediction struct {
	known    bool
	from     int
	syncFull time.Duration
	total    time.Duration
}

// predict extrapolates a cell's time from the same datapath's measured
// cells: the time spent in Sync scales with N to the power fitted between
// the two largest measured scales (at least 1, at most 2.5: nftables'
// anonymous maps load super-linearly), the rest (traffic) stays as it was.
// With nothing measured it guesses, for the ETA only, and never skips.
func (r *runner) predict(dp string, n int) prediction {
	r.mu.Lock()
	defer r.mu.Unlock()
	ms := r.measured[dp]
	if len(ms) == 0 {
		// Any datapath measured at this scale or below is a better guess
		// than a constant.
		guess := r.firstGuess()
		for _, other := range r.measured {
			for _, c := range other {
				if c.services <= n {
					guess = max(guess, c.total)
				}
			}
		}
		return prediction{total: guess}
	}
	last := ms[len(ms)-1]
	exp := 1.2
	if len(ms) >= 2 {
		prev := ms[len(ms)-2]
		if prev.services < last.services && prev.syncFull > 0 && last.syncFull > 0 {
			exp = math.Log(float64(last.syncFull)/float64(prev.syncFull)) / math.Log(float64(last.services)/float64(prev.services))
		}
	}
	exp = max(1, min(exp, 2.5))
	f := math.Pow(float64(n)/float64(last.services), exp)
	scale := func(d time.Duration) time.Duration { return time.Duration(float64(d) * f) }
	syncFull := scale(last.syncFull)
	// The sync_incremental and programming_latency phases stop each
	// repetition at PhaseCap, so they grow with N only up to that (plus
	// one change in flight, which costs about a full sync at most).
	capped := func(d time.Duration) time.Duration {
		return min(scale(d), time.Duration(r.cfg.Reps)*(r.cfg.Samples.PhaseCap+syncFull))
	}
	rest := max(0, last.total-last.fullPhase-last.incPhase-last.progPhase)
	total := scale(last.fullPhase) + capped(last.incPhase) + capped(last.progPhase) + rest
	return prediction{known: true, from: last.services, syncFull: syncFull, total: total}
}

// firstGuess is a cell's time before anything was measured, from the
// sample sizes and rough per-sample costs on a small machine; it only
// feeds the ETA.
func (r *runner) firstGuess() time.Duration {
	s := r.cfg.Samples
	reps := time.Duration(r.cfg.Reps)
	traffic := 10*s.Throughput + time.Duration(3*s.FirstPacket+6*s.RR)*200*time.Microsecond
	syncs := time.Duration(s.Incremental)*300*time.Millisecond + time.Duration(s.Programming)*1500*time.Millisecond
	return reps*(traffic+syncs+s.Disruption) + 5*time.Second
}

func (r *runner) setProgress(fn func(*Progress)) {
	r.mu.Lock()
	fn(&r.progress)
	r.progress.Elapsed = time.Since(r.start)
	// ETA: what is left of the current cell plus predictions of the ones
	// after it, each of which is also bounded by the budget.
	left := max(0, r.cellPred-time.Since(r.cellT0))
	if r.cellT0.IsZero() {
		left = 0
	}
	p := r.progress
	r.mu.Unlock()
	after := time.Duration(0)
	idx := 0
	for _, n := range r.cfg.Services {
		for _, dp := range r.cfg.Datapaths {
			idx++
			if idx > p.Cell {
				after += r.predict(dp, n).total
			}
		}
	}
	eta := left + after
	if budgetLeft := r.cfg.Budget - p.Elapsed; eta > budgetLeft {
		eta = max(0, budgetLeft)
	}
	p.ETA = eta
	if total := p.Elapsed + eta; total > 0 {
		p.Fraction = float64(p.Elapsed) / float64(total)
	}
	r.mu.Lock()
	r.progress = p
	r.mu.Unlock()
	if r.cfg.Progress != nil {
		r.cfg.Progress(p)
	}
}

func (r *runner) phase(name string) {
	r.setProgress(func(p *Progress) { p.Phase = name })
	r.cfg.Logger.Info("bench phase", "datapath", r.progress.Datapath, "services", r.progress.Services, "phase", name)
}

// errorsOf joins a cell's error list into one reason.
func reasonOf(errs []string) string {
	if len(errs) == 0 {
		return ""
	}
	if len(errs) == 1 {
		return errs[0]
	}
	return fmt.Sprintf("%s (and %d more)", errs[0], len(errs)-1)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
