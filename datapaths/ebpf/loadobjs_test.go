package ebpf

import (
	"maps"
	"reflect"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
)

// TestProgramsCoverObject: loadObjects fills lbPrograms through programs(),
// so a program added to the object must be named there as well. As root it
// also loads the object and requires every program and map to be set.
func TestProgramsCoverObject(t *testing.T) {
	spec, err := parsedSpec()
	if err != nil {
		t.Fatal(err)
	}
	got := slices.Sorted(maps.Keys((&lbPrograms{}).programs()))
	want := slices.Sorted(maps.Keys(spec.Programs))
	if !slices.Equal(got, want) {
		t.Fatalf("lbPrograms.programs() names %v, the object has %v", got, want)
	}

	requireRoot(t)
	s, err := loadSpec(mapSizes{Services: 1024, Slots: 1024, Backends: 1024, Members: 1024, SrcRanges: 64, CT: 4096})
	if err != nil {
		t.Fatal(err)
	}
	objs, err := loadObjects(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer objs.Close()
	for _, v := range []any{objs.lbPrograms, objs.lbMaps} {
		rv := reflect.ValueOf(v)
		for i := range rv.NumField() {
			f := rv.Type().Field(i)
			if f.Tag.Get("ebpf") != "" && rv.Field(i).IsNil() {
				t.Errorf("%s (%s) was not loaded", f.Name, f.Tag.Get("ebpf"))
			}
		}
	}
	// The programs were loaded in separate collections: each must use
	// objs' maps, not a copy of its own.
	cfgInfo, err := objs.Config.Info()
	if err != nil {
		t.Fatal(err)
	}
	cfgID, _ := cfgInfo.ID()
	for name, prog := range map[string]*ebpf.Program{lbProgFromDev: objs.FromDev, lbProgFromHost: objs.FromHost} {
		info, err := prog.Info()
		if err != nil {
			t.Fatal(err)
		}
		ids, ok := info.MapIDs()
		if !ok {
			t.Fatalf("the kernel reports no map ids for %s (Linux 4.15+ does)", name)
		}
		if !slices.Contains(ids, cfgID) {
			t.Errorf("%s uses maps %v, not objs' config map %d", name, ids, cfgID)
		}
	}
}
