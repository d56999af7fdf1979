package ipvs

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"

	libipvs "github.com/moby/ipvs"
	"golang.org/x/sys/unix"

	"proxyrig/model"
)

// fakeIPVS is an in-memory IPVS table with the kernel's error behaviour
// for the calls syncTable makes. conns sets a destination's connection
// count, the way traffic would.
type fakeIPVS struct {
	svcs  map[string]*libipvs.Service
	dests map[string]map[string]*libipvs.Destination
	conns map[string]int // "<vs key>/<rs key>" -> ActiveConn+InActConn
	ops   []string
}

func newFakeIPVS() *fakeIPVS {
	return &fakeIPVS{svcs: map[string]*libipvs.Service{}, dests: map[string]map[string]*libipvs.Destination{}, conns: map[string]int{}}
}

func svcKey(s *libipvs.Service) string {
	vs, ok := fromService(s)
	if !ok {
		panic("fake: unsupported service")
	}
	return vs.Key()
}

func destKey(d *libipvs.Destination) string {
	a, _ := netip.AddrFromSlice(d.Address)
	return netip.AddrPortFrom(a.Unmap(), d.Port).String()
}

func (f *fakeIPVS) GetServices() ([]*libipvs.Service, error) {
	var out []*libipvs.Service
	for _, s := range f.svcs {
		c := *s
		c.Flags |= flagHashed // the kernel always reports it
		out = append(out, &c)
	}
	return out, nil
}

func (f *fakeIPVS) GetDestinations(s *libipvs.Service) ([]*libipvs.Destination, error) {
	k := svcKey(s)
	if f.svcs[k] == nil {
		return nil, unix.ESRCH
	}
	var out []*libipvs.Destination
	for dk, d := range f.dests[k] {
		c := *d
		c.ActiveConnections = f.conns[k+"/"+dk]
		out = append(out, &c)
	}
	return out, nil
}

func (f *fakeIPVS) NewService(s *libipvs.Service) error {
	k := svcKey(s)
	if f.svcs[k] != nil {
		return unix.EEXIST
	}
	c := *s
	f.svcs[k] = &c
	f.dests[k] = map[string]*libipvs.Destination{}
	f.ops = append(f.ops, "add-vs "+k)
	return nil
}

func (f *fakeIPVS) UpdateService(s *libipvs.Service) error {
	k := svcKey(s)
	if f.svcs[k] == nil {
		return unix.ESRCH
	}
	c := *s
	f.svcs[k] = &c
	f.ops = append(f.ops, "update-vs "+k)
	return nil
}

func (f *fakeIPVS) DelService(s *libipvs.Service) error {
	k := svcKey(s)
	if f.svcs[k] == nil {
		return unix.ESRCH
	}
	delete(f.svcs, k)
	delete(f.dests, k)
	f.ops = append(f.ops, "del-vs "+k)
	return nil
}

func (f *fakeIPVS) NewDestination(s *libipvs.Service, d *libipvs.Destination) error {
	k := svcKey(s)
	if f.svcs[k] == nil {
		return unix.ESRCH
	}
	if f.dests[k][destKey(d)] != nil {
		return unix.EEXIST
	}
	c := *d
	f.dests[k][destKey(d)] = &c
	f.ops = append(f.ops, fmt.Sprintf("add-rs %s %s w%d", k, destKey(d), d.Weight))
	return nil
}

func (f *fakeIPVS) UpdateDestination(s *libipvs.Service, d *libipvs.Destination) error {
	k := svcKey(s)
	if f.dests[k][destKey(d)] == nil {
		return unix.ENOENT
	}
	c := *d
	f.dests[k][destKey(d)] = &c
	f.ops = append(f.ops, fmt.Sprintf("update-rs %s %s w%d", k, destKey(d), d.Weight))
	return nil
}

func (f *fakeIPVS) DelDestination(s *libipvs.Service, d *libipvs.Destination) error {
	k := svcKey(s)
	if f.dests[k][destKey(d)] == nil {
		return unix.ENOENT
	}
	delete(f.dests[k], destKey(d))
	f.ops = append(f.ops, "del-rs "+k+" "+destKey(d))
	return nil
}

func (f *fakeIPVS) Flush() error {
	f.svcs = map[string]*libipvs.Service{}
	f.dests = map[string]map[string]*libipvs.Destination{}
	return nil
}

func (f *fakeIPVS) Close() {}

// dump prints the table like `ipvsadm -Ln`, sorted.
func (f *fakeIPVS) dump() string {
	var keys []string
	for k := range f.svcs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		s := f.svcs[k]
		fmt.Fprintf(&b, "%s %s flags=%#x timeout=%d\n", k, s.SchedName, s.Flags, s.Timeout)
		var ds []string
		for dk, d := range f.dests[k] {
			ds = append(ds, fmt.Sprintf("  -> %s w%d", dk, d.Weight))
		}
		sort.Strings(ds)
		for _, d := range ds {
			b.WriteString(d + "\n")
		}
	}
	return b.String()
}

func (f *fakeIPVS) takeOps() []string {
	ops := f.ops
	f.ops = nil
	return ops
}

