package iptables

import (
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"proxyrig/datapaths"
	"proxyrig/model"
)

func renderV4(t *testing.T, v *datapaths.NodeView) *FamilyRules {
	t.Helper()
	rs, err := Render(v, goldenEnv)
	if err != nil {
		t.Fatal(err)
	}
	return rs.Family(IPv4)
}

// payloadChains returns the chains declared in each table of a payload.
func payloadChains(payload []byte) map[string][]string {
	out := map[string][]string{}
	table := ""
	for _, l := range strings.Split(string(payload), "\n") {
		switch {
		case strings.HasPrefix(l, "*"):
			table = l[1:]
		case strings.HasPrefix(l, ":"):
			out[table] = append(out[table], strings.Fields(l[1:])[0])
		}
	}
	for _, v := range out {
		sort.Strings(v)
	}
	return out
}

var deleteRE = regexp.MustCompile(`(?m)^-X (\S+)$`)

func payloadDeletes(payload []byte) []string {
	var out []string
	for _, m := range deleteRE.FindAllStringSubmatch(string(payload), -1) {
		out = append(out, m[1])
	}
	sort.Strings(out)
	return out
}

func serviceChainNames(fr *FamilyRules, svc string) []string {
	var out []string
	for _, s := range fr.Services {
		if s.Service == svc {
			for _, c := range s.Chains {
				out = append(out, c.Name)
			}
		}
	}
	sort.Strings(out)
	return out
}

func twoServices(bEndpoints ...*model.Endpoint) *datapaths.NodeView {
	return view(
		service("default", "a", model.NodePort, addrs("198.19.0.1"),
			port("http", model.TCP, 80, 30001, ep("198.18.64.1", 8080, nodeA), ep("198.18.65.1", 8080, nodeB))),
		service("default", "b", model.ClusterIP, addrs("198.19.0.2"),
			port("http", model.TCP, 80, 0, bEndpoints...)),
	)
}

var topLevelNAT = []string{kubeMarkMasqChain, kubeNodePortsChain, kubePostroutingChain, kubeServicesChain}
var allFilter = []string{kubeExternalServicesChain, kubeletFirewallChain, kubeForwardChain, kubeNodePortsChain, kubeProxyFirewallChain, kubeServicesChain}

func TestPlanFirstSyncIsFull(t *testing.T) {
	fr := renderV4(t, twoServices(ep("198.18.64.2", 8080, nodeA)))
	p := planSync(fr, nil, false, nil)
	if !p.full {
		t.Fatal("a sync with no applied state must be full")
	}
	if len(p.jumps) != len(jumpRules) {
		t.Errorf("inserted %d jump rules into an empty kernel, want %d", len(p.jumps), len(jumpRules))
	}
	if diff := cmp.Diff([]string{"default/a", "default/b"}, p.changed); diff != "" {
		t.Errorf("changed services (-want +got):\n%s", diff)
	}
	if got, want := p.written, fr.Rules(); got != want {
		t.Errorf("full sync wrote %d rules, want all %d", got, want)
	}
}

func TestPlanPartialEndpointChange(t *testing.T) {
	before := renderV4(t, twoServices(ep("198.18.64.2", 8080, nodeA)))
	last := newApplied(before)
	after := renderV4(t, twoServices(ep("198.18.64.3", 8080, nodeA)))

	p := planSync(after, last, false, nil)
	if p.full {
		t.Fatal("plan is full, want partial")
	}
	if len(p.jumps) != 0 {
		t.Errorf("partial sync inserted jump rules: %v", p.jumps)
	}
	if diff := cmp.Diff([]string{"default/b"}, p.changed); diff != "" {
		t.Errorf("changed services (-want +got):\n%s", diff)
	}
	got := payloadChains(p.payload)
	if diff := cmp.Diff(allFilter, got[tableFilter]); diff != "" {
		t.Errorf("filter chains written (-want +got):\n%s", diff)
	}
	oldSEP := sepChainName("default/b:http", "tcp", "198.18.64.2:8080")
	wantNAT := append(slices.Clone(topLevelNAT), serviceChainNames(after, "default/b")...)
	wantNAT = append(wantNAT, oldSEP)
	sort.Strings(wantNAT)
	if diff := cmp.Diff(wantNAT, got[tableNAT]); diff != "" {
		t.Errorf("nat chains written: only b's chains, the top-level chains and the removed endpoint chain expected (-want +got):\n%s", diff)
	}
	for _, c := range serviceChainNames(after, "default/a") {
		if strings.Contains(string(p.payload), "-A "+c+" ") {
			t.Errorf("unchanged service a's chain %s is written", c)
		}
	}
	if diff := cmp.Diff([]string{oldSEP}, payloadDeletes(p.payload)); diff != "" {
		t.Errorf("deleted chains (-want +got):\n%s", diff)
	}
	// Written counts the always-rewritten rules plus b's chains.
	want := 0
	for _, c := range after.Filter {
		want += len(c.Rules)
	}
	for _, c := range after.NAT {
		want += len(c.Rules)
	}
	for _, s := range after.Services {
		if s.Service == "default/b" {
			for _, c := range s.Chains {
				want += len(c.Rules)
			}
		}
	}
	if p.written != want {
		t.Errorf("written = %d, want %d", p.written, want)
	}
}

