package reports

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"proxyrig/conformance/matrix"
	"proxyrig/loadgen"
)

// Anchors of the report's sections; facts and reasons link to them.
const (
	anchorSummary        = "summary"
	anchorRecommendation = "recommendation"
	anchorConformance    = "conformance"
	anchorCharts         = "charts"
	anchorChartsEmulated = "charts-emulated"
	anchorTables         = "tables"
	anchorCells          = "cells"
	anchorTrends         = "trends"
	anchorEnvironment    = "environment"
)

func chartAnchor(id string) string { return "chart-" + id }

// factsFor collects what a user must weigh about a datapath beside its
// measurements: upstream status and requirements (with their source), and
// what this run's own evidence says about them (with its anchor).
func factsFor(ev *Evidence, dp string) []Fact {
	var out []Fact
	add := func(text, source, anchor string) {
		out = append(out, Fact{Datapath: dp, Text: text, Source: source, Anchor: anchor})
	}
	// matrixAnchor points at a conformance detail when the matrix has a
	// non-pass result for the item, else at the matrix.
	matrixAnchor := func(item string) (string, string) {
		rs, _ := ev.Conformance(dp)
		if r, ok := findResult(rs, item); ok {
			if r.Status != matrix.StatusPass {
				return conformanceAnchor(item, dp), r.Status
			}
			return anchorConformance, r.Status
		}
		return anchorConformance, ""
	}
	switch {
	case dp == "iptables":
		backend := iptablesBackend(ev)
		add(fmt.Sprintf("Linux has two iptables backends: iptables-nft (the nf_tables kernel API) and iptables-legacy (x_tables). kube-proxy must use the one the node's other rule writers use; mixing them leaves two rule sets that both apply. These figures used the %s backend.", backend),
			"iptables(8), kube-proxy iptables mode", anchorEnvironment)
	case dp == "ipvs":
		add("kube-proxy's IPVS mode is deprecated upstream since Kubernetes v1.35: it logs a deprecation warning, and sig-network points its users to nftables.",
			"KEP-5495", datapathColumnAnchor(ev, dp))
	case dp == "nftables":
		add("kube-proxy's nftables mode is generally available since Kubernetes v1.33.", "KEP-3866", chartAnchor("sync-full"))
		a, st := matrixAnchor("NP-02")
		text := "By default it accepts NodePort traffic only on the node's primary IPs (--nodeport-addresses=primary), where iptables mode accepts it on every local IP."
		if st != "" {
			text += fmt.Sprintf(" This run's NP-02 verdict: %s.", st)
		}
		add(text, "KEP-3866; CONFORMANCE.md Appendix 1", a)
		a, st = matrixAnchor("CIP-06")
		text = "It drops traffic to unallocated IPs of the Service CIDR, and rejects wrong ports on live ClusterIPs, where iptables mode lets both through."
		if st != "" {
			text += fmt.Sprintf(" This run's CIP-06 verdict: %s.", st)
		}
		add(text, "CONFORMANCE.md Appendix 1", a)
	case strings.HasPrefix(dp, "ebpf"):
		k := nativeKernel(ev)
		text := "Its programs attach with tcx, which needs Linux 6.6 or later; on older 5.x kernels it falls back to tc clsact."
		if k != "" {
			if maj, mnr, ok := kernelVersion(k); ok {
				verdict := "has tcx"
				if maj < 6 || (maj == 6 && mnr < 6) {
					verdict = "lacks tcx"
				}
				text += fmt.Sprintf(" This machine's kernel %s %s.", k, verdict)
			}
		}
		if b := cellBackend(ev, dp); b != "" {
			text += fmt.Sprintf(" The bench recorded attach mode %q.", b)
		}
		add(text, "Linux 6.6 (tcx); cilium/ebpf", anchorEnvironment)
	}
	// The measured growth of the full sync, where two scales show it.
	for _, set := range []*FigureSet{ev.Native, ev.Emulated} {
		pts := set.Series(dp, loadgen.MetricSyncFull, "", "wall")
		if len(pts) < 2 {
			continue
		}
		lo, hi := pts[0], pts[len(pts)-1]
		if lo.Services <= 0 || lo.Median <= 0 || hi.Median <= 0 {
			continue
		}
		slope := math.Log(hi.Median/lo.Median) / math.Log(float64(hi.Services)/float64(lo.Services))
		where, anchor := "", chartAnchor("sync-full")
		if set.Emulated {
			where, anchor = " (emulated run)", chartAnchor("emu-sync-full")
		}
		add(fmt.Sprintf("Measured%s: a full sync grows as N^%.2f from %s to %s Services (%s → %s).", where, slope,
			humanCount(lo.Services), humanCount(hi.Services), formatDuration(lo.Median), formatDuration(hi.Median)), "", anchor)
	}
	if !ev.Native.hasDatapath(dp) && ev.Emulated.hasDatapath(dp) {
		add("Measured only in the VM runner, whose CPU is emulated: its timings are compared with native ones by ratio to a datapath measured in the same VM run, never directly.", "", anchorChartsEmulated)
	}
	return out
}

func iptablesBackend(ev *Evidence) string {
	for i := len(ev.Runs) - 1; i >= 0; i-- {
		if b := ev.Runs[i].Run.Config.IPTablesBackend; b != "" {
			return b
		}
	}
	for i := len(ev.Matrices) - 1; i >= 0; i-- {
		if b := ev.Matrices[i].Env.IPTablesBackend; b != "" {
			return b
		}
	}
	return "unrecorded"
}

func nativeKernel(ev *Evidence) string {
	for i := len(ev.Runs) - 1; i >= 0; i-- {
		if !ev.Runs[i].Run.Env.Emulated && ev.Runs[i].Run.Env.Kernel != "" {
			return ev.Runs[i].Run.Env.Kernel
		}
	}
	for i := len(ev.Matrices) - 1; i >= 0; i-- {
		if !ev.Matrices[i].Env.Emulated && ev.Matrices[i].Env.Kernel != "" {
			return ev.Matrices[i].Env.Kernel
		}
	}
	return ""
}

func cellBackend(ev *Evidence, dp string) string {
	for _, set := range []*FigureSet{ev.Native, ev.Emulated} {
		for _, c := range set.Cells() {
			if c.Datapath == dp && c.Backend != "" {
				return c.Backend
			}
		}
	}
	return ""
}

// kernelVersion parses "6.18.44-fc-v595" into 6, 18.
func kernelVersion(release string) (major, minor int, ok bool) {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(parts[0])
	minorStr := parts[1]
	if i := strings.IndexFunc(minorStr, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minorStr = minorStr[:i]
	}
	minor, err2 := strconv.Atoi(minorStr)
	return major, minor, err1 == nil && err2 == nil
}

// datapathColumnAnchor is the id of a datapath's column in the conformance
// matrix, or of the matrix section when the datapath has none.
func datapathColumnAnchor(ev *Evidence, dp string) string {
	if slices.Contains(ev.ConformanceDatapaths(), dp) {
		return slug("cf-dp-" + dp)
	}
	return anchorConformance
}
