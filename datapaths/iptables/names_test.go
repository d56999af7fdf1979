package iptables

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

// Expected names are taken from kube-proxy's TestOverallIPTablesRules
// (pkg/proxy/iptables/proxier_test.go); they depend only on the service port
// name, the protocol and the endpoint, so they pin the hashing exactly.
func TestChainNamesMatchKubeProxy(t *testing.T) {
	cases := []struct {
		got, want string
	}{
		{svcChainName("ns1/svc1:p80", "tcp"), "KUBE-SVC-XPGD46QRK7WJZT7O"},
		{svcChainName("ns2/svc2:p80", "tcp"), "KUBE-SVC-GNZBNJ2PO5MGZ6GT"},
		{extChainName("ns2/svc2:p80", "tcp"), "KUBE-EXT-GNZBNJ2PO5MGZ6GT"},
		{svcChainName("ns3/svc3:p80", "tcp"), "KUBE-SVC-X27LE4BHSL4DOUIK"},
		{svcChainName("ns4/svc4:p80", "tcp"), "KUBE-SVC-4SW47YFZTEDKD3PK"},
		{fwChainName("ns5/svc5:p80", "tcp"), "KUBE-FW-NUKIZ6OKUXPJNT4C"},
		{extChainName("ns5/svc5:p80", "tcp"), "KUBE-EXT-NUKIZ6OKUXPJNT4C"},
		{sepChainName("ns1/svc1:p80", "tcp", "10.180.0.1:80"), "KUBE-SEP-SXIVWICOYRO3J4NJ"},
		{sepChainName("ns2/svc2:p80", "tcp", "10.180.0.2:80"), "KUBE-SEP-RS4RBKLTHTF2IUXJ"},
		{sepChainName("ns3/svc3:p80", "tcp", "10.180.0.3:80"), "KUBE-SEP-OYPFS5VJICHGATKP"},
		{sepChainName("ns4/svc4:p80", "tcp", "10.180.0.4:80"), "KUBE-SEP-UKSFD7AGPMPPLUHC"},
		{sepChainName("ns4/svc4:p80", "tcp", "10.180.0.5:80"), "KUBE-SEP-C6EBXVWJJZMIWKLZ"},
		{sepChainName("ns5/svc5:p80", "tcp", "10.180.0.3:80"), "KUBE-SEP-I77PXRDZVX7PMWMN"},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("chain name = %s, want %s", c.got, c.want)
		}
		if len(c.got) > 28 {
			t.Errorf("chain name %s is longer than iptables' 28 characters", c.got)
		}
	}
	if got, want := svlChainName("ns2/svc2:p80", "tcp"), "KUBE-SVL-GNZBNJ2PO5MGZ6GT"; got != want {
		t.Errorf("svl chain = %s, want %s", got, want)
	}
}

func TestIsServiceChain(t *testing.T) {
	for name, want := range map[string]bool{
		"KUBE-SVC-XPGD46QRK7WJZT7O": true,
		"KUBE-SVL-XPGD46QRK7WJZT7O": true,
		"KUBE-EXT-XPGD46QRK7WJZT7O": true,
		"KUBE-FW-XPGD46QRK7WJZT7O":  true,
		"KUBE-SEP-SXIVWICOYRO3J4NJ": true,
		"KUBE-SERVICES":             false,
		"KUBE-NODEPORTS":            false,
		"KUBE-MARK-MASQ":            false,
		"KUBE-FORWARD":              false,
	} {
		if got := isServiceChain(name); got != want {
			t.Errorf("isServiceChain(%s) = %v, want %v", name, got, want)
		}
	}
}

// Values from kube-proxy's TestComputeProbability.
func TestComputeProbability(t *testing.T) {
	for n, want := range map[int]string{
		1:      "1.0000000000",
		2:      "0.5000000000",
		10:     "0.1000000000",
		100:    "0.0100000000",
		1000:   "0.0010000000",
		10000:  "0.0001000000",
		100000: "0.0000100000",
		100001: "0.0000099999",
	} {
		if got := computeProbability(n); got != want {
			t.Errorf("computeProbability(%d) = %s, want %s", n, got, want)
		}
	}
	// Ten decimals keep the values strictly monotone up to 100000
	// endpoints, so no two adjacent rules share a probability.
	prev := 0.0
	for n := 100000; n > 1; n-- {
		cur, err := strconv.ParseFloat(computeProbability(n), 64)
		if err != nil {
			t.Fatalf("parse probability for %d: %v", n, err)
		}
		if cur <= prev {
			t.Fatalf("probability for %d (%0.10f) is not above that for %d (%0.10f)", n, cur, n+1, prev)
		}
		prev = cur
	}
	var cache probabilityCache
	if got := cache.get(3); got != "0.3333333333" {
		t.Errorf("cached probability(3) = %s", got)
	}
	if got := cache.get(2); got != "0.5000000000" {
		t.Errorf("cached probability(2) = %s", got)
	}
}

func TestSupportsRandomFully(t *testing.T) {
	for out, want := range map[string]bool{
		"iptables v1.8.9 (legacy)":    true,
		"iptables v1.8.9 (nf_tables)": true,
		"iptables v1.6.2":             true,
		"iptables v1.6.1":             false,
		"iptables v1.4.21":            false,
		"garbage":                     false,
	} {
		if got := supportsRandomFully(out); got != want {
			t.Errorf("supportsRandomFully(%q) = %v, want %v", out, got, want)
		}
	}
}

// TestManyEndpointNames checks the render's chain names for a Service
// with more endpoints than linearChains (found through maps there, and
// hashed inline rather than by the functions in names.go) against
// kube-proxy's naming, computed independently by those functions.
func TestManyEndpointNames(t *testing.T) {
	var c goldenCase
	for _, g := range goldenCases() {
		if g.name == "nodeport-many-endpoints" {
			c = g
		}
	}
	if c.view == nil {
		t.Fatal("no nodeport-many-endpoints fixture")
	}
	text, err := RestoreText(c.view, c.env)
	if err != nil {
		t.Fatal(err)
	}
	eps := c.view.Cluster.Services[0].Ports[0].Endpoints
	if len(eps) <= linearChains {
		t.Fatalf("fixture has %d endpoints, want more than %d", len(eps), linearChains)
	}
	svc := svcChainName("default/wide:http", "tcp")
	if !strings.Contains(text, ":"+svc+" ") {
		t.Errorf("no chain %s in the ruleset", svc)
	}
	for _, e := range eps {
		sep := sepChainName("default/wide:http", "tcp", netip.AddrPortFrom(e.IP, uint16(e.Port)).String())
		if !strings.Contains(text, ":"+sep+" ") || !strings.Contains(text, "-j "+sep+"\n") {
			t.Errorf("endpoint %s: chain %s not declared and jumped to", e.IP, sep)
		}
	}
}
