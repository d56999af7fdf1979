package topologies

import (
	"net/netip"
	"testing"

	"proxyrig/datapaths"
	"proxyrig/model"
)

// TestPlanNoLocalTrafficDetector: asking for no detector keeps the
// datapath's ClusterCIDRs empty instead of the address plan's pod range,
// while the default still fills it in (MASQ-02, ETP-02 "no
// LocalTrafficDetector" variants).
func TestPlanNoLocalTrafficDetector(t *testing.T) {
	c := &model.Cluster{Services: []*model.Service{
		mkSvc("web", []string{"198.19.0.10"}, mkPort(model.TCP, 80, mkEP("198.18.64.10", 8080, "web-0", ""))),
	}}
	p, err := makePlan(c, Options{Name: "t", Proxy: datapaths.ProxyConfig{NoLocalTrafficDetector: true}}, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.proxy.ClusterCIDRs) != 0 {
		t.Errorf("NoLocalTrafficDetector: ClusterCIDRs = %v, want none", p.proxy.ClusterCIDRs)
	}
	if want := []netip.Prefix{ServiceCIDR}; len(p.proxy.ServiceCIDRs) != 1 || p.proxy.ServiceCIDRs[0] != want[0] {
		t.Errorf("NoLocalTrafficDetector: ServiceCIDRs = %v, want the default %v", p.proxy.ServiceCIDRs, want)
	}
	p, err = makePlan(c, Options{Name: "t"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.proxy.ClusterCIDRs) != 1 || p.proxy.ClusterCIDRs[0] != ClusterCIDR {
		t.Errorf("default: ClusterCIDRs = %v, want [%v]", p.proxy.ClusterCIDRs, ClusterCIDR)
	}
}
