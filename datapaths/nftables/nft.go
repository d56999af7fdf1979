package nftables

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"

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
	// decls are the sets and maps earlier transactions declared, for
	// blockRules.
	mu    sync.Mutex
	decls map[string]setDecl
}

var _ nftClient = (*nsClient)(nil)

// newNSClient creates the knftables interfaces inside ns. knftables.New
// itself runs `nft --version` (it needs 1.0.1 or later, as kube-proxy
// does) and `nft --check` of a table, so this also proves nft works there.
func newNSClient(ns netnsutil.NS) (*nsClient, error) {
	c := &nsClient{ns: ns, byFamily: map[knftables.Family]knftables.Interface{}, decls: map[string]setDecl{}}
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

// Run applies tx atomically, as one `nft -f -`, with the rules of each
// regular chain written in block form (see blockRules).
// Equivalent to: ip netns exec <ns> nft -f - < tx
func (c *nsClient) Run(ctx context.Context, tx *knftables.Transaction) error {
	text := tx.String()
	if strings.Contains(text, "# ERROR: ") {
		// knftables records a malformed object in the transaction; its
		// own Run returns that error.
		return c.ns.Do(func() error { return c.all.Run(ctx, tx) })
	}
	c.mu.Lock()
	text = blockRules(text, c.decls)
	c.mu.Unlock()
	return c.ns.Do(func() error { return runNFT(ctx, text) })
}

// runNFT runs `nft -f -` on text in the calling thread's namespace. A
// failure carries nft's message; one that says a table, chain or set does
// not exist matches syscall.ENOENT, as knftables' errors do.
func runNFT(ctx context.Context, text string) error {
	cmd := exec.CommandContext(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(text)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			return fmt.Errorf("nft -f -: %w", err)
		}
		first, _, _ := strings.Cut(msg, "\n")
		if strings.Contains(first, "No such file or directory") {
			return fmt.Errorf("nft -f -: %s: %w", msg, syscall.ENOENT)
		}
		return fmt.Errorf("nft -f -: %s: %w", msg, err)
	}
	return nil
}

// baseChainNames are the chains blockRules never rewrites, even in a
// transaction that does not declare them.
var baseChainNames = func() map[string]bool {
	m := map[string]bool{}
	for _, bc := range nftablesBaseChains {
		m[bc.name] = true
	}
	return m
}()

// blockRules rewrites a transaction so that nft 1.0.x need not read the
// whole ruleset into its cache before it evaluates it. nft fetches every
// chain of every table before an `add rule` (to resolve the chain) and
// before an `add element`; at 10k Services (60k chains) that costs about
// 0.4 s per transaction however small. The block forms of the same
// commands need no lookup, and do the same thing:
//
//   - a run of `add rule F T C …` lines for one regular chain C becomes a
//     single `add chain F T C { …; …; }`, which appends the same rules in
//     the same order. Base chains (declared with a hook here, or named in
//     baseChainNames) and positioned rules (index, handle) are left alone;
//   - `add element F T S { … }` becomes `add set F T S { <its declaration>;
//     elements = { … }; }` (or `add map`), re-adding the set as it was
//     declared with the new elements, when decls holds that declaration.
//     Sets with intervals are left alone (nft merges their elements).
//
// decls maps "F T S" to a set's or map's declaration ("set|map", and the
// text inside its braces); the declarations in text are added to it, so a
// caller keeping decls across transactions can rewrite the element
// changes of partial syncs, which do not declare the sets again.
func blockRules(text string, decls map[string]setDecl) string {
	lines := strings.Split(text, "\n")
	var out strings.Builder
	out.Grow(len(text) + len(text)/8)
	base := map[string]bool{}
	for _, l := range lines {
		// add chain ip kube-proxy nat-output { type nat hook output … }
		if rest, ok := strings.CutPrefix(l, "add chain "); ok && strings.Contains(rest, " hook ") {
			if f := strings.Fields(rest); len(f) >= 3 {
				base[f[0]+" "+f[1]+" "+f[2]] = true
			}
		}
		// A set deleted (a stale affinity set) forgets its declaration,
		// so decls does not grow with churn.
		for _, kind := range []string{"delete set ", "delete map "} {
			if rest, ok := strings.CutPrefix(l, kind); ok && decls != nil {
				if f := strings.Fields(rest); len(f) >= 3 {
					delete(decls, f[0]+" "+f[1]+" "+f[2])
				}
			}
		}
		// add map ip kube-proxy service-ips { type … ; comment "…" ; }
		for _, kind := range []string{"set", "map"} {
			rest, ok := strings.CutPrefix(l, "add "+kind+" ")
			if !ok || decls == nil {
				continue
			}
			f := strings.SplitN(rest, " ", 4)
			if len(f) == 4 && strings.HasPrefix(f[3], "{ ") && strings.HasSuffix(f[3], " }") {
				body := strings.TrimSuffix(strings.TrimPrefix(f[3], "{ "), " }")
				if !strings.Contains(body, "elements") {
					decls[f[0]+" "+f[1]+" "+f[2]] = setDecl{kind: kind, body: body}
				}
			}
		}
	}
	var cur string // "F T C" of the open block, or ""
	closeBlock := func() {
		if cur != "" {
			out.WriteString("; }\n")
			cur = ""
		}
	}
	for i, l := range lines {
		if i == len(lines)-1 && l == "" {
			break
		}
		if rest, ok := strings.CutPrefix(l, "add element "); ok {
			f := strings.SplitN(rest, " ", 4)
			if len(f) == 4 && strings.HasPrefix(f[3], "{ ") && strings.HasSuffix(f[3], " }") {
				if d, ok := decls[f[0]+" "+f[1]+" "+f[2]]; ok && !strings.Contains(d.body, "interval") {
					closeBlock()
					fmt.Fprintf(&out, "add %s %s %s %s { %s elements = %s ; }\n", d.kind, f[0], f[1], f[2], d.body, f[3])
					continue
				}
			}
		}
		rest, ok := strings.CutPrefix(l, "add rule ")
		var key, rule string
		if ok {
			f := strings.SplitN(rest, " ", 4)
			if len(f) == 4 && !base[f[0]+" "+f[1]+" "+f[2]] && !baseChainNames[f[2]] &&
				!strings.HasPrefix(f[3], "index ") && !strings.HasPrefix(f[3], "handle ") && !strings.Contains(f[3], ";") {
				key, rule = f[0]+" "+f[1]+" "+f[2], f[3]
			}
		}
		if key == "" {
			closeBlock()
			out.WriteString(l)
			out.WriteByte('\n')
			continue
		}
		if key == cur {
			out.WriteString("; ")
		} else {
			closeBlock()
			out.WriteString("add chain ")
			out.WriteString(key)
			out.WriteString(" { ")
			cur = key
		}
		out.WriteString(rule)
	}
	closeBlock()
	return out.String()
}

// setDecl is a set's or map's declaration: kind is "set" or "map", body
// the text inside its braces ("type … ; comment … ;").
type setDecl struct {
	kind, body string
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
