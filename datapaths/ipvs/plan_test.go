package ipvs

import (
	"slices"
	"strings"
	"testing"

	"proxyrig/model"
)

func TestPlanIPSets(t *testing.T) {
	st := mustRender(t, view(service("default", "web", model.NodePort, addrs("198.19.0.10"),
		port("http", model.TCP, 80, 30010, ep("198.18.64.10", 8080, nodeA)))), goldenEnv)

	// Into an empty kernel: every set is created, every entry added.
	p := planIPSets(st, nil)
	if len(p.creates) != 2*len(setSpecs) {
		t.Errorf("%d creates, want %d", len(p.creates), 2*len(setSpecs))
	}
	want := []string{
		"add KUBE-LOOP-BACK 198.18.64.10,tcp:8080,198.18.64.10",
		"add KUBE-CLUSTER-IP 198.19.0.10,tcp:80",
		"add KUBE-NODE-PORT-TCP 30010",
		"add KUBE-IPVS-IPS 198.19.0.10",
	}
	if !slices.Equal(p.adds, want) || len(p.dels) != 0 {
		t.Errorf("adds %v dels %v, want adds %v", p.adds, p.dels, want)
	}

	// What `ipset save` lists after that: nothing to do.
	var save strings.Builder
	for _, fs := range st.Families {
		for _, s := range fs.Sets {
			save.WriteString(s.createLine() + " bucketsize 12 initval 0x1234\n")
			for _, e := range s.Entries {
				save.WriteString("add " + s.Name + " " + e + "\n")
			}
		}
	}
	if p := planIPSets(st, parseIPSetSave([]byte(save.String()))); !p.empty() {
		t.Errorf("converged sets still planned: %+v", p)
	}

	// A stale entry, a foreign set and a set of the wrong type.
	extra := save.String() + "add KUBE-CLUSTER-IP 198.19.0.99,udp:53\ncreate OTHER hash:ip family inet\nadd OTHER 1.2.3.4\n"
	extra = strings.Replace(extra, "create KUBE-IPVS-IPS hash:ip ", "create KUBE-IPVS-IPS hash:net ", 1)
	p = planIPSets(st, parseIPSetSave([]byte(extra)))
	if !slices.Equal(p.dels, []string{"del KUBE-CLUSTER-IP 198.19.0.99,udp:53"}) {
		t.Errorf("dels %v", p.dels)
	}
	if !slices.Equal(p.creates, []string{"destroy KUBE-IPVS-IPS", "create KUBE-IPVS-IPS hash:ip family inet hashsize 1024 maxelem 65536"}) ||
		!slices.Equal(p.adds, []string{"add KUBE-IPVS-IPS 198.19.0.10"}) {
		t.Errorf("wrong-type set: creates %v adds %v", p.creates, p.adds)
	}
	if got := string(p.entryPayload()); !strings.HasPrefix(got, "del ") {
		t.Errorf("deletions should come first:\n%s", got)
	}
	if got := string(destroyPayload(parseIPSetSave([]byte(extra)))); strings.Contains(got, "OTHER") || !strings.Contains(got, "destroy KUBE-6-IPVS-IPS\n") {
		t.Errorf("destroy payload:\n%s", got)
	}
}

func TestRestorePayloadJumps(t *testing.T) {
	st := mustRender(t, view(), goldenEnv)
	fs := st.Family(IPv4)
	full, n := restorePayload(fs, true, nil)
	if n != fs.Rules() {
		t.Errorf("full payload into an empty kernel writes %d rules, want %d", n, fs.Rules())
	}
	// With every jump present, none is inserted again.
	var saved strings.Builder
	for _, table := range []string{tableNAT, tableFilter} {
		saved.WriteString("*" + table + "\n")
		for _, j := range fs.Jumps {
			if j.Table == table {
				saved.WriteString("-A " + j.Chain + " " + j.Spec + "\n")
			}
		}
		saved.WriteString("COMMIT\n")
	}
	again, n := restorePayload(fs, true, parseSave([]byte(saved.String())))
	if strings.Contains(string(again), "-I ") || n != fs.Rules()-len(fs.Jumps) {
		t.Errorf("jumps inserted twice (%d rules):\n%s", n, again)
	}
	partial, _ := restorePayload(fs, false, nil)
	if strings.Contains(string(partial), "-I ") {
		t.Error("a partial sync inserted jumps")
	}
	if !strings.HasPrefix(string(full), "*nat\n") {
		t.Error("nat must come first, as in kube-proxy's IPVS mode")
	}
}

func TestCleanupPayload(t *testing.T) {
	saved := parseSave([]byte(`*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-MARK-MASQ - [0:0]
:OTHER - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -j OTHER
-A KUBE-SERVICES -j KUBE-MARK-MASQ
COMMIT
*filter
:INPUT ACCEPT [0:0]
:KUBE-IPVS-FILTER - [0:0]
-A INPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER
COMMIT
`))
	got := string(cleanupPayload(saved))
	want := `*nat
:KUBE-MARK-MASQ - [0:0]
:KUBE-SERVICES - [0:0]
-D PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-X KUBE-MARK-MASQ
-X KUBE-SERVICES
COMMIT
*filter
:KUBE-IPVS-FILTER - [0:0]
-D INPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER
-X KUBE-IPVS-FILTER
COMMIT
`
	if got != want {
		t.Errorf("cleanup payload:\n%s\nwant:\n%s", got, want)
	}
	if cleanupPayload(parseSave([]byte("*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"))) != nil {
		t.Error("cleanup of a clean namespace is not empty")
	}
}

func TestParseOptions(t *testing.T) {
	if s, d, err := parseOptions(nil); err != nil || s != "rr" || d != DefaultGracefulCheckInterval {
		t.Errorf("defaults: %s %s %v", s, d, err)
	}
	if s, d, err := parseOptions(map[string]string{"scheduler": "mh", "graceful-check-interval": "2s"}); err != nil || s != "mh" || d.String() != "2s" {
		t.Errorf("mh/2s: %s %s %v", s, d, err)
	}
	for _, bad := range []map[string]string{{"scheduler": "fifo"}, {"graceful-check-interval": "soon"}, {"graceful-check-interval": "0s"}, {"schedular": "rr"}} {
		if _, _, err := parseOptions(bad); err == nil {
			t.Errorf("accepted %v", bad)
		}
	}
}

func TestKernelOlderThan(t *testing.T) {
	for rel, want := range map[string]bool{"6.1.0-56-amd64\n": false, "5.8.18": true, "5.9.0": false, "4.19.0-1-cloud": true, "garbage": false} {
		if got := kernelOlderThan(rel, 5, 9); got != want {
			t.Errorf("kernelOlderThan(%q) = %v", rel, got)
		}
	}
}

func TestSupportsRandomFully(t *testing.T) {
	for out, want := range map[string]bool{"iptables v1.8.9 (legacy)": true, "iptables v1.6.1": false, "iptables v1.6.2": true, "?": false} {
		if got := supportsRandomFully(out); got != want {
			t.Errorf("%q: %v", out, got)
		}
	}
}
