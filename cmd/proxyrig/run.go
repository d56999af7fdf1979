package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"proxyrig/conformance/matrix"
	"proxyrig/datapaths"
	"proxyrig/reports"
	"proxyrig/topologies/vm"
)

// Where `proxyrig run` puts things under --out. Every raw result stays
// next to the report, so a reader can check any figure against its source
// and `proxyrig report DIR` can re-render it later.
const (
	runDoctorFile   = "doctor.json"
	runStepsFile    = "run.json"
	runReportFile   = "report.html"
	runConfDir      = "conformance"    // the native suite run
	runConfVMDir    = "conformance-vm" // one subdirectory per VM run
	runConfMerged   = "conformance-merged"
	runBenchDir     = "bench"
	runBenchVMDir   = "bench-vm" // the datapaths measured in the VM runner
	runVMScale      = "100,1000" // bench scales in the VM (emulated, slow)
	runQuickFilter  = "category:CIP || category:NOEP"
	runSCTPFilter   = "proto:SCTP"
	runDefaultScale = "100,1000"
	runQuickScale   = "50"
)

// runOptions are `proxyrig run`'s flags.
type runOptions struct {
	out, datapaths, services, labelFilter string
	history, need, backend                string
	suite, ginkgo                         string
	endpoints, reps                       int
	budget                                time.Duration
	quick, noVM, verbose                  bool
}

// runStep is one step's outcome, written to run.json.
type runStep struct {
	Name     string        `json:"name"`
	OK       bool          `json:"ok"`
	Errors   []string      `json:"errors,omitempty"`
	Duration time.Duration `json:"duration"`
	Seconds  float64       `json:"seconds"`
}

