// Command proxyrig builds, checks and measures reference Kubernetes Service
// datapaths inside network-namespace labs. This file is the thin CLI: every
// piece of behaviour lives in the packages it calls.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	_ "proxyrig/datapaths/ebpf"     // registers "ebpf" and "ebpf-socket"
	_ "proxyrig/datapaths/iptables" // registers "iptables"
	_ "proxyrig/datapaths/ipvs"     // registers "ipvs"
	_ "proxyrig/datapaths/nftables" // registers "nftables" and "nftables-flat"
)

// exitError carries an exit status up to main without printing twice.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string) error
	hidden  bool
}

func commands() []command {
	return []command{
		{name: "run", summary: "the main job: doctor, conformance for every datapath this machine supports (IPVS via the VM), the benchmark matrix, and the HTML report", run: runMain},
		{name: "lab", summary: "build, change, inspect and tear down a lab (up|apply|status|down)", run: runLab},
		{name: "conformance", summary: "run the conformance suite and print the item × datapath matrix", run: runConformance},
		{name: "bench", summary: "measure datapaths at scale: sync, programming latency, per-packet cost, disruption", run: runBench},
		{name: "report", summary: "render the HTML report (charts, conformance, figures, recommendation) from result directories", run: runReport},
		{name: "recommend", summary: "rank the datapaths for a cluster profile from measured results", run: runRecommend},
		{name: "vm", summary: "run a command inside a VM whose kernel has IPVS, SCTP, dummy and netem (emulated)", run: runVM},
		{name: "cleanup", summary: "remove every leftover namespace, process and file with the prx- prefix", run: runCleanup},
		{name: "doctor", summary: "say what this machine can run natively, what needs the VM, what is missing", run: runDoctor},
		{name: "version", summary: "print the version", run: func(context.Context, []string) error { fmt.Println(version()); return nil }},
	}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "proxyrig: which Service proxy mode should this cluster use, and is it correct?\n\nUsage: proxyrig <command> [flags]\n\nCommands:\n")
	for _, c := range commands() {
		if !c.hidden {
			fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
		}
	}
	fmt.Fprintf(w, "\nRun 'proxyrig <command> -h' for a command's flags.\n")
}

func main() {
	os.Exit(realMain(os.Args[1:]))
}

func realMain(args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(os.Stdout)
		return 0
	}
	// A lab supervisor runs with argv[0] set to prx-<lab>-supervisor so that
	// `proxyrig cleanup` can find it by prefix; its real arguments follow.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for _, c := range commands() {
		if c.name == args[0] {
			err := c.run(ctx, args[1:])
			return report(err)
		}
	}
	fmt.Fprintf(os.Stderr, "proxyrig: unknown command %q\n\n", args[0])
	usage(os.Stderr)
	return 2
}

func report(err error) int {
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintf(os.Stderr, "proxyrig: %v\n", ee.err)
		}
		return ee.code
	}
	if errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "proxyrig: interrupted")
		return 130
	}
	fmt.Fprintf(os.Stderr, "proxyrig: %v\n", err)
	return 1
}

func newLogger(verbose bool) *slog.Logger {
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// stringList is a repeatable string flag (-f a.yaml -f b.yaml).
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// kvList parses repeatable key=value flags.
type kvList map[string]string

func (k kvList) String() string {
	keys := make([]string, 0, len(k))
	for key := range k {
		keys = append(keys, key+"="+k[key])
	}
	sort.Strings(keys)
	return strings.Join(keys, ",")
}

func (k kvList) Set(v string) error {
	key, val, ok := strings.Cut(v, "=")
	if !ok || key == "" {
		return fmt.Errorf("want key=value, got %q", v)
	}
	k[key] = val
	return nil
}

func version() string { return "proxyrig (development build)" }
