package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"proxyrig/conformance/matrix"
	"proxyrig/datapaths"
	"proxyrig/topologies/vm"
)

// Files the suite writes into --out, and the compiled suite's name next to
// the proxyrig binary (make build: go test -c -o bin/proxyrig-conformance.test ./conformance).
const (
	conformanceMatrixFile = "conformance-matrix.json"
	conformanceJUnitFile  = "conformance-junit.xml"
	conformanceSuiteName  = "proxyrig-conformance.test"
)

// conformanceOptions are `proxyrig conformance`'s flags.
type conformanceOptions struct {
	datapath    string
	backend     string
	labelFilter string
	out         string
	suite       string
	ginkgo      string
	procs       int
	timeout     time.Duration
	verbose     bool
	asJSON      bool
	noVM        bool
	inVM        bool
	matrixFile  string
	// vmBundle: print the matrix and JUnit report as one JSON object on
	// stdout. The host side of a VM run reads it, because nothing the
	// guest writes to disk survives the VM.
	vmBundle bool
}

// vmBundle is what a run inside the VM hands back on stdout.
type vmBundle struct {
	Matrix   *matrix.Matrix `json:"matrix"`
	JUnit    string         `json:"junit"`
	ExitCode int            `json:"exitCode"`
}

// runConformance is `proxyrig conformance`: run the compiled conformance
// suite (or read a matrix it wrote) and print the item × datapath matrix.
// It exits 1 if any item failed.
func runConformance(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("conformance", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: proxyrig conformance [--datapath D] [--iptables-backend legacy|nft] [--out DIR] [--json]\n"+
			"       proxyrig conformance --matrix FILE [--json]\n\n"+
			"Runs the conformance suite (real packets through network-namespace labs, as root)\n"+
			"and prints the CONFORMANCE.md item × datapath matrix: ✓ pass, ≈ deviation (a documented\n"+
			"kube-proxy divergence), ✗ fail, - skip, ? missing. Writes the matrix (JSON) and a JUnit\n"+
			"report into --out. A datapath this kernel cannot run but the VM runner's can (IPVS) is\n"+
			"run inside the VM. Exits 1 if any item failed.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var o conformanceOptions
	fs.StringVar(&o.datapath, "datapath", "", "run only this datapath's spec tree (default: every datapath the suite registers)")
	fs.StringVar(&o.backend, "iptables-backend", "", "iptables flavour for iptables-based datapaths: legacy (default) or nft")
	fs.StringVar(&o.labelFilter, "label-filter", "", "further ginkgo label filter, ANDed with the datapath's ('NP-04', 'category:MASQ')")
	fs.StringVar(&o.out, "out", "", "directory for "+conformanceMatrixFile+" and "+conformanceJUnitFile+" (default: $OUT, else ./out)")
	fs.StringVar(&o.suite, "suite", "", "the compiled suite (default: "+conformanceSuiteName+" next to this binary)")
	fs.StringVar(&o.ginkgo, "ginkgo", "", "the ginkgo CLI, to run the suite in parallel (default: ginkgo next to this binary, else in PATH)")
	fs.IntVar(&o.procs, "procs", 2, "parallel suite processes; 1, or no ginkgo CLI, runs the suite serially")
	fs.DurationVar(&o.timeout, "timeout", time.Hour, "give up on the suite after this long")
	fs.BoolVar(&o.verbose, "v", false, "verbose suite output (every spec, on stderr)")
	fs.BoolVar(&o.asJSON, "json", false, "print the matrix as JSON instead of a table")
	fs.BoolVar(&o.noVM, "no-vm", false, "never re-run inside the VM runner; run natively even if the kernel lacks what the datapath needs")
	fs.BoolVar(&o.inVM, "vm", false, "run inside the VM runner (its Debian kernel) even if this kernel could run the datapath")
	fs.StringVar(&o.matrixFile, "matrix", "", "print this existing matrix instead of running the suite")
	fs.BoolVar(&o.vmBundle, "vm-bundle", false, "internal: print matrix and JUnit report as one JSON object (used inside the VM)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return &exitError{code: 2}
	}
	if fs.NArg() > 0 {
		return &exitError{code: 2, err: fmt.Errorf("conformance: unexpected arguments %q", fs.Args())}
	}
	switch o.backend {
	case "", "legacy", "nft":
	default:
		return &exitError{code: 2, err: fmt.Errorf("conformance: --iptables-backend %q: want legacy or nft", o.backend)}
	}

	if o.matrixFile != "" {
		m, err := matrix.Load(o.matrixFile)
		if err != nil {
			return err
		}
		return printMatrix(os.Stdout, m, o, nil)
	}
	var err error
	if o.out, err = outDir(o.out); err != nil {
		return err
	}

	if o.inVM && o.noVM {
		return &exitError{code: 2, err: errors.New("conformance: --vm and --no-vm contradict each other")}
	}
	if !o.noVM && !vm.Emulated() {
		if o.inVM {
			return runConformanceInVM(ctx, o, "")
		}
		if o.datapath != "" {
			if why := needsVM(ctx, o.datapath, o.backend); why != "" {
				return runConformanceInVM(ctx, o, why)
			}
		}
	}
	m, code, err := runSuite(ctx, o, os.Stderr)
	if err != nil {
		return err
	}
	if o.vmBundle {
		junit, _ := os.ReadFile(filepath.Join(o.out, conformanceJUnitFile))
		if err := json.NewEncoder(os.Stdout).Encode(vmBundle{Matrix: m, JUnit: string(junit), ExitCode: code}); err != nil {
			return fmt.Errorf("conformance: write the result bundle: %w", err)
		}
		if err := exitFor(m, code); err != nil {
			// The host prints the verdict; say it once.
			return &exitError{code: 1}
		}
		return nil
	}
	return printMatrix(os.Stdout, m, o, &code)
}

// runSuite runs the compiled suite into o.out and loads the matrix it
// wrote. Suite progress goes to progress. code is the suite's exit status.
func runSuite(ctx context.Context, o conformanceOptions, progress io.Writer) (m *matrix.Matrix, code int, err error) {
	if o.out, err = outDir(o.out); err != nil {
		return nil, 0, err
	}
	if o.suite, err = findSuite(o.suite); err != nil {
		return nil, 0, err
	}
	if o.ginkgo == "" && o.procs > 1 {
		o.ginkgo = findGinkgo()
		if o.ginkgo == "" {
			fmt.Fprintf(progress, "proxyrig conformance: running the suite serially: no ginkgo CLI next to proxyrig or in PATH "+
				"(go build -o bin/ginkgo github.com/onsi/ginkgo/v2/ginkgo)\n")
		}
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return nil, 0, fmt.Errorf("conformance: create %s: %w", o.out, err)
	}
	matrixPath := filepath.Join(o.out, conformanceMatrixFile)
	junitPath := filepath.Join(o.out, conformanceJUnitFile)
	// A stale matrix must not pass for this run's.
	for _, p := range []string{matrixPath, junitPath} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, 0, fmt.Errorf("conformance: remove the previous %s: %w", p, err)
		}
	}

	argv := suiteArgv(o, isTerminal(progress))
	fmt.Fprintf(progress, "proxyrig conformance: %s\n", shellQuote(argv))
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout = progress
	cmd.Stderr = progress
	// The suite tears its labs down when interrupted; give it time to.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 2 * time.Minute
	runErr := cmd.Run()
	code = cmd.ProcessState.ExitCode()
	var ee *exec.ExitError
	if runErr != nil && !errors.As(runErr, &ee) {
		return nil, code, fmt.Errorf("conformance: run %s: %w", argv[0], runErr)
	}
	if ctx.Err() != nil {
		return nil, code, ctx.Err()
	}
	m, err = matrix.Load(matrixPath)
	if err != nil {
		return nil, code, fmt.Errorf("conformance: the suite (exit status %d) wrote no usable matrix: %w", code, err)
	}
	if _, err := checkJUnit(junitPath); err != nil {
		return nil, code, fmt.Errorf("conformance: %w", err)
	}
	return m, code, nil
}

