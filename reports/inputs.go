package reports

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"proxyrig/conformance/matrix"
	"proxyrig/loadgen"
)

// Inputs is what a report is made of.
type Inputs struct {
	// Bench are `proxyrig bench` runs (loadgen results).
	Bench []*loadgen.Results
	// Matrix is the conformance run; Matrices are more (for example the VM
	// runner's, for IPVS). A datapath's verdicts come from the newest
	// matrix that has it.
	Matrix   *matrix.Matrix
	Matrices []*matrix.Matrix
	// History, if set, adds trend charts over past runs and flags
	// significant changes.
	History *History
	// Profile is the question the report's recommendation answers; the
	// zero Profile means DefaultProfile().
	Profile Profile
	// Title heads the report (default "proxyrig report").
	Title string
	// Generated is when the report was made (default: now).
	Generated time.Time
	// Sources are the files the inputs were read from, listed in the
	// report.
	Sources []string
}

// allMatrices is Matrix and Matrices, without nils.
func (in Inputs) allMatrices() []*matrix.Matrix {
	var out []*matrix.Matrix
	if in.Matrix != nil {
		out = append(out, in.Matrix)
	}
	for _, m := range in.Matrices {
		if m != nil {
			out = append(out, m)
		}
	}
	return out
}

// Evidence indexes the inputs.
func (in Inputs) Evidence() *Evidence { return NewEvidence(in.Bench, in.allMatrices()...) }

// historyDirName is skipped when LoadDirs walks a result directory: a
// history kept inside the output directory holds past runs, which belong
// in trends, not in this run's figures.
const historyDirName = "history"

// LoadDirs reads every bench result (JSON of schema proxyrig.bench/v1) and
// every conformance matrix under the given directories (recursively,
// skipping a directory named "history") or files. Other files are
// ignored. The first matrix found becomes Inputs.Matrix, the others
// Inputs.Matrices.
func LoadDirs(paths ...string) (Inputs, error) {
	var in Inputs
	var matrices []*matrix.Matrix
	for _, root := range paths {
		st, err := os.Stat(root)
		if err != nil {
			return in, fmt.Errorf("read results: %w", err)
		}
		visit := func(path string) error {
			kind, err := sniff(path)
			if err != nil {
				return err
			}
			switch kind {
			case "bench":
				r, err := LoadBench(path)
				if err != nil {
					return err
				}
				in.Bench = append(in.Bench, r)
			case "matrix":
				m, err := matrix.Load(path)
				if err != nil {
					return err
				}
				matrices = append(matrices, m)
			default:
				return nil
			}
			in.Sources = append(in.Sources, path)
			return nil
		}
		if !st.IsDir() {
			if err := visit(root); err != nil {
				return in, err
			}
			continue
		}
		err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				if path != root && d.Name() == historyDirName {
					return filepath.SkipDir
				}
				return nil
			}
			if !strings.HasSuffix(d.Name(), ".json") {
				return nil
			}
			return visit(path)
		})
		if err != nil {
			return in, fmt.Errorf("read results under %s: %w", root, err)
		}
	}
	if len(matrices) > 0 {
		in.Matrix, in.Matrices = matrices[0], matrices[1:]
	}
	if len(in.Bench) == 0 && in.Matrix == nil {
		return in, fmt.Errorf("no bench results (%s JSON) and no conformance matrix under %s", loadgen.SchemaVersion, strings.Join(paths, ", "))
	}
	return in, nil
}

// sniff says what a JSON file holds: "bench", "matrix", or "" for
// anything else.
func sniff(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	var head struct {
		Schema  *string          `json:"schema"`
		Version *int             `json:"version"`
		Results *json.RawMessage `json:"results"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		// Not a JSON object of ours (an array, or not JSON at all).
		return "", nil
	}
	switch {
	case head.Schema != nil && strings.HasPrefix(*head.Schema, "proxyrig.bench/"):
		if *head.Schema != loadgen.SchemaVersion {
			return "", fmt.Errorf("%s: bench results of schema %q; this build reads %q", path, *head.Schema, loadgen.SchemaVersion)
		}
		return "bench", nil
	case head.Version != nil && head.Results != nil:
		return "matrix", nil
	}
	return "", nil
}

// LoadBench reads one bench results file and checks it against its
// schema, so a report never silently misreads a changed format.
func LoadBench(path string) (*loadgen.Results, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read bench results: %w", err)
	}
	if err := loadgen.ValidateJSON(b); err != nil {
		return nil, fmt.Errorf("bench results %s do not match schema %s: %w", path, loadgen.SchemaVersion, err)
	}
	var r loadgen.Results
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("parse bench results %s: %w", path, err)
	}
	return &r, nil
}

// ErrNoRuns is returned (wrapped) by LoadHistory for a directory without
// runs: the first nightly run has no history yet.
var ErrNoRuns = errors.New("no runs")

// History is a directory of past runs, for trends.
type History struct {
	Dir  string
	Runs []HistoryRun // oldest first
}

// HistoryRun is one past run: a subdirectory of the history (or a bench
// file at its top level).
type HistoryRun struct {
	Name    string
	Started time.Time
	Bench   []*loadgen.Results
}

// LoadHistory reads a history directory: every subdirectory is one run
// (ci/nightly.sh appends one per night), holding bench results at any
// depth; a bench file directly in dir is a run of its own. Runs are
// ordered by their start time.
func LoadHistory(dir string) (*History, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read history: %w", err)
	}
	h := &History{Dir: dir}
	for _, e := range ents {
		path := filepath.Join(dir, e.Name())
		run := HistoryRun{Name: e.Name()}
		if e.IsDir() {
			err := filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() || !strings.HasSuffix(p, ".json") {
					return err
				}
				kind, err := sniff(p)
				if err != nil || kind != "bench" {
					return err
				}
				r, err := LoadBench(p)
				if err != nil {
					return err
				}
				run.Bench = append(run.Bench, r)
				return nil
			})
			if err != nil {
				return nil, fmt.Errorf("read history run %s: %w", path, err)
			}
		} else if strings.HasSuffix(e.Name(), ".json") {
			kind, err := sniff(path)
			if err != nil {
				return nil, err
			}
			if kind != "bench" {
				continue
			}
			r, err := LoadBench(path)
			if err != nil {
				return nil, err
			}
			run.Bench = append(run.Bench, r)
			run.Name = strings.TrimSuffix(e.Name(), ".json")
		}
		if len(run.Bench) == 0 {
			continue
		}
		run.Started = run.Bench[0].Run.Started
		for _, r := range run.Bench {
			if r.Run.Started.Before(run.Started) {
				run.Started = r.Run.Started
			}
		}
		h.Runs = append(h.Runs, run)
	}
	if len(h.Runs) == 0 {
		return nil, fmt.Errorf("history %s: %w", dir, ErrNoRuns)
	}
	slices.SortStableFunc(h.Runs, func(a, b HistoryRun) int { return a.Started.Compare(b.Started) })
	return h, nil
}
