package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// guestHelperEnv makes this test binary, started inside the guest by
// TestGuestKernelFeatures, run guestChecks instead of the tests.
const guestHelperEnv = "PROXYRIG_VM_TEST_GUEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(guestHelperEnv) == "1" {
		os.Exit(guestChecks())
	}
	os.Exit(m.Run())
}

// requireVM skips when this machine cannot boot the VM, except under
// CI=true, where ci/install-deps.sh has installed everything it needs.
func requireVM(t *testing.T) {
	t.Helper()
	reason := ""
	if Emulated() {
		// go test -exec 'proxyrig vm --' on this package: a VM inside the
		// emulated VM would take minutes per boot.
		t.Skip("already inside the VM runner's guest; not nesting emulation")
	}
	if os.Geteuid() != 0 {
		reason = "not root: the VM shares the whole root file system with qemu and reads /boot/vmlinuz-*"
	} else if err := Check(); err != nil {
		reason = err.Error()
	} else if _, err := DefaultKernel(); err != nil {
		reason = err.Error()
	}
	if reason == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(reason + "; CI=true, so this must not be skipped (ci/install-deps.sh installs qemu-system-x86, linux-image-amd64, busybox-static)")
	}
	t.Skip(reason)
}

// watchRun records the name and results directory of the runs a test
// makes, and checks at its end that none left a process or directory.
func watchRun(t *testing.T) {
	t.Helper()
	var names, dirs []string
	testHookStarted = func(name, dir string) { names = append(names, name); dirs = append(dirs, dir) }
	t.Cleanup(func() {
		testHookStarted = nil
		if len(names) == 0 {
			t.Error("Run never started qemu")
		}
		for _, name := range names {
			for _, e := range mustReadDir(t, "/proc") {
				if argv := cmdline(atoiOr(e.Name())); isRunnerQemu(argv, name) && processAlive(atoiOr(e.Name())) {
					t.Errorf("qemu %s (pid %s) still running after Run returned", name, e.Name())
				}
			}
		}
		for _, d := range dirs {
			if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("results directory %s left behind (stat: %v)", d, err)
			}
		}
	})
}

func mustReadDir(t *testing.T, dir string) []os.DirEntry {
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ents
}

func atoiOr(s string) int {
	n := 0
	for _, r := range s {
		if r < '0' || r > '9' {
			return -1
		}
		n = n*10 + int(r-'0')
	}
	return n
}

// TestRunExitStatusAndOutput boots the VM once and checks that what the
// command prints on each stream and its exit status come back.
func TestRunExitStatusAndOutput(t *testing.T) {
	requireVM(t)
	watchRun(t)
	var stdout, stderr bytes.Buffer
	code, err := Run(context.Background(), Config{Timeout: 5 * time.Minute},
		[]string{"sh", "-c", `echo "to stdout in $PWD"; echo "to stderr as $PROXYRIG_EMULATED" >&2; exit 7`},
		&stdout, &stderr)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if code != 7 {
		t.Errorf("exit status %d, want 7", code)
	}
	wd, _ := os.Getwd()
	if got, want := stdout.String(), "to stdout in "+wd+"\n"; got != want {
		t.Errorf("stdout %q, want %q", got, want)
	}
	if got, want := stderr.String(), "to stderr as 1\n"; got != want {
		t.Errorf("stderr %q, want %q", got, want)
	}
}