// suiteArgv is the command that runs the suite: through the ginkgo CLI
// in parallel when there is one, else the test binary itself, serially.
// Equivalent to:
//
//	ginkgo run -p --procs=2 --label-filter=datapath:iptables --fail-on-pending --fail-on-empty \
//	  --junit-report=conformance-junit.xml --output-dir=out bin/proxyrig-conformance.test -- -matrix-out=out/conformance-matrix.json
func suiteArgv(o conformanceOptions, color bool) []string {
	filter := ""
	if o.datapath != "" {
		filter = matrix.DatapathLabelPrefix + o.datapath
	}
	if o.labelFilter != "" {
		if filter != "" {
			filter += " && (" + o.labelFilter + ")"
		} else {
			filter = o.labelFilter
		}
	}
	suiteFlags := []string{"-matrix-out=" + filepath.Join(o.out, conformanceMatrixFile)}
	if o.backend != "" {
		suiteFlags = append(suiteFlags, "-iptables-backend="+o.backend)
	}
	if o.ginkgo != "" && o.procs > 1 {
		argv := []string{o.ginkgo, "run", "-p", "--procs=" + strconv.Itoa(o.procs),
			"--fail-on-pending", "--fail-on-empty", "--timeout=" + o.timeout.String(),
			"--junit-report=" + conformanceJUnitFile, "--output-dir=" + o.out}
		if filter != "" {
			argv = append(argv, "--label-filter="+filter)
		}
		if o.verbose {
			argv = append(argv, "-v")
		}
		if !color {
			argv = append(argv, "--no-color")
		}
		// The package's plain Go tests are for go test; this runs the
		// suite alone.
		argv = append(argv, o.suite, "--", "-test.run=^TestConformance$")
		return append(argv, suiteFlags...)
	}
	argv := []string{o.suite, "-test.run=^TestConformance$",
		"-ginkgo.fail-on-pending", "-ginkgo.fail-on-empty", "-ginkgo.timeout=" + o.timeout.String(),
		"-ginkgo.junit-report=" + filepath.Join(o.out, conformanceJUnitFile)}
	if filter != "" {
		argv = append(argv, "-ginkgo.label-filter="+filter)
	}
	if o.verbose {
		argv = append(argv, "-ginkgo.v")
	}
	if !color {
		argv = append(argv, "-ginkgo.no-color")
	}
	return append(argv, suiteFlags...)
}

