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

// BenchmarkRender is the part of every sync, partial or full, that is
// proxyrig's own: computing the desired state of every Service.
// The name cache is what a proxier's repeated syncs use.
func BenchmarkRender(b *testing.B) {
	v := scaleView(10000)
	names := newNameCache()
	for b.Loop() {
		if _, err := render(v, names); err != nil {
			b.Fatal(err)
		}
	}
}
