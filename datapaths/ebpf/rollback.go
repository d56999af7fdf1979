package ebpf

import "fmt"

// rollback writes back what the maps held before a sync whose writes
// failed partway. The writes are ordered so that no packet meets a
// frontend whose slots are missing, but slots of a group that keeps its
// id are rewritten in place: a sync that fails after them would leave an
// unchanged frontend forwarding to the new backends, neither the old
// state nor the new one (found by datapaths/robustness TestFaults). So
// the maps are read back and every entry that differs from have is put
// back. The next sync is full either way.
func (d *Datapath) rollback(have *desired) error {
	if have == nil {
		return nil
	}
	cur, err := readMaps(&d.objs.lbMaps)
	if err != nil {
		return fmt.Errorf("roll back BPF maps of netns %s: %w", d.cfg.NS.Name, err)
	}
	if err := planSync(have, cur, nil).apply(&d.objs.lbMaps, have, false); err != nil {
		return fmt.Errorf("roll back BPF maps of netns %s: %w", d.cfg.NS.Name, err)
	}
	return nil
}