// runConformanceInVM re-runs this command inside the VM runner's guest,
// whose kernel has what this one lacks (why; "" when --vm asked for it),
// and prints what the guest found.
func runConformanceInVM(ctx context.Context, o conformanceOptions, why string) error {
	hint := "proxyrig vm -- proxyrig conformance"
	if o.datapath != "" {
		hint += " --datapath " + o.datapath
	}
	if err := vm.Check(); err != nil {
		if why == "" {
			return fmt.Errorf("conformance: --vm: %w", err)
		}
		return &exitError{code: 1, err: fmt.Errorf("conformance: datapath %s cannot run on this kernel (%s), and this machine cannot run the VM runner that would: %v\n"+
			"Once the VM runner can run, use: %s\n(--no-vm runs it here anyway, where every spec is skipped)", o.datapath, why, err, hint)}
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("conformance: find this binary to run it in the VM: %w", err)
	}
	out := o.out
	suite, err := findSuite(o.suite)
	if err != nil {
		return err
	}
	ginkgo := o.ginkgo
	if ginkgo == "" {
		ginkgo = findGinkgo()
	}
	if why != "" {
		fmt.Fprintf(os.Stderr, "proxyrig conformance: datapath %s cannot run on this kernel (%s): running it inside the VM runner, whose kernel can\n"+
			"(emulated CPU, so slow; the same as: %s)\n", o.datapath, why, hint)
	} else {
		fmt.Fprintf(os.Stderr, "proxyrig conformance: running inside the VM runner (emulated CPU, slow)\n")
	}

	// The guest sees this machine's root read-only and its own /tmp: it
	// writes there and hands matrix and JUnit back on stdout.
	argv := []string{self, "conformance", "--vm-bundle", "--no-vm", "--out", "/tmp/prx-conformance-vm",
		"--suite", suite, "--procs", strconv.Itoa(o.procs), "--timeout", o.timeout.String()}
	if o.datapath != "" {
		argv = append(argv, "--datapath", o.datapath)
	}
	if ginkgo != "" {
		argv = append(argv, "--ginkgo", ginkgo)
	}
	if o.backend != "" {
		argv = append(argv, "--iptables-backend", o.backend)
	}
	if o.labelFilter != "" {
		argv = append(argv, "--label-filter", o.labelFilter)
	}
	if o.verbose {
		argv = append(argv, "-v")
	}
	var stdout bytes.Buffer
	code, err := vm.Run(ctx, vm.Config{
		Modules: conformanceVMModules(o.datapath),
		// Boot and teardown come on top of the suite's own limit.
		Timeout: o.timeout + 15*time.Minute,
		Logger:  newLogger(o.verbose),
	}, argv, &stdout, os.Stderr)
	if err != nil {
		return fmt.Errorf("conformance: run in the VM: %w", err)
	}
	var b vmBundle
	if err := json.Unmarshal(stdout.Bytes(), &b); err != nil || b.Matrix == nil {
		return &exitError{code: max(code, 1), err: fmt.Errorf("conformance: the run in the VM (exit status %d) returned no matrix (see its output above)", code)}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("conformance: create %s: %w", out, err)
	}
	if err := b.Matrix.Save(filepath.Join(out, conformanceMatrixFile)); err != nil {
		return fmt.Errorf("conformance: %w", err)
	}
	if b.JUnit != "" {
		if err := os.WriteFile(filepath.Join(out, conformanceJUnitFile), []byte(b.JUnit), 0o644); err != nil {
			return fmt.Errorf("conformance: write the VM run's JUnit report: %w", err)
		}
	}
	o.out = out
	return printMatrix(os.Stdout, b.Matrix, o, &b.ExitCode)
}

