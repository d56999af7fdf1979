package ebpf

import (
	"errors"
	"net/netip"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"proxyrig/datapaths"
	"proxyrig/model"
)

// Render tests need no root: they check the map contents computed from a
// view, mostly through the readable dump.

func mustRender(t *testing.T, v *datapaths.NodeView, prev *idTable) (*desired, *idTable) {
	t.Helper()
	d, ids, err := render(v, prev)
	if err != nil {
		t.Fatal(err)
	}
	return d, ids
}

var groupIDRE = regexp.MustCompile(`group \d+ `)

// serviceLines returns the dump's "service" lines for one address, with
// the group ids (allocation order) left out: the group names say which
// set an entry uses.
func serviceLines(d *desired, addr string) []string {
	var out []string
	for _, l := range strings.Split(d.dump(), "\n") {
		if strings.HasPrefix(l, "service "+addr+":") {
			out = append(out, groupIDRE.ReplaceAllString(l, "group "))
		}
	}
	return out
}

func TestRenderHello(t *testing.T) {
	d, _ := mustRender(t, view(helloService(), emptyService()), nil)
	want := `config node_ip=198.18.0.11 cluster_cidr=198.18.64.0/255.255.192.0 flags=[detector]
backend 1 198.18.64.10:8080 [local]
backend 2 198.18.64.11:8080 [local]
backend 3 198.18.65.10:8080
service 198.18.0.11:30080/TCP -> group 2 "default/hello/TCP/cluster" count=3 [external,nodeport]
service 198.19.0.80:80/TCP -> group 2 "default/hello/TCP/cluster" count=3
service 198.19.0.81:80/TCP -> group 1 "default/empty/TCP/cluster" count=0 [reject]
slot 2/1 -> backend 1 198.18.64.10:8080
slot 2/2 -> backend 2 198.18.64.11:8080
slot 2/3 -> backend 3 198.18.65.10:8080
`
	if diff := cmp.Diff(want, d.dump()); diff != "" {
		t.Errorf("dump (-want +got):\n%s", diff)
	}
	if d.objects() != 1+3+3+3+3 {
		t.Errorf("objects = %d, want 13", d.objects())
	}
}

func TestRenderDeterministic(t *testing.T) {
	svcs := func() []*model.Service {
		return []*model.Service{helloService(), emptyService(), localService(), remoteOnlyLocalService(), affinityService(), firewalledService()}
	}
	a, _ := mustRender(t, view(svcs()...), nil)
	// Input order must not matter: the cluster is sorted by name anyway,
	// but render must not depend on it either.
	rev := svcs()
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	b, _ := mustRender(t, view(rev...), nil)
	if diff := cmp.Diff(a.dump(), b.dump()); diff != "" {
		t.Errorf("render depends on input order (-first +second):\n%s", diff)
	}
}

func TestRenderPolicies(t *testing.T) {
	itpLocal := service("itp", model.ClusterIP, "198.19.0.92", port("", model.TCP, 80, 0, ep("198.18.65.92", 8080, nodeB)))
	itpLocal.InternalTrafficPolicy = model.PolicyLocal
	term := service("term", model.ClusterIP, "198.19.0.93", port("", model.TCP, 80, 0, terminating("198.18.65.93", 8080, nodeB)))
	sctp := service("sctp", model.ClusterIP, "198.19.0.94", port("", model.SCTP, 80, 0, ep("198.18.65.94", 8080, nodeB)))
	extIP := service("ext", model.ClusterIP, "198.19.0.95", port("", model.TCP, 80, 0, ep("198.18.65.95", 8080, nodeB)))
	extIP.ExternalIPs = []netip.Addr{addr("198.18.1.95")}
	d, _ := mustRender(t, view(localService(), remoteOnlyLocalService(), affinityService(), firewalledService(), itpLocal, term, sctp, extIP), nil)

	for _, c := range []struct {
		addr string
		want []string
	}{
		// eTP=Local with a local endpoint: the primary entry has the local
		// set, the internal twin the cluster set.
		{"198.18.1.82", []string{
			`service 198.18.1.82:80/TCP -> group "default/local/TCP/local" count=1 [external,two-scopes,local]`,
			`service 198.18.1.82:80/TCP (internal) -> group "default/local/TCP/cluster" count=2 [external]`,
		}},
		// Source ranges only on the LB IP.
		{"198.18.1.85", []string{`service 198.18.1.85:80/TCP -> group "default/fw/TCP/cluster" count=1 [external,src-range]`}},
		{"198.19.0.84", []string{`service 198.19.0.84:80/TCP -> group "default/sticky/TCP/cluster" count=3 [affinity] affinity=60s`}},
		// iTP=Local without a local endpoint: DROP, not REJECT.
		{"198.19.0.92", []string{`service 198.19.0.92:80/TCP -> group "default/itp/TCP/local" count=0 [drop]`}},
		// Only a terminating endpoint: kube-proxy's fallback uses it.
		{"198.19.0.93", []string{`service 198.19.0.93:80/TCP -> group "default/term/TCP/cluster" count=1`}},
		// SCTP is not expressible here: no entry, a warning.
		{"198.19.0.94", nil},
		{"198.18.1.95", []string{`service 198.18.1.95:80/TCP -> group "default/ext/TCP/cluster" count=1 [external]`}},
	} {
		if diff := cmp.Diff(c.want, serviceLines(d, c.addr)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", c.addr, diff)
		}
	}
	nodePort := serviceLines(d, "198.18.0.11")
	wantNP := []string{
		`service 198.18.0.11:30082/TCP -> group "default/local/TCP/local" count=1 [external,two-scopes,local,nodeport]`,
		`service 198.18.0.11:30082/TCP (internal) -> group "default/local/TCP/cluster" count=2 [external]`,
		`service 198.18.0.11:30083/TCP -> group "default/remote-local/TCP/local" count=0 [external,two-scopes,local,drop,nodeport]`,
		`service 198.18.0.11:30083/TCP (internal) -> group "default/remote-local/TCP/cluster" count=1 [external]`,
		`service 198.18.0.11:30085/TCP -> group "default/fw/TCP/cluster" count=1 [external,nodeport]`,
	}
	if diff := cmp.Diff(wantNP, nodePort); diff != "" {
		t.Errorf("NodePorts (-want +got):\n%s", diff)
	}
	if len(d.SrcRanges) != 1 {
		t.Errorf("src_ranges = %v, want one entry", d.SrcRanges)
	}
	if len(d.Warnings) != 1 || !strings.Contains(d.Warnings[0], "SCTP") {
		t.Errorf("warnings = %q, want one about SCTP", d.Warnings)
	}
}