// syncFake runs one IPVS sync of st against the fake, as Sync does.
func syncFake(t *testing.T, f *fakeIPVS, st *State, grace graceful) ipvsResult {
	t.Helper()
	cur, err := readTable(f)
	if err != nil {
		t.Fatal(err)
	}
	res, err := syncTable(f, st.VirtualServers, cur, grace)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestSyncTableWritesOnlyWhatChanged(t *testing.T) {
	f := newFakeIPVS()
	grace := graceful{}
	web := func(eps ...*model.Endpoint) *model.Service {
		return service("default", "web", model.ClusterIP, addrs("198.19.0.10"), port("http", model.TCP, 80, 0, eps...))
	}
	other := service("default", "other", model.NodePort, addrs("198.19.0.11"), port("http", model.TCP, 80, 30011, ep("198.18.64.20", 8080, nodeA)))
	mk := func(svcs ...*model.Service) *State { return mustRender(t, view(svcs...), goldenEnv) }

	st := mk(web(ep("198.18.64.10", 8080, nodeA)), other)
	res := syncFake(t, f, st, grace)
	if want := 3 + 3; res.written != want { // 3 virtual servers, 3 real servers
		t.Errorf("first sync wrote %d, want %d: %v", res.written, want, f.takeOps())
	}
	f.takeOps()

	// Nothing changed: nothing is written.
	if res := syncFake(t, f, st, grace); res.written != 0 || len(res.changed) != 0 {
		t.Errorf("an unchanged sync wrote %d (%v): %v", res.written, res.changed, f.takeOps())
	}

	// One endpoint added: one real server added, on one virtual server.
	st = mk(web(ep("198.18.64.10", 8080, nodeA), ep("198.18.65.10", 8080, nodeB)), other)
	syncFake(t, f, st, grace)
	if ops := f.takeOps(); !slices.Equal(ops, []string{"add-rs 198.19.0.10:80/TCP 198.18.65.10:8080 w1"}) {
		t.Errorf("adding an endpoint did %v", ops)
	}

	// Affinity switched on: the virtual server is updated in place.
	sticky := web(ep("198.18.64.10", 8080, nodeA), ep("198.18.65.10", 8080, nodeB))
	sticky.SessionAffinity = true
	st = mk(sticky, other)
	syncFake(t, f, st, grace)
	if ops := f.takeOps(); !slices.Equal(ops, []string{"update-vs 198.19.0.10:80/TCP"}) {
		t.Errorf("switching affinity on did %v", ops)
	}
	if s := f.svcs["198.19.0.10:80/TCP"]; s.Flags != flagPersistent || s.Timeout != 10800 {
		t.Errorf("persistence not set: flags %#x timeout %d", s.Flags, s.Timeout)
	}

	// A Service deleted: its virtual servers go at once.
	st = mk(sticky)
	syncFake(t, f, st, grace)
	ops := f.takeOps()
	slices.Sort(ops)
	if !slices.Equal(ops, []string{"del-vs 198.18.0.2:30011/TCP", "del-vs 198.19.0.11:80/TCP"}) {
		t.Errorf("deleting a Service did %v", ops)
	}
}

// TestGracefulTermination follows kube-proxy's graceful_termination.go: a
// removed TCP real server with connections is set to weight 0 and deleted
// only when they drain; without connections, or for UDP, it goes at once;
// one that comes back while draining is deleted and added again.
func TestGracefulTermination(t *testing.T) {
	f := newFakeIPVS()
	grace := graceful{}
	mk := func(eps ...*model.Endpoint) *State {
		return mustRender(t, view(
			service("default", "web", model.ClusterIP, addrs("198.19.0.10"), port("http", model.TCP, 80, 0, eps...)),
			service("default", "dns", model.ClusterIP, addrs("198.19.0.53"), port("dns", model.UDP, 53, 0, eps...)),
		), goldenEnv)
	}
	a, b := ep("198.18.64.10", 8080, nodeA), ep("198.18.64.11", 8080, nodeA)
	syncFake(t, f, mk(a, b), grace)
	f.takeOps()

	// b has a TCP connection and a UDP flow open when it is removed.
	f.conns["198.19.0.10:80/TCP/198.18.64.11:8080"] = 1
	f.conns["198.19.0.53:53/UDP/198.18.64.11:8080"] = 1
	syncFake(t, f, mk(a), grace)
	ops := f.takeOps()
	slices.Sort(ops)
	want := []string{"del-rs 198.19.0.53:53/UDP 198.18.64.11:8080", "update-rs 198.19.0.10:80/TCP 198.18.64.11:8080 w0"}
	if !slices.Equal(ops, want) {
		t.Errorf("removing a busy endpoint did %v, want %v", ops, want)
	}
	if _, ok := grace["198.19.0.10:80/TCP/198.18.64.11:8080"]; !ok || len(grace) != 1 {
		t.Errorf("graceful list %v", grace)
	}

	// While it drains, syncs leave it alone and the check keeps it.
	syncFake(t, f, mk(a), grace)
	if n, err := drain(f, grace); err != nil || n != 0 {
		t.Errorf("drain with a connection open: %d, %v", n, err)
	}
	if ops := f.takeOps(); len(ops) != 0 {
		t.Errorf("a sync during draining did %v", ops)
	}

	// The connection closes: the next check deletes it.
	delete(f.conns, "198.19.0.10:80/TCP/198.18.64.11:8080")
	if n, err := drain(f, grace); err != nil || n != 1 || len(grace) != 0 {
		t.Errorf("drain after close: %d, %v, list %v", n, err, grace)
	}
	if ops := f.takeOps(); !slices.Equal(ops, []string{"del-rs 198.19.0.10:80/TCP 198.18.64.11:8080"}) {
		t.Errorf("drain did %v", ops)
	}

	// Removed with no connection: deleted at once, never listed.
	syncFake(t, f, mk(a, b), grace)
	f.takeOps()
	syncFake(t, f, mk(b), grace)
	ops = f.takeOps()
	slices.Sort(ops)
	if !slices.Equal(ops, []string{"del-rs 198.19.0.10:80/TCP 198.18.64.10:8080", "del-rs 198.19.0.53:53/UDP 198.18.64.10:8080"}) || len(grace) != 0 {
		t.Errorf("removing an idle endpoint did %v, list %v", ops, grace)
	}

	// Comes back while draining: deleted and added again at weight 1.
	f.conns["198.19.0.10:80/TCP/198.18.64.11:8080"] = 2
	syncFake(t, f, mk(a), grace)
	f.takeOps()
	syncFake(t, f, mk(a, b), grace)
	if ops := f.takeOps(); !slices.Equal(ops, []string{"del-rs 198.19.0.10:80/TCP 198.18.64.11:8080", "add-rs 198.19.0.10:80/TCP 198.18.64.11:8080 w1", "add-rs 198.19.0.53:53/UDP 198.18.64.11:8080 w1"}) {
		t.Errorf("an endpoint coming back while draining did %v", ops)
	}
	if len(grace) != 0 {
		t.Errorf("graceful list %v after the endpoint came back", grace)
	}
}

// TestDrainLeavesReenabledRealServers: a real server someone set back to a
// non-zero weight (a restarted instance that wants it) leaves the list
// untouched, so a dropped instance's background check cannot delete it.
func TestDrainLeavesReenabledRealServers(t *testing.T) {
	f := newFakeIPVS()
	grace := graceful{}
	a, b := ep("198.18.64.10", 8080, nodeA), ep("198.18.64.11", 8080, nodeA)
	mk := func(eps ...*model.Endpoint) *State {
		return mustRender(t, view(service("default", "web", model.ClusterIP, addrs("198.19.0.10"), port("http", model.TCP, 80, 0, eps...))), goldenEnv)
	}
	syncFake(t, f, mk(a, b), grace)
	f.conns["198.19.0.10:80/TCP/198.18.64.11:8080"] = 1
	syncFake(t, f, mk(a), grace)
	f.takeOps()

	// A fresh instance (empty list) wants b again: it resets the weight.
	syncFake(t, f, mk(a, b), graceful{})
	if ops := f.takeOps(); !slices.Equal(ops, []string{"update-rs 198.19.0.10:80/TCP 198.18.64.11:8080 w1"}) {
		t.Errorf("a fresh instance did %v", ops)
	}
	delete(f.conns, "198.19.0.10:80/TCP/198.18.64.11:8080")
	if n, _ := drain(f, grace); n != 0 || len(grace) != 0 {
		t.Errorf("the old list deleted %d and kept %v", n, grace)
	}
	if ops := f.takeOps(); len(ops) != 0 {
		t.Errorf("the old list did %v", ops)
	}
}

func TestServiceConversionRoundTrip(t *testing.T) {
	for _, vs := range []*VirtualServer{
		{Address: addr("198.19.0.10"), Protocol: model.TCP, Port: 80, Scheduler: "rr"},
		{Address: addr("2001:db8:19::10"), Protocol: model.UDP, Port: 53, Scheduler: "mh", Flags: flagPersistent | flagSourceHash, Timeout: 600},
		{Address: addr("198.19.0.11"), Protocol: model.SCTP, Port: 5060, Scheduler: "sh"},
	} {
		s := toService(vs)
		s.Flags |= flagHashed
		back, ok := fromService(s)
		if !ok || !back.sameService(vs) {
			t.Errorf("%s: round trip gave %+v", vs.Key(), back)
		}
		if vs.Address.Is4() && (s.AddressFamily != unix.AF_INET || s.Netmask != 0xffffffff) {
			t.Errorf("%s: family %d netmask %#x", vs.Key(), s.AddressFamily, s.Netmask)
		}
		if vs.Address.Is6() && (s.AddressFamily != unix.AF_INET6 || s.Netmask != 128) {
			t.Errorf("%s: family %d netmask %d", vs.Key(), s.AddressFamily, s.Netmask)
		}
	}
	if _, ok := fromService(&libipvs.Service{FWMark: 7}); ok {
		t.Error("a firewall-mark service was read as ours")
	}
}