// needsVM says why datapath dp cannot run on this kernel when the VM
// runner's kernel can run it (it has IPVS, SCTP, dummy, netem), or "".
func needsVM(ctx context.Context, dp, backend string) string {
	if dp == "ipvs" && !kernelHasIPVS() {
		return "kernel lacks IPVS"
	}
	reg, err := datapaths.Lookup(dp)
	if err != nil || reg.Check == nil {
		return ""
	}
	return vmFixable(reg.Check(ctx, datapaths.Config{IPTablesBackend: backend}))
}

// labVMHint turns a datapath's Check error into one that says how to run
// the datapath anyway when only this kernel is the problem (IPVS): a lab
// lives only as long as the VM runner's command, so the whole session runs
// in one VM. Other errors come back unchanged.
func labVMHint(ctx context.Context, dp, backend string, checkErr error) error {
	why := needsVM(ctx, dp, backend)
	if why == "" {
		return checkErr
	}
	self, err := os.Executable()
	if err != nil {
		self = "proxyrig"
	}
	return fmt.Errorf("datapath %s cannot run on this kernel: %s. The VM runner's kernel can, and a lab lives as long as "+
		"the VM's command, so run the whole session in one VM, e.g.:\n"+
		"  proxyrig vm -- bash -c '%[3]s lab up --datapath %[1]s -f cluster.yaml --name demo && %[3]s lab status --name demo; %[3]s lab down --name demo'\n"+
		"Its conformance tree runs there by itself: proxyrig conformance --datapath %[1]s", dp, why, self)
}

// vmFixable returns the reason of a datapath's Check error when the VM
// runner's kernel would not have the problem, or "". Only a missing kernel
// feature is the VM's to fix; a missing tool or privilege is missing in
// the guest too, since it runs the host's own root file system.
func vmFixable(checkErr error) string {
	var nse *datapaths.NotSupportedError
	if errors.Is(checkErr, datapaths.ErrNotSupported) && errors.As(checkErr, &nse) && strings.Contains(nse.Reason, "kernel lacks") {
		return nse.Reason
	}
	return ""
}

// kernelHasIPVS asks for IPVS' generic netlink family: a read-only query
// (and, where modules can load, the kernel loads ip_vs to answer it).
func kernelHasIPVS() bool {
	_, err := netlink.GenlFamilyGet("IPVS")
	return err == nil
}

// conformanceVMModules are the guest's modules for a conformance run of
// datapath dp, or of every spec tree when dp is "" (the IPVS tree among
// them, e.g. make conformance-vm's 'proto:SCTP || datapath:ipvs').
func conformanceVMModules(dp string) []string {
	if dp == "" {
		return vmModules("ipvs")
	}
	return vmModules(dp)
}

// vmModules are loaded in the guest before the suite, so that a missing
// module fails the boot with a clear error rather than skipping specs.
func vmModules(dp string) []string {
	if dp == "ipvs" {
		return []string{"ip_vs", "ip_vs_rr"}
	}
	return nil
}

// printMatrix prints the matrix as a table (or JSON) with where its files
// are, and decides the exit status: 1 if any item or the suite failed.
// suiteCode is the suite's exit status, nil when only reading a matrix.
func printMatrix(w io.Writer, m *matrix.Matrix, o conformanceOptions, suiteCode *int) error {
	if o.asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(m); err != nil {
			return err
		}
	} else {
		if err := m.WriteTable(w); err != nil {
			return err
		}
		writeVMHints(w, m)
		if o.matrixFile == "" {
			fmt.Fprintf(w, "\nMatrix: %s\nJUnit:  %s\n", filepath.Join(o.out, conformanceMatrixFile), filepath.Join(o.out, conformanceJUnitFile))
		}
	}
	if o.datapath != "" && !slices.Contains(m.Datapaths(), o.datapath) {
		return &exitError{code: 1, err: fmt.Errorf("conformance: no spec ran for datapath %q: the suite has no such spec tree (datapaths register in conformance/conformance_suite_test.go)", o.datapath)}
	}
	code := 0
	if suiteCode != nil {
		code = *suiteCode
	}
	return exitFor(m, code)
}

