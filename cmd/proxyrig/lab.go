package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"proxyrig/datapaths"
	"proxyrig/datapaths/ebpf"
	"proxyrig/model"
	"proxyrig/topologies"
	"proxyrig/topologies/vm"
)

const labUsage = `Usage:
  proxyrig lab up --datapath D -f cluster.yaml [--name L] [flags]
  proxyrig lab apply -f cluster.yaml [--name L]
  proxyrig lab status [--json]
  proxyrig lab down [--name L]

A lab is a small cluster of network namespaces on this machine: nodes on a
bridge, pods routed via their node, an external client and a client pod per
node, with the chosen datapath programmed on every node. 'lab up' leaves a
supervisor process running that holds the echo servers, accepts 'lab apply'
and resyncs the datapath every --sync-period.
`

func runLab(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, labUsage)
		return &exitError{code: 2}
	}
	switch args[0] {
	case "up":
		return labUp(ctx, args[1:])
	case "apply":
		return labApply(ctx, args[1:])
	case "status":
		return labStatus(ctx, args[1:])
	case "down":
		return labDown(ctx, args[1:])
	case "supervise":
		return labSupervise(ctx, args[1:])
	case "-h", "--help", "help":
		fmt.Print(labUsage)
		return nil
	}
	fmt.Fprintf(os.Stderr, "proxyrig lab: unknown subcommand %q\n\n%s", args[0], labUsage)
	return &exitError{code: 2}
}

// labFlags are shared by `lab up` and the supervisor it starts, so the
// supervisor sees exactly what the user asked for.
type labFlags struct {
	name            string
	datapath        string
	files           stringList
	backend         string
	topology        string
	syncPeriod      time.Duration
	externalClients int
	datapathOpts    kvList
	clusterCIDRs    string
	nodePortAddrs   string
	masqueradeAll   bool
	localhostNP     bool
	verbose         bool
	timeout         time.Duration
}

func (f *labFlags) register(fs *flag.FlagSet) {
	f.datapathOpts = kvList{}
	fs.StringVar(&f.name, "name", "lab", "lab name: 1-12 characters of [a-z0-9]; namespaces are prx-<name>-…")
	fs.StringVar(&f.datapath, "datapath", "iptables", "datapath to program on every node (known: "+strings.Join(datapaths.Names(), ", ")+")")
	fs.Var(&f.files, "f", "cluster YAML (Service, EndpointSlice, Node, List); repeatable, - for stdin")
	fs.StringVar(&f.backend, "iptables-backend", "legacy", "iptables backend for iptables-based datapaths: legacy or nft")
	fs.StringVar(&f.topology, "topology", "direct", "cross-node routing: direct")
	fs.DurationVar(&f.syncPeriod, "sync-period", 30*time.Second, "full resync period, as kube-proxy's --sync-period (0 disables)")
	fs.IntVar(&f.externalClients, "external-clients", 1, "number of external client namespaces")
	fs.Var(f.datapathOpts, "datapath-opt", "datapath option key=value; repeatable")
	fs.StringVar(&f.clusterCIDRs, "cluster-cidr", "", "comma-separated pod CIDRs for the local-traffic detector (default: the lab's "+topologies.ClusterCIDR.String()+")")
	fs.StringVar(&f.nodePortAddrs, "nodeport-addresses", "", "comma-separated CIDRs of node addresses that accept NodePorts (default: the datapath's)")
	fs.BoolVar(&f.masqueradeAll, "masquerade-all", false, "SNAT all Service traffic, as kube-proxy --masquerade-all")
	fs.BoolVar(&f.localhostNP, "localhost-nodeports", true, "serve NodePorts on 127.0.0.1 (iptables, IPv4), as kube-proxy's default")
	fs.BoolVar(&f.verbose, "v", false, "verbose logging to stderr")
	fs.DurationVar(&f.timeout, "timeout", 2*time.Minute, "how long 'lab up' waits for the lab to answer")
}

