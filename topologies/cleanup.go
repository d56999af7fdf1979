package topologies

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"proxyrig/internal/netnsutil"
)

// Cleanup removes what a lab left behind, by name prefix alone, so it works
// after a crash when no *Lab exists: it SIGKILLs processes whose argv[0]
// starts with prx-<lab>- (never the caller itself), deletes the namespaces
// prx-<lab>-*, and removes StateRoot/<lab>. lab "" means every lab. It
// returns what it removed, sorted, and is safe to run twice and when
// nothing exists.
//
// Equivalent to: pkill -KILL '^prx-<lab>-'; ip -all netns delete (for
// prx-<lab>-*); rm -rf /run/proxyrig/<lab>
func Cleanup(ctx context.Context, lab string) (removed []string, err error) {
	prefix := Prefix
	if lab != "" {
		if err := ValidateName(lab); err != nil {
			return nil, err
		}
		prefix = labPrefix(lab)
	}
	var errs []error

	// Processes first: a live supervisor would keep serving (and holding
	// sockets in) namespaces about to be deleted.
	killed, err := killByTitle(ctx, prefix)
	removed = append(removed, killed...)
	if err != nil {
		errs = append(errs, err)
	}

	names, err := netnsutil.List(prefix)
	if err != nil {
		errs = append(errs, fmt.Errorf("list namespaces: %w", err))
	}
	for _, n := range names {
		if err := netnsutil.Delete(n); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, "netns "+n)
	}

	var dirs []string
	if lab != "" {
		dirs = []string{filepath.Join(StateRoot, lab)}
	} else if ents, err := os.ReadDir(StateRoot); err == nil {
		for _, e := range ents {
			// Only lab directories: anything else under StateRoot is not ours
			// to judge.
			if ValidateName(e.Name()) == nil {
				dirs = append(dirs, filepath.Join(StateRoot, e.Name()))
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("read %s: %w", StateRoot, err))
	}
	for _, d := range dirs {
		if _, err := os.Lstat(d); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", d, err))
			continue
		}
		removed = append(removed, "state "+d)
	}
	sort.Strings(removed)
	return removed, errors.Join(errs...)
}

// argv0 reads a process's argv[0] from /proc/<pid>/cmdline; "" for kernel
// threads and vanished processes.
func argv0(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return ""
	}
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// killByTitle SIGKILLs every process whose argv[0] starts with prefix and
// waits until they are gone (or zombies, which hold no namespaces).
func killByTitle(ctx context.Context, prefix string) ([]string, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("read /proc: %w", err)
	}
	self := os.Getpid()
	var killed []string
	var pids []int
	var errs []error
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		title := argv0(pid)
		if !strings.HasPrefix(title, prefix) {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			if errors.Is(err, syscall.ESRCH) {
				continue
			}
			errs = append(errs, fmt.Errorf("kill %d (%s): %w", pid, title, err))
			continue
		}
		pids = append(pids, pid)
		killed = append(killed, fmt.Sprintf("process %d %s", pid, title))
	}
	// SIGKILL is asynchronous; wait so the namespaces deleted next are not
	// still held by a dying process. Bounded: a process stuck in the kernel
	// must not hang cleanup forever.
	wait := time.NewTimer(5 * time.Second)
	defer wait.Stop()
	for _, pid := range pids {
		for alive(pid) {
			select {
			case <-ctx.Done():
				return killed, errors.Join(append(errs, ctx.Err())...)
			case <-wait.C:
				return killed, errors.Join(append(errs, fmt.Errorf("process %d still alive 5s after SIGKILL", pid))...)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	return killed, errors.Join(errs...)
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name, which may itself
	// hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	return b[i+2] != 'Z'
}
