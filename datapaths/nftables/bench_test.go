package nftables

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"sigs.k8s.io/knftables"

	"proxyrig/datapaths"
	"proxyrig/model"
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

// BenchmarkSyncOneChange is a partial Sync at scale against the real nft,
// per kind of single change, for both layouts: an endpoint leaves and
// comes back (chains rewritten, no map element changes), and a Service
// is removed and comes back (its map elements change too). The Services
// that did not change are the same objects, as loadgen's churn hands
// them. Needs root. The first Sync (a full one) is outside the timer;
// for kube-proxy's layout at 10k it takes well over a minute.
func BenchmarkSyncOneChange(b *testing.B) {
	if os.Geteuid() != 0 {
		const reason = "needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create network namespaces and program nftables"
		if os.Getenv("CI") == "true" {
			b.Fatal(reason + "; CI=true, so this must not be skipped")
		}
		b.Skip(reason)
	}
	ctx := context.Background()
	for _, layout := range []struct {
		name string
		New  func(datapaths.Config) (datapaths.Datapath, error)
	}{{Name, New}, {FlatName, NewFlat}} {
		for _, n := range []int{1000, 10000} {
			v := scaleView(n)
			s0 := v.Cluster.Services[0]
			flap := withEndpoints(v, 0, s0.Ports[0].Endpoints[1:]...)
			gone := &datapaths.NodeView{Cluster: &model.Cluster{Services: v.Cluster.Services[1:], Nodes: v.Cluster.Nodes}, Node: v.Node, Proxy: v.Proxy}
			for _, kind := range []struct {
				name  string
				other *datapaths.NodeView
			}{{"endpoint-flap", flap}, {"service-flap", gone}} {
				b.Run(fmt.Sprintf("datapath=%s/services=%d/change=%s", layout.name, n, kind.name), func(b *testing.B) {
					ns := newTestNS(b)
					dp, err := layout.New(datapaths.Config{Node: nodeA, NS: ns})
					if err != nil {
						b.Fatal(err)
					}
					defer dp.Cleanup(ctx)
					if _, err := dp.Sync(ctx, v, datapaths.SyncOptions{}); err != nil {
						b.Fatal(err)
					}
					views := []*datapaths.NodeView{kind.other, v}
					var render, apply time.Duration
					i := 0
					for b.Loop() {
						st, err := dp.Sync(ctx, views[i%2], datapaths.SyncOptions{})
						if err != nil {
							b.Fatal(err)
						}
						if st.Full || st.ChangedServices != 1 {
							b.Fatalf("sync %+v, want a partial sync changing one Service", st)
						}
						render += st.Render
						apply += st.Apply
						i++
					}
					b.ReportMetric(float64(render.Nanoseconds())/float64(i), "render-ns/op")
					b.ReportMetric(float64(apply.Nanoseconds())/float64(i), "apply-ns/op")
				})
			}
		}
	}
}
