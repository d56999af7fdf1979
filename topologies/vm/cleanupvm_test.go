package vm

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestCleanupVMIsScoped checks that cleaning one VM removes its results
// directory only, not the one of a VM whose name it is a prefix of, nor
// anything that is not a VM name.
func TestCleanupVMIsScoped(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	mine, other := NamePrefix+"4242", NamePrefix+"42421"
	for _, d := range []string{mine, other} {
		if err := os.Mkdir(filepath.Join(tmp, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := CleanupVM(mine)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"dir " + filepath.Join(tmp, mine)}; !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	if _, err := os.Stat(filepath.Join(tmp, other)); err != nil {
		t.Errorf("the other VM's directory is gone: %v", err)
	}
	if removed, err := CleanupVM(mine); err != nil || len(removed) != 0 {
		t.Errorf("second cleanup: %v, %v; want nothing", removed, err)
	}
	for _, bad := range []string{"", NamePrefix, "prx-lab-1", NamePrefix + "*", NamePrefix + "../x"} {
		if _, err := CleanupVM(bad); err == nil {
			t.Errorf("CleanupVM(%q) accepted a name that is not a VM's", bad)
		}
	}
}