// TestGuestKernelFeatures runs this test binary inside the guest (it lies
// under /tmp, which the guest sees through its overlay), where guestChecks
// probes what the host kernel lacks: IPVS after `modprobe ip_vs`, and SCTP
// sockets, dummy links and netem, which the guest kernel's module
// autoloader must load by itself — it works only after switch_root.
func TestGuestKernelFeatures(t *testing.T) {
	requireVM(t)
	watchRun(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ver, err := DefaultKernel()
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code, err := Run(context.Background(), Config{
		Timeout: 5 * time.Minute,
		Modules: []string{"ip_vs"},
		Env:     map[string]string{guestHelperEnv: "1"},
	}, []string{self}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	t.Logf("guest stdout:\n%s", stdout.String())
	if code != 0 {
		t.Fatalf("guest checks exited %d; stderr:\n%s", code, stderr.String())
	}
	for _, want := range []string{
		"kernel " + ver,
		"emulated 1",
		"root read-only",
		"tmp writable",
		"ipvs /proc/net/ip_vs",
		"ipvs genetlink family",
		"sctp socket",
		"dummy link",
		"netem qdisc",
	} {
		if !strings.Contains(stdout.String(), "ok "+want+"\n") {
			t.Errorf("guest did not report %q", "ok "+want)
		}
	}
}

// TestRunStops checks that a timeout and a cancelled context both kill
// qemu and remove the results directory, long before the guest could
// finish the command.
func TestRunStops(t *testing.T) {
	requireVM(t)
	t.Run("timeout", func(t *testing.T) {
		watchRun(t)
		_, err := Run(context.Background(), Config{Timeout: 2 * time.Second}, []string{"sleep", "600"}, nil, nil)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Run = %v, want context.DeadlineExceeded", err)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		watchRun(t)
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(2*time.Second, cancel)
		_, err := Run(ctx, Config{}, []string{"sleep", "600"}, nil, nil)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
	})
}

// guestChecks runs inside the guest. It prints "ok <what>" for each
// capability on stdout and what failed on stderr, and returns the exit
// status. It refuses to run anywhere but in the VM, because it adds links.
func guestChecks() int {
	failed := false
	ok := func(what string, err error) {
		if err != nil {
			fmt.Fprintf(os.Stderr, "FAIL %s: %v\n", what, err)
			failed = true
			return
		}
		fmt.Printf("ok %s\n", what)
	}
	if !Emulated() {
		fmt.Fprintln(os.Stderr, "not inside the VM runner's guest; refusing to run")
		return 2
	}
	ok("emulated 1", nil)
	var uts unix.Utsname
	unix.Uname(&uts)
	if rel := unix.ByteSliceToString(uts.Release[:]); rel == os.Getenv(EnvKernel) {
		ok("kernel "+rel, nil)
	} else {
		ok("kernel "+os.Getenv(EnvKernel), fmt.Errorf("uname -r says %s", rel))
	}
	f, err := os.Create("/prx-vm-write-test")
	if err == nil {
		f.Close()
		os.Remove("/prx-vm-write-test")
		err = errors.New("created a file in / (the host's root!)")
	} else if errors.Is(err, unix.EROFS) {
		err = nil
	}
	ok("root read-only", err)
	ok("tmp writable", os.WriteFile(filepath.Join(os.TempDir(), "prx-vm-tmp-test"), []byte("x"), 0o644))

	_, err = os.ReadFile("/proc/net/ip_vs")
	ok("ipvs /proc/net/ip_vs", err)
	_, err = netlink.GenlFamilyGet("IPVS")
	ok("ipvs genetlink family", err)

	// Everything below happens in a network namespace of its own on a
	// thread that is never returned to the runtime, so not even the
	// guest's root namespace changes.
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ok("netns", err)
			return
		}
		if lo, err := netlink.LinkByName("lo"); err != nil || netlink.LinkSetUp(lo) != nil {
			ok("loopback up", fmt.Errorf("lo: %v", err))
			return
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP)
		if err == nil {
			err = unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
			unix.Close(fd)
		}
		ok("sctp socket", err)
		dummy := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "prxdummy0"}}
		err = netlink.LinkAdd(dummy)
		if err == nil {
			err = netlink.LinkSetUp(dummy)
		}
		ok("dummy link", err)
		if err == nil {
			link, lerr := netlink.LinkByName("prxdummy0")
			if lerr != nil {
				ok("netem qdisc", lerr)
				return
			}
			netem := netlink.NewNetem(netlink.QdiscAttrs{LinkIndex: link.Attrs().Index, Handle: netlink.MakeHandle(1, 0), Parent: netlink.HANDLE_ROOT},
				netlink.NetemQdiscAttrs{Latency: 1000})
			ok("netem qdisc", netlink.QdiscAdd(netem))
		}
	}()
	<-done
	if failed {
		return 1
	}
	return 0
}
