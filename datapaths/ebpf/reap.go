package ebpf

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"proxyrig/datapaths"
	"proxyrig/internal/netnsutil"
)

// reaper closes connected UDP sockets whose peer is a backend that left
// (bpf/reap.c): the socket hooks translated them once, at connect(), and
// no later map change reaches them. It is loaded the first time a sync
// deletes a backend, and only where socket hooks are attached.
type reaper struct {
	objs reapObjects
	iter *link.Iter
}

func (r *reaper) close() error {
	var errs []error
	if r.iter != nil {
		errs = append(errs, r.iter.Close())
	}
	return errors.Join(append(errs, r.objs.Close())...)
}

// loadReaper loads and attaches the iterator. A kernel without
// bpf_sock_destroy (before 6.5) gets a NotSupportedError.
func loadReaper(datapath string) (*reaper, error) {
	r := &reaper{}
	if err := loadReapObjects(&r.objs, nil); err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			return nil, &datapaths.NotSupportedError{Datapath: datapath, Reason: "kernel lacks the bpf_sock_destroy kfunc (Linux 6.5): connected UDP sockets keep a removed backend until they reconnect"}
		}
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load the socket reaper: %+v", ve)
		}
		return nil, fmt.Errorf("load the socket reaper: %w", err)
	}
	it, err := link.AttachIter(link.IterOptions{Program: r.objs.ReapUdp})
	if err != nil {
		r.objs.Close()
		return nil, fmt.Errorf("attach the socket reaper (iter/udp): %w", err)
	}
	r.iter = it
	return r, nil
}

// run closes, in namespace ns, the connected UDP sockets whose peer is in
// the reaper's targets, and returns how many it closed. An iterator walks
// the sockets of the namespace it is opened in, so it is opened there.
// Equivalent to: ip netns exec <ns> bpftool iter pin … && cat the pin.
func (r *reaper) run(ns netnsutil.NS) (int, error) {
	var n int
	err := ns.Do(func() error {
		rd, err := r.iter.Open()
		if err != nil {
			return err
		}
		defer rd.Close()
		out, err := io.ReadAll(rd)
		n = len(out)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("close UDP sockets of removed backends in netns %s: %w", ns.Name, err)
	}
	return n, nil
}

// goneBackends lists the addresses of the backends plan deletes: sockets
// connected to those have lost their endpoint. have is the state before
// the plan. A backend id stands for one address and port (render names
// backends by ep.String()) and is deleted only when no Service uses it,
// so a deleted id's address has no other backend: no scan of the 50k
// remaining ones is needed.
func goneBackends(plan *syncPlan, have *desired) []reapReapKey {
	var gone []reapReapKey
	for _, id := range plan.backendsDel {
		if b, ok := have.Backends[id]; ok {
			gone = append(gone, reapKey4(b))
		}
	}
	for _, id := range plan.backends6Del {
		if b, ok := have.Backends6[id]; ok {
			gone = append(gone, reapReapKey{Addr: b.Addr, Port: b.Port})
		}
	}
	return gone
}

// reapKey4 is an IPv4 backend as the reaper sees a socket's peer:
// IPv4-mapped.
func reapKey4(b lbBackend) reapReapKey {
	return reapReapKey{Addr: be128(addrFromBE32(b.Addr)), Port: b.Port}
}

// reapSockets closes the connected UDP sockets, in the namespaces whose
// sockets the hooks translate, whose peer is one of gone. The maps are
// already written when it runs, so a failure here is reported but does
// not fail the sync: what it costs is a socket that stays on a dead
// backend until the application reconnects, the state before this
// existed.
func (d *Datapath) reapSockets(gone []reapReapKey) (int, error) {
	if d.noCgroup || len(gone) == 0 {
		return 0, nil
	}
	if d.reaper == nil {
		if d.reapErr != nil {
			return 0, nil // said once already
		}
		r, err := loadReaper(d.name)
		if err != nil {
			d.reapErr = err
			return 0, err
		}
		d.reaper = r
	}
	m := d.reaper.objs.ReapTargets
	var total int
	var errs []error
	for chunk := range slices.Chunk(gone, int(m.MaxEntries())) {
		if err := update(m, reapMapReapTargets, chunk, map[reapReapKey]uint8(nil)); err != nil {
			return total, err
		}
		namespaces := []netnsutil.NS{d.cfg.NS}
		if d.socketLB {
			for _, name := range slices.Sorted(maps.Keys(d.pods)) {
				namespaces = append(namespaces, netnsutil.NS{Name: d.pods[name].name})
			}
		}
		for _, ns := range namespaces {
			n, err := d.reaper.run(ns)
			total += n
			if err != nil {
				errs = append(errs, err)
			}
		}
		if err := remove(m, reapMapReapTargets, chunk); err != nil {
			return total, err
		}
	}
	return total, errors.Join(errs...)
}
