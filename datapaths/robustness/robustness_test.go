package robustness_test

import (
	"testing"

	"proxyrig/datapaths"
	"proxyrig/datapaths/robustness"

	// The datapaths under test register themselves in init.
	_ "proxyrig/datapaths/ebpf"
	_ "proxyrig/datapaths/iptables"
	_ "proxyrig/datapaths/ipvs"
	_ "proxyrig/datapaths/nftables"
)

// TestFaults injects every fault kind of every registered datapath into a
// real sync and checks real packets (robustness.RunFaults). Datapaths
// this kernel cannot run (IPVS here) are skipped with their reason; IPVS
// runs it inside the VM from its own package (TestIntegrationRobustness).
func TestFaults(t *testing.T) {
	for _, dp := range datapaths.Names() {
		t.Run(dp, func(t *testing.T) { robustness.RunFaults(t, dp) })
	}
}

// TestConvergence is the short form of the convergence property: a few
// seeded sequences per datapath. The nightly build runs longer ones.
func TestConvergence(t *testing.T) {
	for _, dp := range datapaths.Names() {
		t.Run(dp, func(t *testing.T) {
			robustness.RunConvergence(t, dp, robustness.ConvergenceOptions{
				Seeds: []uint64{1, 2, 3}, Changes: 8, Services: 6, EndpointsPerService: 3,
			})
		})
	}
}
