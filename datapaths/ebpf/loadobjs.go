package ebpf

import (
	"errors"
	"fmt"
	"slices"

	"github.com/cilium/ebpf"
)

// programs names every program of the object with the field that holds it
// once loaded. TestProgramsCoverObject checks it against the object.
func (p *lbPrograms) programs() map[string]**ebpf.Program {
	return map[string]**ebpf.Program{
		lbProgFromDev: &p.FromDev, lbProgFromHost: &p.FromHost, lbProgToDev: &p.ToDev,
		lbProgSockConnect4: &p.SockConnect4, lbProgSockSendmsg4: &p.SockSendmsg4,
		lbProgSockRecvmsg4: &p.SockRecvmsg4, lbProgSockGetpeername4: &p.SockGetpeername4,
		lbProgSockConnect6: &p.SockConnect6, lbProgSockSendmsg6: &p.SockSendmsg6,
		lbProgSockRecvmsg6: &p.SockRecvmsg6, lbProgSockGetpeername6: &p.SockGetpeername6,
	}
}

// loadObjects creates the maps of spec (or takes replacements) and loads
// its programs. It does what spec.LoadAndAssign does, but verifies the
// programs in two groups side by side: from_dev, about half of all the
// verification, alone, and the rest together. The verifier is
// single-threaded per program, the kernel verifies privileged loads
// concurrently. Even so, loading takes 0.12-0.19 s of a 0.4 s first sync
// at 10k Services (measured on this 2-core machine).
func loadObjects(spec *ebpf.CollectionSpec, replacements map[string]*ebpf.Map) (*lbObjects, error) {
	mapsOnly := spec.Copy()
	mapsOnly.Programs = nil
	maps, err := ebpf.NewCollectionWithOptions(mapsOnly, ebpf.CollectionOptions{MapReplacements: replacements})
	if err != nil {
		return nil, err
	}
	defer maps.Close() // what Assign below did not take
	objs := &lbObjects{}
	fields := objs.lbPrograms.programs()
	var groups [2][]string
	for name := range spec.Programs {
		g := 1
		if name == lbProgFromDev {
			g = 0
		}
		groups[g] = append(groups[g], name)
	}
	type loaded struct {
		coll *ebpf.Collection
		err  error
	}
	results := make(chan loaded, len(groups))
	for _, names := range groups {
		go func() {
			s := spec.Copy()
			for name := range s.Programs {
				if !slices.Contains(names, name) {
					delete(s.Programs, name)
				}
			}
			c, err := ebpf.NewCollectionWithOptions(s, ebpf.CollectionOptions{MapReplacements: maps.Maps})
			results <- loaded{c, err}
		}()
	}
	var errs []error
	for range groups {
		r := <-results
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		for name := range r.coll.Programs {
			field, ok := fields[name]
			if !ok {
				errs = append(errs, fmt.Errorf("BPF object has a program %q that proxyrig does not know", name))
				continue
			}
			*field = r.coll.DetachProgram(name)
		}
		r.coll.Close() // its clones of the maps
	}
	if len(errs) == 0 {
		errs = append(errs, maps.Assign(&objs.lbMaps))
	}
	if err := errors.Join(errs...); err != nil {
		for _, f := range fields {
			if *f != nil {
				(*f).Close()
			}
		}
		return nil, err
	}
	return objs, nil
}
