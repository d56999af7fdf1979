package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"proxyrig/datapaths"
	"proxyrig/loadgen"
	"proxyrig/topologies/vm"
)

// runBench is `proxyrig bench`: measure datapaths at several scales and
// write the results as versioned JSON and in Go benchmark format.
func runBench(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	dps := fs.String("datapaths", "", "comma-separated datapaths to measure (default: every registered one: "+strings.Join(datapaths.Names(), ",")+")")
	services := fs.String("services", "100,1000,5000", "comma-separated scales: numbers of Services")
	endpoints := fs.Int("endpoints", 5, "endpoints per Service")
	reps := fs.Int("reps", 3, "repetitions of every measurement")
	out := fs.String("out", "out/bench", "directory for the results")
	quick := fs.Bool("quick", false, "fewer samples per repetition: a quick, noisier look")
	budget := fs.Duration("budget", 15*time.Minute, "time budget of the whole run; cells that would blow it are skipped, with the reason")
	seed := fs.Uint64("seed", 1, "seed of the generated clusters and churn")
	nodes := fs.Int("nodes", 2, "nodes in the lab (the first runs the datapath)")
	backend := fs.String("iptables-backend", "legacy", "iptables backend for datapaths that use iptables: legacy or nft")
	disruption := fs.Duration("disruption", 0, "length of the rolling-update disruption test per repetition (0: default, negative: off)")
	churnRate := fs.Float64("churn-rate", 0, "changes per second in the disruption test (0: default)")
	verbose := fs.Bool("v", false, "log each phase to stderr")
	opts := kvList{}
	fs.Var(opts, "opt", "datapath option key=value (repeatable), e.g. scheduler=rr")
	inVM := fs.Bool("vm", false, "run inside the VM runner (Debian's kernel, emulated CPU): for datapaths this kernel lacks, e.g. ipvs; results are marked emulated")
	bundle := fs.Bool("vm-bundle", false, "internal: print the result files as one JSON object on stdout (used inside the VM)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: proxyrig bench [flags]\n\nMeasures sync_full, sync_incremental, programming_latency, first_packet_rtt,\nrr_latency, throughput, cpu_per_packet and disruption for each datapath at each\nscale, in scale-mode labs. Needs root. See loadgen/README.md.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return &exitError{code: 2}
	}
	if fs.NArg() > 0 {
		return &exitError{code: 2, err: fmt.Errorf("bench: unexpected arguments %q", fs.Args())}
	}
	if os.Geteuid() != 0 {
		return errors.New("bench needs root: it builds network namespaces and programs datapaths in them")
	}
	if *inVM && !vm.Emulated() {
		return runBenchInVM(ctx, fs, *out, *dps, *verbose)
	}
	var scales []int
	for _, s := range strings.Split(*services, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 0 {
			return &exitError{code: 2, err: fmt.Errorf("bench: --services: %q is not a number of Services", s)}
		}
		scales = append(scales, n)
	}
	names := benchDatapaths(*dps)
	if !vm.Emulated() {
		// Say it before any lab is built: a datapath this kernel cannot
		// run would only fail cell after cell.
		for _, d := range names {
			if why := needsVM(ctx, d, *backend); why != "" {
				return &exitError{code: 2, err: fmt.Errorf("bench: datapath %s cannot run on this kernel (%s); measure it in the VM runner, "+
					"next to a reference datapath so its figures can be read as ratios:\n  proxyrig bench --vm --datapaths iptables,%s --services 100,1000", d, why, d)}
			}
		}
	}
	cfg := loadgen.Config{
		Datapaths:       names,
		Services:        scales,
		Endpoints:       *endpoints,
		Reps:            *reps,
		Quick:           *quick,
		Budget:          *budget,
		Seed:            *seed,
		Nodes:           *nodes,
		IPTablesBackend: *backend,
		DatapathOptions: opts,
		Samples:         loadgen.Samples{Disruption: *disruption, ChurnRate: *churnRate},
		Command:         "proxyrig bench " + strings.Join(args, " "),
		Logger:          newLogger(*verbose),
	}
	if *seed == 0 {
		return &exitError{code: 2, err: errors.New("bench: --seed must not be 0")}
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}

	bar := newProgressBar(os.Stderr)
	cfg.Progress = bar.update
	stop := bar.start()
	res, err := loadgen.Run(ctx, cfg)
	stop()
	if err != nil {
		return err
	}

	stamp := res.Run.Started.UTC().Format("20060102T150405Z")
	jsonPath := filepath.Join(*out, "bench-"+stamp+".json")
	txtPath := filepath.Join(*out, "bench-"+stamp+".txt")
	var js, txt bytes.Buffer
	if err := res.WriteJSON(&js); err != nil {
		return err
	}
	if err := res.WriteBenchFormat(&txt); err != nil {
		return err
	}
	if err := os.WriteFile(jsonPath, js.Bytes(), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(txtPath, txt.Bytes(), 0o644); err != nil {
		return err
	}
	if *bundle {
		// Inside the VM: the host reads the files from stdout, so the
		// human summary goes to stderr.
		res.Summary(os.Stderr)
		b := benchBundle{Files: map[string]string{filepath.Base(jsonPath): js.String(), filepath.Base(txtPath): txt.String()}}
		if err := json.NewEncoder(os.Stdout).Encode(b); err != nil {
			return err
		}
	} else {
		res.Summary(os.Stdout)
		fmt.Printf("\nresults: %s\n         %s (Go benchmark format: benchstat %s)\n", jsonPath, txtPath, txtPath)
	}
	// A results file that does not match its schema is a bug here, not a
	// measurement: say so loudly, but keep the file.
	if err := loadgen.ValidateJSON(js.Bytes()); err != nil {
		return fmt.Errorf("results in %s do not match schema %s: %w", jsonPath, loadgen.SchemaVersion, err)
	}
	failed := 0
	for _, c := range res.Cells {
		if c.Status == "failed" {
			failed++
		}
	}
	if failed > 0 {
		return &exitError{code: 1, err: fmt.Errorf("%d of %d cells failed (see %s)", failed, len(res.Cells), jsonPath)}
	}
	return nil
}

// benchDatapaths is the --datapaths list, or every registered datapath.
func benchDatapaths(list string) []string {
	if list == "" {
		return datapaths.Names()
	}
	var names []string
	for _, d := range strings.Split(list, ",") {
		if d = strings.TrimSpace(d); d != "" {
			names = append(names, d)
		}
	}
	return names
}

// benchBundle is what `proxyrig bench --vm-bundle` prints inside the VM:
// the result files by name, since the guest cannot write to the host's
// file system.
type benchBundle struct {
	Files map[string]string `json:"files"`
}

// runBenchInVM re-runs this bench command inside the VM runner's guest and
// writes the result files it hands back into out. The guest marks every
// figure emulated (PROXYRIG_EMULATED=1), and the report keeps them apart.
func runBenchInVM(ctx context.Context, fs *flag.FlagSet, out, dps string, verbose bool) error {
	if err := vm.Check(); err != nil {
		return fmt.Errorf("bench: --vm: %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bench: find this binary to run it in the VM: %w", err)
	}
	argv := vmBenchArgv(fs, self)
	var modules []string
	for _, d := range benchDatapaths(dps) {
		modules = append(modules, vmModules(d)...)
	}
	fmt.Fprintf(os.Stderr, "proxyrig bench: running inside the VM runner (emulated CPU: read its figures only as ratios within that run)\n")
	var stdout bytes.Buffer
	code, err := vm.Run(ctx, vm.Config{Modules: modules, Timeout: 3 * time.Hour, Logger: newLogger(verbose)}, argv, &stdout, os.Stderr)
	if err != nil {
		return fmt.Errorf("bench: run in the VM: %w", err)
	}
	var b benchBundle
	if err := json.Unmarshal(stdout.Bytes(), &b); err != nil || len(b.Files) == 0 {
		return &exitError{code: max(code, 1), err: fmt.Errorf("bench: the run in the VM (exit status %d) returned no results (see its output above)", code)}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for name, body := range b.Files {
		if name != filepath.Base(name) || !strings.HasPrefix(name, "bench-") {
			return fmt.Errorf("bench: the VM returned an unexpected file name %q", name)
		}
		p := filepath.Join(out, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			return err
		}
		fmt.Printf("results (emulated, VM): %s\n", p)
	}
	if code != 0 {
		return &exitError{code: code}
	}
	return nil
}

// vmBenchArgv is the guest's bench command: every flag the user set, but
// the results go to the guest's /tmp and come back as a bundle.
func vmBenchArgv(fs *flag.FlagSet, self string) []string {
	argv := []string{self, "bench", "--vm-bundle", "--out", "/tmp/prx-bench-vm"}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "vm", "vm-bundle", "out":
		default:
			if kv, ok := f.Value.(kvList); ok {
				// Repeatable: one flag per pair, or two --opt would
				// arrive as one value with a comma in it.
				for _, k := range slices.Sorted(maps.Keys(kv)) {
					argv = append(argv, "--"+f.Name+"="+k+"="+kv[k])
				}
				return
			}
			argv = append(argv, "--"+f.Name+"="+f.Value.String())
		}
	})
	return argv
}

