//go:build nightly

package robustness_test

import (
	"testing"

	"proxyrig/datapaths"
	"proxyrig/datapaths/robustness"
)

// TestConvergenceNightly runs the convergence property with many seeds
// and long sequences (go test -tags nightly).
func TestConvergenceNightly(t *testing.T) {
	seeds := make([]uint64, 40)
	for i := range seeds {
		seeds[i] = uint64(1000 + i)
	}
	for _, dp := range datapaths.Names() {
		t.Run(dp, func(t *testing.T) {
			robustness.RunConvergence(t, dp, robustness.ConvergenceOptions{
				Seeds: seeds, Changes: 60, Services: 30, EndpointsPerService: 5,
			})
		})
	}
}
