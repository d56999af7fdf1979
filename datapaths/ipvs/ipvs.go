package ipvs

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	libipvs "github.com/moby/ipvs"
	"golang.org/x/sys/unix"

	"proxyrig/model"
)

// ipvsClient is the part of moby/ipvs' Handle this datapath uses; tests
// substitute an in-memory table for it.
type ipvsClient interface {
	GetServices() ([]*libipvs.Service, error)
	GetDestinations(*libipvs.Service) ([]*libipvs.Destination, error)
	NewService(*libipvs.Service) error
	UpdateService(*libipvs.Service) error
	DelService(*libipvs.Service) error
	NewDestination(*libipvs.Service, *libipvs.Destination) error
	UpdateDestination(*libipvs.Service, *libipvs.Destination) error
	DelDestination(*libipvs.Service, *libipvs.Destination) error
	Flush() error
	Close()
}

var _ ipvsClient = (*libipvs.Handle)(nil)

var protoNumbers = map[model.Protocol]uint16{model.TCP: unix.IPPROTO_TCP, model.UDP: unix.IPPROTO_UDP, model.SCTP: unix.IPPROTO_SCTP}

func protocolOf(n uint16) (model.Protocol, bool) {
	for p, v := range protoNumbers {
		if v == n {
			return p, true
		}
	}
	return "", false
}

// toService is the netlink form of a virtual server (kube-proxy's
// toIPVSService): a host netmask, NAT ("masquerading") forwarding for its
// destinations.
func toService(vs *VirtualServer) *libipvs.Service {
	s := &libipvs.Service{
		Address:   net.IP(vs.Address.AsSlice()),
		Protocol:  protoNumbers[vs.Protocol],
		Port:      vs.Port,
		SchedName: vs.Scheduler,
		Flags:     vs.Flags,
		Timeout:   vs.Timeout,
	}
	if vs.Address.Is4() {
		s.AddressFamily = unix.AF_INET
		s.Netmask = 0xffffffff
	} else {
		s.AddressFamily = unix.AF_INET6
		s.Netmask = 128
	}
	return s
}

// fromService reads a kernel virtual server back; ok is false for kinds
// this datapath never makes (firewall-mark services, other protocols).
func fromService(s *libipvs.Service) (*VirtualServer, bool) {
	if s.FWMark != 0 {
		return nil, false
	}
	proto, ok := protocolOf(s.Protocol)
	if !ok {
		return nil, false
	}
	a, ok := netip.AddrFromSlice(s.Address)
	if !ok {
		return nil, false
	}
	return &VirtualServer{
		Address: a.Unmap(), Protocol: proto, Port: s.Port, Scheduler: s.SchedName,
		Flags: s.Flags &^ flagHashed, Timeout: s.Timeout,
	}, true
}

func toDestination(rs RealServer) *libipvs.Destination {
	d := &libipvs.Destination{
		Address:         net.IP(rs.Address.AsSlice()),
		Port:            rs.Port,
		Weight:          rs.Weight,
		ConnectionFlags: libipvs.ConnectionFlagMasq,
	}
	if rs.Address.Is4() {
		d.AddressFamily = unix.AF_INET
	} else {
		d.AddressFamily = unix.AF_INET6
	}
	return d
}

// kernelDest is a destination as the kernel reports it.
type kernelDest struct {
	rs RealServer
	// conns is ActiveConn+InactConn: connection entries still using it.
	conns int
}

func fromDestination(d *libipvs.Destination) (kernelDest, bool) {
	a, ok := netip.AddrFromSlice(d.Address)
	if !ok {
		return kernelDest{}, false
	}
	return kernelDest{
		rs:    RealServer{Address: a.Unmap(), Port: d.Port, Weight: d.Weight},
		conns: d.ActiveConnections + d.InactiveConnections,
	}, true
}

// kernelVS is one virtual server of the kernel's table with its
// destinations.
type kernelVS struct {
	vs    *VirtualServer // attributes only
	dests map[string]kernelDest
}

// readTable lists every virtual server and its destinations.
// Equivalent to: ipvsadm -Ln
func readTable(c ipvsClient) (map[string]*kernelVS, error) {
	svcs, err := retryDump(c.GetServices)
	if err != nil {
		return nil, fmt.Errorf("list IPVS services: %w", err)
	}
	out := make(map[string]*kernelVS, len(svcs))
	for _, s := range svcs {
		vs, ok := fromService(s)
		if !ok {
			continue
		}
		ds, err := c.GetDestinations(s)
		if err != nil {
			return nil, fmt.Errorf("list destinations of IPVS service %s: %w", vs.Key(), err)
		}
		kv := &kernelVS{vs: vs, dests: make(map[string]kernelDest, len(ds))}
		for _, d := range ds {
			if kd, ok := fromDestination(d); ok {
				kv.dests[kd.rs.Key()] = kd
			}
		}
		out[vs.Key()] = kv
	}
	return out, nil
}

