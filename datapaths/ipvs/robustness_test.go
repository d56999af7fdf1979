package ipvs

import (
	"testing"

	"proxyrig/datapaths/robustness"
)

// TestIntegrationRobustnessFaults runs the datapath-generic fault
// scenario (every fault kind of this datapath against real packets, then
// an out-of-band ipvsadm -C) on a kernel with IPVS: natively where the
// host has it, otherwise inside the VM through TestInVM, whose pattern
// selects it.
func TestIntegrationRobustnessFaults(t *testing.T) {
	requireIPVS(t)
	robustness.RunFaults(t, Name)
}

// TestIntegrationRobustnessConvergence is the short convergence property
// for this datapath (see datapaths/robustness): one seed, as the emulated
// CPU of the VM makes every sync slow and TestInVM shares one test
// timeout with the package's other privileged tests.
func TestIntegrationRobustnessConvergence(t *testing.T) {
	requireIPVS(t)
	robustness.RunConvergence(t, Name, robustness.ConvergenceOptions{
		Seeds: []uint64{1}, Changes: 6, Services: 4, EndpointsPerService: 3,
	})
}