func TestRenderNodePortAddresses(t *testing.T) {
	v := view(helloService())
	v.Node.Addresses = append(v.Node.Addresses, addr("198.18.9.11"))
	v.Proxy.LocalhostNodePorts = true
	d, _ := mustRender(t, v, nil)
	var got []string
	for k := range d.Services {
		if portFromBE16(k.Port) == 30080 {
			got = append(got, addrFromBE32(k.Addr).String())
		}
	}
	if len(got) != 3 {
		t.Errorf("NodePort frontends on %v, want 127.0.0.1, 198.18.0.11 and 198.18.9.11", got)
	}

	v.Proxy.NodePortAddresses = []netip.Prefix{prefix("198.18.9.0/24")}
	d, _ = mustRender(t, v, nil)
	got = nil
	for k := range d.Services {
		if portFromBE16(k.Port) == 30080 {
			got = append(got, addrFromBE32(k.Addr).String())
		}
	}
	if diff := cmp.Diff([]string{"198.18.9.11"}, got); diff != "" {
		t.Errorf("--nodeport-addresses=198.18.9.0/24 (-want +got):\n%s", diff)
	}
}

func TestRenderConfigFlags(t *testing.T) {
	v := view()
	v.Proxy.MasqueradeAll = true
	d, _ := mustRender(t, v, nil)
	if d.Config.Flags != cfgDetector|cfgMasqAll || addrFromBE32(d.Config.NodeIp4) != nodeAIP {
		t.Errorf("config = %+v", d.Config)
	}
	v.Proxy.ClusterCIDRs = nil
	d, _ = mustRender(t, v, nil)
	if d.Config.Flags&cfgDetector != 0 {
		t.Errorf("no --cluster-cidr, yet the detector flag is set: %+v", d.Config)
	}
	// Host-network endpoints are flagged for local delivery.
	d, _ = mustRender(t, view(service("h", model.ClusterIP, "198.19.0.91", port("", model.TCP, 80, 0, ep("198.18.0.11", 10250, nodeA)))), nil)
	for _, be := range d.Backends {
		if be.Flags != beLocal|beHostLocal {
			t.Errorf("host-network backend flags = %b, want local|host", be.Flags)
		}
	}
}