func TestPlanPartialDeletedService(t *testing.T) {
	before := renderV4(t, twoServices(ep("198.18.64.2", 8080, nodeA)))
	last := newApplied(before)
	afterView := twoServices()
	afterView.Cluster.Services = afterView.Cluster.Services[:1] // b deleted
	after := renderV4(t, afterView)

	p := planSync(after, last, false, nil)
	if diff := cmp.Diff([]string{"default/b"}, p.changed); diff != "" {
		t.Errorf("changed services (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(serviceChainNames(before, "default/b"), payloadDeletes(p.payload)); diff != "" {
		t.Errorf("deleted chains (-want +got):\n%s", diff)
	}
	if strings.Contains(string(p.payload), "198.19.0.2") {
		t.Error("the deleted service's VIP is still written")
	}
	// -X must follow the flush of every chain that referenced the deleted
	// chains (KUBE-SERVICES is redeclared, hence flushed, first).
	s := string(p.payload)
	if strings.Index(s, ":KUBE-SERVICES") > strings.Index(s, "-X ") {
		t.Error("a chain is deleted before KUBE-SERVICES is flushed")
	}
}

func TestPlanPartialNoChange(t *testing.T) {
	fr := renderV4(t, twoServices(ep("198.18.64.2", 8080, nodeA)))
	p := planSync(fr, newApplied(fr), false, nil)
	if len(p.changed) != 0 || len(p.deleted) != 0 {
		t.Errorf("no-op sync changed %v, deleted %v", p.changed, p.deleted)
	}
	got := payloadChains(p.payload)
	if diff := cmp.Diff(topLevelNAT, got[tableNAT]); diff != "" {
		t.Errorf("nat chains (-want +got):\n%s", diff)
	}
}

func TestPlanForceFullRewritesEverything(t *testing.T) {
	fr := renderV4(t, twoServices(ep("198.18.64.2", 8080, nodeA)))
	p := planSync(fr, newApplied(fr), true, nil)
	if !p.full || p.written != fr.Rules() || len(p.changed) != 2 {
		t.Errorf("forced full sync: full=%v written=%d/%d changed=%v", p.full, p.written, fr.Rules(), p.changed)
	}
}

const savedSample = `# Generated by iptables-save v1.8.9 on Sun Nov 22 21:33:33 2026
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-STALE0000000000 - [0:0]
:KUBE-SEP-STALE0000000000 - [0:0]
:KUBE-OLD-HOOKED - [0:0]
:OTHER - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -j KUBE-OLD-HOOKED
-A KUBE-SERVICES -j KUBE-SVC-STALE0000000000
-A KUBE-SVC-STALE0000000000 -j KUBE-SEP-STALE0000000000
-A OTHER -j RETURN
COMMIT
# Completed
# Warning: iptables-legacy tables present, use iptables-legacy-save to see them
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-STRAY - [0:0]
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
COMMIT
`

func TestParseSave(t *testing.T) {
	st := parseSave([]byte(savedSample))
	if got := st[tableNAT].chains["PREROUTING"]; got != "ACCEPT" {
		t.Errorf("PREROUTING policy = %q", got)
	}
	if got := st[tableFilter].chains["FORWARD"]; got != "DROP" {
		t.Errorf("FORWARD policy = %q", got)
	}
	if got := len(st[tableNAT].rules); got != 5 {
		t.Errorf("nat rules = %d, want 5", got)
	}
	if c, tgt := ruleChainAndTarget(`-A OUTPUT -m comment --comment "x -j y" -j KUBE-OLD-HOOKED`); c != "OUTPUT" || tgt != "KUBE-OLD-HOOKED" {
		t.Errorf("ruleChainAndTarget = %s, %s", c, tgt)
	}
}

func TestPlanFullUsesSavedState(t *testing.T) {
	fr := renderV4(t, twoServices(ep("198.18.64.2", 8080, nodeA)))
	p := planSync(fr, newApplied(fr), true, parseSave([]byte(savedSample)))

	// Present jumps are not inserted again; the rest are.
	for _, j := range p.jumps {
		if (j.Chain == "PREROUTING" && strings.HasSuffix(j.Spec, "KUBE-SERVICES")) || (j.Chain == "FORWARD" && strings.HasSuffix(j.Spec, "-j KUBE-FORWARD")) {
			t.Errorf("jump already present was inserted again: %v", j)
		}
	}
	if got, want := len(p.jumps), len(jumpRules)-2; got != want {
		t.Errorf("inserted %d jumps, want %d", got, want)
	}
	// Stray KUBE-* chains go; one still hooked from OUTPUT and non-KUBE
	// chains stay.
	want := []string{"KUBE-SEP-STALE0000000000", "KUBE-STRAY", "KUBE-SVC-STALE0000000000"}
	if diff := cmp.Diff(want, payloadDeletes(p.payload)); diff != "" {
		t.Errorf("deleted chains (-want +got):\n%s", diff)
	}
}

func TestPlanCleanup(t *testing.T) {
	got := string(planCleanup(parseSave([]byte(savedSample))))
	want := `*filter
:KUBE-FORWARD - [0:0]
:KUBE-STRAY - [0:0]
-D FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-X KUBE-FORWARD
-X KUBE-STRAY
COMMIT
*nat
:KUBE-OLD-HOOKED - [0:0]
:KUBE-SEP-STALE0000000000 - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-STALE0000000000 - [0:0]
-D PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-D OUTPUT -j KUBE-OLD-HOOKED
-X KUBE-OLD-HOOKED
-X KUBE-SEP-STALE0000000000
-X KUBE-SERVICES
-X KUBE-SVC-STALE0000000000
COMMIT
`
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("cleanup payload (-want +got):\n%s", diff)
	}
	if planCleanup(parseSave([]byte("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n"))) != nil {
		t.Error("cleanup of a clean table is not empty")
	}
}