// runMain is `proxyrig run`, the main job: doctor, conformance, the
// benchmark matrix and the report, one after the other into one directory.
// A failing step is reported and the others still run, so one broken
// datapath never keeps the rest from being scored; the exit status is 1
// if any step failed, but the report is written regardless.
func runMain(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var o runOptions
	fs.StringVar(&o.out, "out", "out/run", "directory for everything: doctor.json, conformance*/, bench/, report.html")
	fs.BoolVar(&o.quick, "quick", false, "smoke scale (a few minutes): conformance restricted to '"+runQuickFilter+"', bench --quick at "+runQuickScale+" Services")
	fs.StringVar(&o.datapaths, "datapaths", "", "comma-separated datapaths (default: every registered one this machine can run, natively or in the VM)")
	fs.StringVar(&o.services, "services", "", "bench scales, comma-separated numbers of Services (default "+runDefaultScale+"; with --quick "+runQuickScale+")")
	fs.IntVar(&o.endpoints, "endpoints", 5, "bench: endpoints per Service")
	fs.IntVar(&o.reps, "reps", 3, "bench: repetitions of every measurement (the nightly job uses 5: 3 is too few for the significance test)")
	fs.DurationVar(&o.budget, "budget", 15*time.Minute, "bench time budget; cells that would blow it are skipped, with the reason (with --quick: 5m unless set)")
	fs.StringVar(&o.labelFilter, "label-filter", "", "conformance: ginkgo label filter (default: none; with --quick '"+runQuickFilter+"')")
	fs.BoolVar(&o.noVM, "no-vm", false, "skip the VM runner part of conformance (SCTP cases, datapaths this kernel lacks)")
	fs.StringVar(&o.history, "history", "", "directory of past runs (one subdirectory each) for trend charts; --out may be one of them, and is left out of the comparison")
	fs.StringVar(&o.need, "need", "", "report: comma-separated features the recommendation must weigh: "+needNames())
	fs.StringVar(&o.backend, "iptables-backend", "", "iptables backend for iptables-based datapaths: legacy (default) or nft")
	fs.StringVar(&o.suite, "suite", "", "conformance: the compiled suite (default: "+conformanceSuiteName+" next to this binary)")
	fs.StringVar(&o.ginkgo, "ginkgo", "", "conformance: the ginkgo CLI (default: next to this binary, else in PATH)")
	fs.BoolVar(&o.verbose, "v", false, "verbose output from every step")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: proxyrig run [--out DIR] [--quick] [--datapaths D,…] [--services N,…] [--budget 15m]\n\n"+
			"The main job, in four steps: doctor; conformance for every datapath this machine\n"+
			"supports (natively, then in the VM runner what this kernel lacks: SCTP, IPVS);\n"+
			"the benchmark matrix; the HTML report. Everything lands in --out, the report at\n"+
			"DIR/report.html. A failing step does not stop the others; the exit status is 1\n"+
			"if any failed. Needs root.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return &exitError{code: 2}
	}
	if fs.NArg() > 0 {
		return &exitError{code: 2, err: fmt.Errorf("run: unexpected arguments %q", fs.Args())}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.services == "" {
		o.services = runDefaultScale
		if o.quick {
			o.services = runQuickScale
		}
	}
	if o.quick && !set["budget"] {
		o.budget = 5 * time.Minute
	}
	if o.quick && !set["label-filter"] {
		o.labelFilter = runQuickFilter
	}
	needs, err := reports.ParseNeeds(o.need)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("run: --need: %w", err)}
	}
	if os.Geteuid() != 0 {
		return errors.New("run needs root: conformance and bench build network namespaces")
	}
	if o.out, err = filepath.Abs(o.out); err != nil {
		return fmt.Errorf("run: output directory: %w", err)
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return fmt.Errorf("run: create %s: %w", o.out, err)
	}

	r := &mainRun{o: o, start: time.Now()}
	var native, viaVM []string
	r.step(ctx, "doctor", func() []error {
		var errs []error
		native, viaVM, errs = r.doctor(ctx)
		return errs
	})
	r.step(ctx, "conformance", func() []error { return r.conformance(ctx, native, viaVM) })
	r.step(ctx, "bench", func() []error { return r.bench(ctx, native, viaVM) })
	reportPath := filepath.Join(o.out, runReportFile)
	// The report is rendered even after an interrupt: whatever finished is
	// worth reading.
	r.step(context.WithoutCancel(ctx), "report", func() []error {
		return errList(r.report(reportPath, reports.Profile{Services: 10000, Endpoints: o.endpoints, ChurnPerSec: reports.DefaultProfile().ChurnPerSec, Needs: needs}))
	})

	if err := r.saveSteps(); err != nil {
		fmt.Fprintf(os.Stderr, "proxyrig run: %v\n", err)
	}
	fmt.Fprintf(os.Stderr, "\nproxyrig run: finished in %s\n", time.Since(r.start).Round(time.Second))
	var failed []string
	for _, s := range r.steps {
		status := "ok"
		if !s.OK {
			status = "FAILED"
			failed = append(failed, s.Name)
		}
		fmt.Fprintf(os.Stderr, "  %-12s %-7s %s\n", s.Name, status, s.Duration.Round(time.Second))
		for _, e := range s.Errors {
			fmt.Fprintf(os.Stderr, "               %s\n", firstLine(e))
		}
	}
	if _, err := os.Stat(reportPath); err == nil {
		fmt.Printf("report: %s\n", reportPath)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if len(failed) > 0 {
		return &exitError{code: 1, err: fmt.Errorf("run: %s failed (details above and in %s)", strings.Join(failed, ", "), filepath.Join(o.out, runStepsFile))}
	}
	return nil
}

// mainRun is the state of one `proxyrig run`.
type mainRun struct {
	o     runOptions
	start time.Time
	steps []runStep
}

const runSteps = 4