// exitFor is the command's result: failed items fail it, and so does a
// suite that failed without any failed item (a crash, a timeout).
func exitFor(m *matrix.Matrix, suiteCode int) error {
	switch {
	case m.Failed():
		return &exitError{code: 1, err: errors.New("conformance: failed (see the failures above)")}
	case suiteCode != 0:
		return &exitError{code: 1, err: fmt.Errorf("conformance: the suite exited with status %d although no item failed; see its output above", suiteCode)}
	}
	return nil
}

// writeVMHints points at the VM runner for what was skipped because this
// kernel lacks something the guest's kernel has (IPVS, SCTP, …): a whole
// datapath, or some of its items.
func writeVMHints(w io.Writer, m *matrix.Matrix) {
	if vm.Emulated() {
		return
	}
	for _, dp := range m.Datapaths() {
		t := m.Tally(dp)
		var items []string
		reason := ""
		for _, r := range m.Results {
			if r.Datapath == dp && r.Status == matrix.StatusSkip && strings.Contains(r.Reason, "kernel lacks") {
				items = append(items, r.Item)
				reason = cmp.Or(reason, firstLine(r.Reason))
			}
		}
		switch {
		case len(items) == 0:
		case t[matrix.StatusPass]+t[matrix.StatusFail]+t[matrix.StatusDeviation] == 0:
			fmt.Fprintf(w, "\n%s: skipped on this kernel (%s). Run it in the VM runner: proxyrig conformance --datapath %s\n"+
				"(the same as: proxyrig vm -- proxyrig conformance --datapath %s)\n", dp, reason, dp, dp)
		default:
			fmt.Fprintf(w, "\n%s: %s skipped here (%s); the VM runner's kernel has what they need:\n"+
				"  proxyrig conformance --vm --datapath %s --label-filter '%s'\n", dp, strings.Join(items, " "), reason, dp, strings.Join(items, " || "))
		}
	}
}

// checkJUnit makes sure the JUnit report exists and parses, and counts its
// test cases.
func checkJUnit(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("JUnit report: %w", err)
	}
	var doc struct {
		XMLName xml.Name `xml:"testsuites"`
		Suites  []struct {
			Cases []struct {
				Name string `xml:"name,attr"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(b, &doc); err != nil {
		return 0, fmt.Errorf("JUnit report %s is not valid: %w", path, err)
	}
	n := 0
	for _, s := range doc.Suites {
		n += len(s.Cases)
	}
	if n == 0 {
		return 0, fmt.Errorf("JUnit report %s holds no test case", path)
	}
	return n, nil
}

// outDir resolves --out: the flag, else $OUT, else ./out; absolute, since
// the suite runs in another directory.
func outDir(flagValue string) (string, error) {
	dir := flagValue
	if dir == "" {
		dir = os.Getenv("OUT")
	}
	if dir == "" {
		dir = "out"
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("conformance: output directory %q: %w", dir, err)
	}
	return abs, nil
}

// findSuite resolves --suite, by default the compiled suite next to this
// binary.
func findSuite(flagValue string) (string, error) {
	path := flagValue
	if path == "" {
		self, err := os.Executable()
		if err != nil {
			return "", fmt.Errorf("conformance: find this binary's directory: %w", err)
		}
		path = filepath.Join(filepath.Dir(self), conformanceSuiteName)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("conformance: suite %q: %w", path, err)
	}
	if st, err := os.Stat(abs); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("conformance: no compiled suite at %s (build it with 'make build', or: go test -c -o %s ./conformance; or pass --suite)", abs, abs)
	}
	return abs, nil
}

// findGinkgo looks for the ginkgo CLI next to this binary, then in PATH.
func findGinkgo() string {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "ginkgo")
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath("ginkgo"); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			return abs
		}
	}
	return ""
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// shellQuote renders argv as a line a person can paste into a shell.
func shellQuote(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !(r == '-' || r == '_' || r == '.' || r == '/' || r == '=' || r == ':' || r == ',' || r == '+' ||
				(r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9'))
		}) < 0 {
			q[i] = a
		} else {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(q, " ")
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
