package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"proxyrig/reports"
)

// runReport is `proxyrig report DIR...`: render the HTML report from
// result directories (bench JSON and conformance matrices).
func runReport(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	out := fs.String("out", "report.html", "where to write the report")
	history := fs.String("history", "", "directory of past runs (one subdirectory each) for trend charts and significance tests")
	title := fs.String("title", "", "title of the report (default: proxyrig report)")
	var p profileFlags
	p.register(fs, reports.DefaultProfile())
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: proxyrig report [flags] DIR...\n\nRenders one self-contained HTML file (charts inlined, nothing loaded from the\nnetwork, printable) from the bench results and conformance matrices found under\nthe directories. The profile flags set the question the recommendation answers.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	dirs, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return &exitError{code: 2}
	}
	if len(dirs) == 0 {
		fs.Usage()
		return &exitError{code: 2, err: errors.New("report: name at least one result directory")}
	}
	profile, err := p.profile()
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("report: %w", err)}
	}
	in, err := reports.LoadDirs(dirs...)
	if err != nil {
		return err
	}
	in.Profile, in.Title = profile, *title
	if *history != "" {
		h, err := reports.LoadHistory(*history)
		switch {
		case errors.Is(err, reports.ErrNoRuns) || errors.Is(err, os.ErrNotExist):
			// The first nightly run has no history yet: no trends, no error.
			fmt.Fprintf(os.Stderr, "proxyrig report: no earlier runs in %s: no trends this time\n", *history)
		case err != nil:
			return err
		default:
			in.History = h
		}
	}
	var b bytes.Buffer
	if err := reports.Render(&b, in); err != nil {
		return err
	}
	if err := writeFileAtomic(*out, b.Bytes()); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	abs, err := filepath.Abs(*out)
	if err != nil {
		abs = *out
	}
	fmt.Printf("report: %s\n", abs)
	return nil
}

// parseInterspersed parses flags that may come before, between or after
// the positional arguments (`proxyrig report DIR --out r.html`), which
// the flag package alone stops at; it returns the positional arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// writeFileAtomic writes through a temporary file and a rename, so a
// browser never opens half a report.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".report-*.html")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(data)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp.Name(), 0o644)); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}