// step runs one step with progress on stderr and records its outcome. A
// step after an interrupt is recorded as not run.
func (r *mainRun) step(ctx context.Context, name string, fn func() []error) {
	i := len(r.steps) + 1
	s := runStep{Name: name}
	if err := ctx.Err(); err != nil {
		s.Errors = []string{"not run: " + err.Error()}
		r.steps = append(r.steps, s)
		return
	}
	fmt.Fprintf(os.Stderr, "\n== proxyrig run: step %d/%d: %s (elapsed %s)\n", i, runSteps, name, time.Since(r.start).Round(time.Second))
	t0 := time.Now()
	errs := fn()
	s.Duration = time.Since(t0)
	s.Seconds = s.Duration.Seconds()
	s.OK = len(errs) == 0
	for _, e := range errs {
		s.Errors = append(s.Errors, e.Error())
	}
	verdict := "done"
	if !s.OK {
		verdict = "FAILED"
	}
	fmt.Fprintf(os.Stderr, "== proxyrig run: step %d/%d: %s %s in %s (elapsed %s)\n", i, runSteps, name, verdict, s.Duration.Round(time.Second), time.Since(r.start).Round(time.Second))
	r.steps = append(r.steps, s)
}

func (r *mainRun) saveSteps() error {
	b, err := json.MarshalIndent(map[string]any{"command": "proxyrig run", "started": r.start.UTC(), "steps": r.steps}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(r.o.out, runStepsFile), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write the step log: %w", err)
	}
	return nil
}

// doctor prints what the machine can run, saves it as doctor.json, and
// decides which datapaths run natively and which through the VM runner.
func (r *mainRun) doctor(ctx context.Context) (native, viaVM []string, errs []error) {
	checks, verdicts := diagnose(ctx)
	if err := runDoctor(ctx, nil); err != nil {
		errs = append(errs, fmt.Errorf("doctor: %w", err))
	}
	b, err := json.MarshalIndent(map[string]any{"checks": checks, "datapaths": verdicts}, "", "  ")
	if err == nil {
		err = os.WriteFile(filepath.Join(r.o.out, runDoctorFile), append(b, '\n'), 0o644)
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("save %s: %w", runDoctorFile, err))
	}
	for _, c := range checks {
		// Only what stops every lab fails the step; a missing kernel
		// feature is the VM runner's to make up for.
		if !c.OK && (c.Name == "root" || c.Name == "network namespaces") {
			errs = append(errs, fmt.Errorf("%s: %s", c.Name, c.Detail))
		}
	}
	var wanted []string
	if r.o.datapaths != "" {
		for _, d := range strings.Split(r.o.datapaths, ",") {
			if d = strings.TrimSpace(d); d != "" {
				wanted = append(wanted, d)
			}
		}
	}
	for _, name := range datapaths.Names() {
		if wanted != nil && !slices.Contains(wanted, name) {
			continue
		}
		switch {
		case slices.ContainsFunc(verdicts, func(v datapathVerdict) bool { return v.Name == name && v.Where == "native" }):
			native = append(native, name)
		case needsVM(ctx, name, r.o.backend) != "":
			viaVM = append(viaVM, name)
		default:
			errs = append(errs, fmt.Errorf("datapath %s can run neither here nor in the VM runner (see doctor above)", name))
		}
	}
	for _, w := range wanted {
		if !slices.Contains(native, w) && !slices.Contains(viaVM, w) {
			if _, err := datapaths.Lookup(w); err != nil {
				errs = append(errs, fmt.Errorf("--datapaths: %s is not a registered datapath (have %s)", w, strings.Join(datapaths.Names(), ", ")))
			}
		}
	}
	fmt.Fprintf(os.Stderr, "proxyrig run: native: %s; through the VM runner: %s\n", orNone(native), orNone(viaVM))
	return native, viaVM, errs
}

