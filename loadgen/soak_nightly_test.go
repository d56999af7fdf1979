//go:build nightly

package loadgen

import (
	"testing"
	"time"
)

// TestSoakLong is TestSoakShort for 10 minutes, for the nightly job: slow
// leaks (a descriptor every few hundred syncs) only show over a long run.
func TestSoakLong(t *testing.T) { soak(t, 10*time.Minute) }
