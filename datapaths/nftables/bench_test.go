package nftables

import (
	"context"
	"fmt"
	"testing"
	"time"

	"sigs.k8s.io/knftables"
)

// BenchmarkRenderAndPlan measures proxyrig's own share of a full sync:
// rendering and building the transaction text, no kernel involved.
func BenchmarkRenderAndPlan(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		v := scaleView(n)
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			for b.Loop() {
				rs, err := Render(v)
				if err != nil {
					b.Fatal(err)
				}
				applied := map[knftables.Family]*familyApplied{}
				for _, f := range families {
					applied[f] = newFamilyApplied(f)
				}
				fake := newFakeClient()
				plan := planSync(context.Background(), fake.NewTransaction(), rs, applied, true, true, fake.List, time.Now())
				_ = plan.tx.String()
			}
		})
	}
}

// BenchmarkRender is the render of a proxier's partial sync at 10,000
// Services after one Service changed: the cache (names and unchanged
// Services' states) is what a proxier's repeated syncs use, so only the
// changed Service is rendered again.
func BenchmarkRender(b *testing.B) {
	v := scaleView(10000)
	names := newNameCache()
	if _, err := render(v, names); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		eps := v.Cluster.Services[i].Ports[0].Endpoints
		v = withEndpoints(v, i, append(eps[1:len(eps):len(eps)], eps[0])...)
		i = (i + 1) % len(v.Cluster.Services)
		if _, err := render(v, names); err != nil {
			b.Fatal(err)
		}
	}
}
