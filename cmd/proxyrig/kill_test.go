package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"proxyrig/internal/netnsutil"
	"proxyrig/topologies"
	"proxyrig/topologies/vm"
)

// kill -9 at random points, then `proxyrig cleanup`: nothing with the
// prefix may remain, and a second cleanup has nothing to do (issue 8,
// docs/reliability.md "No debris"). The points are drawn from a seed
// that is logged; PROXYRIG_KILL_SEED=<n> replays a run.

func killSeed(t *testing.T) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("PROXYRIG_KILL_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("PROXYRIG_KILL_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("kill points drawn with seed %d (replay: PROXYRIG_KILL_SEED=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, 0x6b696c6c)) // "kill"
}

// randDelay is a duration uniformly in [lo, hi).
func randDelay(r *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(r.Int64N(int64(hi-lo)))
}

// procsWithArgv0Prefix lists the pids whose argv[0] starts with prefix.
func procsWithArgv0Prefix(prefix string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || len(b) == 0 {
			continue
		}
		argv0, _, _ := bytes.Cut(b, []byte{0})
		if strings.HasPrefix(string(argv0), prefix) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// debris is everything of lab: what leftovers finds, plus BPF pins.
func debris(t *testing.T, lab string) []string {
	t.Helper()
	left := leftovers(t, lab)
	pins, _ := filepath.Glob(filepath.Join("/sys/fs/bpf", topologies.Prefix+lab+"-*"))
	for _, p := range pins {
		left = append(left, "BPF pins "+p)
	}
	return left
}

// cleanupTwice runs `proxyrig cleanup <args>` and checks that nothing of
// what check lists remains, then that a second cleanup has nothing to do.
func cleanupTwice(t *testing.T, what string, check func() []string, args ...string) {
	t.Helper()
	out, stderr, err := run(t, "", append([]string{"cleanup"}, args...)...)
	if err != nil {
		t.Errorf("%s: cleanup %v: %v\n%s%s", what, args, err, out, stderr)
	}
	t.Logf("%s: cleanup %v: %s", what, args, strings.TrimSpace(out))
	if left := check(); len(left) > 0 {
		t.Errorf("%s: after cleanup %v, still there: %v", what, args, left)
	}
	out, stderr, err = run(t, "", append([]string{"cleanup"}, args...)...)
	if err != nil || strings.TrimSpace(out) != "nothing to clean up" {
		t.Errorf("%s: second cleanup %v: %v, %q %q; want \"nothing to clean up\"", what, args, err, out, stderr)
	}
}

func killAll(pids []int) {
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// TestKill9SupervisorThenCleanup SIGKILLs a lab's supervisor during the
// build, a sync, traffic and the teardown, at random moments, with the
// iptables and the eBPF datapath (pins under /sys/fs/bpf outlive every
// process), and checks that cleanup --name removes everything.
func TestKill9SupervisorThenCleanup(t *testing.T) {
	requireRoot(t)
	r := killSeed(t)
	file := writeFile(t, fmt.Sprintf(e2eCluster, ""))
	file2 := writeFile(t, fmt.Sprintf(e2eCluster, e2eSecondEndpoint))
	for i, phase := range []string{"build", "sync", "traffic", "teardown"} {
		for j, dp := range []string{"iptables", "ebpf"} {
			lab := fmt.Sprintf("k9s%d%d", i, j)
			what := fmt.Sprintf("%s, kill -9 of the supervisor during %s", dp, phase)
			t.Run(phase+"/"+dp, func(t *testing.T) {
				t.Cleanup(func() { run(t, "", "cleanup", "--name", lab) })
				supervisor := topologies.Prefix + lab + "-supervisor"
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
				defer cancel()
				up := exec.CommandContext(ctx, binPath, "lab", "up", "--datapath", dp, "--name", lab, "-f", file, "--timeout", "60s")
				var upOut bytes.Buffer
				up.Stdout = &upOut
				if err := up.Start(); err != nil {
					t.Fatal(err)
				}
				if phase == "build" {
					// Wait for the supervisor to exist, then let it build
					// for a random while.
					for wait := time.Now().Add(30 * time.Second); len(procsWithArgv0Prefix(supervisor)) == 0 && time.Now().Before(wait); {
						time.Sleep(5 * time.Millisecond)
					}
					d := randDelay(r, 0, 1500*time.Millisecond)
					time.Sleep(d)
					pids := procsWithArgv0Prefix(supervisor)
					t.Logf("%s: SIGKILL %v %s after it started", what, pids, d)
					killAll(pids)
					_ = up.Wait()
				} else {
					if err := up.Wait(); err != nil {
						t.Fatalf("lab up: %v\n%s", err, upOut.String())
					}
					var cmd *exec.Cmd
					switch phase {
					case "sync":
						cmd = exec.CommandContext(ctx, binPath, "lab", "apply", "--name", lab, "-f", file2)
					case "teardown":
						cmd = exec.CommandContext(ctx, binPath, "lab", "down", "--name", lab)
					case "traffic":
						var info topologies.Info
						if err := json.Unmarshal(upOut.Bytes(), &info); err != nil {
							t.Fatalf("lab up printed no JSON: %v", err)
						}
						var client string
						for _, c := range info.Clients {
							if c.Kind == "pod" && c.Node == "node-a" {
								client = c.Netns
							}
						}
						cmd = exec.CommandContext(ctx, "sh", "-c", "while :; do ip netns exec "+client+" nc -w 1 198.19.0.10 80 || true; done")
					}
					if err := cmd.Start(); err != nil {
						t.Fatal(err)
					}
					d := randDelay(r, 0, 400*time.Millisecond)
					if phase == "teardown" {
						// lab down is quick: aim inside it.
						d = randDelay(r, 0, 120*time.Millisecond)
					}
					time.Sleep(d)
					pids := procsWithArgv0Prefix(supervisor)
					t.Logf("%s: SIGKILL %v %s into the %s", what, pids, d, phase)
					killAll(pids)
					if phase == "traffic" {
						time.Sleep(200 * time.Millisecond)
						_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
					}
					_ = cmd.Wait()
				}
				cleanupTwice(t, what, func() []string { return debris(t, lab) }, "--name", lab)
			})
		}
	}
}

// otherBenches lists running `proxyrig bench` processes other than pid.
func otherBenches(pid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil || p == pid {
			continue
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
		argv := strings.Split(string(b), "\x00")
		if len(argv) > 1 && filepath.Base(argv[0]) == "proxyrig" && argv[1] == "bench" {
			out = append(out, p)
		}
	}
	return out
}

// benchLabs lists the bench labs that have namespaces.
func benchLabs() map[string]bool {
	names, _ := netnsutil.List(topologies.Prefix + "bench")
	labs := map[string]bool{}
	for _, n := range names {
		lab, _, _ := strings.Cut(strings.TrimPrefix(n, topologies.Prefix), "-")
		labs[lab] = true
	}
	return labs
}

// benchPhases are the phases `bench -v` logs, in order; a kill is aimed
// at one of them.
var benchPhases = []string{"build lab", "baseline (empty node)", "sync_full", "sync_incremental", "programming_latency", "traffic (rules loaded)"}

var (
	benchPhaseRE = regexp.MustCompile(`msg="bench phase" .*phase="?([^"]+)"?$`)
	benchLabRE   = regexp.MustCompile(`lab=(bench[0-9a-f]+)`)
)

// TestKill9BenchThenCleanup SIGKILLs `proxyrig bench -v`, at a small
// scale, at a random moment of a randomly drawn phase (lab build,
// baseline, syncs, traffic), and checks that cleanup --name of its lab
// removes everything. The lab's name is read from the bench's log; if
// the kill came before the log named it, the lab is the bench lab that
// appeared meanwhile, and the iteration is skipped when another bench ran
// on the machine then, rather than risk cleaning someone else's lab.
func TestKill9BenchThenCleanup(t *testing.T) {
	requireRoot(t)
	r := killSeed(t)
	for _, dp := range []string{"iptables", "ebpf", "nftables"} {
		phase := benchPhases[r.IntN(len(benchPhases))]
		d := randDelay(r, 0, 300*time.Millisecond)
		t.Run(dp+"/"+phase, func(t *testing.T) {
			before := benchLabs()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, binPath, "bench", "-v", "--datapaths", dp, "--services", "20", "--endpoints", "2",
				"--reps", "1", "--quick", "--out", t.TempDir(), "--budget", "3m", "--disruption", "-1s")
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var lab string
			reached := false
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				line := sc.Text()
				if m := benchLabRE.FindStringSubmatch(line); m != nil {
					lab = m[1]
				}
				if m := benchPhaseRE.FindStringSubmatch(line); m != nil && m[1] == phase {
					reached = true
					break
				}
			}
			if !reached {
				t.Fatalf("bench %s ended without reaching phase %q: %v", dp, phase, cmd.Wait())
			}
			time.Sleep(d)
			others := otherBenches(cmd.Process.Pid)
			if lab == "" {
				for l := range benchLabs() {
					if !before[l] {
						lab = l
					}
				}
			}
			_ = cmd.Process.Signal(syscall.SIGKILL)
			go func() { _, _ = io.Copy(io.Discard, stderr) }()
			err = cmd.Wait()
			t.Logf("bench %s: SIGKILL %s into phase %q (%v); its lab: %q", dp, d, phase, err, lab)
			if lab == "" {
				if len(others) > 0 {
					t.Skipf("another bench (pids %v) ran at the same time: which new lab is this bench's is ambiguous", others)
				}
				// Killed before its lab had a namespace: nothing of it
				// may be left either.
				for l := range benchLabs() {
					if !before[l] {
						t.Errorf("a bench lab %s appeared after the kill", l)
					}
				}
				return
			}
			cleanupTwice(t, "bench "+dp, func() []string { return debris(t, lab) }, "--name", lab)
		})
	}
}

// qemuOf finds the qemu child of pid and returns its pid and VM name.
func qemuOf(pid int) (int, string) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(pid) {
			continue
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
		argv := strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
		for j, a := range argv {
			if a == "-name" && j+1 < len(argv) {
				name, _, _ := strings.Cut(argv[j+1], ",")
				return p, name
			}
		}
	}
	return 0, ""
}

