package iptables

import (
	"net/netip"
	"reflect"
	"testing"

	"proxyrig/datapaths"
	"proxyrig/model"
)

// withService returns a copy of v whose Service i is svc; the other
// Services stay the same pointers, as in a model.Cluster built from the
// previous one.
func withService(v *datapaths.NodeView, i int, svc *model.Service) *datapaths.NodeView {
	svcs := append([]*model.Service(nil), v.Cluster.Services...)
	svcs[i] = svc
	c := *v.Cluster
	c.Services = svcs
	nv := *v
	nv.Cluster = &c
	return &nv
}

// The render cache is invisible: a proxier's render, reusing what the last
// one produced for unchanged Services, equals a fresh Render every time,
// through every fixture and through changes of one Service.
func TestRenderCacheMatchesFreshRender(t *testing.T) {
	cache := newRenderCache()
	check := func(name string, v *datapaths.NodeView, env Env) {
		t.Helper()
		want, err := Render(v, env)
		if err != nil {
			t.Fatal(err)
		}
		got, err := render(v, env, cache)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(want, got) {
			t.Errorf("%s: the cached render differs from a fresh one", name)
		}
	}
	for _, c := range goldenCases() {
		check(c.name, c.view, c.env)
		check(c.name+" again", c.view, c.env)
		check(c.name+" other env", c.view, Env{})
	}
	v := scaleView(50)
	check("scale", v, goldenEnv)
	for i := range 5 {
		s := v.Cluster.Services[i].Clone()
		s.Ports[0].Endpoints = s.Ports[0].Endpoints[1:]
		v = withService(v, i, s)
		check("scale, one endpoint fewer", v, goldenEnv)
	}
	// Above 1000 endpoints, large cluster mode changes every Service.
	check("large", scaleView(250), goldenEnv)
	check("small again", v, goldenEnv)
}

// The render cache reuses its context key while sameProxy says the proxy
// settings are unchanged, so sameProxy must notice a change in any field,
// including one added to ProxyConfig later.
func TestSameProxySeesEveryField(t *testing.T) {
	base := testProxy()
	if !sameProxy(base, testProxy()) {
		t.Fatal("equal proxy settings compare different")
	}
	typ := reflect.TypeFor[datapaths.ProxyConfig]()
	for i := range typ.NumField() {
		changed := testProxy()
		f := reflect.ValueOf(&changed).Elem().Field(i)
		switch f.Kind() {
		case reflect.Bool:
			f.SetBool(!f.Bool())
		case reflect.Slice:
			f.Set(reflect.Append(f, reflect.ValueOf(netip.MustParsePrefix("192.0.2.0/24"))))
		default:
			t.Fatalf("ProxyConfig.%s: teach this test (and sameProxy) about %s fields", typ.Field(i).Name, f.Kind())
		}
		if sameProxy(base, changed) {
			t.Errorf("sameProxy misses a change of ProxyConfig.%s", typ.Field(i).Name)
		}
	}
}

// A node changed in place between syncs (renamed, so that other
// endpoints are its local ones) still changes the render: the cache
// compares the node by value, not by pointer.
func TestRenderCacheSeesNodeChangedInPlace(t *testing.T) {
	var v *datapaths.NodeView
	for _, c := range goldenCases() {
		if c.name == "itp-local" {
			v = c.view
		}
	}
	if v == nil || v.Node == nil {
		t.Fatal("no itp-local fixture with a node")
	}
	cache := newRenderCache()
	before, err := render(v, goldenEnv, cache)
	if err != nil {
		t.Fatal(err)
	}
	v.Node.Name = "node-elsewhere"
	want, err := Render(v, goldenEnv)
	if err != nil {
		t.Fatal(err)
	}
	if reflect.DeepEqual(before, want) {
		t.Fatal("renaming the node does not change the fixture's rules: the test proves nothing")
	}
	got, err := render(v, goldenEnv, cache)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(want, got) {
		t.Error("after the node was renamed in place, the cached render differs from a fresh one")
	}
}
