package iptables

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
		svcs = append(svcs, service("default", fmt.Sprintf("svc-%05d", i), model.ClusterIP,
			addrs(fmt.Sprintf("198.19.%d.%d", i/250, 1+i%250)), port("http", model.TCP, 80, 0, eps...)))
	}
	return view(svcs...)
}

// BenchmarkRenderAndPlan measures proxyrig's own share of a full sync:
// rendering and building the iptables-restore input, no kernel involved.
func BenchmarkRenderAndPlan(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		v := scaleView(n)
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			for b.Loop() {
				rs, err := Render(v, goldenEnv)
				if err != nil {
					b.Fatal(err)
				}
				for _, fr := range rs.Families {
					planSync(fr, nil, true, nil)
				}
			}
		})
	}
}

// BenchmarkPartialRenderAndPlan measures proxyrig's own share of a partial
// sync after one Service changed: the proxier's cached render (only the
// changed Service is rendered again) and the restore input of the
// top-level chains and the changed chains.
func BenchmarkPartialRenderAndPlan(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			v := scaleView(n)
			cache := newRenderCache()
			rs, err := render(v, goldenEnv, cache)
			if err != nil {
				b.Fatal(err)
			}
			applied := map[Family]*appliedFamily{}
			for _, fr := range rs.Families {
				applied[fr.Family] = newApplied(fr)
			}
			// Every Service in turn loses its first endpoint; in the next
			// round it gets it back.
			base := v.Cluster.Services
			i := 0
			for b.Loop() {
				k := i % n
				s := base[k].Clone()
				if i/n%2 == 0 {
					s.Ports[0].Endpoints = s.Ports[0].Endpoints[1:]
				}
				v = withService(v, k, s)
				i++
				rs, err := render(v, goldenEnv, cache)
				if err != nil {
					b.Fatal(err)
				}
				for _, fr := range rs.Families {
					applied[fr.Family] = planSync(fr, applied[fr.Family], false, nil).applied
				}
			}
		})
	}
}
