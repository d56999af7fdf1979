package ipvs

import (
	"fmt"
	"net/netip"
	"strings"

	"proxyrig/datapaths"
)

// Text prints the state the way a person inspects a node: the VIPs on
// kube-ipvs0, the IPVS table (like `ipvsadm -Ln`), the ipsets (like
// `ipset save`, empty sets included) and the iptables-restore input a
// full sync writes into an empty namespace. It is what the golden files
// hold.
func (s *State) Text() string {
	var b strings.Builder
	b.WriteString("# ip -o addr show dev " + dummyDevice + "\n")
	for _, a := range s.Bind {
		bits := 32
		if a.Is6() {
			bits = 128
		}
		fmt.Fprintf(&b, "%s/%d\n", a, bits)
	}
	b.WriteString("# ipvsadm -Ln\n")
	for _, vs := range s.VirtualServers {
		fmt.Fprintf(&b, "%s  %s %s", strings.ToUpper(string(vs.Protocol)), hostPort(vs), vs.Scheduler)
		if vs.Flags&flagPersistent != 0 {
			fmt.Fprintf(&b, " persistent %d", vs.Timeout)
		}
		if vs.Flags&flagSourceHash != 0 {
			b.WriteString(" mh-port")
		}
		fmt.Fprintf(&b, "  # %s\n", vs.Service)
		for _, rs := range vs.RealServers {
			fmt.Fprintf(&b, "  -> %-24s Masq    %d\n", rs.Key(), rs.Weight)
		}
	}
	for _, fs := range s.Families {
		fmt.Fprintf(&b, "# ipset save (%s)\n", fs.Family)
		for _, set := range fs.Sets {
			b.WriteString(set.createLine() + "\n")
			for _, e := range set.Entries {
				b.WriteString("add " + set.Name + " " + e + "\n")
			}
		}
	}
	for _, fs := range s.Families {
		cmd := "iptables-restore"
		if fs.Family == IPv6 {
			cmd = "ip6tables-restore"
		}
		fmt.Fprintf(&b, "# %s --noflush (%s)\n", cmd, fs.Family)
		payload, _ := restorePayload(fs, true, nil)
		b.Write(payload)
	}
	return b.String()
}

func hostPort(vs *VirtualServer) string {
	return netip.AddrPortFrom(vs.Address, vs.Port).String()
}

// Text renders view and prints the resulting state (State.Text).
func Text(view *datapaths.NodeView, env Env) (string, error) {
	st, err := Render(view, env)
	if err != nil {
		return "", err
	}
	return st.Text(), nil
}
