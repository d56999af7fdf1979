package ebpf

import (
	"fmt"
	"testing"

	"proxyrig/datapaths"
	"proxyrig/model"
)

// scaleView is n ClusterIP Services with five remote endpoints each.
func scaleView(n int) *datapaths.NodeView {
	var svcs []*model.Service
	for i := range n {
		var eps []*model.Endpoint
		for j := range 5 {
			k := i*5 + j
			eps = append(eps, ep(fmt.Sprintf("198.18.%d.%d", 64+k/250%60, 1+k%250), 8080, nodeB))
		}
		svcs = append(svcs, service(fmt.Sprintf("svc-%05d", i), model.ClusterIP, fmt.Sprintf("198.19.%d.%d", i/250, 1+i%250),
			port("http", model.TCP, 80, 0, eps...)))
	}
	return view(svcs...)
}

// BenchmarkRenderAndPlan measures proxyrig's own share of a sync: render
// the maps and diff them, no kernel involved. "full" diffs against empty
// maps; "one-change" against the previous state after one endpoint moved,
// which is what an incremental sync costs.
func BenchmarkRenderAndPlan(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		v := scaleView(n)
		b.Run(fmt.Sprintf("services=%d/full", n), func(b *testing.B) {
			for b.Loop() {
				want, _, err := render(v, nil)
				if err != nil {
					b.Fatal(err)
				}
				planSync(want, &desired{}, nil)
			}
		})
		b.Run(fmt.Sprintf("services=%d/one-change", n), func(b *testing.B) {
			prev, ids, err := render(v, nil)
			if err != nil {
				b.Fatal(err)
			}
			v2 := scaleView(n)
			v2.Cluster.Services[0].Ports[0].Endpoints = v2.Cluster.Services[0].Ports[0].Endpoints[1:]
			for b.Loop() {
				want, _, err := render(v2, ids)
				if err != nil {
					b.Fatal(err)
				}
				if p := planSync(want, prev, prev); len(p.changed) != 1 {
					b.Fatalf("%d Services changed, want 1", len(p.changed))
				}
			}
		})
	}
}
