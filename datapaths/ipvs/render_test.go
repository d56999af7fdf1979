package ipvs

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"proxyrig/datapaths"
	"proxyrig/model"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current renderer")

func TestGolden(t *testing.T) {
	for _, c := range goldenCases() {
		t.Run(c.name, func(t *testing.T) {
			got, err := Text(c.view, c.env)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", c.name+".golden")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run `go test ./datapaths/ipvs -run TestGolden -update` to create it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("%s differs (-want +got); if the change is intended, rerun with -update:\n%s", path, diff)
			}
		})
	}
}

func TestRenderIsDeterministic(t *testing.T) {
	for _, c := range goldenCases() {
		a, err := Text(c.view, c.env)
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if b, _ := Text(c.view, c.env); a != b {
				t.Fatalf("%s: two renders differ", c.name)
			}
		}
	}
}

func TestRenderRejects(t *testing.T) {
	if _, err := Render(nil, Env{}); err == nil {
		t.Error("Render(nil) succeeded")
	}
	if _, err := Render(&datapaths.NodeView{}, Env{}); err == nil {
		t.Error("Render without a cluster succeeded")
	}
	if _, err := Render(view(), Env{Scheduler: "fifo"}); err == nil {
		t.Error("Render accepted an unknown scheduler")
	}
}