// args renders the flags back into a command line for the supervisor.
func (f *labFlags) args() []string {
	a := []string{
		"--name", f.name, "--datapath", f.datapath, "--iptables-backend", f.backend,
		"--topology", f.topology, "--sync-period", f.syncPeriod.String(),
		"--external-clients", fmt.Sprint(f.externalClients),
		"--masquerade-all=" + fmt.Sprint(f.masqueradeAll),
		"--localhost-nodeports=" + fmt.Sprint(f.localhostNP),
	}
	if f.clusterCIDRs != "" {
		a = append(a, "--cluster-cidr", f.clusterCIDRs)
	}
	if f.nodePortAddrs != "" {
		a = append(a, "--nodeport-addresses", f.nodePortAddrs)
	}
	for k, v := range f.datapathOpts {
		a = append(a, "--datapath-opt", k+"="+v)
	}
	if f.verbose {
		a = append(a, "-v")
	}
	for _, file := range f.files {
		a = append(a, "-f", file)
	}
	return a
}

func (f *labFlags) options() (topologies.Options, error) {
	opts := topologies.Options{
		Name:            f.name,
		Datapath:        f.datapath,
		DatapathOptions: f.datapathOpts,
		IPTablesBackend: f.backend,
		Topology:        f.topology,
		ExternalClients: f.externalClients,
		Logger:          newLogger(f.verbose),
	}
	opts.Proxy.MasqueradeAll = f.masqueradeAll
	opts.Proxy.LocalhostNodePorts = f.localhostNP
	var err error
	if opts.Proxy.ClusterCIDRs, err = parsePrefixes("--cluster-cidr", f.clusterCIDRs); err != nil {
		return opts, err
	}
	if opts.Proxy.NodePortAddresses, err = parsePrefixes("--nodeport-addresses", f.nodePortAddrs); err != nil {
		return opts, err
	}
	if f.backend != "legacy" && f.backend != "nft" {
		return opts, fmt.Errorf("--iptables-backend: %q is neither legacy nor nft", f.backend)
	}
	if f.topology != "direct" {
		return opts, fmt.Errorf("--topology: %q is not supported yet (supported: direct)", f.topology)
	}
	return opts, topologies.ValidateName(f.name)
}

