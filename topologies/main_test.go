package topologies

import (
	"os"
	"testing"
	"time"
)

// standInEnv makes the test binary act as a leftover process instead of
// running tests: TestCleanupAfterCrash re-executes itself under a lab's
// supervisor title, so the stand-in depends on no other binary on the
// machine (a multi-call coreutils or busybox `sleep` would read the odd
// argv[0] as an applet name and exit at once).
const standInEnv = "PROXYRIG_TEST_STANDIN"

func TestMain(m *testing.M) {
	if os.Getenv(standInEnv) == "1" {
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	os.Exit(m.Run())
}
