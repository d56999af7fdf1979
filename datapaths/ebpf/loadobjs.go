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

// loadGroups splits the programs for loadObjects: from_dev, the largest
// (about half of all verification), alone, and the rest together.
var loadGroups = [][]string{{lbProgFromDev}, nil}

// loadObjects creates the maps of spec (or takes replacements) and loads
// its programs. It does what spec.LoadAndAssign does, but verifies the
// programs in two groups side by side: the verifier is single-threaded
// per program, and at about 0.15 s it was the largest part of a first
// sync. The kernel verifies privileged loads concurrently.
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
	groups := make([][]string, len(loadGroups))
	for name := range spec.Programs {
		g := len(loadGroups) - 1 // the catch-all group
		for i, names := range loadGroups {
			if slices.Contains(names, name) {
				g = i
			}
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
