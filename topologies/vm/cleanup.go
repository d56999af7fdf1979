package vm

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Cleanup removes what a crashed or killed run left behind: it SIGKILLs
// every qemu process whose command line contains "prx-vm-" and removes the
// prx-vm-* results directories in the temporary directory. It returns what
// it removed and is safe to run twice and when nothing exists. It also
// stops VMs that are still running, so call it only when no run should be.
// The initramfs cache is kept: it is valid across runs.
//
// Equivalent to: pkill -KILL -f 'qemu-system.*prx-vm-'; rm -rf /tmp/prx-vm-*
func Cleanup() ([]string, error) { return cleanup(NamePrefix) }

// CleanupVM is Cleanup for one VM, named as qemu's -name and its results
// directory are ("prx-vm-1234567"): it kills that qemu and removes that
// directory only, so the VMs of other runs on the machine keep running.
// Equivalent to: pkill -KILL -f 'qemu-system.*-name <name>,'; rm -rf /tmp/<name>
func CleanupVM(name string) ([]string, error) {
	rest, ok := strings.CutPrefix(name, NamePrefix)
	if !ok || rest == "" || strings.ContainsAny(rest, "/*?[") {
		return nil, fmt.Errorf("vm cleanup: %q is not a VM name (%s followed by the run's id)", name, NamePrefix)
	}
	return cleanupMatching(name, func(argv []string) bool { return isRunnerQemu(argv, name) && vmName(argv, name) == name },
		func(dir string) bool { return filepath.Base(dir) == name })
}

// cleanup is Cleanup for one marker, so a test can clean only its own.
func cleanup(marker string) ([]string, error) {
	return cleanupMatching(marker, func(argv []string) bool { return isRunnerQemu(argv, marker) }, func(string) bool { return true })
}

// cleanupMatching kills the qemu processes whose argv isQemu accepts and
// removes the marker* directories of the temporary directory that isDir
// accepts.
func cleanupMatching(marker string, isQemu func(argv []string) bool, isDir func(string) bool) ([]string, error) {
	var removed []string
	var errs []error
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("read /proc: %w", err)
	}
	self := os.Getpid()
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		argv := cmdline(pid)
		if !isQemu(argv) {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			if !errors.Is(err, syscall.ESRCH) {
				errs = append(errs, fmt.Errorf("kill qemu %d: %w", pid, err))
			}
			continue
		}
		pids = append(pids, pid)
		removed = append(removed, fmt.Sprintf("process %d %s", pid, vmName(argv, marker)))
	}
	// SIGKILL is asynchronous: wait (bounded) so that the directories
	// removed next are not still being written by a dying qemu.
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for processAlive(pid) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if processAlive(pid) {
			errs = append(errs, fmt.Errorf("qemu %d still alive 5s after SIGKILL", pid))
		}
	}

	dirs, err := filepath.Glob(filepath.Join(os.TempDir(), marker+"*"))
	if err != nil {
		errs = append(errs, err)
	}
	for _, d := range dirs {
		if st, err := os.Lstat(d); err != nil || !st.IsDir() || !isDir(d) {
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", d, err))
			continue
		}
		removed = append(removed, "dir "+d)
	}
	sort.Strings(removed)
	return removed, errors.Join(errs...)
}

// isRunnerQemu says whether argv is a qemu the runner started: the program
// is qemu-system-* and an argument carries the marker. Checking the program
// keeps Cleanup off unrelated processes that merely mention the name (a
// `pgrep -f prx-vm-`, an editor with the README open).
func isRunnerQemu(argv []string, marker string) bool {
	if len(argv) == 0 || !strings.HasPrefix(filepath.Base(argv[0]), "qemu-system") {
		return false
	}
	for _, a := range argv[1:] {
		if strings.Contains(a, marker) {
			return true
		}
	}
	return false
}

func vmName(argv []string, marker string) string {
	for i, a := range argv {
		if a == "-name" && i+1 < len(argv) {
			n, _, _ := strings.Cut(argv[i+1], ",")
			return n
		}
	}
	return marker + "?"
}

func cmdline(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
}

// processAlive is false once pid is gone or a zombie (a zombie holds no
// files; its parent reaps it).
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name, which may itself
	// contain ") ", so look after the last one.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}
