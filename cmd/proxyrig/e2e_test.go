package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"proxyrig/internal/netnsutil"
	"proxyrig/topologies"
)

// These tests drive the real binary the way the README tells a newcomer to:
// lab up, nc from a client namespace, lab apply, lab down, cleanup.

var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "prx-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "proxyrig")
	out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build proxyrig: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true but not root: the lab tests must run as root in CI")
		}
		t.Skip("needs root to create network namespaces")
	}
	for _, bin := range []string{"iptables-legacy-restore", "nc"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s missing although ci/install-deps.sh installs it", bin)
			}
			t.Skipf("%s not installed (run ci/install-deps.sh)", bin)
		}
	}
}

func run(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

const e2eCluster = `
apiVersion: v1
kind: Node
metadata:
  name: node-a
  labels: {topology.kubernetes.io/zone: zone-a}
status:
  addresses: [{type: InternalIP, address: 198.18.0.11}]
---
apiVersion: v1
kind: Node
metadata: {name: node-b}
status:
  addresses: [{type: InternalIP, address: 198.18.0.12}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: NodePort
  clusterIP: 198.19.0.10
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: [198.18.64.10]
  nodeName: node-a
  targetRef: {kind: Pod, name: web-a}
%s
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: default}
spec:
  clusterIP: 198.19.0.20
  ports: [{name: http, port: 80, targetPort: 8080}]
`

const e2eSecondEndpoint = `- addresses: [198.18.65.10]
  nodeName: node-b
  targetRef: {kind: Pod, name: web-b}`

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cluster.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// leftovers lists everything with the lab's prefix: namespaces, root links,
// processes, state.
func leftovers(t *testing.T, lab string) []string {
	t.Helper()
	prefix := topologies.Prefix + lab + "-"
	var out []string
	names, _ := netnsutil.List(prefix)
	out = append(out, names...)
	links, _ := exec.Command("ip", "-o", "link", "show").Output()
	for _, l := range strings.Split(string(links), "\n") {
		if strings.Contains(l, ": prx") {
			out = append(out, "root link: "+l)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if strings.HasPrefix(string(b), prefix) {
			out = append(out, "process "+p)
		}
	}
	if _, err := os.Stat(filepath.Join(topologies.StateRoot, lab)); err == nil {
		out = append(out, "state dir")
	}
	return out
}

func TestLabLifecycleAsAUserWould(t *testing.T) {
	requireRoot(t)
	const lab = "e2elife"
	t.Cleanup(func() { run(t, "", "cleanup", "--name", lab) })
	file := writeFile(t, fmt.Sprintf(e2eCluster, ""))

	// 1. lab up prints the lab as JSON.
	stdout, stderr, err := run(t, "", "lab", "up", "--datapath", "iptables", "--name", lab, "-f", file)
	if err != nil {
		t.Fatalf("lab up: %v\nstderr: %s", err, stderr)
	}
	var info topologies.Info
	if err := json.Unmarshal([]byte(stdout), &info); err != nil {
		t.Fatalf("lab up printed no JSON: %v\n%s", err, stdout)
	}
	var clientNS, externalNS string
	for _, c := range info.Clients {
		if c.Kind == "pod" && c.Node == "node-a" {
			clientNS = c.Netns
		}
		if c.Kind == "external" {
			externalNS = c.Netns
		}
	}
	if clientNS == "" || externalNS == "" {
		t.Fatalf("lab JSON lacks a client pod for node-a or an external client: %+v", info.Clients)
	}

	// 2. nc from the client pod to the ClusterIP gets an endpoint's echo line.
	out, err := exec.Command("ip", "netns", "exec", clientNS, "nc", "-w", "3", "198.19.0.10", "80").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "web-a ") {
		t.Fatalf("nc to ClusterIP: err=%v out=%q", err, out)
	}
	// The pod's own address is preserved through a ClusterIP.
	if !strings.Contains(string(out), " 198.18.127.") {
		t.Errorf("backend should see the client pod's IP, got %q", out)
	}

	// 3. The external client reaches the NodePort; the echo line shows the
	// SNAT'd source, a node address.
	out, err = exec.Command("ip", "netns", "exec", externalNS, "nc", "-w", "3", "198.18.0.12", "30080").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "web-a ") {
		t.Fatalf("nc to NodePort via node-b: err=%v out=%q", err, out)
	}
	seen := strings.Fields(string(out))[1]
	src, err := netip.ParseAddrPort(seen)
	if err != nil || src.Addr() != netip.MustParseAddr("198.18.0.12") {
		t.Errorf("NodePort traffic via node-b should be masqueraded to 198.18.0.12, backend saw %q", seen)
	}

	// 4. A Service with no endpoints is refused at once.
	res := topologies.Probe(context.Background(), netnsutil.NS{Name: clientNS},
		topologies.ProbeSpec{Proto: "TCP", Dst: netip.MustParseAddrPort("198.19.0.20:80"), Timeout: 3 * time.Second})
	if res.Outcome != topologies.Refused {
		t.Errorf("Service without endpoints: want refused, got %s (%s)", res.Outcome, res.Err)
	}

	// 5. lab apply of a changed file takes effect: a second endpoint appears.
	file2 := writeFile(t, fmt.Sprintf(e2eCluster, e2eSecondEndpoint))
	if _, stderr, err := run(t, "", "lab", "apply", "--name", lab, "-f", file2); err != nil {
		t.Fatalf("lab apply: %v\n%s", err, stderr)
	}
	seenNames := map[string]bool{}
	for i := 0; i < 60 && len(seenNames) < 2; i++ {
		r := topologies.Probe(context.Background(), netnsutil.NS{Name: clientNS},
			topologies.ProbeSpec{Proto: "TCP", Dst: netip.MustParseAddrPort("198.19.0.10:80")})
		if r.Outcome == topologies.Answered {
			seenNames[r.Endpoint] = true
		}
	}
	if !seenNames["web-a"] || !seenNames["web-b"] {
		t.Errorf("after apply, want both web-a and web-b to answer, saw %v", seenNames)
	}

	// Bad input to apply changes nothing and says what is wrong.
	bad := writeFile(t, strings.Replace(fmt.Sprintf(e2eCluster, ""), "port: 80,", "port: 80000,", 1))
	if _, stderr, err := run(t, "", "lab", "apply", "--name", lab, "-f", bad); err == nil || !strings.Contains(stderr, "port") {
		t.Errorf("apply of a bad file should fail naming the field; err=%v stderr=%s", err, stderr)
	}

	// status lists it.
	stdout, _, err = run(t, "", "lab", "status")
	if err != nil || !strings.Contains(stdout, lab) {
		t.Errorf("lab status: err=%v out=%s", err, stdout)
	}

	// 6. lab down leaves nothing.
	if _, stderr, err := run(t, "", "lab", "down", "--name", lab); err != nil {
		t.Fatalf("lab down: %v\n%s", err, stderr)
	}
	if left := leftovers(t, lab); len(left) > 0 {
		t.Errorf("lab down left %v", left)
	}
	// A second cleanup is a no-op.
	stdout, _, err = run(t, "", "cleanup", "--name", lab)
	if err != nil || !strings.Contains(stdout, "nothing to clean up") {
		t.Errorf("second cleanup should be a no-op: err=%v out=%s", err, stdout)
	}
}