// vmDebris lists the qemu processes and results directory of VM name.
func vmDebris(name string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		argv := strings.Split(string(b), "\x00")
		if strings.HasPrefix(filepath.Base(argv[0]), "qemu-system") && strings.Contains(string(b), "\x00"+name+",") {
			// A dying qemu is a zombie for a moment: only live ones count.
			if st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil {
				if i := bytes.LastIndexByte(st, ')'); i > 0 && i+2 < len(st) && st[i+2] == 'Z' {
					continue
				}
			}
			out = append(out, "qemu process "+e.Name())
		}
	}
	if _, err := os.Stat(filepath.Join(os.TempDir(), name)); err == nil {
		out = append(out, "results dir "+filepath.Join(os.TempDir(), name))
	}
	return out
}

// TestKill9VMThenCleanup SIGKILLs a `proxyrig vm -- sleep` run, the
// runner or its qemu (drawn at random), at a random moment of boot or
// run, and checks that cleanup --vm <name> removes that VM's qemu and
// results directory, and only that VM's: other runs' VMs on the machine
// are left alone.
func TestKill9VMThenCleanup(t *testing.T) {
	requireRoot(t)
	for _, check := range []func() error{vm.Check, func() error { _, err := vm.DefaultKernel(); return err }} {
		if err := check(); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%v; CI=true, so this must not be skipped (ci/install-deps.sh installs qemu-system-x86, linux-image-amd64, busybox-static)", err)
			}
			t.Skip(err.Error())
		}
	}
	r := killSeed(t)
	for i := range 2 {
		target := []string{"runner", "qemu"}[r.IntN(2)]
		d := randDelay(r, time.Duration(i)*15*time.Second, time.Duration(i+1)*15*time.Second)
		t.Run(fmt.Sprintf("%s-after-%s", target, d.Round(time.Millisecond)), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, binPath, "vm", "--timeout", "2m", "--", "sleep", "600")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Learn the VM's name as soon as its qemu exists.
			var qpid int
			var name string
			deadline := time.Now().Add(d)
			for time.Now().Before(deadline) {
				if name == "" {
					qpid, name = qemuOf(cmd.Process.Pid)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if name == "" {
				qpid, name = qemuOf(cmd.Process.Pid)
			}
			victim := cmd.Process.Pid
			if target == "qemu" && qpid != 0 {
				victim = qpid
			}
			t.Logf("SIGKILL %s (pid %d) of VM %q after %s", target, victim, name, d)
			_ = syscall.Kill(victim, syscall.SIGKILL)
			if victim != cmd.Process.Pid {
				// The runner notices its qemu died and exits on its own.
				time.Sleep(500 * time.Millisecond)
				_ = cmd.Process.Signal(syscall.SIGKILL)
			}
			_ = cmd.Wait()
			if name == "" {
				t.Logf("killed before qemu started: no VM to clean")
				return
			}
			cleanupTwice(t, "vm "+name, func() []string { return vmDebris(name) }, "--vm", name)
		})
	}
}