// graceful is kube-proxy's graceful termination list: real servers that
// are no longer wanted but still carry connections, kept at weight 0 (no
// new connections) until their connection count drains to zero.
type graceful map[string]gracefulItem // key: "<vs key>/<rs key>"

type gracefulItem struct {
	vs *VirtualServer // attributes, for the netlink calls
	rs RealServer
}

func graceKey(vs *VirtualServer, rs RealServer) string { return vs.Key() + "/" + rs.Key() }

// ipvsResult is what one IPVS sync did.
type ipvsResult struct {
	written int
	// changed lists the Services (ServicePortName) whose virtual or real
	// servers were written.
	changed map[string]bool
}

// syncTable makes the kernel's table equal to want, diffing against cur
// (read just before): it adds, updates and deletes only what differs.
// Real servers that are no longer wanted are deleted at once when they
// carry no connection or serve UDP, and otherwise set to weight 0 and put
// on the graceful list (kube-proxy's GracefulDeleteRS). A wanted real
// server found on the graceful list is deleted and added again, as
// kube-proxy does; the kernel keeps its connections (the destination
// comes back from the trash). Virtual servers that are no longer wanted
// are deleted with their real servers, immediately.
func syncTable(c ipvsClient, want []*VirtualServer, cur map[string]*kernelVS, grace graceful) (ipvsResult, error) {
	res := ipvsResult{changed: map[string]bool{}}
	wanted := make(map[string]bool, len(want))
	for _, vs := range want {
		key := vs.Key()
		wanted[key] = true
		svc := toService(vs)
		k := cur[key]
		switch {
		case k == nil:
			// Equivalent to: ipvsadm -A -t <vip>:<port> -s <sched> [-p <timeout>]
			if err := c.NewService(svc); err != nil {
				return res, fmt.Errorf("add IPVS service %s (%s): %w", key, vs.Service, err)
			}
			res.written++
			res.changed[vs.Service] = true
			k = &kernelVS{vs: vs, dests: map[string]kernelDest{}}
		case !k.vs.sameService(vs):
			// Equivalent to: ipvsadm -E -t <vip>:<port> -s <sched> ...
			if err := c.UpdateService(svc); err != nil {
				return res, fmt.Errorf("update IPVS service %s (%s): %w", key, vs.Service, err)
			}
			res.written++
			res.changed[vs.Service] = true
		}
		n, err := syncDestinations(c, vs, svc, k.dests, grace)
		res.written += n
		if n > 0 {
			res.changed[vs.Service] = true
		}
		if err != nil {
			return res, err
		}
	}
	var stale []string
	for key := range cur {
		if !wanted[key] {
			stale = append(stale, key)
		}
	}
	slices.Sort(stale)
	for _, key := range stale {
		// Equivalent to: ipvsadm -D -t <vip>:<port>
		if err := c.DelService(toService(cur[key].vs)); err != nil && !errors.Is(err, unix.ESRCH) {
			return res, fmt.Errorf("delete IPVS service %s: %w", key, err)
		}
		res.written++
		for gk := range grace {
			if strings.HasPrefix(gk, key+"/") {
				delete(grace, gk)
			}
		}
	}
	return res, nil
}