// conformance runs the suite natively for the native datapaths, then in
// the VM runner the SCTP cases (this kernel lacks SCTP) and every datapath
// this kernel cannot run, each into its own directory; finally it merges
// the VM's SCTP verdicts into the native matrix (see mergeVMResults).
func (r *mainRun) conformance(ctx context.Context, native, viaVM []string) []error {
	var errs []error
	nativeDir := filepath.Join(r.o.out, runConfDir)
	if len(native) > 0 {
		args := r.conformanceArgs(nativeDir, "--no-vm")
		args = append(args, datapathSelection(native, r.o.labelFilter)...)
		if err := runConformance(ctx, args); err != nil {
			errs = append(errs, fmt.Errorf("conformance (native: %s): %s", strings.Join(native, ", "), errText(err)))
		}
	}
	if r.o.noVM {
		if len(viaVM) > 0 {
			errs = append(errs, fmt.Errorf("conformance: --no-vm, so %s (which this kernel cannot run) went unchecked", strings.Join(viaVM, ", ")))
		}
		return errs
	}
	needSCTP := len(native) > 0 && sctpSupported() != nil
	if !needSCTP && len(viaVM) == 0 {
		return errs
	}
	if err := vm.Check(); err != nil {
		return append(errs, fmt.Errorf("conformance: the VM runner cannot run here, so the SCTP cases and %s went unchecked: %v", orNone(viaVM), err))
	}
	if needSCTP && ctx.Err() == nil {
		dir := filepath.Join(r.o.out, runConfVMDir, "sctp")
		filter := runSCTPFilter
		if r.o.labelFilter != "" {
			filter += " && (" + r.o.labelFilter + ")"
		}
		args := append(r.conformanceArgs(dir, "--vm"), datapathSelection(native, filter)...)
		if err := runConformance(ctx, args); err != nil {
			errs = append(errs, fmt.Errorf("conformance (SCTP cases in the VM): %s", errText(err)))
		}
		if err := mergeConformance(filepath.Join(nativeDir, conformanceMatrixFile), filepath.Join(dir, conformanceMatrixFile),
			filepath.Join(r.o.out, runConfMerged, conformanceMatrixFile)); err != nil {
			errs = append(errs, fmt.Errorf("conformance: merge the VM's SCTP verdicts: %w", err))
		}
	}
	for _, d := range viaVM {
		if ctx.Err() != nil {
			break
		}
		args := append(r.conformanceArgs(filepath.Join(r.o.out, runConfVMDir, d), ""), "--datapath", d)
		if r.o.labelFilter != "" {
			args = append(args, "--label-filter", r.o.labelFilter)
		}
		if err := runConformance(ctx, args); err != nil {
			errs = append(errs, fmt.Errorf("conformance (%s in the VM): %s", d, errText(err)))
		}
	}
	return errs
}

func (r *mainRun) conformanceArgs(out, mode string) []string {
	args := []string{"--out", out}
	if mode != "" {
		args = append(args, mode)
	}
	for _, f := range [][2]string{{"--iptables-backend", r.o.backend}, {"--suite", r.o.suite}, {"--ginkgo", r.o.ginkgo}} {
		if f[1] != "" {
			args = append(args, f[0], f[1])
		}
	}
	if r.o.verbose {
		args = append(args, "-v")
	}
	return args
}

// datapathSelection is the conformance flags that pick datapaths dps and
// apply filter: --datapath for one, a label filter for several.
func datapathSelection(dps []string, filter string) []string {
	if len(dps) == 1 {
		args := []string{"--datapath", dps[0]}
		if filter != "" {
			args = append(args, "--label-filter", filter)
		}
		return args
	}
	var labels []string
	for _, d := range dps {
		labels = append(labels, matrix.DatapathLabelPrefix+d)
	}
	sel := "(" + strings.Join(labels, " || ") + ")"
	if filter != "" {
		sel += " && (" + filter + ")"
	}
	return []string{"--label-filter", sel}
}

// mergeConformance writes the native matrix with the VM run's verdicts
// laid over the items this kernel could not run. Without it the report
// would take each datapath's verdicts from the newest matrix that has it,
// the SCTP-only VM run, and show every other item as skipped.
func mergeConformance(nativePath, vmPath, outPath string) error {
	nat, err := matrix.Load(nativePath)
	if err != nil {
		return err
	}
	vmm, err := matrix.Load(vmPath)
	if err != nil {
		return err
	}
	merged := mergeVMResults(nat, vmm)
	if err := os.MkdirAll(filepath.Dir(outPath), 0o755); err != nil {
		return err
	}
	return merged.Save(outPath)
}

