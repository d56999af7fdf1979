// Package vm runs a command inside a throwaway qemu VM that boots one of the
// machine's installed Debian kernels with the host's root file system shared
// read-only. It exists for what the host kernel lacks and cannot load (IPVS,
// SCTP sockets, dummy interfaces, netem): the guest kernel has them as
// modules. The runner always emulates (TCG): KVM does not work here, and
// every timing measured inside the guest is emulated — see Emulated.
//
// Equivalent to, roughly:
//
//	qemu-system-x86_64 -accel tcg,thread=multi -cpu max -m 2048 -smp 2 \
//	  -kernel prx-vm-vmlinux-<ver>-… -initrd prx-vm-initramfs-<ver>-….cpio.gz \
//	  -append "console=ttyS0 quiet panic=-1 cryptomgr.notests" \
//	  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on \
//	  -virtfs local,path=/tmp/prx-vm-…,mount_tag=results,security_model=none
//
// See README.md for how the guest boots and what it costs.
package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Environment variables every guest command gets, so benchmarks and reports
// can label what they measure as emulated.
const (
	EnvEmulated = "PROXYRIG_EMULATED"  // "1" inside the VM
	EnvKernel   = "PROXYRIG_VM_KERNEL" // the guest's kernel version
)

// Emulated reports whether this process runs inside the VM runner's guest,
// where every timing is emulated and never comparable with native figures.
func Emulated() bool { return os.Getenv(EnvEmulated) == "1" }

// Defaults for Config's zero values.
const (
	DefaultMemory = 2048 // MiB: less makes netns-heavy labs swap-free but tight
	DefaultCPUs   = 2
)

// NamePrefix starts every qemu -name, results directory and cache file the
// runner makes, so Cleanup (and pgrep -f prx-vm-) can find them.
const NamePrefix = "prx-vm-"

// Config says which kernel to boot and how to run the command.
type Config struct {
	// Kernel is a version with /boot/vmlinuz-<Kernel> and
	// /lib/modules/<Kernel>. "" picks the newest installed kernel that is
	// not the running host kernel.
	Kernel string
	// Memory is the guest's RAM in MiB; 0 means DefaultMemory.
	Memory int
	// CPUs is the guest's vCPU count; 0 means DefaultCPUs. Under TCG each
	// vCPU is a host thread, so more than the host has only adds contention.
	CPUs int
	// Timeout bounds the whole run, boot included; 0 means only ctx does.
	Timeout time.Duration
	// Modules are loaded in the guest with the host's modprobe before the
	// command runs (ip_vs, ip_vs_rr, sctp, dummy, sch_netem, …). The
	// kernel's autoloader works in the guest too, so this is for modules
	// nothing would autoload, or to fail early with a clear error.
	Modules []string
	// Env is added to the command's environment, which otherwise holds
	// only the host's PATH and HOME, CI when set, and EnvEmulated and
	// EnvKernel (which Env cannot override).
	Env map[string]string
	// Dir is the command's working directory in the guest; "" means the
	// caller's current directory, which exists there since / is shared.
	Dir string
	// CacheDir holds the built initramfs images; "" means DefaultCacheDir().
	CacheDir string
	// Logger receives the guest console and qemu's own messages at debug
	// level, and the qemu command line; nil discards them.
	Logger *slog.Logger
}

// testHookStarted, when set by a test, learns the qemu name and results
// directory of each run, to check that nothing is left behind.
var testHookStarted func(name, resultsDir string)

