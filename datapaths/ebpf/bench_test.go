package ebpf

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"proxyrig/datapaths"
	"proxyrig/internal/netnsutil"
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
		// "one-change-cached" is what Datapath.Sync does when the caller
		// hands the unchanged Services again as the same objects (loadgen's
		// churn and the labs do): a pointer lookup each. "-copied" is the
		// same change in a view built afresh (a lab apply of a new file),
		// which compares every Service in depth.
		for _, copied := range []bool{false, true} {
			suffix := ""
			if copied {
				suffix = "-copied"
			}
			b.Run(fmt.Sprintf("services=%d/one-change-cached%s", n, suffix), func(b *testing.B) {
				var cache renderCache
				first, ids, err := renderCached(v, nil, &cache)
				if err != nil {
					b.Fatal(err)
				}
				applied := cloneDesired(first)
				var v2 *datapaths.NodeView
				if copied {
					v2 = scaleView(n)
					v2.Cluster.Services[0].Ports[0].Endpoints = v2.Cluster.Services[0].Ports[0].Endpoints[1:]
				} else {
					c := *v.Cluster
					c.Services = slices.Clone(v.Cluster.Services)
					s := c.Services[0].Clone()
					s.Ports[0].Endpoints = s.Ports[0].Endpoints[1:]
					c.Services[0] = s
					v2 = &datapaths.NodeView{Cluster: &c, Node: v.Node, Proxy: v.Proxy}
				}
				views := []*datapaths.NodeView{v2, v}
				i := 0
				for b.Loop() {
					want, next, err := renderCached(views[i%2], ids, &cache)
					if err != nil {
						b.Fatal(err)
					}
					if want.touched == nil {
						b.Fatal("render was not incremental")
					}
					if p := planSyncTouched(want, applied, applied); len(p.changed) != 1 {
						b.Fatalf("%d Services changed, want 1", len(p.changed))
					}
					applied.patch(want)
					ids = next
					i++
				}
			})
		}
	}
}

// TestEqualServiceFields changes every field of a Service, its ports and
// endpoints in turn and checks that equalService notices, so a field added
// to the model later cannot make the render cache reuse a stale rendering.
func TestEqualServiceFields(t *testing.T) {
	base := func() *model.Service {
		s := service("a", model.LoadBalancer, "198.19.0.1", port("http", model.TCP, 80, 30080, ep("198.18.64.1", 8080, nodeB)))
		s.Ports[0].Endpoints[0].ZoneHints = []string{"z"}
		s.Ports[0].Endpoints[0].NodeHints = []string{"n"}
		return s
	}
	mutate := func(v reflect.Value) {
		switch v.Kind() {
		case reflect.String:
			v.SetString(v.String() + "x")
		case reflect.Bool:
			v.SetBool(!v.Bool())
		case reflect.Int32, reflect.Int64, reflect.Int:
			v.SetInt(v.Int() + 1)
		case reflect.Slice:
			switch v.Type().Elem() {
			case reflect.TypeFor[netip.Addr]():
				v.Set(reflect.Append(v, reflect.ValueOf(netip.MustParseAddr("198.19.9.9"))))
			case reflect.TypeFor[netip.Prefix]():
				v.Set(reflect.Append(v, reflect.ValueOf(netip.MustParsePrefix("10.0.0.0/8"))))
			case reflect.TypeFor[string]():
				v.Set(reflect.Append(v, reflect.ValueOf("y")))
			default:
				v.Set(reflect.Zero(v.Type()))
			}
		case reflect.Struct:
			switch v.Type() {
			case reflect.TypeFor[netip.Addr]():
				v.Set(reflect.ValueOf(netip.MustParseAddr("198.18.64.99")))
			default:
				// Origin, ServiceName: change the first field.
				v.Field(0).SetString(v.Field(0).String() + "x")
			}
		default:
			t.Fatalf("field of kind %s: teach this test (and equalService) about it", v.Kind())
		}
	}
	check := func(what string, get func(*model.Service) reflect.Value) {
		n := get(base()).NumField()
		for i := range n {
			a, b := base(), base()
			f := get(b).Field(i)
			if f.Type() == reflect.TypeFor[time.Duration]() {
				f.SetInt(f.Int() + 1)
			} else {
				mutate(f)
			}
			if equalService(a, b) || equalService(b, a) {
				t.Errorf("equalService ignores %s.%s", what, get(b).Type().Field(i).Name)
			}
			if !equalService(b, b.Clone()) {
				t.Errorf("model.Service.Clone loses %s.%s", what, get(b).Type().Field(i).Name)
			}
		}
	}
	check("Service", func(s *model.Service) reflect.Value { return reflect.ValueOf(s).Elem() })
	check("ServicePort", func(s *model.Service) reflect.Value { return reflect.ValueOf(s.Ports[0]).Elem() })
	check("Endpoint", func(s *model.Service) reflect.Value { return reflect.ValueOf(s.Ports[0].Endpoints[0]).Elem() })
}

