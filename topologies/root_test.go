package topologies

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// onRootHandle lists the root namespace's links, addresses and routes (all
// tables) as comparable strings. The test goroutine never enters a lab
// namespace (NS.Do uses threads of its own), so the package-level netlink
// calls here read the root namespace.
func onRootHandle(fn func(links, addrs, routes []string)) error {
	var links, addrs, routes []string
	err := retryDump(func() error {
		links = nil
		ls, err := netlink.LinkList()
		for _, l := range ls {
			a := l.Attrs()
			links = append(links, fmt.Sprintf("link %d %s %s master=%d up=%v", a.Index, a.Name, l.Type(), a.MasterIndex, a.Flags&net.FlagUp != 0))
		}
		return err
	})
	if err != nil {
		return err
	}
	err = retryDump(func() error {
		addrs = nil
		as, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
		for _, a := range as {
			addrs = append(addrs, fmt.Sprintf("addr %d %s", a.LinkIndex, a.IPNet))
		}
		return err
	})
	if err != nil {
		return err
	}
	err = retryDump(func() error {
		routes = nil
		rs, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
		for _, r := range rs {
			routes = append(routes, fmt.Sprintf("route table=%d type=%d dst=%v gw=%v dev=%d proto=%d", r.Table, r.Type, r.Dst, r.Gw, r.LinkIndex, r.Protocol))
		}
		return err
	})
	if err != nil {
		return err
	}
	fn(links, addrs, routes)
	return nil
}

// retryDump repeats a netlink dump that the kernel interrupted because the
// table changed underneath it.
func retryDump(f func() error) error {
	var err error
	for range 5 {
		if err = f(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return err
		}
	}
	return err
}