// Run boots the VM, runs argv in it, copies the command's stdout and stderr
// to stdout and stderr (nil discards) while it runs, and returns its exit
// status. err is non-nil only when the command's status is unknown: the
// machine cannot run the VM (errors.Is ErrNotSupported), the guest failed
// to boot or set up, the timeout passed or ctx was cancelled. The qemu
// process and the results directory are gone when Run returns, on every
// path.
func Run(ctx context.Context, cfg Config, argv []string, stdout, stderr io.Writer) (exitCode int, err error) {
	if len(argv) == 0 {
		return -1, errors.New("vm: no command to run")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	if err := Check(); err != nil {
		return -1, err
	}
	ver, err := resolveKernel(cfg.Kernel)
	if err != nil {
		return -1, err
	}
	for _, m := range cfg.Modules {
		if !moduleName.MatchString(m) {
			return -1, fmt.Errorf("vm: module name %q: want letters, digits and _-.:", m)
		}
	}
	dir := cfg.Dir
	if dir == "" {
		if dir, err = os.Getwd(); err != nil {
			return -1, fmt.Errorf("vm: working directory: %w", err)
		}
	}
	if !filepath.IsAbs(dir) {
		return -1, fmt.Errorf("vm: working directory %q is not absolute", dir)
	}
	cacheDir := cfg.CacheDir
	if cacheDir == "" {
		cacheDir = DefaultCacheDir()
	}
	initrd, err := ensureInitramfs(ctx, ver, cacheDir, log)
	if err != nil {
		return -1, fmt.Errorf("vm: %w", err)
	}

	// Prefer the extracted vmlinux (PVH boot, no emulated decompression);
	// the bzImage always works.
	kernelPath, err := ensureVmlinux(ctx, ver, cacheDir, log)
	if err != nil {
		log.Debug("vm boots the bzImage", "why", err)
		kernelPath = kernelImage(ver)
	}
	modprobe, err := exec.LookPath("modprobe")
	if err != nil {
		return -1, fmt.Errorf("vm: %w", err)
	}
	envBin, err := exec.LookPath("env")
	if err != nil {
		return -1, fmt.Errorf("vm: %w", err)
	}

	results, err := os.MkdirTemp("", NamePrefix)
	if err != nil {
		return -1, fmt.Errorf("vm: create results directory: %w", err)
	}
	defer os.RemoveAll(results)
	name := filepath.Base(results)
	script := guestScriptText(guestRun{
		Argv: argv, Dir: dir, Env: guestEnv(cfg.Env, ver), Modules: cfg.Modules,
		Modprobe: modprobe, EnvBin: envBin,
	})
	if err := os.WriteFile(filepath.Join(results, guestScript), []byte(script), 0o755); err != nil {
		return -1, fmt.Errorf("vm: write guest script: %w", err)
	}
	if testHookStarted != nil {
		testHookStarted(name, results)
	}

	runCtx := ctx
	if cfg.Timeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
	}
	args := qemuArgs(name, cfg, kernelPath, initrd, results)
	log.Debug("vm boot", "kernel", ver, "cmd", shellLine(append([]string{qemuBinary}, args...)))

	console := newLineLogger(log, "vm console", 40)
	qemuErr := newLineLogger(log, "qemu", 20)
	cmd := exec.CommandContext(runCtx, qemuBinary, args...)
	cmd.Stdout = console
	cmd.Stderr = qemuErr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own process group: a terminal's Ctrl-C reaches only us, and we
		// decide (by cancelling ctx) when qemu dies.
		Setpgid: true,
		// If this process dies without cleaning up, the kernel kills qemu.
		Pdeathsig: syscall.SIGKILL,
	}
	cmd.Cancel = func() error { return cmd.Process.Kill() }
	cmd.WaitDelay = 5 * time.Second

	// Pdeathsig fires when the *thread* that forked qemu exits, not the
	// process; Go may retire threads, so keep this one until qemu is gone.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	start := time.Now()
	if err := cmd.Start(); err != nil {
		return -1, fmt.Errorf("vm: start %s: %w", qemuBinary, err)
	}
	out := &tailer{path: filepath.Join(results, stdoutFile), w: stdout}
	errOut := &tailer{path: filepath.Join(results, stderrFile), w: stderr}
	stopTail := make(chan struct{})
	tailDone := make(chan struct{})
	go func() {
		defer close(tailDone)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopTail:
				return
			case <-tick.C:
				out.pump()
				errOut.pump()
			}
		}
	}()
	waitErr := cmd.Wait()
	close(stopTail)
	<-tailDone
	out.pump() // what the guest wrote after the last tick
	errOut.pump()
	console.Flush()
	qemuErr.Flush()
	log.Debug("vm exited", "name", name, "took", time.Since(start), "qemu", waitErr)

	// The status file is written after the command exited: if it is there,
	// the command finished, even if ctx ended while the guest powered off.
	if b, err := os.ReadFile(filepath.Join(results, exitCodeFile)); err == nil {
		code, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return -1, fmt.Errorf("vm: guest wrote exit status %q: %w", b, err)
		}
		return code, nil
	}
	if ctx.Err() != nil {
		return -1, fmt.Errorf("vm: %w", ctx.Err())
	}
	if runCtx.Err() != nil {
		return -1, fmt.Errorf("vm: command did not finish within %s: %w", cfg.Timeout, runCtx.Err())
	}
	if b, err := os.ReadFile(filepath.Join(results, setupErrorFile)); err == nil {
		return -1, fmt.Errorf("vm: guest setup: %s", strings.TrimSpace(string(b)))
	}
	why := "qemu exited"
	if waitErr != nil {
		why = fmt.Sprintf("qemu failed (%v)", waitErr)
	}
	return -1, fmt.Errorf("vm: %s before the guest reported an exit status; last console lines:\n%s%s",
		why, console.Tail(), qemuErr.Tail())
}