// TestRenderCacheMatchesRender renders a sequence of views with the cache
// and without it: the entries, warnings and ids must be the same, whatever
// changed (an endpoint, a Service added or gone, a policy, a frontend two
// Services claim, the node's addresses), and an incremental plan applied
// to the previous state must write what a whole diff writes.
func TestRenderCacheMatchesRender(t *testing.T) {
	clash := service("clash", model.ClusterIP, "198.19.0.80", port("http", model.TCP, 80, 0, ep("198.18.64.7", 80, nodeB)))
	sctp := service("sctp", model.ClusterIP, "198.19.0.90", port("s", model.SCTP, 80, 0), port("http", model.TCP, 80, 0, ep("198.18.64.8", 80, nodeB)))
	dual := service("dual", model.NodePort, "198.19.0.91", port("http", model.TCP, 80, 30091, ep("198.18.64.8", 80, nodeB), ep("fd00::8", 80, nodeB)))
	dual.ClusterIPs = append(dual.ClusterIPs, addr("fd01::91"))
	h := helloService()
	h.Ports[0].Endpoints = h.Ports[0].Endpoints[1:]
	l := localService()
	l.ExternalTrafficPolicy = model.PolicyCluster
	fw := firewalledService()
	fw.LoadBalancerSourceRanges = append(fw.LoadBalancerSourceRanges, prefix("198.18.0.0/24"))
	shared := udpService(ep("198.18.64.50", 8080, nodeA)) // fw's backend too
	base := []*model.Service{helloService(), emptyService(), localService(), affinityService(), firewalledService(), udpService(ep("198.18.64.9", 53, nodeA)), sctp}
	with := func(svcs ...*model.Service) *datapaths.NodeView { return view(svcs...) }
	v1 := with(base...)
	v2 := with(h, emptyService(), localService(), affinityService(), firewalledService(), clash, sctp)
	v3 := with(h, emptyService(), localService(), affinityService(), firewalledService(), clash, sctp)
	v3.Node = cloneNode(v3.Node)
	v3.Node.Addresses = append(v3.Node.Addresses, addr("198.18.0.99"))
	v4 := with(emptyService(), clash, sctp)
	v5 := with(h, emptyService(), l, affinityService(), fw, shared, sctp, dual)
	v6 := with(h, emptyService(), l, affinityService(), shared, dual)
	v7 := with(helloService(), emptyService(), l, affinityService(), shared)
	v8 := with(helloService(), emptyService(), clash, affinityService(), shared)
	seq := []*datapaths.NodeView{v1, v1, v5, v6, v7, v5, v1, v2, v2, v3, v1, v4, v1, v6, v7, v8, v7, v6, v5, v5}
	t.Run("fresh-objects", func(t *testing.T) { checkRenderCache(t, seq) })
	// The same sequence as a caller that keeps unchanged Services as the
	// same objects hands it: every Service equal to one seen before is
	// that object, so the cache finds most of them by pointer.
	var seen []*model.Service
	sharedSeq := make([]*datapaths.NodeView, len(seq))
	for i, v := range seq {
		c := *v.Cluster
		c.Services = slices.Clone(c.Services)
		for j, svc := range c.Services {
			if k := slices.IndexFunc(seen, func(o *model.Service) bool { return equalService(o, svc) }); k >= 0 {
				c.Services[j] = seen[k]
			} else {
				seen = append(seen, svc)
			}
		}
		sharedSeq[i] = &datapaths.NodeView{Cluster: &c, Node: v.Node, Proxy: v.Proxy}
	}
	t.Run("shared-objects", func(t *testing.T) { checkRenderCache(t, sharedSeq) })
}