// progressBar draws the run's progress on stderr: redrawn in place on a
// terminal, a line per phase otherwise (so logs stay readable).
type progressBar struct {
	w    *os.File
	tty  bool
	mu   sync.Mutex
	last loadgen.Progress
	seen string
}

func newProgressBar(w *os.File) *progressBar {
	_, err := unix.IoctlGetTermios(int(w.Fd()), unix.TCGETS)
	return &progressBar{w: w, tty: err == nil}
}

func (b *progressBar) update(p loadgen.Progress) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.last = p
	key := fmt.Sprintf("%d/%s", p.Cell, p.Phase)
	if b.tty {
		b.draw()
	} else if key != b.seen {
		fmt.Fprintln(b.w, b.line())
	}
	b.seen = key
}

func (b *progressBar) line() string {
	p := b.last
	const width = 24
	filled := int(p.Fraction * width)
	filled = max(0, min(filled, width))
	bar := strings.Repeat("=", filled) + strings.Repeat(" ", width-filled)
	return fmt.Sprintf("[%s] %3.0f%%  cell %d/%d  %s @ %d Services  %-22s  elapsed %s  ETA %s",
		bar, 100*p.Fraction, p.Cell, p.Cells, p.Datapath, p.Services, p.Phase,
		p.Elapsed.Round(time.Second), p.ETA.Round(time.Second))
}

func (b *progressBar) draw() {
	fmt.Fprintf(b.w, "\r\033[K%s", b.line())
}

// start redraws once a second on a terminal, so elapsed time and ETA move
// while a long phase runs; the returned func stops it.
func (b *progressBar) start() func() {
	if !b.tty {
		return func() {}
	}
	done := make(chan struct{})
	t0 := time.Now()
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				b.mu.Lock()
				if b.last.Cells > 0 {
					el := time.Since(t0)
					if d := el - b.last.Elapsed; d > 0 {
						b.last.ETA = max(0, b.last.ETA-d)
					}
					b.last.Elapsed = el
					b.draw()
				}
				b.mu.Unlock()
			}
		}
	}()
	return func() {
		close(done)
		b.mu.Lock()
		fmt.Fprintln(b.w)
		b.mu.Unlock()
	}
}
