package nftables

import (
	"context"
	"fmt"

	"sigs.k8s.io/knftables"

	"proxyrig/internal/netnsutil"
)

// nftClient is the part of knftables the proxier uses: transactions that
// may span both families' tables, and listing one family's table.
type nftClient interface {
	NewTransaction() *knftables.Transaction
	Run(ctx context.Context, tx *knftables.Transaction) error
	Check(ctx context.Context, tx *knftables.Transaction) error
	List(ctx context.Context, f knftables.Family, objectType string) ([]string, error)
}

// nsClient runs knftables inside a network namespace.
//
// knftables has no namespace option, and its exec hook (the execer
// interface) is unexported, so neither can be used from here. What it does
// have is a plain os/exec call made synchronously on the calling goroutine.
// NS.Do runs a function on an OS thread locked into the namespace, and a
// child forked from that thread inherits the thread's namespace, so every
// nft that knftables starts inside NS.Do runs in the node's namespace, the
// same way NS.Run runs a command there. Keeping knftables (rather than
// writing tx.String() to `ip netns exec ... nft -f -` ourselves) keeps its
// version check, its error classification (IsNotFound) and its JSON
// listing parser.
type nsClient struct {
	ns netnsutil.NS
	// all has no default family or table: its transactions name the table
	// of every object, so one `nft -f` covers both families atomically.
	all knftables.Interface
	// byFamily list one family's kube-proxy table.
	byFamily map[knftables.Family]knftables.Interface
}

var _ nftClient = (*nsClient)(nil)

// newNSClient creates the knftables interfaces inside ns. knftables.New
// itself runs `nft --version` (it needs 1.0.1 or later, as kube-proxy
// does) and `nft --check` of a table, so this also proves nft works there.
func newNSClient(ns netnsutil.NS) (*nsClient, error) {
	c := &nsClient{ns: ns, byFamily: map[knftables.Family]knftables.Interface{}}
	err := ns.Do(func() error {
		var err error
		if c.all, err = knftables.New("", ""); err != nil {
			return err
		}
		for _, f := range families {
			// Listing over netlink, as kube-proxy does since its
			// NFTablesNetlink feature gate went Beta (kubernetes#137536):
			// `nft --json list table` takes about a second per thousand
			// Services, and every sync lists twice per family. The socket
			// is opened per call by the calling thread, which List keeps
			// inside the namespace.
			nft, err := knftables.New(f, kubeProxyTable, knftables.UseNetlink)
			if err != nil {
				return err
			}
			c.byFamily[f] = nft
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("set up nft in netns %s: %w", ns.Name, err)
	}
	return c, nil
}

func (c *nsClient) NewTransaction() *knftables.Transaction { return c.all.NewTransaction() }

// Run applies tx atomically. Equivalent to: ip netns exec <ns> nft -f - < tx
func (c *nsClient) Run(ctx context.Context, tx *knftables.Transaction) error {
	return c.ns.Do(func() error { return c.all.Run(ctx, tx) })
}

// Check validates tx in the kernel without committing it.
// Equivalent to: ip netns exec <ns> nft --check -f - < tx
func (c *nsClient) Check(ctx context.Context, tx *knftables.Transaction) error {
	return c.ns.Do(func() error { return c.all.Check(ctx, tx) })
}

// List names one kind of object in a family's table, over netlink.
// Equivalent to: ip netns exec <ns> nft list chains ip (or sets)
func (c *nsClient) List(ctx context.Context, f knftables.Family, objectType string) ([]string, error) {
	var out []string
	err := c.ns.Do(func() error {
		var err error
		out, err = c.byFamily[f].List(ctx, objectType)
		return err
	})
	return out, err
}

// fakeClient adapts a knftables.Fake without a default table (so one
// transaction can span both families) to nftClient; it lists from the
// fake's tables directly, since Fake.List needs a default table.
type fakeClient struct {
	*knftables.Fake
}

var _ nftClient = fakeClient{}

func newFakeClient() fakeClient { return fakeClient{knftables.NewFake("", "")} }

func (c fakeClient) List(_ context.Context, f knftables.Family, objectType string) ([]string, error) {
	c.RLock()
	defer c.RUnlock()
	t := c.Tables[f][kubeProxyTable]
	if t == nil {
		// A not-found error, as a real nft gives for a missing table.
		return nil, fmt.Errorf("list table %s %s: %w", f, kubeProxyTable, errNotFound)
	}
	var out []string
	switch objectType {
	case "chain", "chains":
		for n := range t.Chains {
			out = append(out, n)
		}
	case "set", "sets":
		for n := range t.Sets {
			out = append(out, n)
		}
	case "map", "maps":
		for n := range t.Maps {
			out = append(out, n)
		}
	default:
		return nil, fmt.Errorf("fake nft: cannot list %q", objectType)
	}
	return out, nil
}

// errNotFound is a knftables not-found error (knftables.IsNotFound is
// true for it). knftables' error type is unexported, so it is borrowed from
// a listing of a fake without tables.
var errNotFound = func() error {
	_, err := knftables.NewFake(knftables.IPv4Family, kubeProxyTable).List(context.Background(), "chains")
	return err
}()
