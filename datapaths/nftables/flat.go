package nftables

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"proxyrig/datapaths"
)

// FlatName is the registered name of the nftables-flat variant.
//
// nftables-flat is kube-proxy's nftables layout with one mechanism
// replaced: a policy chain (service-…, local-…) picks its endpoint with a
// cascade of plain rules,
//
//	numgen random mod 3 == 0 goto endpoint-A
//	numgen random mod 2 == 0 goto endpoint-B
//	goto endpoint-C
//
// instead of kube-proxy's single rule carrying an anonymous verdict map,
//
//	numgen random mod 3 vmap { 0 : goto endpoint-A, 1 : goto endpoint-B, 2 : goto endpoint-C }
//
// Every anonymous map is a set object in the kernel, and a transaction
// that creates thousands of them loads super-linearly on this kernel (a
// full sync of 5,000 Services took 26 s, against 0.4 s for 10,000 plain
// chains). The cascade creates no set at all. Rule i of n matches with
// probability 1/(n-i), so each endpoint is picked with probability 1/n,
// the spread of kube-proxy's map (and of iptables mode's statistic
// rules). What it costs instead is per first packet: up to n-1 random
// numbers and comparisons rather than one lookup; packets of an
// established connection never reach these chains.
//
// Names, maps, sets, every other rule, partial syncs, conntrack handling
// and the documented divergences from iptables mode are those of the
// nftables datapath; only the policy chains' last rules differ. It is
// registered under its own name so its figures are never mistaken for
// kube-proxy's layout's.
const FlatName = "nftables-flat"

func init() {
	datapaths.Register(datapaths.Registration{
		Name:        FlatName,
		Description: "variant of nftables (kube-proxy's layout) that picks endpoints with plain 'numgen random mod n-i == 0' rules instead of one anonymous verdict map per Service, which this kernel loads super-linearly",
		New:         NewFlat,
		Check:       checkFlatRegistration,
	})
}

// NewFlat creates the nftables-flat datapath for one node. It touches
// nothing yet.
func NewFlat(cfg datapaths.Config) (datapaths.Datapath, error) {
	if cfg.NS.Name == "" {
		return nil, errors.New("nftables-flat datapath: Config.NS names no network namespace")
	}
	p := newFlatProxier(cfg, nil)
	p.hostOps = true
	return p, nil
}

// newFlatProxier is newProxier for the flat layout.
func newFlatProxier(cfg datapaths.Config, nft nftClient) *Proxier {
	p := newProxier(cfg, nft)
	p.layout = layoutFlat
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p.log = log.With("datapath", FlatName, "node", cfg.Node, "netns", cfg.NS.Name)
	return p
}

// checkFlatRegistration is the nftables check (the flat rules use no
// expression the kube-proxy layout's check does not already exercise:
// numgen, comparison, goto), with the variant's name in what it reports.
func checkFlatRegistration(ctx context.Context, cfg datapaths.Config) error {
	err := checkRegistration(ctx, cfg)
	if nse, ok := errors.AsType[*datapaths.NotSupportedError](err); ok {
		return &datapaths.NotSupportedError{Datapath: FlatName, Reason: nse.Reason}
	}
	return err
}

// loadBalanceFlat writes the cascade described at FlatName: rule i of n
// matches with probability 1/(n-i), each evaluating its own random
// number, and the last endpoint takes what is left.
func (fc *familyCtx) loadBalanceFlat(sr *serviceRender, chain string, targets []string) {
	n := len(targets)
	for i, t := range targets {
		if i == n-1 {
			sr.rule(chain, "", "goto", t)
			break
		}
		sr.rule(chain, "", "numgen random mod", n-i, "==", 0, "goto", t)
	}
}

// FlatRulesetText is RulesetText for nftables-flat: what a full sync of
// view leaves in an empty node, as `nft -f` input, both families.
func FlatRulesetText(view *datapaths.NodeView) (string, error) {
	fake := newFakeClient()
	tx, err := fullTransactionLayout(context.Background(), fake, view, layoutFlat)
	if err != nil {
		return "", err
	}
	if err := fake.Run(context.Background(), tx); err != nil {
		return "", fmt.Errorf("render nftables-flat ruleset: the transaction does not apply: %w", err)
	}
	return fake.Dump(), nil
}
