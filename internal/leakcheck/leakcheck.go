// Package leakcheck fails a test binary that leaks goroutines or file
// descriptors. A package's TestMain hands its tests to Main, which
// snapshots the goroutines and open descriptors before the tests, runs
// them, and compares afterwards, retrying for a few seconds so that
// goroutines and descriptors that are already on their way out (a server
// goroutine returning after its listener closed, a process reaped a moment
// later) are not blamed. What is still there is printed (goroutine stacks,
// descriptor targets such as "net:[4026532301]" or "socket:[81234]") and
// the binary exits non-zero.
//
// A leaked namespace descriptor is the costly kind: it keeps a deleted
// network namespace alive, with its veths and its conntrack table.
//
//	func TestMain(m *testing.M) { os.Exit(leakcheck.Main(m)) }
//
// PROXYRIG_LEAKCHECK=0 turns the check off (to tell a leak from a test
// failure while debugging). Fuzzing runs (-test.fuzz) are not checked: the
// fuzzing engine keeps its own workers and shared memory.
package leakcheck

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Settle is how long Main waits for goroutines and descriptors to go away
// before it calls them leaked.
var Settle = 10 * time.Second

// Option adjusts Main.
type Option func(*config)

type config struct {
	ignoreStacks []string
	ignoreFDs    []string
	out          io.Writer
}

// IgnoreGoroutines ignores goroutines whose stack contains any of the
// substrings (function names such as "k8s.io/klog/v2.(*flushDaemon).run"):
// process-wide helpers a library starts once and keeps.
func IgnoreGoroutines(substrings ...string) Option {
	return func(c *config) { c.ignoreStacks = append(c.ignoreStacks, substrings...) }
}

// IgnoreFDs ignores descriptors whose target contains any of the substrings.
func IgnoreFDs(substrings ...string) Option {
	return func(c *config) { c.ignoreFDs = append(c.ignoreFDs, substrings...) }
}

// Goroutines that belong to the runtime, the testing package or the
// signal machinery: started lazily by whatever first needs them and kept
// for the life of the process.
var defaultIgnoreStacks = []string{
	"os/signal.signal_recv",
	"os/signal.loop",
	"runtime.ensureSigM",
	"os/signal.NotifyContext",
	"testing.(*M).startAlarm",
	"testing.runFuzzing",
	"internal/fuzz.",
	"runtime/pprof.",
	"k8s.io/klog/v2.(*flushDaemon).run",
	"go.opencensus.io/stats/view.(*worker).start",
}

// Descriptors the runtime opens lazily and keeps: the network poller's
// epoll instance and its wakeup eventfd, the GOMAXPROCS updater's cgroup
// files, go test's own log file, the fuzzing engine's shared memory.
var defaultIgnoreFDs = []string{
	"anon_inode:[eventpoll]",
	"anon_inode:[eventfd]",
	"/sys/fs/cgroup/",
	"testlog.txt",
	"/tmp/fuzz-",
}

// Main runs m's tests and returns the exit code for os.Exit: m.Run's, or 1
// when the tests passed but left goroutines or descriptors behind.
func Main(m *testing.M, opts ...Option) int {
	c := &config{out: os.Stderr}
	for _, o := range opts {
		o(c)
	}
	if os.Getenv("PROXYRIG_LEAKCHECK") == "0" {
		return m.Run()
	}
	before := take()
	code := m.Run()
	if fuzzing() {
		return code
	}
	var leaked snapshot
	deadline := time.Now().Add(Settle)
	for {
		// Collect garbage, so that descriptors only an unreachable
		// *os.File holds are closed by its cleanup rather than reported.
		runtime.GC()
		leaked = take().since(before, c)
		if leaked.empty() || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if leaked.empty() {
		return code
	}
	leaked.report(c.out, Settle)
	if code == 0 {
		code = 1
	}
	return code
}

// fuzzing reports whether this binary is a fuzzing coordinator or worker.
func fuzzing() bool {
	for _, name := range []string{"test.fuzz", "test.fuzzworker"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" && f.Value.String() != "false" {
			return true
		}
	}
	return false
}

