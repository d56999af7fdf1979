package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"proxyrig/reports"
)

// runRecommend is `proxyrig recommend`: rank the datapaths for one
// cluster profile from measured results, with the reasons.
func runRecommend(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("recommend", flag.ContinueOnError)
	def := reports.DefaultProfile()
	var p profileFlags
	p.register(fs, def)
	var results stringList
	fs.Var(&results, "results", "directory (or file) of results: bench JSON and conformance-matrix.json, searched recursively (repeatable; default: out)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: proxyrig recommend [--services N] [--endpoints E] [--churn R/s] [--need a,b] [--results DIR]...\n\nRanks the datapaths for a cluster of N Services × E endpoints changing R times a\nsecond and needing the listed features, from measured results only: sync cost at\nthat scale (extrapolations marked), per-packet cost against the direct path,\ndisruption, and conformance gaps. See reports/README.md.\n\nNeeds: %s\n\nFlags:\n", needNames())
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return &exitError{code: 2}
	}
	if fs.NArg() > 0 {
		return &exitError{code: 2, err: fmt.Errorf("recommend: unexpected arguments %q (results go in --results)", fs.Args())}
	}
	profile, err := p.profile()
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("recommend: %w", err)}
	}
	if len(results) == 0 {
		results = stringList{"out"}
	}
	in, err := reports.LoadDirs(results...)
	if err != nil {
		return err
	}
	rk := reports.Recommend(profile, in.Evidence())
	return rk.WriteText(os.Stdout)
}

// profileFlags are the flags that describe a cluster, shared by
// `recommend` and `report`.
type profileFlags struct {
	services, endpoints int
	churn, needs        string
}

func (p *profileFlags) register(fs *flag.FlagSet, def reports.Profile) {
	fs.IntVar(&p.services, "services", def.Services, "Services (N) in the cluster")
	fs.IntVar(&p.endpoints, "endpoints", def.Endpoints, "endpoints per Service (E)")
	fs.StringVar(&p.churn, "churn", strconv.FormatFloat(def.ChurnPerSec, 'f', -1, 64)+"/s", "Service and endpoint changes per second: R, R/s or R/min")
	fs.StringVar(&p.needs, "need", "", "comma-separated features the cluster uses: "+needNames())
}

func (p *profileFlags) profile() (reports.Profile, error) {
	if p.services <= 0 {
		return reports.Profile{}, fmt.Errorf("--services must be positive, got %d", p.services)
	}
	if p.endpoints <= 0 {
		return reports.Profile{}, fmt.Errorf("--endpoints must be positive, got %d", p.endpoints)
	}
	churn, err := parseChurn(p.churn)
	if err != nil {
		return reports.Profile{}, err
	}
	needs, err := reports.ParseNeeds(p.needs)
	if err != nil {
		return reports.Profile{}, fmt.Errorf("--need: %w", err)
	}
	return reports.Profile{Services: p.services, Endpoints: p.endpoints, ChurnPerSec: churn, Needs: needs}, nil
}

// parseChurn reads a rate: "5", "5/s" or "300/min".
func parseChurn(s string) (float64, error) {
	num, unit, _ := strings.Cut(strings.TrimSpace(s), "/")
	v, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("--churn: %q is not a rate (R, R/s or R/min)", s)
	}
	switch strings.TrimSpace(unit) {
	case "", "s", "sec":
		return v, nil
	case "m", "min":
		return v / 60, nil
	}
	return 0, fmt.Errorf("--churn: unknown unit %q in %q (R, R/s or R/min)", unit, s)
}

func needNames() string {
	var names []string
	for _, n := range reports.Needs() {
		names = append(names, n.Name)
	}
	return strings.Join(names, ", ")
}
