package conformance

import (
	"net/netip"
	"testing"

	"proxyrig/datapaths/flowtest"
	"proxyrig/topologies"
)

// TestAddressPlanAgrees checks that the tables' copy of the lab's address
// plan (flowtest keeps one to avoid importing the lab) matches the lab's.
// It needs no root.
func TestAddressPlanAgrees(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"ClusterCIDR", flowtest.ClusterCIDR, topologies.ClusterCIDR},
		{"ClusterCIDR6", flowtest.ClusterCIDR6, topologies.ClusterCIDR6},
		{"ServiceCIDR", flowtest.ServiceCIDR, topologies.ServiceCIDR},
		{"ServiceCIDR6", flowtest.ServiceCIDR6, topologies.ServiceCIDR6},
		{"ClientPodBase", flowtest.ClientPodBase, topologies.ClientPodBase},
		{"ExternalBase", flowtest.ExternalBase, topologies.ExternalBase},
		{"ClientPodBase6", flowtest.ClientPodBase6, topologies.ClientPodBase6},
		// topologies numbers external client i as ExternalBase6 + 200 + i.
		{"ExternalBase6", flowtest.ExternalBase6, plus(topologies.ExternalBase6, 200)},
	} {
		if c.got != c.want {
			t.Errorf("flowtest.%s = %v, topologies.%s = %v", c.name, c.got, c.name, c.want)
		}
	}
}

func plus(a netip.Addr, n int) netip.Addr {
	for range n {
		a = a.Next()
	}
	return a
}
