package topologies

import (
	"os"
	"testing"
	"time"

	"proxyrig/internal/leakcheck"
)

// standInEnv makes the test binary act as a leftover process instead of
// running tests: TestCleanupAfterCrash re-executes itself under a lab's
// supervisor title, so the stand-in depends on no other binary on the
// machine (a multi-call coreutils or busybox `sleep` would read the odd
// argv[0] as an applet name and exit at once).
const standInEnv = "PROXYRIG_TEST_STANDIN"

// TestMain also fails the binary when the tests leave goroutines (echo or
// health-check servers) or descriptors (namespace handles, sockets) behind
// after every lab was closed.
func TestMain(m *testing.M) {
	if os.Getenv(standInEnv) == "1" {
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	os.Exit(leakcheck.Main(m))
}
