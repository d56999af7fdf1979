package ipvs

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ensureDummy creates kube-ipvs0 if it is missing and returns its index.
// Like kube-proxy, it leaves the link down: the local routes of its
// addresses exist regardless, which is all IPVS needs.
// Equivalent to: ip link add kube-ipvs0 type dummy
func ensureDummy(h *netlink.Handle) (int, error) {
	if l, err := h.LinkByName(dummyDevice); err == nil {
		if l.Type() != "dummy" {
			return 0, fmt.Errorf("link %s exists and is a %s, not a dummy", dummyDevice, l.Type())
		}
		return l.Attrs().Index, nil
	}
	d := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: dummyDevice}}
	if err := h.LinkAdd(d); err != nil && !errors.Is(err, unix.EEXIST) {
		if errors.Is(err, unix.EOPNOTSUPP) {
			return 0, fmt.Errorf("create %s: kernel lacks dummy interfaces: %w", dummyDevice, err)
		}
		return 0, fmt.Errorf("create %s: %w", dummyDevice, err)
	}
	l, err := h.LinkByName(dummyDevice)
	if err != nil {
		return 0, fmt.Errorf("find %s after creating it: %w", dummyDevice, err)
	}
	return l.Attrs().Index, nil
}

// deleteDummy removes kube-ipvs0 and with it every bound VIP.
// Equivalent to: ip link del kube-ipvs0
func deleteDummy(h *netlink.Handle) error {
	l, err := h.LinkByName(dummyDevice)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("find %s: %w", dummyDevice, err)
	}
	if l.Type() != "dummy" {
		return fmt.Errorf("link %s is a %s, not a dummy: leaving it", dummyDevice, l.Type())
	}
	if err := h.LinkDel(l); err != nil {
		return fmt.Errorf("delete %s: %w", dummyDevice, err)
	}
	return nil
}

// localAddrs lists the namespace's addresses: those on kube-ipvs0 and all
// the others, loopback and IPv6 link-local left out of the latter
// (kube-proxy's GetLocalAddresses and GetAllLocalAddressesExcept).
// Equivalent to: ip -br addr
func localAddrs(h *netlink.Handle, dummyIndex int) (bound, others []netip.Addr, err error) {
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if a.LinkIndex == dummyIndex {
			bound = append(bound, ip)
			continue
		}
		if ip.IsLoopback() || (ip.Is6() && ip.IsLinkLocalUnicast()) {
			continue
		}
		if !slices.Contains(others, ip) {
			others = append(others, ip)
		}
	}
	slices.SortFunc(bound, netip.Addr.Compare)
	slices.SortFunc(others, netip.Addr.Compare)
	return bound, others, nil
}

func hostAddr(ip netip.Addr) *netlink.Addr {
	return &netlink.Addr{IPNet: netlink.NewIPNet(ip.AsSlice())}
}

// bindAddr puts a VIP on kube-ipvs0.
// Equivalent to: ip addr add <vip>/32 dev kube-ipvs0
func bindAddr(h *netlink.Handle, idx int, ip netip.Addr) error {
	l, err := h.LinkByIndex(idx)
	if err != nil {
		return fmt.Errorf("find %s: %w", dummyDevice, err)
	}
	if err := h.AddrAdd(l, hostAddr(ip)); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("bind %s to %s: %w", ip, dummyDevice, err)
	}
	return nil
}

// unbindAddr takes a VIP off kube-ipvs0.
// Equivalent to: ip addr del <vip>/32 dev kube-ipvs0
func unbindAddr(h *netlink.Handle, idx int, ip netip.Addr) error {
	l, err := h.LinkByIndex(idx)
	if err != nil {
		return fmt.Errorf("find %s: %w", dummyDevice, err)
	}
	if err := h.AddrDel(l, hostAddr(ip)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("unbind %s from %s: %w", ip, dummyDevice, err)
	}
	return nil
}
