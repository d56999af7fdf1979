package matrix

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestSaveLoadRoundTrip(t *testing.T) {
	m := &Matrix{
		Generated: time.Date(2025, 11, 22, 21, 0, 0, 0, time.UTC),
		Env:       Env{Kernel: "6.18.0", IPTablesBackend: "nft", Emulated: true, ParallelProcesses: 2},
		Results: []Result{
			{Item: "CIP-01", Category: "A", Datapath: "iptables", Status: StatusPass, Duration: 1500 * time.Millisecond, Specs: Counts{Passed: 2}},
			{Item: "CIP-05", Category: "A", Datapath: "nftables", Status: StatusDeviation, Reason: "documented", Spec: "x", Location: "f.go:1", Specs: Counts{Passed: 1}},
		},
		SuiteFailures: []string{"boom"},
	}
	path := filepath.Join(t.TempDir(), "sub", "m.json")
	if err := m.Save(path); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(m, got); diff != "" {
		t.Errorf("round trip (-saved +loaded):\n%s", diff)
	}
	if got.Version != Version {
		t.Errorf("version %d, want %d", got.Version, Version)
	}
	// Only the matrix is left in the directory: the temporary file was
	// renamed, not copied.
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Errorf("directory holds %d files, want 1", len(ents))
	}
	b, _ := os.ReadFile(path)
	for _, field := range []string{`"version": 1`, `"iptablesBackend": "nft"`, `"emulated": true`, `"duration": 1500000000`, `"status": "deviation"`} {
		if !strings.Contains(string(b), field) {
			t.Errorf("JSON lacks %s:\n%s", field, b)
		}
	}
}

func TestLoadRejects(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"not-json":       "junit?",
		"no-version":     `{"results": []}`,
		"future":         `{"version": 99, "results": []}`,
		"unknown-status": `{"version": 1, "results": [{"item": "CIP-01", "datapath": "x", "status": "great"}]}`,
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(p); err == nil {
			t.Errorf("Load(%s) succeeded", name)
		}
	}
	if _, err := Load(filepath.Join(dir, "absent")); err == nil {
		t.Error("Load of a missing file succeeded")
	}
}

func TestItemsWellFormed(t *testing.T) {
	seen := map[string]bool{}
	benchmarks := 0
	for _, it := range Items() {
		if seen[it.ID] {
			t.Errorf("%s listed twice", it.ID)
		}
		seen[it.ID] = true
		if !itemLabel.MatchString(it.ID) || it.Title == "" || it.Category == "" {
			t.Errorf("malformed item %+v", it)
		}
		if it.Benchmark {
			benchmarks++
		}
	}
	if len(seen) != 70 {
		t.Errorf("%d items, want CONFORMANCE.md's 70", len(seen))
	}
	for _, id := range []string{"SYNC-05", "SYNC-06", "SYNC-07"} {
		if it, _ := ItemByID(id); !it.Benchmark {
			t.Errorf("%s is not marked as a benchmark", id)
		}
	}
	if benchmarks != 3 {
		t.Errorf("%d benchmarks, want 3", benchmarks)
	}
}

// conformanceMD is where the checklist lives beside the repository; the
// environment variable overrides it.
func conformanceMD() string {
	if p := os.Getenv("PROXYRIG_CONFORMANCE_MD"); p != "" {
		return p
	}
	return "/work/shared/CONFORMANCE.md"
}

// TestItemsMatchConformanceMD compares Items with the checklist itself,
// when it is at hand: same IDs, same order, same sections.
func TestItemsMatchConformanceMD(t *testing.T) {
	b, err := os.ReadFile(conformanceMD())
	if err != nil {
		t.Skipf("CONFORMANCE.md not available (%v); set PROXYRIG_CONFORMANCE_MD to its path", err)
	}
	section := regexp.MustCompile(`^## ([A-N])\. `)
	item := regexp.MustCompile(`^\*\*([A-Z]+-[0-9]+) — `)
	type entry struct{ ID, Category string }
	var want []entry
	letter := ""
	for line := range strings.SplitSeq(string(b), "\n") {
		if m := section.FindStringSubmatch(line); m != nil {
			letter = m[1]
		}
		if m := item.FindStringSubmatch(line); m != nil {
			want = append(want, entry{m[1], letter})
		}
	}
	var got []entry
	for _, it := range Items() {
		got = append(got, entry{it.ID, it.Category})
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Items() differs from %s (-document +Items):\n%s", conformanceMD(), diff)
	}
}
