package robustness

import (
	"math"
	"testing"
)

func TestProbesToSeeAll(t *testing.T) {
	miss := func(k, n int) float64 { return float64(k) * math.Pow(1-1/float64(k), float64(n)) }
	for k := 2; k <= 10; k++ {
		n := probesToSeeAll(k)
		if miss(k, n) >= 1e-6 || miss(k, n-1) < 1e-6 {
			t.Errorf("probesToSeeAll(%d) = %d: miss probability %.2g, with one fewer %.2g; want the least n under 1e-6", k, n, miss(k, n), miss(k, n-1))
		}
	}
	if n := probesToSeeAll(5); n != 70 {
		t.Errorf("probesToSeeAll(5) = %d, want 70", n)
	}
}
