package nftables

import (
	"reflect"
	"testing"

	"proxyrig/datapaths"
)

// The proxier's render, which reuses unchanged Services' output from the
// last sync, equals a fresh render every time, in both layouts.
func TestRenderCacheMatchesFreshRender(t *testing.T) {
	for _, lay := range []layout{layoutKubeProxy, layoutFlat} {
		cache := newNameCache()
		check := func(name string, v *datapaths.NodeView) {
			t.Helper()
			want, err := renderLayout(v, nil, lay)
			if err != nil {
				t.Fatal(err)
			}
			got, err := renderLayout(v, cache, lay)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(want, got) {
				t.Errorf("layout %d, %s: the cached render differs from a fresh one", lay, name)
			}
		}
		for _, c := range goldenCases() {
			check(c.name, c.view)
			check(c.name+" again", c.view)
		}
		v := scaleView(50)
		check("scale", v)
		for i := range 5 {
			eps := v.Cluster.Services[i].Ports[0].Endpoints
			v = withEndpoints(v, i, eps[1:]...)
			check("scale, one endpoint fewer", v)
		}
		nv := *v
		nv.Proxy.MasqueradeAll = !nv.Proxy.MasqueradeAll
		check("other proxy settings", &nv)
		check("back", v)
	}
}
