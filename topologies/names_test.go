package topologies

import (
	"net/netip"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"a", "lab1", "abcdefghijkl", "0"} {
		if err := ValidateName(ok); err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", "abcdefghijklm", "Lab", "a-b", "a.b", "a b", "ü"} {
		if err := ValidateName(bad); err == nil {
			t.Errorf("ValidateName(%q) = nil, want an error", bad)
		}
	}
}

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"node-a":       "node-a",
		"Node_A":       "node-a",
		"ip-10.0.0.1":  "ip-10.0.0.1",
		"2001:db8::1":  "2001-db8--1",
		"web/0":        "web-0",
		"":             "-",
		"a.b-c.d":      "a.b-c.d",
		"UPPER.lower9": "upper.lower9",
	} {
		if got := sanitize(in); got != want {
			t.Errorf("sanitize(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNSNames(t *testing.T) {
	if got, want := nsName("lab1", kindNode, "node-a"), "prx-lab1-n-node-a"; got != want {
		t.Errorf("nsName = %q, want %q", got, want)
	}
	if got, want := fabricNSName("lab1"), "prx-lab1-fabric"; got != want {
		t.Errorf("fabricNSName = %q, want %q", got, want)
	}

	long1 := strings.Repeat("x", 100) + "-one"
	long2 := strings.Repeat("x", 100) + "-two"
	a, b := nsName("abcdefghijkl", kindPod, long1), nsName("abcdefghijkl", kindPod, long2)
	for _, n := range []string{a, b} {
		if len(n) > maxNSName {
			t.Errorf("%q is %d characters, want ≤ %d", n, len(n), maxNSName)
		}
		if !strings.HasPrefix(n, "prx-abcdefghijkl-p-xxx") {
			t.Errorf("%q lost its prefix", n)
		}
	}
	if a == b {
		t.Errorf("two long names truncate to the same namespace %q", a)
	}
	if nsName("l", kindPod, long1) != nsName("l", kindPod, long1) {
		t.Error("nsName is not deterministic")
	}

	// Hashed names for collisions stay short and distinct.
	h1 := nsNameHashed("l", kindPod, "web_0", "web_0\x00node-a")
	h2 := nsNameHashed("l", kindPod, "web-0", "web-0\x00node-a")
	if h1 == h2 || !strings.HasPrefix(h1, "prx-l-p-web-0-") {
		t.Errorf("hashed names %q, %q: want distinct, prefixed", h1, h2)
	}
	if n := nsNameHashed("abcdefghijkl", kindPod, long1, "k"); len(n) > maxNSName {
		t.Errorf("hashed long name %q is %d characters", n, len(n))
	}
}

func TestParseEchoLine(t *testing.T) {
	tests := []struct {
		line    string
		name    string
		seen    string
		wantErr bool
	}{
		{line: "web-a 198.18.127.1:40000\n", name: "web-a", seen: "198.18.127.1:40000"},
		{line: "web-a 198.18.127.1:40000", name: "web-a", seen: "198.18.127.1:40000"},
		{line: "10.0.0.1 [2001:db8:64:7f::1]:5353\r\n", name: "10.0.0.1", seen: "[2001:db8:64:7f::1]:5353"},
		{line: "", wantErr: true},
		{line: "web-a", wantErr: true},
		{line: "web-a ", wantErr: true},
		{line: " 1.2.3.4:5", wantErr: true},
		{line: "web-a 198.18.127.1", wantErr: true},
		{line: "web a 198.18.127.1:1", wantErr: true},
	}
	for _, tc := range tests {
		name, seen, err := ParseEchoLine(tc.line)
		if tc.wantErr {
			if err == nil {
				t.Errorf("ParseEchoLine(%q) = %q, %v; want an error", tc.line, name, seen)
			}
			continue
		}
		if err != nil || name != tc.name || seen != netip.MustParseAddrPort(tc.seen) {
			t.Errorf("ParseEchoLine(%q) = %q, %v, %v; want %q, %s", tc.line, name, seen, err, tc.name, tc.seen)
		}
	}
	// The server's format and the parser agree, for both families.
	for _, src := range []string{"198.18.0.200:1234", "[2001:db8:18::c8]:1", "[::ffff:198.18.0.1]:7"} {
		ap := netip.MustParseAddrPort(src)
		name, seen, err := ParseEchoLine(string(echoLine("pod-x", ap)))
		want := netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if err != nil || name != "pod-x" || seen != want {
			t.Errorf("round trip of %s: %q %v %v", src, name, seen, err)
		}
	}
}

func TestValidateNameRefusesReservedPrefixes(t *testing.T) {
	for _, name := range []string{"vm", "doctor"} {
		if err := ValidateName(name); err == nil {
			t.Errorf("ValidateName(%q) accepted a name whose prefix belongs to something else", name)
		}
	}
	if err := ValidateName("vm2"); err != nil {
		t.Errorf("vm2 is a fine lab name: %v", err)
	}
}
