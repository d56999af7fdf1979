package model

import (
	"strings"
	"testing"
)

// ServiceName.Compare sorts as comparing "namespace/name" strings does.
func TestCompareServiceNames(t *testing.T) {
	names := []string{"a", "a-b", "ab", "a0", "b", "kube-system", "kube", "kube-a", "z"}
	sign := func(n int) int { return min(max(n, -1), 1) }
	for _, ns1 := range names {
		for _, n1 := range names {
			for _, ns2 := range names {
				for _, n2 := range names {
					a, b := ServiceName{Namespace: ns1, Name: n1}, ServiceName{Namespace: ns2, Name: n2}
					if got, want := sign(a.Compare(b)), strings.Compare(a.String(), b.String()); got != want {
						t.Fatalf("compare(%s, %s) = %d, want %d", a, b, got, want)
					}
				}
			}
		}
	}
}
