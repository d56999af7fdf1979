package topologies_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"os"
	"testing"
	"time"

	"proxyrig/internal/netnsutil"
	"proxyrig/model"
	"proxyrig/topologies"
)

func TestScaleEndpointName(t *testing.T) {
	if got := topologies.ScaleEndpointName(netip.MustParseAddrPort("198.18.64.5:8000")); got != "ep-198-18-64-5-8000" {
		t.Fatalf("got %q", got)
	}
}

func scaleCluster(eps ...*model.Endpoint) *model.Cluster {
	svc := &model.Service{
		Name: model.ServiceName{Namespace: "t", Name: "web"}, Type: model.ClusterIP,
		ClusterIPs:            []netip.Addr{netip.MustParseAddr("198.19.0.10")},
		ExternalTrafficPolicy: model.PolicyCluster, InternalTrafficPolicy: model.PolicyCluster,
		Ports: []*model.ServicePort{{Protocol: model.TCP, Port: 80, TargetPort: "8000", Endpoints: eps}},
	}
	dns := &model.Service{
		Name: model.ServiceName{Namespace: "t", Name: "dns"}, Type: model.ClusterIP,
		ClusterIPs:            []netip.Addr{netip.MustParseAddr("198.19.0.11")},
		ExternalTrafficPolicy: model.PolicyCluster, InternalTrafficPolicy: model.PolicyCluster,
		Ports: []*model.ServicePort{{Protocol: model.UDP, Port: 53, TargetPort: "9000", Endpoints: []*model.Endpoint{
			{IP: netip.MustParseAddr("198.18.64.11"), Port: 9000, NodeName: "node-00", Ready: true, Serving: true},
		}}},
	}
	return &model.Cluster{
		Services: []*model.Service{dns, svc},
		Nodes: []*model.Node{
			{Name: "node-00", Addresses: []netip.Addr{netip.MustParseAddr("198.18.0.11")}},
			{Name: "node-01", Addresses: []netip.Addr{netip.MustParseAddr("198.18.0.12")}},
		},
	}
}

// TestScaleLab builds a two-node scale lab without a datapath and checks
// the backends from a client pod: every address of a node's prefixes
// answers, named after the address and port it was reached on, on TCP,
// UDP and the rr port; blast datagrams are counted and not answered; and
// Close leaves nothing behind.
func TestScaleLab(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root: creates network namespaces, veths and bridges")
		}
		t.Skip("needs root: creates network namespaces, veths and bridges")
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	name := "scale" + hex.EncodeToString(b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := scaleCluster(
		&model.Endpoint{IP: netip.MustParseAddr("198.18.64.10"), Port: 8000, NodeName: "node-00", Ready: true, Serving: true},
		&model.Endpoint{IP: netip.MustParseAddr("198.18.96.20"), Port: 8001, NodeName: "node-01", Ready: true, Serving: true},
	)
	backends := map[string][]netip.Prefix{
		"node-00": {netip.MustParsePrefix("198.18.64.0/24")},
		"node-01": {netip.MustParsePrefix("198.18.96.0/24")},
	}
	lab, err := topologies.BuildScale(ctx, c, topologies.ScaleOptions{Name: name, Backends: backends})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(context.Background()); err != nil {
			t.Error(err)
		}
		if left, _ := netnsutil.List(topologies.Prefix + name + "-"); len(left) > 0 {
			t.Errorf("namespaces left behind: %v", left)
		}
	})
	client := lab.ClientNS("node-00")
	clientIP := lab.ClientIP("node-00")
	for _, tc := range []struct{ proto, dst string }{
		{"TCP", "198.18.64.10:8000"},
		{"TCP", "198.18.96.20:8001"}, // across nodes
		{"UDP", "198.18.64.11:9000"},
		{"TCP", "198.18.64.200:8000"}, // no endpoint has it: still answers
		{"TCP", "198.18.96.1:7"},      // the rr server
	} {
		dst := netip.MustParseAddrPort(tc.dst)
		res := topologies.Probe(ctx, client, topologies.ProbeSpec{Proto: tc.proto, Dst: dst})
		if res.Outcome != topologies.Answered {
			t.Errorf("%s %s: %s %s", tc.proto, dst, res.Outcome, res.Err)
			continue
		}
		if want := topologies.ScaleEndpointName(dst); res.Endpoint != want {
			t.Errorf("%s %s answered as %q, want %q", tc.proto, dst, res.Endpoint, want)
		}
		if res.SeenSource.Addr() != clientIP {
			t.Errorf("%s %s saw source %s, want the client %s", tc.proto, dst, res.SeenSource, clientIP)
		}
	}
	// Outside every prefix: nobody is there.
	if res := topologies.Probe(ctx, client, topologies.ProbeSpec{Dst: netip.MustParseAddrPort("198.18.80.1:8000"), Timeout: 300 * time.Millisecond}); res.Outcome == topologies.Answered {
		t.Errorf("an address outside the backend prefixes answered: %+v", res)
	}
	before := lab.Counters()
	res := topologies.Probe(ctx, client, topologies.ProbeSpec{Proto: "UDP", Dst: netip.MustParseAddrPort("198.18.64.11:9000"), Payload: []byte("blast\n"), Timeout: 200 * time.Millisecond})
	if res.Outcome == topologies.Answered {
		t.Errorf("a blast datagram was answered")
	}
	deadline := time.Now().Add(2 * time.Second)
	for lab.Counters().UDPBlast == before.UDPBlast && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := lab.Counters().UDPBlast - before.UDPBlast; got != 1 {
		t.Errorf("blast counter moved by %d, want 1", got)
	}
	// An endpoint outside its node's prefixes is refused before anything
	// changes.
	bad := scaleCluster(&model.Endpoint{IP: netip.MustParseAddr("198.18.96.30"), Port: 8000, NodeName: "node-00", Ready: true, Serving: true})
	if _, err := lab.Prepare(bad); err == nil {
		t.Error("Prepare accepted an endpoint outside its node's backend prefixes")
	}
	if _, err := lab.Prepare(c); err != nil {
		t.Errorf("Prepare of the built cluster: %v", err)
	}
}