func mustRender(t *testing.T, v *datapaths.NodeView, env Env) *State {
	t.Helper()
	st, err := Render(v, env)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func findVS(st *State, key string) *VirtualServer {
	for _, vs := range st.VirtualServers {
		if vs.Key() == key {
			return vs
		}
	}
	return nil
}

func rsKeys(vs *VirtualServer) []string {
	if vs == nil {
		return nil
	}
	var out []string
	for _, rs := range vs.RealServers {
		out = append(out, rs.Key())
	}
	return out
}

// TestRealServerSelection pins which endpoints each kind of virtual server
// gets, the heart of kube-proxy's syncEndpoint: Cluster traffic the
// Cluster endpoints, Local traffic the local ones or, with none here, the
// Cluster ones (kubernetes#97081).
func TestRealServerSelection(t *testing.T) {
	lb := service("default", "lb", model.LoadBalancer, addrs("198.19.0.17"),
		port("http", model.TCP, 80, 30017, ep("198.18.64.10", 8080, nodeA), ep("198.18.65.10", 8080, nodeB)))
	lb.ExternalTrafficPolicy = model.PolicyLocal
	lb.LoadBalancerIPs = addrs("198.19.200.17")
	lb.ExternalIPs = addrs("198.19.100.17")
	remote := service("default", "remote", model.LoadBalancer, addrs("198.19.0.18"),
		port("http", model.TCP, 80, 30018, ep("198.18.65.11", 8080, nodeB)))
	remote.ExternalTrafficPolicy = model.PolicyLocal
	remote.LoadBalancerIPs = addrs("198.19.200.18")
	itp := service("default", "itp", model.ClusterIP, addrs("198.19.0.22"),
		port("http", model.TCP, 80, 0, ep("198.18.64.10", 8080, nodeA), ep("198.18.65.10", 8080, nodeB)))
	itp.InternalTrafficPolicy = model.PolicyLocal
	itpRemote := service("default", "itp-remote", model.ClusterIP, addrs("198.19.0.23"),
		port("http", model.TCP, 80, 0, ep("198.18.65.11", 8080, nodeB)))
	itpRemote.InternalTrafficPolicy = model.PolicyLocal
	term := service("default", "term", model.ClusterIP, addrs("198.19.0.25"),
		port("http", model.TCP, 80, 0, terminating("198.18.64.10", 8080, nodeA), dead("198.18.64.11", 8080, nodeA), ep("198.18.65.10", 8080, nodeB)))
	termOnly := service("default", "term-only", model.ClusterIP, addrs("198.19.0.26"),
		port("http", model.TCP, 80, 0, terminating("198.18.64.10", 8080, nodeA), dead("198.18.64.11", 8080, nodeA)))
	empty := service("default", "empty", model.ClusterIP, addrs("198.19.0.27"), port("http", model.TCP, 80, 0))
	st := mustRender(t, view(lb, remote, itp, itpRemote, term, termOnly, empty), goldenEnv)

	both := []string{"198.18.64.10:8080", "198.18.65.10:8080"}
	local := []string{"198.18.64.10:8080"}
	for _, c := range []struct {
		key  string
		want []string
	}{
		{"198.19.0.17:80/TCP", both},                            // ClusterIP of an eTP=Local Service: all
		{"198.19.200.17:80/TCP", local},                         // LB IP: local only
		{"198.19.100.17:80/TCP", local},                         // externalIP: local only
		{"198.18.0.2:30017/TCP", local},                         // NodePort: local only
		{"198.19.200.18:80/TCP", []string{"198.18.65.11:8080"}}, // no local endpoint: Cluster ones
		{"198.19.0.22:80/TCP", local},                           // iTP=Local ClusterIP
		{"198.19.0.23:80/TCP", nil},                             // iTP=Local, none here, not external: no real server, so IPVS rejects
		{"198.19.0.25:80/TCP", []string{"198.18.65.10:8080"}},   // ready beats terminating
		{"198.19.0.26:80/TCP", local},                           // only terminating: serving ones are the fallback
		{"198.19.0.27:80/TCP", nil},                             // no endpoints: the virtual server exists, empty
	} {
		vs := findVS(st, c.key)
		if vs == nil {
			t.Errorf("no virtual server %s", c.key)
			continue
		}
		if got := rsKeys(vs); !slices.Equal(got, c.want) {
			t.Errorf("%s real servers %v, want %v", c.key, got, c.want)
		}
		for _, rs := range vs.RealServers {
			if rs.Weight != 1 {
				t.Errorf("%s: real server %s has weight %d, want 1", c.key, rs.Key(), rs.Weight)
			}
		}
	}
}

func TestBindAndNodePortAddresses(t *testing.T) {
	svc := service("default", "np", model.LoadBalancer, addrs("198.19.0.16", "2001:db8:19::16"),
		port("http", model.TCP, 80, 30016, ep("198.18.64.10", 8080, nodeA), ep("2001:db8:64::10", 8080, nodeA)))
	svc.ExternalIPs = addrs("198.18.1.2", "198.19.100.16")
	svc.LoadBalancerIPs = addrs("198.19.200.16")
	v := view(svc)
	env := Env{LocalAddrs: addrs("198.18.0.2", "198.18.1.2", "127.0.0.1", "::1", "fe80::1", "2001:db8:18::2"), RandomFully: true}
	st := mustRender(t, v, env)
	want := addrs("198.19.0.16", "198.19.100.16", "198.19.200.16", "2001:db8:19::16")
	if !slices.Equal(st.Bind, want) {
		t.Errorf("bound %v, want %v (the node's own 198.18.1.2 is not bound)", st.Bind, want)
	}
	for _, k := range []string{"198.18.0.2:30016/TCP", "198.18.1.2:30016/TCP", "[2001:db8:18::2]:30016/TCP"} {
		if findVS(st, k) == nil {
			t.Errorf("no NodePort virtual server %s", k)
		}
	}
	for _, k := range []string{"127.0.0.1:30016/TCP", "[::1]:30016/TCP", "[fe80::1]:30016/TCP"} {
		if findVS(st, k) != nil {
			t.Errorf("NodePort served on %s: IPVS mode serves no localhost or link-local NodePorts", k)
		}
	}
	if got := st.Family(IPv4).Set(setIPVSIPs).Entries; !slices.Equal(got, []string{"198.19.0.16", "198.19.100.16", "198.19.200.16"}) {
		t.Errorf("KUBE-IPVS-IPS = %v", got)
	}
	if got := st.Family(IPv6).Set(setIPVSIPs); got.Name != "KUBE-6-IPVS-IPS" || !slices.Equal(got.Entries, []string{"2001:db8:19::16"}) {
		t.Errorf("IPv6 KUBE-IPVS-IPS = %s %v", got.Name, got.Entries)
	}

	v.Proxy.NodePortAddresses = []netip.Prefix{prefix("198.18.1.0/24")}
	st = mustRender(t, v, env)
	if findVS(st, "198.18.0.2:30016/TCP") != nil || findVS(st, "198.18.1.2:30016/TCP") == nil {
		t.Error("--nodeport-addresses 198.18.1.0/24 should leave only 198.18.1.2")
	}
	if findVS(st, "[2001:db8:18::2]:30016/TCP") == nil {
		t.Error("a family with no --nodeport-addresses CIDR should keep every address")
	}
}

func TestAffinityAndSchedulerFlags(t *testing.T) {
	aff := service("default", "sticky", model.ClusterIP, addrs("198.19.0.20"), port("http", model.TCP, 80, 0, ep("198.18.64.10", 8080, nodeA)))
	aff.SessionAffinity = true
	plain := service("default", "plain", model.ClusterIP, addrs("198.19.0.21"), port("http", model.TCP, 80, 0, ep("198.18.64.10", 8080, nodeA)))
	for _, sched := range Schedulers {
		st := mustRender(t, view(aff, plain), Env{Scheduler: sched})
		s, p := findVS(st, "198.19.0.20:80/TCP"), findVS(st, "198.19.0.21:80/TCP")
		wantHash := uint32(0)
		if sched == "mh" {
			wantHash = flagSourceHash
		}
		if s.Scheduler != sched || s.Flags != flagPersistent|wantHash || s.Timeout != 10800 {
			t.Errorf("%s: sticky service %+v", sched, s)
		}
		if p.Flags != wantHash || p.Timeout != 0 {
			t.Errorf("%s: plain service %+v", sched, p)
		}
	}
}

// TestSetNamesFitTheKernel: ipset names are at most 31 characters, and
// the IPv6 ones are distinct from each other and from the IPv4 ones.
func TestSetNamesFitTheKernel(t *testing.T) {
	seen := map[string]bool{}
	for _, s := range setSpecs {
		for _, f := range families {
			n := familySetName(s.name, f)
			if len(n) > maxSetNameLength {
				t.Errorf("%s is %d characters", n, len(n))
			}
			if seen[n] {
				t.Errorf("set name %s used twice", n)
			}
			seen[n] = true
			if !isOurSet(n) {
				t.Errorf("isOurSet(%s) = false", n)
			}
		}
	}
	if got := familySetName(setLoadBalancerSrcCIDR, IPv6); got != "KUBE-6-LOAD-BALANCER-SOURCE-CID" {
		t.Errorf("IPv6 name of %s = %s, want kube-proxy's truncation", setLoadBalancerSrcCIDR, got)
	}
	if isOurSet("KUBE-OTHER") {
		t.Error("isOurSet claims a set it does not own")
	}
}

// TestRuleCountIsConstant: IPVS mode's iptables rules do not grow with the
// number of Services (their sets do).
func TestRuleCountIsConstant(t *testing.T) {
	mk := func(n int) *datapaths.NodeView {
		var svcs []*model.Service
		for i := range n {
			ip := netip.AddrFrom4([4]byte{198, 19, byte(i / 250), byte(1 + i%250)})
			s := service("default", "svc"+strings.Repeat("x", i%3)+string(rune('a'+i%26))+netip.AddrPortFrom(ip, 0).Addr().String(), model.NodePort, []netip.Addr{ip},
				port("http", model.TCP, 80, int32(30000+i), ep("198.18.64.10", 8080, nodeA)))
			svcs = append(svcs, s)
		}
		return view(svcs...)
	}
	small, big := mustRender(t, mk(3), goldenEnv), mustRender(t, mk(300), goldenEnv)
	if a, b := small.Family(IPv4).Rules(), big.Family(IPv4).Rules(); a != b {
		t.Errorf("rules: %d for 3 Services, %d for 300", a, b)
	}
	if got := len(big.Family(IPv4).Set(setClusterIP).Entries); got != 300 {
		t.Errorf("KUBE-CLUSTER-IP has %d entries, want 300", got)
	}
	if got := len(big.VirtualServers); got != 600 {
		t.Errorf("%d virtual servers, want 600 (ClusterIP and NodePort each)", got)
	}
}

func TestServiceFingerprints(t *testing.T) {
	a := service("default", "a", model.ClusterIP, addrs("198.19.0.10"), port("http", model.TCP, 80, 0, ep("198.18.64.10", 8080, nodeA)))
	b := service("default", "b", model.ClusterIP, addrs("198.19.0.11"), port("http", model.TCP, 80, 0, ep("198.18.64.11", 8080, nodeA)))
	st1 := mustRender(t, view(a, b), goldenEnv)
	b2 := service("default", "b", model.ClusterIP, addrs("198.19.0.11"), port("http", model.TCP, 80, 0, ep("198.18.64.12", 8080, nodeA)))
	st2 := mustRender(t, view(a, b2), goldenEnv)
	if st1.Services["default/a"] != st2.Services["default/a"] {
		t.Error("an unchanged Service's fingerprint changed")
	}
	if st1.Services["default/b"] == st2.Services["default/b"] {
		t.Error("a changed endpoint did not change the Service's fingerprint")
	}
}