func parsePrefixes(flagName, s string) ([]netip.Prefix, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []netip.Prefix
	for _, part := range strings.Split(s, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(part))
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not a CIDR: %v", flagName, part, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func stateDir(lab string) string { return filepath.Join(topologies.StateRoot, lab) }

// readSources reads the -f files once, so the same bytes are validated here
// and handed to the supervisor ("-" means stdin).
func readSources(files []string) ([]model.Source, error) {
	if len(files) == 0 {
		return nil, errors.New("no cluster file given: use -f cluster.yaml")
	}
	var srcs []model.Source
	for _, f := range files {
		var data []byte
		var err error
		if f == "-" {
			data, err = io.ReadAll(os.Stdin)
			f = "<stdin>"
		} else {
			data, err = os.ReadFile(f)
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", f, err)
		}
		srcs = append(srcs, model.Source{Name: f, Data: data})
	}
	return srcs, nil
}

func labUp(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("lab up", flag.ContinueOnError)
	var f labFlags
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		return &exitError{code: 2}
	}
	if os.Geteuid() != 0 {
		return errors.New("lab up needs root (it creates network namespaces)")
	}
	opts, err := f.options()
	if err != nil {
		return err
	}
	srcs, err := readSources(f.files)
	if err != nil {
		return err
	}
	// Validate before anything exists, so bad input creates nothing.
	cluster, err := model.ParseSources(srcs...)
	if err != nil {
		return err
	}
	for _, w := range cluster.Warnings {
		fmt.Fprintln(os.Stderr, "warning:", w)
	}
	if opts.Datapath != "" {
		reg, err := datapaths.Lookup(opts.Datapath)
		if err != nil {
			return err
		}
		if reg.Check != nil {
			if err := reg.Check(ctx, datapaths.Config{IPTablesBackend: opts.IPTablesBackend, Options: opts.DatapathOptions}); err != nil {
				return labVMHint(ctx, opts.Datapath, opts.IPTablesBackend, err)
			}
		}
	}
	dir := stateDir(f.name)
	if pid, alive := supervisorAlive(f.name); alive {
		return fmt.Errorf("lab %q is already up (supervisor pid %d); use 'proxyrig lab apply --name %s' or 'proxyrig lab down --name %s'", f.name, pid, f.name, f.name)
	}
	// Leftovers of a crashed lab with the same name would collide.
	if _, err := cleanupLab(ctx, f.name); err != nil {
		return fmt.Errorf("clear leftovers of lab %s: %w", f.name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// The supervisor gets the sources through a file in its state dir, so
	// stdin input works and later edits of the user's file change nothing
	// until 'lab apply'.
	srcPath := filepath.Join(dir, "sources.json")
	if err := writeJSON(srcPath, srcs); err != nil {
		return err
	}

	self, err := os.Executable()
	if err != nil {
		return err
	}
	ready, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	logFile, err := os.OpenFile(filepath.Join(dir, "supervisor.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	supArgs := append([]string{"lab", "supervise", "--sources", srcPath}, f.args()...)
	cmd := exec.Command(self, supArgs...)
	cmd.Args[0] = topologies.Prefix + f.name + "-supervisor"
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.ExtraFiles = []*os.File{readyW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start supervisor: %w", err)
	}
	readyW.Close()
	logFile.Close()

	type msg struct {
		Info  *topologies.Info `json:"info,omitempty"`
		Error string           `json:"error,omitempty"`
	}
	got := make(chan msg, 1)
	go func() {
		var m msg
		if err := json.NewDecoder(ready).Decode(&m); err != nil {
			m.Error = "supervisor exited before the lab was ready; see " + filepath.Join(dir, "supervisor.log")
		}
		got <- m
	}()
	abort := func(reason error) error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := cleanupLab(cctx, f.name); err != nil {
			return fmt.Errorf("%v; cleanup after it also failed: %w", reason, err)
		}
		return reason
	}
	select {
	case m := <-got:
		if m.Error != "" || m.Info == nil {
			return abort(errors.New(m.Error))
		}
		_ = cmd.Process.Release()
		return printJSON(m.Info)
	case <-ctx.Done():
		return abort(fmt.Errorf("interrupted while building lab %s; everything it made was removed", f.name))
	case <-time.After(f.timeout):
		return abort(fmt.Errorf("lab %s did not become ready within %s; everything it made was removed (log: %s)", f.name, f.timeout, filepath.Join(dir, "supervisor.log")))
	}
}

func labApply(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("lab apply", flag.ContinueOnError)
	name := fs.String("name", "lab", "lab name")
	var files stringList
	fs.Var(&files, "f", "cluster YAML; repeatable, - for stdin")
	if err := fs.Parse(args); err != nil {
		return &exitError{code: 2}
	}
	srcs, err := readSources(files)
	if err != nil {
		return err
	}
	cluster, err := model.ParseSources(srcs...)
	if err != nil {
		return err
	}
	for _, w := range cluster.Warnings {
		fmt.Fprintln(os.Stderr, "warning:", w)
	}
	var resp applyResponse
	if err := controlCall(ctx, *name, "POST", "/apply", srcs, &resp); err != nil {
		return err
	}
	return printJSON(resp)
}

func labStatus(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("lab status", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON")
	name := fs.String("name", "", "only this lab")
	if err := fs.Parse(args); err != nil {
		return &exitError{code: 2}
	}
	labs, err := listLabs()
	if err != nil {
		return err
	}
	var out []statusResponse
	for _, l := range labs {
		if *name != "" && l != *name {
			continue
		}
		var st statusResponse
		if err := controlCall(ctx, l, "GET", "/status", nil, &st); err != nil {
			st = statusResponse{Name: l, State: "stale", Error: err.Error() + " (run 'proxyrig cleanup --name " + l + "')"}
		}
		out = append(out, st)
	}
	if *asJSON {
		return printJSON(out)
	}
	if len(out) == 0 {
		fmt.Println("no labs are up")
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tDATAPATH\tNODES\tENDPOINTS\tPID\tLAST SYNC\tERROR")
	for _, s := range out {
		last := "-"
		if !s.LastSync.IsZero() {
			last = time.Since(s.LastSync).Round(time.Second).String() + " ago"
		}
		nodes, eps := 0, 0
		dp := "-"
		if s.Info != nil {
			nodes, eps, dp = len(s.Info.Nodes), len(s.Info.Endpoints), s.Info.Datapath
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n", s.Name, s.State, dp, nodes, eps, s.PID, last, s.Error)
	}
	return tw.Flush()
}

func labDown(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("lab down", flag.ContinueOnError)
	name := fs.String("name", "lab", "lab name")
	if err := fs.Parse(args); err != nil {
		return &exitError{code: 2}
	}
	if err := topologies.ValidateName(*name); err != nil {
		return err
	}
	pid, alive := supervisorAlive(*name)
	if alive {
		// Ask politely first: the supervisor removes the datapath state and
		// its namespaces itself. Cleanup below catches whatever remains.
		if err := controlCall(ctx, *name, "POST", "/shutdown", nil, nil); err != nil {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if syscall.Kill(pid, 0) != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	removed, err := cleanupLab(ctx, *name)
	if err != nil {
		return err
	}
	if !alive && len(removed) == 0 {
		fmt.Printf("lab %s is not up; nothing to remove\n", *name)
		return nil
	}
	fmt.Printf("lab %s is down\n", *name)
	for _, r := range removed {
		fmt.Printf("  removed leftover %s\n", r)
	}
	return nil
}

func runCleanup(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("cleanup", flag.ContinueOnError)
	name := fs.String("name", "", "only this lab (default: every prx- leftover)")
	vmName := fs.String("vm", "", "only this VM: its name, "+vm.NamePrefix+"<id>, as qemu's -name and its results directory carry it (with --name: that lab too)")
	if err := fs.Parse(args); err != nil {
		return &exitError{code: 2}
	}
	if *name != "" {
		if err := topologies.ValidateName(*name); err != nil {
			return err
		}
	}
	var removed []string
	var err error
	if *vmName != "" {
		// One VM, so the VMs of other runs on the machine live on.
		removed, err = vm.CleanupVM(*vmName)
	}
	if *name != "" || *vmName == "" {
		labRemoved, labErr := cleanupLab(ctx, *name)
		removed = append(removed, labRemoved...)
		err = errors.Join(err, labErr)
	}
	if *name == "" && *vmName == "" {
		// Leftover VMs and their result directories belong to no lab; a
		// cleanup of everything removes them too.
		vmRemoved, vmErr := vm.Cleanup()
		removed = append(removed, vmRemoved...)
		err = errors.Join(err, vmErr)
	}
	for _, r := range removed {
		fmt.Printf("removed %s\n", r)
	}
	if err != nil {
		return err
	}
	if len(removed) == 0 {
		fmt.Println("nothing to clean up")
	}
	return nil
}

// cleanupLab removes what a lab (every lab when lab is "") left behind:
// its processes, namespaces and state directory (topologies.Cleanup), then
// the BPF objects the eBPF datapath pinned under /sys/fs/bpf/prx-<lab>-*.
// Deleting the namespaces detaches the tc programs with their devices, but
// the cgroup socket hooks hang off the host's cgroup and live as long as
// their pinned links, and pinned maps outlive every process: without the
// second step a crashed or killed lab would leave both behind.
func cleanupLab(ctx context.Context, lab string) ([]string, error) {
	removed, err := topologies.Cleanup(ctx, lab)
	prefix := topologies.Prefix
	if lab != "" {
		// Lab names are [a-z0-9] only, so prx-<lab>- never matches another
		// lab's namespaces.
		prefix += lab + "-"
	}
	pins, perr := ebpf.CleanupPins(prefix)
	for _, p := range pins {
		removed = append(removed, "BPF pins "+p)
	}
	return removed, errors.Join(err, perr)
}

func listLabs() ([]string, error) {
	ents, err := os.ReadDir(topologies.StateRoot)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && topologies.ValidateName(e.Name()) == nil {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// supervisorAlive reads the lab's pid file and checks the process is the
// lab's supervisor (its argv[0] carries the lab's prefix), so a recycled pid
// is never mistaken for it.
func supervisorAlive(lab string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(stateDir(lab), "pid"))
	if err != nil {
		return 0, false
	}
	var pid int
	if _, err := fmt.Sscan(string(b), &pid); err != nil || pid <= 0 {
		return 0, false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return pid, false
	}
	argv0, _, _ := strings.Cut(string(cmdline), "\x00")
	return pid, argv0 == topologies.Prefix+lab+"-supervisor"
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o600)
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