// mergeVMResults lays the VM matrix's results over the native one's: a VM
// result counts where its specs actually ran (passed or failed); a native
// result that ran nothing is replaced, one that ran some specs is combined
// with it. Every result taken from the VM says so in its reason, since its
// environment differs from the matrix's. The merged matrix is dated now,
// so that it is the newest matrix for its datapaths.
func mergeVMResults(nat, vmm *matrix.Matrix) *matrix.Matrix {
	out := *nat
	out.Results = slices.Clone(nat.Results)
	out.Generated = maxTime(time.Now().UTC(), maxTime(nat.Generated, vmm.Generated).Add(time.Second))
	out.Env.LabelFilter = strings.TrimSpace(nat.Env.LabelFilter + " + VM runner: " + vmm.Env.LabelFilter)
	out.SuiteFailures = append(slices.Clone(nat.SuiteFailures), vmm.SuiteFailures...)
	where := fmt.Sprintf("in the VM runner (%s, kernel %s)", vmm.Env.Where(), vmm.Env.Kernel)
	for _, v := range vmm.Results {
		if v.Specs.Passed+v.Specs.Failed == 0 {
			continue
		}
		i := slices.IndexFunc(out.Results, func(n matrix.Result) bool { return n.Item == v.Item && n.Datapath == v.Datapath })
		if i < 0 {
			v.Reason = strings.TrimSpace("ran " + where + ". " + v.Reason)
			out.Results = append(out.Results, v)
			continue
		}
		n := out.Results[i]
		if n.Specs.Passed+n.Specs.Failed == 0 {
			v.Reason = strings.TrimSpace("ran " + where + ". " + v.Reason)
			out.Results[i] = v
			continue
		}
		c := n
		c.Specs.Passed += v.Specs.Passed
		c.Specs.Failed += v.Specs.Failed
		c.Specs.Skipped = max(0, n.Specs.Skipped-(v.Specs.Passed+v.Specs.Failed))
		c.Duration += v.Duration
		note := fmt.Sprintf("%d spec(s) ran %s", v.Specs.Passed+v.Specs.Failed, where)
		switch {
		case n.Status == matrix.StatusFail:
		case v.Status == matrix.StatusFail:
			c.Status, c.Reason, c.Spec, c.Location = v.Status, v.Reason, v.Spec, v.Location
		case n.Status == matrix.StatusDeviation:
		case v.Status == matrix.StatusDeviation:
			c.Status, c.Reason, c.Spec, c.Location = v.Status, v.Reason, v.Spec, v.Location
		default:
			c.Status = matrix.StatusPass
			if c.Specs.Skipped == 0 {
				c.Reason = ""
			}
		}
		c.Reason = strings.TrimSpace(strings.TrimSuffix(c.Reason, ".") + ". " + note)
		c.Reason = strings.TrimPrefix(c.Reason, ". ")
		out.Results[i] = c
	}
	return &out
}