// TestIncrementalPlan checks that ids stay stable across renders and that
// a change to one Service plans writes for that Service only.
func TestIncrementalPlan(t *testing.T) {
	base := []*model.Service{helloService(), emptyService(), affinityService()}
	d1, ids := mustRender(t, view(base...), nil)

	// Unchanged: nothing to write.
	d2, ids := mustRender(t, view(helloService(), emptyService(), affinityService()), ids)
	if p := planSync(d2, d1, d1); p.written() != 0 || len(p.changed) != 0 {
		t.Errorf("unchanged view plans %d writes for %v", p.written(), p.changed)
	}

	// One endpoint of hello goes away: its last slot, its member entry and
	// its backend are deleted, one slot is rewritten, and both hello
	// frontends get count=2.
	hello := helloService()
	hello.Ports[0].Endpoints = hello.Ports[0].Endpoints[1:]
	d3, ids := mustRender(t, view(hello, emptyService(), affinityService()), ids)
	p := planSync(d3, d2, d2)
	if diff := cmp.Diff(map[string]bool{"default/hello": true}, p.changed); diff != "" {
		t.Errorf("changed Services (-want +got):\n%s", diff)
	}
	if len(p.servicesUpd) != 2 || len(p.servicesDel) != 0 || len(p.slotsUpd) != 2 || len(p.slotsDel) != 1 ||
		len(p.membersUpd) != 2 || len(p.membersDel) != 1 || len(p.backendsDel) != 1 || len(p.backendsUpd) != 0 {
		t.Errorf("plan: services +%d -%d, slots +%d -%d, members +%d -%d, backends +%d -%d",
			len(p.servicesUpd), len(p.servicesDel), len(p.slotsUpd), len(p.slotsDel),
			len(p.membersUpd), len(p.membersDel), len(p.backendsUpd), len(p.backendsDel))
	}

	// The empty Service goes away; the others keep their ids.
	d4, ids := mustRender(t, view(hello, affinityService()), ids)
	if d4.Services[lbSvcKey{Addr: be32(addr("198.19.0.84")), Port: be16(80), Proto: protoTCP}].Id !=
		d1.Services[lbSvcKey{Addr: be32(addr("198.19.0.84")), Port: be16(80), Proto: protoTCP}].Id {
		t.Error("sticky's group id changed when another Service went away")
	}
	// Ids are never reused: a new Service gets a fresh group.
	d5, _ := mustRender(t, view(hello, affinityService(), service("new", model.ClusterIP, "198.19.0.99", port("", model.TCP, 80, 0))), ids)
	newID := d5.Services[lbSvcKey{Addr: be32(addr("198.19.0.99")), Port: be16(80), Proto: protoTCP}].Id
	for _, v := range d1.Services {
		if v.Id == newID {
			t.Errorf("new Service reuses group id %d", newID)
		}
	}
}

func TestCapacity(t *testing.T) {
	d, _ := mustRender(t, view(helloService(), emptyService()), nil)
	s := sizesFor(d, 0)
	if err := checkCapacity(d, s); err != nil {
		t.Fatal(err)
	}
	s.Services = 1
	var full *MapFullError
	if err := checkCapacity(d, s); !errors.As(err, &full) || full.Map != "services" || full.Need != 3 {
		t.Errorf("checkCapacity = %v, want a MapFullError for services needing 3", err)
	}
}

// TestSpecMatchesGo checks that the Go side agrees with the compiled
// object: counter names, maps and programs. It parses the embedded ELF and
// needs no root.
func TestSpecMatchesGo(t *testing.T) {
	spec, err := loadLb()
	if err != nil {
		t.Fatal(err)
	}
	if n := spec.Maps[lbMapStats].MaxEntries; int(n) != len(counterNames) {
		t.Errorf("stats map has %d entries, counterNames %d", n, len(counterNames))
	}
	for _, hk := range cgroupHooks {
		if _, ok := spec.Programs[hk.prog]; !ok {
			t.Errorf("no program %s in the object", hk.prog)
		}
	}
	if _, err := loadSpec(sizesFor(&desired{}, 0)); err != nil {
		t.Error(err)
	}
}

// TestGoneBackends checks which deleted backends the socket reaper is
// given: their addresses, IPv4 ones IPv4-mapped, and an id no longer in
// the maps is skipped.
func TestGoneBackends(t *testing.T) {
	a := lbBackend{Addr: be32(addr("198.18.65.1")), Port: be16(8080)}
	b := lbBackend{Addr: be32(addr("198.18.65.2")), Port: be16(8080)}
	c6 := lbBackend6{Addr: be128(addr("2001:db8:65::3")), Port: be16(53)}
	have := &desired{Backends: map[uint32]lbBackend{1: a, 2: b}, Backends6: map[uint32]lbBackend6{4: c6}}
	plan := &syncPlan{backendsDel: []uint32{1, 9}, backends6Del: []uint32{4}}
	got := map[netip.AddrPort]bool{}
	for _, k := range goneBackends(plan, have) {
		got[netip.AddrPortFrom(addrFromBE128(k.Addr), portFromBE16(k.Port))] = true
	}
	wantGone := map[netip.AddrPort]bool{
		netip.MustParseAddrPort("[::ffff:198.18.65.1]:8080"): true,
		netip.MustParseAddrPort("[2001:db8:65::3]:53"):       true,
	}
	if !reflect.DeepEqual(got, wantGone) {
		t.Errorf("gone backends %v, want %v", got, wantGone)
	}
	if g := goneBackends(&syncPlan{}, have); g != nil {
		t.Errorf("nothing deleted, yet %v gone", g)
	}
}