// DefaultKernel is the kernel Run boots when Config.Kernel is "".
func DefaultKernel() (string, error) { return resolveKernel("") }

// guestEnv is the command's whole environment in the guest.
func guestEnv(extra map[string]string, ver string) map[string]string {
	env := map[string]string{"PATH": os.Getenv("PATH"), "HOME": os.Getenv("HOME")}
	if env["PATH"] == "" {
		env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	if env["HOME"] == "" {
		env["HOME"] = "/root"
	}
	if v, ok := os.LookupEnv("CI"); ok {
		env["CI"] = v
	}
	for k, v := range extra {
		env[k] = v
	}
	env[EnvEmulated] = "1"
	env[EnvKernel] = ver
	return env
}

// kernelCmdline is the guest kernel's command line. quiet matters: every
// console byte is an emulated UART write. cryptomgr.notests skips the
// crypto self-tests, about a second of emulated CPU per boot, and changes
// nothing after boot. Spectre mitigations stay at their defaults on
// purpose: retpolines change what indirect calls cost, and so how iptables
// and nftables compare, and production kernels run with them.
const kernelCmdline = "console=ttyS0 quiet panic=-1 cryptomgr.notests"

// qemuArgs is the emulator's command line. -nodefaults drops the VGA card,
// NIC and drives qemu would otherwise add: the guest needs none of them and
// has no network to the outside.
func qemuArgs(name string, cfg Config, kernel, initrd, results string) []string {
	mem, cpus := cfg.Memory, cfg.CPUs
	if mem <= 0 {
		mem = DefaultMemory
	}
	if cpus <= 0 {
		cpus = DefaultCPUs
	}
	// qemu's option syntax escapes a comma in a value by doubling it.
	esc := func(s string) string { return strings.ReplaceAll(s, ",", ",,") }
	return []string{
		// process= sets the thread name too; the name in argv is what
		// pgrep -f and Cleanup find.
		"-name", name + ",process=" + name,
		"-nodefaults", "-no-user-config",
		"-accel", "tcg,thread=multi",
		"-cpu", "max",
		"-m", strconv.Itoa(mem),
		"-smp", strconv.Itoa(cpus),
		"-display", "none", "-monitor", "none", "-serial", "stdio",
		"-no-reboot",
		"-kernel", kernel,
		"-initrd", initrd,
		"-append", kernelCmdline,
		"-virtfs", "local,path=/,mount_tag=" + hostRootTag + ",security_model=none,readonly=on,multidevs=remap",
		"-virtfs", "local,path=" + esc(results) + ",mount_tag=" + resultsTag + ",security_model=none,multidevs=remap",
	}
}

// shellLine renders argv as one line a person can paste into a shell.
func shellLine(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./,=:+@%", r))
		}) < 0 {
			q[i] = a
		} else {
			q[i] = shQuote(a)
		}
	}
	return strings.Join(q, " ")
}

// tailer copies what the guest appends to a file in the results share.
// With cache=none on that share the guest's writes reach the host file
// at once, so output streams while the command runs.
type tailer struct {
	path string
	w    io.Writer
	off  int64
}

func (t *tailer) pump() {
	f, err := os.Open(t.path)
	if err != nil {
		return // not created yet
	}
	defer f.Close()
	if _, err := f.Seek(t.off, io.SeekStart); err != nil {
		return
	}
	n, _ := io.Copy(t.w, f)
	t.off += n
}

// lineLogger is an io.Writer that logs each complete line at debug level
// and keeps the last few for error messages.
type lineLogger struct {
	log  *slog.Logger
	msg  string
	keep int

	mu      sync.Mutex
	partial []byte
	tail    []string
}

func newLineLogger(log *slog.Logger, msg string, keep int) *lineLogger {
	return &lineLogger{log: log, msg: msg, keep: keep}
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.line(string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
	return len(p), nil
}

func (l *lineLogger) line(s string) {
	s = strings.TrimRight(s, "\r")
	l.log.Debug(l.msg, "line", s)
	l.tail = append(l.tail, s)
	if len(l.tail) > l.keep {
		l.tail = l.tail[len(l.tail)-l.keep:]
	}
}

// Flush logs a final line that had no newline.
func (l *lineLogger) Flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 {
		l.line(string(l.partial))
		l.partial = nil
	}
}

// Tail returns the kept lines, each prefixed with the logger's message.
func (l *lineLogger) Tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, s := range l.tail {
		fmt.Fprintf(&b, "  %s: %s\n", l.msg, s)
	}
	return b.String()
}
