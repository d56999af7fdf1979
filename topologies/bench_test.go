package topologies

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"proxyrig/model"
)

// BenchmarkBuild measures Build+Close of a three-node lab with one pod per
// endpoint: the cost a benchmark or conformance run pays per lab.
func BenchmarkBuild(b *testing.B) {
	requireRoot(b)
	for _, pods := range []int{10, 100} {
		c := &model.Cluster{Nodes: []*model.Node{mkNode("node-a"), mkNode("node-b"), mkNode("node-c")}}
		var eps []*model.Endpoint
		for i := range pods {
			ip := addOffset(netip.MustParseAddr("198.18.64.0"), 10+i)
			eps = append(eps, mkEP(ip.String(), 8080, fmt.Sprintf("pod-%d", i), c.Nodes[i%3].Name))
		}
		c.Services = []*model.Service{mkSvc("web", []string{"198.19.0.10"}, mkPort(model.TCP, 80, eps...))}
		b.Run(fmt.Sprintf("pods=%d", pods), func(b *testing.B) {
			for b.Loop() {
				l, err := Build(context.Background(), c, Options{Name: labName(b, "bench")})
				if err != nil {
					b.Fatal(err)
				}
				if err := l.Close(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