// bench measures the native datapaths into DIR/bench, then the datapaths
// this kernel lacks inside the VM runner into DIR/bench-vm, beside a
// native-capable reference datapath measured in the same emulated run: an
// emulated CPU's timings mean nothing next to native ones, but the ratio
// to a reference in the same run does (the report keeps them apart).
func (r *mainRun) bench(ctx context.Context, native, viaVM []string) []error {
	var errs []error
	if len(native) == 0 {
		errs = append(errs, errors.New("bench: no datapath runs natively here, so nothing was measured natively"))
	} else if err := runBench(ctx, r.benchArgs(filepath.Join(r.o.out, runBenchDir), native, r.o.services, r.o.budget)); err != nil {
		errs = append(errs, fmt.Errorf("bench: %s", errText(err)))
	}
	if len(viaVM) == 0 {
		return errs
	}
	if r.o.noVM {
		return append(errs, fmt.Errorf("bench: --no-vm, so %s (which this kernel cannot run) went unmeasured", strings.Join(viaVM, ", ")))
	}
	if err := vm.Check(); err != nil {
		return append(errs, fmt.Errorf("bench: the VM runner cannot run here, so %s went unmeasured: %v", strings.Join(viaVM, ", "), err))
	}
	dps := viaVM
	if len(native) > 0 && !slices.Contains(viaVM, native[0]) {
		dps = append([]string{native[0]}, viaVM...)
	}
	// The emulated CPU is several times slower: the smallest scales only,
	// and a share of the budget of their own.
	scale := runVMScale
	if r.o.quick {
		scale = runQuickScale
	}
	args := append([]string{"--vm"}, r.benchArgs(filepath.Join(r.o.out, runBenchVMDir), dps, scale, r.o.budget/2)...)
	if err := runBench(ctx, args); err != nil {
		errs = append(errs, fmt.Errorf("bench (in the VM: %s): %s", strings.Join(dps, ", "), errText(err)))
	}
	return errs
}

func (r *mainRun) benchArgs(out string, dps []string, services string, budget time.Duration) []string {
	args := []string{"--out", out, "--datapaths", strings.Join(dps, ","),
		"--services", services, "--endpoints", strconv.Itoa(r.o.endpoints), "--reps", strconv.Itoa(r.o.reps),
		"--budget", budget.String()}
	if r.o.quick {
		args = append(args, "--quick")
	}
	if r.o.backend != "" {
		args = append(args, "--iptables-backend", r.o.backend)
	}
	if r.o.verbose {
		args = append(args, "-v")
	}
	return args
}

// report renders DIR/report.html from everything under DIR, with trends
// over --history when given.
func (r *mainRun) report(path string, profile reports.Profile) error {
	in, err := reports.LoadDirs(r.o.out)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	in.Profile = profile
	in.Title = "proxyrig run"
	if r.o.history != "" {
		h, err := loadHistoryExcept(r.o.history, r.o.out)
		switch {
		case errors.Is(err, reports.ErrNoRuns) || errors.Is(err, os.ErrNotExist):
			fmt.Fprintf(os.Stderr, "proxyrig run: no earlier runs in %s: no trends this time\n", r.o.history)
		case err != nil:
			return fmt.Errorf("report: %w", err)
		default:
			in.History = h
		}
	}
	var b bytes.Buffer
	if err := reports.Render(&b, in); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if err := writeFileAtomic(path, b.Bytes()); err != nil {
		return fmt.Errorf("report: write %s: %w", path, err)
	}
	return nil
}

// loadHistoryExcept loads the history in dir without the run in current:
// the nightly job writes this run into the history itself, and a run
// compared with its own copy would always show "no significant change".
func loadHistoryExcept(dir, current string) (*reports.History, error) {
	h, err := reports.LoadHistory(dir)
	if err != nil {
		return nil, err
	}
	cur, err := filepath.Abs(current)
	if err != nil {
		return nil, err
	}
	h.Runs = slices.DeleteFunc(h.Runs, func(run reports.HistoryRun) bool {
		abs, err := filepath.Abs(filepath.Join(h.Dir, run.Name))
		return err == nil && abs == cur
	})
	if len(h.Runs) == 0 {
		return nil, fmt.Errorf("history %s: only this run: %w", dir, reports.ErrNoRuns)
	}
	return h, nil
}

// errText is an error's message, also for an exitError that carries
// only a status.
func errText(err error) string {
	var ee *exitError
	if errors.As(err, &ee) && ee.err == nil {
		return fmt.Sprintf("exit status %d", ee.code)
	}
	return err.Error()
}

func errList(err error) []error {
	if err == nil {
		return nil
	}
	return []error{err}
}

func orNone(list []string) string {
	if len(list) == 0 {
		return "none"
	}
	return strings.Join(list, ", ")
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
