package leakcheck

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// selfTestEnv makes the test binary run as the subject of TestReportsLeaks
// instead of running the tests normally.
const selfTestEnv = "LEAKCHECK_SELFTEST"

func TestMain(m *testing.M) {
	if os.Getenv(selfTestEnv) != "" {
		Settle = 300 * time.Millisecond
	}
	os.Exit(Main(m))
}

var hold = make(chan struct{})

// TestLeaky leaks a goroutine and a descriptor, when run as a subject.
func TestLeaky(t *testing.T) {
	if os.Getenv(selfTestEnv) != "leak" {
		return // only does something as the subject of TestReportsLeaks
	}
	go func() { <-hold }()
	f, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	leakedFile = f // reachable: a real leak, not one a GC would close
}

var leakedFile *os.File

// TestTidy starts a goroutine and opens a file, and ends both (a little
// later, which the settle loop must wait for).
func TestTidy(t *testing.T) {
	if os.Getenv(selfTestEnv) != "tidy" {
		return // only does something as the subject of TestReportsLeaks
	}
	f, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		f.Close()
	}()
}

func runSubject(t *testing.T, mode, test string) (string, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), selfTestEnv+"="+mode)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestReportsLeaks(t *testing.T) {
	out, err := runSubject(t, "leak", "TestLeaky")
	if err == nil {
		t.Fatalf("a binary that leaks exited 0:\n%s", out)
	}
	for _, want := range []string{"1 goroutine(s) still running", "leakcheck.TestLeaky", "file descriptor(s) still open", "-> /dev/null"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}

	out, err = runSubject(t, "tidy", "TestTidy")
	if err != nil {
		t.Errorf("a binary that cleans up (a little late) failed: %v\n%s", err, out)
	}
}

func TestOffSwitch(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run", "^TestLeaky$", "-test.count=1")
	cmd.Env = append(os.Environ(), selfTestEnv+"=leak", "PROXYRIG_LEAKCHECK=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("PROXYRIG_LEAKCHECK=0 still failed the binary: %v\n%s", err, out)
	}
}
