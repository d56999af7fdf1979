package ipvs

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"proxyrig/topologies/vm"
)

// vmModules are loaded in the guest before the tests run: IPVS with every
// scheduler this datapath offers, and dummy interfaces. Everything else
// (ip_set, xt_set, xt_ipvs, veth, the nat tables) the kernel autoloads.
var vmModules = []string{"ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_lc", "ip_vs_sh", "ip_vs_mh", "dummy", "nf_conntrack"}

// vmTests selects what TestInVM runs in the guest: every test that needs
// a kernel with IPVS.
const vmTests = "^(TestIntegration|TestLab)"

// TestInVM runs this package's privileged tests inside the VM runner when
// the host kernel lacks IPVS: it boots Debian's kernel once and re-executes
// this very test binary there (the host's /tmp, where `go test` leaves it,
// is visible in the guest), then requires every one of them to have run
// and passed. Timings inside are emulated; nothing here asserts on them.
func TestInVM(t *testing.T) {
	if vm.Emulated() {
		t.Skip("already inside the VM runner")
	}
	requireRoot(t)
	if checkIPVS() == nil {
		t.Skip("this kernel has IPVS: the privileged tests ran natively, no VM needed")
	}
	skipOrFatal := func(reason string) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatal(reason + "; CI=true, so this must not be skipped (ci/install-deps.sh installs qemu-system-x86, linux-image-amd64, busybox-static)")
		}
		t.Skip(reason)
	}
	if err := vm.Check(); err != nil {
		skipOrFatal(err.Error())
	}
	if _, err := vm.DefaultKernel(); err != nil {
		skipOrFatal(err.Error())
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	timeout := 15 * time.Minute
	if d, ok := t.Deadline(); ok {
		timeout = time.Until(d) - 30*time.Second
	}
	inner := timeout - 30*time.Second
	argv := []string{exe, "-test.run", vmTests, "-test.v", "-test.count=1", "-test.timeout=" + inner.String()}

	// Stream the guest's output into the test log as it comes, and keep
	// the result lines.
	pr, pw := io.Pipe()
	var mu sync.Mutex
	results := map[string]string{} // test -> PASS/FAIL/SKIP
	var lines []string
	done := make(chan struct{})
	resultRE := regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): (\S+)`)
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			t.Log("vm: " + line)
			mu.Lock()
			lines = append(lines, line)
			if m := resultRE.FindStringSubmatch(line); m != nil {
				results[m[2]] = m[1]
			}
			mu.Unlock()
		}
	}()
	start := time.Now()
	code, err := vm.Run(context.Background(), vm.Config{Modules: vmModules, Timeout: timeout}, argv, pw, pw)
	pw.Close()
	<-done
	t.Logf("VM run took %s (boot included; emulated, so about 6x slower than native)", time.Since(start).Round(time.Second))
	if err != nil {
		if errors.Is(err, vm.ErrNotSupported) {
			skipOrFatal(err.Error())
		}
		t.Fatalf("VM run: %v", err)
	}

	mu.Lock()
	defer mu.Unlock()
	var ran []string
	for name, res := range results {
		if strings.Contains(name, "/") {
			continue // subtests are reported through their parent
		}
		ran = append(ran, name)
		if res != "PASS" {
			t.Errorf("%s: %s inside the VM, whose kernel has IPVS", name, res)
		}
	}
	for _, want := range vmTestNames(t) {
		if _, ok := results[want]; !ok {
			t.Errorf("%s did not run inside the VM", want)
		}
	}
	if code != 0 {
		t.Errorf("the test binary exited %d inside the VM", code)
	}
	t.Logf("ran inside the VM: %s", strings.Join(ran, ", "))
}

// vmTestNames lists the top-level tests vmTests selects, read from this
// package's test files.
func vmTestNames(t *testing.T) []string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^func (Test(?:Integration|Lab)\w*)\(t \*testing\.T\)`)
	var names []string
	for _, f := range []string{"integration_test.go", "lab_test.go"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllSubmatch(b, -1) {
			names = append(names, string(m[1]))
		}
	}
	return names
}
