// Package robustness holds the datapath-generic robustness checks of
// issue 8, written once and run against every registered datapath:
//
//   - Faults: every fault kind a datapath offers (datapaths.FaultKinds) is
//     injected into a real sync in a lab; real packets must then behave
//     exactly as before the failed sync, the error must name the cause,
//     and the next sync must converge to the same kernel state as a fresh
//     full sync.
//   - Convergence: random seeded sequences of cluster changes, applied
//     one sync at a time, must leave the same kernel state as one full
//     sync of the final cluster; a failure is shrunk to a minimal prefix.
//   - WipeRepair: state removed out of band is put back by a forced sync.
//
// The functions take a *testing.T so that datapath packages whose kernel
// features only exist elsewhere (IPVS, inside the VM runner) can run them
// from their own tests. See docs/reliability.md.
package robustness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"proxyrig/datapaths"
)

// Skip reasons: a datapath the machine cannot run is skipped with the
// datapath's own reason; anything else that would skip fails under CI=true.
func requireDatapath(t *testing.T, dp string) datapaths.Registration {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFatal(t, "needs root to create network namespaces and program the kernel")
	}
	reg, err := datapaths.Lookup(dp)
	if err != nil {
		t.Fatal(err)
	}
	if reg.Check != nil {
		if err := reg.Check(context.Background(), datapaths.Config{Node: "node-a"}); err != nil {
			if errors.Is(err, datapaths.ErrNotSupported) {
				t.Skipf("%v", err)
			}
			t.Fatalf("check %s: %v", dp, err)
		}
	}
	return reg
}

func skipOrFatal(t *testing.T, reason string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(reason + "; CI=true, so this must not be skipped")
	}
	t.Skip(reason)
}

// shortID is a random lowercase hex string for lab and namespace names.
func shortID(n int) string {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

// diffText shows the first lines where two dumps differ, with context,
// so a failure says what is stale or missing rather than "not equal".
func diffText(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	inA, inB := map[string]int{}, map[string]int{}
	for _, l := range al {
		inA[l]++
	}
	for _, l := range bl {
		inB[l]++
	}
	var out []string
	for _, l := range al {
		if inB[l] == 0 {
			out = append(out, "- "+l)
		}
	}
	for _, l := range bl {
		if inA[l] == 0 {
			out = append(out, "+ "+l)
		}
	}
	if len(out) == 0 {
		// Same lines, different order or multiplicity.
		for i := 0; i < len(al) || i < len(bl); i++ {
			var x, y string
			if i < len(al) {
				x = al[i]
			}
			if i < len(bl) {
				y = bl[i]
			}
			if x != y {
				out = append(out, fmt.Sprintf("line %d: %q vs %q", i+1, x, y))
				if len(out) > 5 {
					break
				}
			}
		}
	}
	if len(out) > 40 {
		out = append(out[:40], fmt.Sprintf("... and %d more lines", len(out)-40))
	}
	return strings.Join(out, "\n")
}