type goroutine struct {
	id    int
	stack string
}

type snapshot struct {
	goroutines []goroutine
	fds        map[int]string
}

func (s snapshot) empty() bool { return len(s.goroutines) == 0 && len(s.fds) == 0 }

func take() snapshot {
	return snapshot{goroutines: goroutines(), fds: mustFDs()}
}

// since returns what s has that before had not, minus what is ignored and
// minus the calling goroutine.
func (s snapshot) since(before snapshot, c *config) snapshot {
	var out snapshot
	old := map[int]bool{}
	for _, g := range before.goroutines {
		old[g.id] = true
	}
	self := currentID()
	for _, g := range s.goroutines {
		if old[g.id] || g.id == self || containsAny(g.stack, defaultIgnoreStacks) || containsAny(g.stack, c.ignoreStacks) {
			continue
		}
		out.goroutines = append(out.goroutines, g)
	}
	out.fds = map[int]string{}
	for fd, target := range s.fds {
		if prev, ok := before.fds[fd]; ok && prev == target {
			continue
		}
		if containsAny(target, defaultIgnoreFDs) || containsAny(target, c.ignoreFDs) {
			continue
		}
		out.fds[fd] = target
	}
	return out
}

func (s snapshot) report(w io.Writer, settle time.Duration) {
	fmt.Fprintf(w, "leakcheck: the tests passed or failed, but left behind (after waiting %v):\n", settle)
	if len(s.goroutines) > 0 {
		fmt.Fprintf(w, "leakcheck: %d goroutine(s) still running:\n\n", len(s.goroutines))
		for _, g := range s.goroutines {
			fmt.Fprintf(w, "%s\n\n", g.stack)
		}
	}
	if len(s.fds) > 0 {
		fmt.Fprintf(w, "leakcheck: %d file descriptor(s) still open:\n", len(s.fds))
		for _, fd := range slices.Sorted(maps.Keys(s.fds)) {
			fmt.Fprintf(w, "  fd %d -> %s\n", fd, s.fds[fd])
		}
	}
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// goroutines returns every goroutine's id and stack.
func goroutines() []goroutine {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []goroutine
	for _, block := range bytes.Split(buf, []byte("\n\n")) {
		block = bytes.TrimSpace(block)
		if id, ok := goroutineID(block); ok {
			out = append(out, goroutine{id: id, stack: string(block)})
		}
	}
	return out
}

// goroutineID parses "goroutine 42 [running]:".
func goroutineID(stack []byte) (int, bool) {
	rest, ok := bytes.CutPrefix(stack, []byte("goroutine "))
	if !ok {
		return 0, false
	}
	num, _, ok := bytes.Cut(rest, []byte(" "))
	if !ok {
		return 0, false
	}
	id, err := strconv.Atoi(string(num))
	return id, err == nil
}

func currentID() int {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	id, _ := goroutineID(buf)
	return id
}

// FDs returns the process's open descriptors and what each refers to.
// Equivalent to: ls -l /proc/self/fd
func FDs() (map[int]string, error) {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return nil, fmt.Errorf("list open file descriptors: %w", err)
	}
	names, err := d.Readdirnames(-1)
	own := int(d.Fd())
	d.Close()
	if err != nil {
		return nil, fmt.Errorf("list open file descriptors: %w", err)
	}
	out := map[int]string{}
	for _, name := range names {
		fd, err := strconv.Atoi(name)
		if err != nil || fd == own {
			continue
		}
		target, err := os.Readlink("/proc/self/fd/" + name)
		if err != nil {
			continue // closed since the listing
		}
		out[fd] = target
	}
	return out, nil
}

func mustFDs() map[int]string {
	fds, err := FDs()
	if err != nil {
		return map[int]string{}
	}
	return fds
}