func TestBadYAMLCreatesNothing(t *testing.T) {
	requireRoot(t)
	const lab = "e2ebad"
	t.Cleanup(func() { run(t, "", "cleanup", "--name", lab) })
	for name, body := range map[string]string{
		"port out of range": strings.Replace(fmt.Sprintf(e2eCluster, ""), "port: 80,", "port: 80000,", 1),
		"unparseable IP":    strings.Replace(fmt.Sprintf(e2eCluster, ""), "198.19.0.10", "198.19.0.300", 1),
		"not YAML":          "apiVersion: v1\nkind: Service\n  metadata: [",
	} {
		file := writeFile(t, body)
		_, stderr, err := run(t, "", "lab", "up", "--name", lab, "-f", file)
		if err == nil {
			t.Errorf("%s: lab up succeeded", name)
			run(t, "", "lab", "down", "--name", lab)
			continue
		}
		if !strings.Contains(stderr, file) {
			t.Errorf("%s: error should name the file %s: %s", name, file, stderr)
		}
		if left := leftovers(t, lab); len(left) > 0 {
			t.Errorf("%s: bad input left %v", name, left)
		}
	}
}

func TestInterruptDuringLabUpLeavesNothing(t *testing.T) {
	requireRoot(t)
	const lab = "e2eintr"
	t.Cleanup(func() { run(t, "", "cleanup", "--name", lab) })
	file := writeFile(t, fmt.Sprintf(e2eCluster, e2eSecondEndpoint))
	// Interrupt at a spread of points during the build.
	for _, delay := range []time.Duration{20 * time.Millisecond, 80 * time.Millisecond, 200 * time.Millisecond, 500 * time.Millisecond} {
		cmd := exec.Command(binPath, "lab", "up", "--name", lab, "-f", file)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay)
		_ = cmd.Process.Signal(syscall.SIGINT)
		_ = cmd.Wait()
		// If the build finished before the signal, the lab is legitimately
		// up: take it down like a user would.
		if _, alive := supervisorAlive(lab); alive {
			run(t, "", "lab", "down", "--name", lab)
		}
		if left := leftovers(t, lab); len(left) > 0 {
			t.Errorf("Ctrl-C after %s left %v", delay, left)
			run(t, "", "cleanup", "--name", lab)
		}
	}
}
