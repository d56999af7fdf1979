package nftables

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBlockRules checks the rewrite on a small transaction: runs of rules
// of one regular chain become one chain block, in order; base chains,
// positioned rules and everything else are left as they were.
func TestBlockRules(t *testing.T) {
	in := `add table ip kube-proxy
add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }
add chain ip kube-proxy svc-a
flush chain ip kube-proxy svc-a
add rule ip kube-proxy svc-a ip saddr 10.0.0.1 jump mark-for-masquerade
add rule ip kube-proxy svc-a numgen random mod 2 vmap { 0 : goto ep-1 , 1 : goto ep-2 } comment "a/b"
add rule ip kube-proxy nat-output jump services
add rule ip kube-proxy nat-prerouting jump services
add rule ip kube-proxy svc-a index 0 counter
add rule ip kube-proxy ep-1 meta l4proto tcp dnat to 10.0.0.1:80
add element ip kube-proxy service-ips { 10.96.0.1 . tcp . 80 : goto svc-a }
add rule ip kube-proxy ep-2 meta l4proto tcp dnat to 10.0.0.2:80
add element ip kube-proxy cluster-ips { 10.96.0.1 }
add element ip kube-proxy firewall-src { 10.0.0.0/8 }
delete element ip kube-proxy service-ips { 10.96.0.2 . tcp . 80 }
`
	want := `add table ip kube-proxy
add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }
add chain ip kube-proxy svc-a
flush chain ip kube-proxy svc-a
add chain ip kube-proxy svc-a { ip saddr 10.0.0.1 jump mark-for-masquerade; numgen random mod 2 vmap { 0 : goto ep-1 , 1 : goto ep-2 } comment "a/b"; }
add rule ip kube-proxy nat-output jump services
add rule ip kube-proxy nat-prerouting jump services
add rule ip kube-proxy svc-a index 0 counter
add chain ip kube-proxy ep-1 { meta l4proto tcp dnat to 10.0.0.1:80; }
add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIPs" ; elements = { 10.96.0.1 . tcp . 80 : goto svc-a } ; }
add chain ip kube-proxy ep-2 { meta l4proto tcp dnat to 10.0.0.2:80; }
add set ip kube-proxy cluster-ips { type ipv4_addr ; elements = { 10.96.0.1 } ; }
add element ip kube-proxy firewall-src { 10.0.0.0/8 }
delete element ip kube-proxy service-ips { 10.96.0.2 . tcp . 80 }
`
	// Declared by an earlier transaction: the caller keeps decls.
	decls := map[string]setDecl{}
	blockRules(`add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIPs" ; }
add set ip kube-proxy cluster-ips { type ipv4_addr ; }
add set ip kube-proxy firewall-src { type ipv4_addr ; flags interval ; }
`, decls)
	if got := blockRules(in, decls); got != want {
		t.Errorf("blockRules:\n%s\nwant:\n%s", got, want)
	}
	blockRules("delete set ip kube-proxy cluster-ips\n", decls)
	if _, ok := decls["ip kube-proxy cluster-ips"]; ok {
		t.Error("a deleted set's declaration is still remembered")
	}
}

// TestBlockRulesSameRuleset loads every golden ruleset twice, as written
// and rewritten by blockRules, into two namespaces with the real nft, and
// requires the kernel to end up with the same ruleset.
func TestBlockRulesSameRuleset(t *testing.T) {
	requireRoot(t)
	skipUnlessSupported(t, checkPrivileges())
	files, err := filepath.Glob("testdata/*.golden")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files (%v)", err)
	}
	a, b := newTestNS(t), newTestNS(t)
	ctx := context.Background()
	list := func(ns interface{ Do(func() error) error }) string {
		var out []byte
		if err := ns.Do(func() (err error) {
			out, err = exec.CommandContext(ctx, "nft", "list", "ruleset").CombinedOutput()
			return err
		}); err != nil {
			t.Fatalf("nft list ruleset: %v: %s", err, out)
		}
		return string(out)
	}
	rewritten := 0
	for _, f := range files {
		raw, err := readGolden(f)
		if err != nil {
			t.Fatal(err)
		}
		blocks := blockRules(raw, map[string]setDecl{})
		if blocks != raw {
			rewritten++
		}
		for _, ns := range []interface{ Do(func() error) error }{a, b} {
			if err := ns.Do(func() error { return runNFT(ctx, "flush ruleset\n") }); err != nil {
				t.Fatal(err)
			}
		}
		if err := a.Do(func() error { return runNFT(ctx, raw) }); err != nil {
			t.Fatalf("%s as written: %v", f, err)
		}
		if err := b.Do(func() error { return runNFT(ctx, blocks) }); err != nil {
			t.Fatalf("%s in chain blocks: %v", f, err)
		}
		if la, lb := list(a), list(b); la != lb {
			t.Errorf("%s: the rulesets differ:\n%s\nwith chain blocks:\n%s", f, la, lb)
		}
	}
	if rewritten == 0 {
		t.Error("blockRules rewrote none of the golden rulesets")
	}
}

// readGolden reads a golden ruleset, without comment lines.
func readGolden(path string) (string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(string(raw), "\n"), "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.String(), nil
}