// syncDestinations makes one virtual server's real servers equal to
// vs.RealServers, honouring the graceful list. It returns the writes made.
func syncDestinations(c ipvsClient, vs *VirtualServer, svc *libipvs.Service, have map[string]kernelDest, grace graceful) (int, error) {
	written := 0
	want := make(map[string]bool, len(vs.RealServers))
	for _, rs := range vs.RealServers {
		want[rs.Key()] = true
		gk := graceKey(vs, rs)
		cur, ok := have[rs.Key()]
		switch {
		case ok && grace[gk].vs != nil:
			// It came back while draining (kube-proxy's
			// MoveRSOutofGracefulDeleteList, then AddRealServer).
			if err := c.DelDestination(svc, toDestination(cur.rs)); err != nil {
				return written, fmt.Errorf("delete draining real server %s of IPVS service %s: %w", rs.Key(), vs.Key(), err)
			}
			delete(grace, gk)
			written++
			ok = false
		case ok && cur.rs.Weight != rs.Weight:
			// A restarted proxy finds real servers an earlier instance left
			// at weight 0; kube-proxy's initial sync resets them.
			// Equivalent to: ipvsadm -e -t <vip>:<port> -r <ep> -m -w 1
			if err := c.UpdateDestination(svc, toDestination(rs)); err != nil {
				return written, fmt.Errorf("update real server %s of IPVS service %s: %w", rs.Key(), vs.Key(), err)
			}
			written++
			continue
		case ok:
			continue
		}
		if !ok {
			// Equivalent to: ipvsadm -a -t <vip>:<port> -r <ep> -m -w 1
			if err := c.NewDestination(svc, toDestination(rs)); err != nil {
				return written, fmt.Errorf("add real server %s to IPVS service %s: %w", rs.Key(), vs.Key(), err)
			}
			written++
		}
	}
	var gone []string
	for key := range have {
		if !want[key] {
			gone = append(gone, key)
		}
	}
	slices.Sort(gone)
	for _, key := range gone {
		d := have[key]
		gk := graceKey(vs, d.rs)
		if grace[gk].vs != nil {
			continue // already draining
		}
		n, err := gracefulDelete(c, vs, svc, d, grace)
		written += n
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// gracefulDelete removes a real server that is no longer wanted: at once
// when nothing uses it or it serves UDP (whose connection entries the
// kernel expires on their next packet, since expire_nodest_conn=1),
// otherwise by setting its weight to 0 and listing it for deletion once
// its connections drain.
func gracefulDelete(c ipvsClient, vs *VirtualServer, svc *libipvs.Service, d kernelDest, grace graceful) (int, error) {
	if vs.Protocol == model.UDP || d.conns == 0 {
		// Equivalent to: ipvsadm -d -t <vip>:<port> -r <ep>
		if err := c.DelDestination(svc, toDestination(d.rs)); err != nil && !errors.Is(err, unix.ENOENT) {
			return 0, fmt.Errorf("delete real server %s of IPVS service %s: %w", d.rs.Key(), vs.Key(), err)
		}
		return 1, nil
	}
	written := 0
	if d.rs.Weight != 0 {
		zero := d.rs
		zero.Weight = 0
		// Equivalent to: ipvsadm -e -t <vip>:<port> -r <ep> -m -w 0
		if err := c.UpdateDestination(svc, toDestination(zero)); err != nil {
			return 0, fmt.Errorf("set weight 0 on draining real server %s of IPVS service %s: %w", d.rs.Key(), vs.Key(), err)
		}
		written++
	}
	zero := d.rs
	zero.Weight = 0
	grace[graceKey(vs, zero)] = gracefulItem{vs: vs, rs: zero}
	return written, nil
}

// drain deletes the listed real servers whose connections have drained
// (kube-proxy's tryDeleteRs). A real server that is gone, or that someone
// set back to a non-zero weight (a newer instance of this datapath that
// wants it again), leaves the list without being touched. It returns how
// many it deleted.
func drain(c ipvsClient, grace graceful) (int, error) {
	byVS := map[string][]string{}
	for gk, it := range grace {
		byVS[it.vs.Key()] = append(byVS[it.vs.Key()], gk)
	}
	vsKeys := make([]string, 0, len(byVS))
	for k := range byVS {
		vsKeys = append(vsKeys, k)
	}
	slices.Sort(vsKeys)
	deleted := 0
	var errs []error
	for _, vk := range vsKeys {
		items := byVS[vk]
		slices.Sort(items)
		vs := grace[items[0]].vs
		svc := toService(vs)
		ds, err := c.GetDestinations(svc)
		if err != nil {
			if errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) {
				for _, gk := range items {
					delete(grace, gk)
				}
				continue
			}
			errs = append(errs, fmt.Errorf("list destinations of IPVS service %s: %w", vk, err))
			continue
		}
		have := map[string]kernelDest{}
		for _, d := range ds {
			if kd, ok := fromDestination(d); ok {
				have[kd.rs.Key()] = kd
			}
		}
		for _, gk := range items {
			it := grace[gk]
			d, ok := have[it.rs.Key()]
			if !ok || d.rs.Weight != 0 {
				delete(grace, gk)
				continue
			}
			if vs.Protocol != model.UDP && d.conns != 0 {
				continue
			}
			if err := c.DelDestination(svc, toDestination(d.rs)); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("delete drained real server %s of IPVS service %s: %w", it.rs.Key(), vk, err))
				continue
			}
			delete(grace, gk)
			deleted++
		}
	}
	return deleted, errors.Join(errs...)
}