func checkRenderCache(t *testing.T, seq []*datapaths.NodeView) {
	var cache renderCache
	var ids, plainIDs *idTable
	var applied *desired
	incremental := 0
	for i, v := range seq {
		got, next, err := renderCached(v, ids, &cache)
		if err != nil {
			t.Fatal(err)
		}
		want, plainNext, err := render(v, plainIDs)
		if err != nil {
			t.Fatal(err)
		}
		if g, w := got.dump(), want.dump(); g != w {
			t.Fatalf("view %d: cached render differs:\n%s\nwant:\n%s", i, g, w)
		}
		if p := planSync(got, want, nil); p.written() != 0 {
			t.Fatalf("view %d: cached render differs by %d entries", i, p.written())
		}
		if !reflect.DeepEqual(next.Groups, plainNext.Groups) || !reflect.DeepEqual(next.Backends, plainNext.Backends) ||
			next.NextGroup != plainNext.NextGroup || next.NextBackend != plainNext.NextBackend {
			t.Fatalf("view %d: ids differ: %+v, want %+v", i, next, plainNext)
		}
		if !reflect.DeepEqual(got.groupOwner, want.groupOwner) || !reflect.DeepEqual(got.svcOwner, want.svcOwner) ||
			!reflect.DeepEqual(got.svcOwner6, want.svcOwner6) || !reflect.DeepEqual(got.groupName, want.groupName) {
			t.Fatalf("view %d: owners differ", i)
		}
		if applied != nil && got.touched != nil && applied.gen == got.touched.base {
			incremental++
			whole := planSync(got, applied, applied)
			part := planSyncTouched(got, applied, applied)
			if !reflect.DeepEqual(whole, part) {
				t.Fatalf("view %d: incremental plan %+v, whole diff %+v", i, part, whole)
			}
			applied.patch(got)
			if p := planSync(want, applied, nil); p.written() != 0 || !reflect.DeepEqual(applied.svcOwner, want.svcOwner) ||
				!reflect.DeepEqual(applied.groupOwner, want.groupOwner) || !reflect.DeepEqual(applied.Warnings, want.Warnings) {
				t.Fatalf("view %d: patched state differs from the render", i)
			}
		} else {
			applied = cloneDesired(got)
		}
		ids, plainIDs = next, plainNext
	}
	if incremental < 8 {
		t.Errorf("%d incremental renders, want at least 8", incremental)
	}
}

// benchNetns is a namespace for a datapath to attach in: its uplink
// eth0 is a veth whose both ends stay inside it.
func benchNetns(b *testing.B) netnsutil.NS {
	if os.Geteuid() != 0 {
		const reason = "needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN) to load BPF programs and create network namespaces"
		if os.Getenv("CI") == "true" {
			b.Fatal(reason + "; CI=true, so this must not be skipped")
		}
		b.Skip(reason)
	}
	var rnd [4]byte
	if _, err := crand.Read(rnd[:]); err != nil {
		b.Fatal(err)
	}
	name := "prx-b" + hex.EncodeToString(rnd[:]) + "-dp"
	ns, err := netnsutil.Create(name)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := netnsutil.Delete(name); err != nil {
			b.Errorf("delete netns %s: %v", name, err)
		}
	})
	// The uplink, both ends inside the namespace.
	// Equivalent to: ip link add eth0 type veth peer prxq0
	h, err := ns.Handle()
	if err != nil {
		b.Fatal(err)
	}
	la := netlink.NewLinkAttrs()
	la.Name = "eth0"
	la.Flags = net.FlagUp
	v := netlink.NewVeth(la)
	v.PeerName = "prxq0"
	if err := h.LinkAdd(v); err != nil {
		h.Close()
		b.Fatal(err)
	}
	h.Close()
	return ns
}

// BenchmarkSyncFull measures what issue 5 is about: a fresh Datapath's
// first sync of n Services (five endpoints each) on a node that has
// nothing yet, so loading and verifying the programs, creating the maps,
// attaching, rendering and writing every entry. Cleanup runs outside the
// timer. Needs root; a skip is a failure with CI=true.
func BenchmarkSyncFull(b *testing.B) {
	ns := benchNetns(b)
	ctx := context.Background()
	for _, n := range []int{1000, 10000} {
		view := scaleView(n)
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			var render, apply time.Duration
			for range b.N {
				dpi, err := New(datapaths.Config{Node: nodeA, NS: ns})
				if err != nil {
					b.Fatal(err)
				}
				st, err := dpi.Sync(ctx, view, datapaths.SyncOptions{})
				b.StopTimer()
				if cerr := dpi.Cleanup(ctx); cerr != nil {
					b.Fatal(cerr)
				}
				if err != nil {
					b.Fatal(err)
				}
				if !st.Full || st.Written != st.Objects {
					b.Fatalf("first sync %+v, want a full sync writing every object", st)
				}
				render += st.Render
				apply += st.Apply
				b.StartTimer()
			}
			b.ReportMetric(float64(render.Nanoseconds())/float64(b.N), "render-ns/op")
			b.ReportMetric(float64(apply.Nanoseconds())/float64(b.N), "apply-ns/op")
		})
	}
}

