package ebpf

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"proxyrig/datapaths"
	"proxyrig/internal/netnsutil"
)

// TestDatapathLifecycle drives one Datapath in a namespace of its own
// (no lab): first sync, a no-op sync, a failed sync and its recovery, a
// repair of an entry deleted out of band, and a Cleanup that leaves no
// program attached and no pin behind.
func TestDatapathLifecycle(t *testing.T) {
	requireRoot(t)
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	name := "prx-t" + hex.EncodeToString(rnd[:]) + "-dp"
	ns, err := netnsutil.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netnsutil.Delete(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	// An uplink and one pod veth, both ends inside the namespace.
	// Equivalent to: ip link add eth0 type veth peer prxq0; ip link add prxp1 type veth peer prxq1
	h, err := ns.Handle()
	if err != nil {
		t.Fatal(err)
	}
	for _, pair := range [][2]string{{"eth0", "prxq0"}, {"prxp1", "prxq1"}} {
		la := netlink.NewLinkAttrs()
		la.Name = pair[0]
		la.Flags = net.FlagUp
		v := netlink.NewVeth(la)
		v.PeerName = pair[1]
		if err := h.LinkAdd(v); err != nil {
			t.Fatal(err)
		}
	}
	h.Close()

	ctx := context.Background()
	dpi, err := New(datapaths.Config{Node: nodeA, NS: ns})
	if err != nil {
		t.Fatal(err)
	}
	dp := dpi.(*Datapath)
	if err := dp.Check(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dp.Cleanup(ctx) })

	v1 := view(helloService(), emptyService())
	st, err := dp.Sync(ctx, v1, datapaths.SyncOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !st.Full || st.Written != st.Objects || st.ChangedServices != 2 {
		t.Errorf("first sync %+v, want a full sync writing all %d objects of 2 Services", st, st.Objects)
	}
	// Ingress and egress of four veths (both ends of each pair are here,
	// and every veth but the uplink counts as a pod's), lo ingress.
	if len(dp.attached) != 9 || len(dp.cgroupLinks) != len(cgroupHooks) {
		t.Errorf("%d tc attachments and %d cgroup links, want 9 and %d", len(dp.attached), len(dp.cgroupLinks), len(cgroupHooks))
	}
	if st, err = dp.Sync(ctx, v1, datapaths.SyncOptions{}); err != nil || st.Full || st.Written != 0 {
		t.Errorf("unchanged sync: %+v, %v; want a partial sync writing nothing", st, err)
	}

	// A failed sync, then recovery.
	hello := helloService()
	hello.Ports[0].Endpoints = hello.Ports[0].Endpoints[:1]
	v2 := view(hello, emptyService())
	dp.FailNextSync()
	if _, err := dp.Sync(ctx, v2, datapaths.SyncOptions{}); err == nil {
		t.Fatal("sync with an injected fault succeeded")
	}
	st, err = dp.Sync(ctx, v2, datapaths.SyncOptions{})
	if err != nil || !st.Full {
		t.Fatalf("sync after a failure: %+v, %v; want a full sync", st, err)
	}
	assertMapsEqual(t, dp, v2)

	// An entry deleted out of band is repaired by a forced sync only.
	var k lbSvcKey
	var val lbSvcValue
	if !dp.objs.Services.Iterate().Next(&k, &val) {
		t.Fatal("services map is empty")
	}
	if err := dp.objs.Services.Delete(k); err != nil {
		t.Fatal(err)
	}
	if st, err = dp.Sync(ctx, v2, datapaths.SyncOptions{}); err != nil || st.Written != 0 {
		t.Errorf("partial sync after an out-of-band delete: %+v, %v; want nothing written (it trusts its memory)", st, err)
	}
	if st, err = dp.Sync(ctx, v2, datapaths.SyncOptions{ForceFull: true}); err != nil || st.Written != 1 {
		t.Errorf("forced sync: %+v, %v; want the one deleted entry rewritten", st, err)
	}
	assertMapsEqual(t, dp, v2)

	// Cleanup: nothing attached, no pins.
	var links []*attachment
	for _, a := range dp.attached {
		links = append(links, a)
	}
	pinDir := dp.pinDir
	if err := dp.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(pinDir); !os.IsNotExist(err) {
		t.Errorf("pin directory %s still there: %v", pinDir, err)
	}
	entries, _ := filepath.Glob(filepath.Join(BPFFSRoot, name+"*"))
	if len(entries) != 0 {
		t.Errorf("pins left: %v", entries)
	}
	out, err := ns.Run(ctx, nil, "bpftool", "net", "show")
	if err == nil {
		for _, a := range links {
			if strings.Contains(string(out), a.prog) {
				t.Errorf("bpftool net show still lists %s:\n%s", a.prog, out)
			}
		}
	}
}

// assertMapsEqual checks that the kernel maps hold exactly the rendering
// of v.
func assertMapsEqual(t *testing.T, dp *Datapath, v *datapaths.NodeView) {
	t.Helper()
	have, err := readMaps(&dp.objs.lbMaps)
	if err != nil {
		t.Fatal(err)
	}
	want, _, err := render(v, dp.ids)
	if err != nil {
		t.Fatal(err)
	}
	if p := planSync(want, have, nil); p.written() != 0 {
		t.Errorf("kernel maps differ from the desired state by %d entries", p.written())
	}
}