// BenchmarkSyncOneChange is an incremental Sync at scale: one Service
// loses (then regains) an endpoint, the other Services are the same
// objects as before, as loadgen's churn hands them. It includes the BPF
// map writes, so it is the figure issue 5's "single change in about a
// millisecond" is about.
func BenchmarkSyncOneChange(b *testing.B) {
	ns := benchNetns(b)
	ctx := context.Background()
	for _, n := range []int{1000, 10000} {
		v := scaleView(n)
		c := *v.Cluster
		c.Services = slices.Clone(v.Cluster.Services)
		s := c.Services[0].Clone()
		s.Ports[0].Endpoints = s.Ports[0].Endpoints[1:]
		c.Services[0] = s
		v2 := &datapaths.NodeView{Cluster: &c, Node: v.Node, Proxy: v.Proxy}
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			dpi, err := New(datapaths.Config{Node: nodeA, NS: ns})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() {
				if err := dpi.Cleanup(ctx); err != nil {
					b.Error(err)
				}
			})
			if _, err := dpi.Sync(ctx, v, datapaths.SyncOptions{}); err != nil {
				b.Fatal(err)
			}
			views := []*datapaths.NodeView{v2, v}
			var render, apply time.Duration
			i := 0
			for b.Loop() {
				st, err := dpi.Sync(ctx, views[i%2], datapaths.SyncOptions{})
				if err != nil {
					b.Fatal(err)
				}
				if st.Full || st.ChangedServices != 1 {
					b.Fatalf("sync %+v, want an incremental sync changing one Service", st)
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

// TestRenderCacheRandomEdits drives the cache with seeded random edits of
// a Service list that keeps unchanged Services as the same objects, as
// loadgen's churn does: insertions and deletions anywhere, replacements,
// swaps of two positions and runs of several edits at once. After every
// step the cached render must equal an uncached one.
func TestRenderCacheRandomEdits(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		rng := rand.New(rand.NewPCG(seed, 0))
		next := 0
		newSvc := func() *model.Service {
			next++
			var eps []*model.Endpoint
			for j := range 1 + rng.IntN(3) {
				eps = append(eps, ep(fmt.Sprintf("198.18.%d.%d", 64+next%50, 1+j), 8080, nodeB))
			}
			return service(fmt.Sprintf("s%04d", next), model.ClusterIP, fmt.Sprintf("198.19.%d.%d", next/250, 1+next%250),
				port("http", model.TCP, 80, 0, eps...))
		}
		var svcs []*model.Service
		for range 30 {
			svcs = append(svcs, newSvc())
		}
		var cache renderCache
		var ids, plainIDs *idTable
		incremental := 0
		for step := range 150 {
			svcs = slices.Clone(svcs)
			for range 1 + rng.IntN(3) {
				switch k := rng.IntN(5); {
				case k == 0 || len(svcs) < 5:
					i := rng.IntN(len(svcs) + 1)
					svcs = slices.Insert(svcs, i, newSvc())
				case k == 1:
					i := rng.IntN(len(svcs))
					svcs = slices.Delete(svcs, i, i+1)
				case k == 2:
					i := rng.IntN(len(svcs))
					s := svcs[i].Clone()
					s.Ports[0].Endpoints = s.Ports[0].Endpoints[:1]
					svcs[i] = s
				case k == 3:
					i, j := rng.IntN(len(svcs)), rng.IntN(len(svcs))
					svcs[i], svcs[j] = svcs[j], svcs[i]
				default: // nothing changes
				}
			}
			v := view(svcs...)
			got, nextIDs, err := renderCached(v, ids, &cache)
			if err != nil {
				t.Fatal(err)
			}
			want, plainNext, err := render(v, plainIDs)
			if err != nil {
				t.Fatal(err)
			}
			if g, w := got.dump(), want.dump(); g != w {
				t.Fatalf("seed %d step %d: cached render differs:\n%s\nwant:\n%s", seed, step, g, w)
			}
			if got.touched != nil {
				incremental++
			}
			ids, plainIDs = nextIDs, plainNext
		}
		if incremental < 140 {
			t.Errorf("seed %d: %d of 150 renders were incremental, want nearly all", seed, incremental)
		}
	}
}
