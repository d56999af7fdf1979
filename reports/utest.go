package reports

import (
	"math"
	"slices"
)

// UTest is the result of a two-sided Mann-Whitney U test: do two sets of
// repetitions come from the same distribution? It is the test benchstat
// (golang.org/x/perf/benchmath, AssumeNonparametric) applies, here
// computed exactly, ties included, for the sample sizes a bench has.
type UTest struct {
	N1, N2 int
	// U is the statistic of the first sample: the number of pairs (x, y)
	// with x > y, ties counting one half.
	U float64
	// P is the two-sided p-value: the probability, if both samples came
	// from one distribution, of a rank sum at least this far from its
	// mean.
	P float64
	// MinP is the smallest p-value these sample sizes (and ties) can give
	// at all. When MinP exceeds the significance level, no difference can
	// ever be significant: more repetitions are needed.
	MinP float64
	// Exact is false when the samples were too large for exact counting
	// and the normal approximation (with tie correction) was used.
	Exact bool
}

// exactLimit bounds the pooled size counted exactly; C(100, 50) ≈ 1e29
// still fits a float64's range, and the counts are only ever divided.
const exactLimit = 100

// MannWhitney compares x and y. Either being empty gives P = 1.
func MannWhitney(x, y []float64) UTest {
	n1, n2 := len(x), len(y)
	t := UTest{N1: n1, N2: n2, P: 1, MinP: 1, Exact: true}
	if n1 == 0 || n2 == 0 {
		return t
	}
	// Midranks of the pooled sample, doubled so they are integers.
	type obs struct {
		v     float64
		first bool
	}
	pool := make([]obs, 0, n1+n2)
	for _, v := range x {
		pool = append(pool, obs{v, true})
	}
	for _, v := range y {
		pool = append(pool, obs{v, false})
	}
	slices.SortStableFunc(pool, func(a, b obs) int {
		switch {
		case a.v < b.v:
			return -1
		case a.v > b.v:
			return 1
		}
		return 0
	})
	n := n1 + n2
	rank2 := make([]int, n) // 2 × midrank
	tieTerm := 0.0
	for i := 0; i < n; {
		j := i
		for j < n && pool[j].v == pool[i].v {
			j++
		}
		// Positions i..j-1 (ranks i+1..j) share the midrank (i+1+j)/2.
		for k := i; k < j; k++ {
			rank2[k] = i + 1 + j
		}
		tl := float64(j - i)
		tieTerm += tl*tl*tl - tl
		i = j
	}
	obs2 := 0
	for k, o := range pool {
		if o.first {
			obs2 += rank2[k]
		}
	}
	t.U = float64(obs2)/2 - float64(n1*(n1+1))/2
	mean2 := n1 * (n + 1) // E[2R] = n1(n+1)
	dev := abs(obs2 - mean2)

	if n > exactLimit {
		t.Exact = false
		mu := float64(n1*n2) / 2
		sigma := math.Sqrt(float64(n1*n2) / 12 * (float64(n+1) - tieTerm/float64(n*(n-1))))
		if sigma == 0 {
			return t
		}
		z := (math.Abs(t.U-mu) - 0.5) / sigma // continuity correction
		t.P = math.Min(1, math.Erfc(math.Max(z, 0)/math.Sqrt2))
		maxZ := (mu - 0.5) / sigma
		t.MinP = math.Min(1, math.Erfc(maxZ/math.Sqrt2))
		return t
	}
	// ways[k][s]: subsets of k of the pooled ranks with doubled sum s.
	maxSum := 0
	for _, r := range rank2 {
		maxSum += r
	}
	ways := make([][]float64, n1+1)
	for k := range ways {
		ways[k] = make([]float64, maxSum+1)
	}
	ways[0][0] = 1
	for _, r := range rank2 {
		for k := min(n1, n); k >= 1; k-- {
			prev, cur := ways[k-1], ways[k]
			for s := maxSum; s >= r; s-- {
				if prev[s-r] != 0 {
					cur[s] += prev[s-r]
				}
			}
		}
	}
	total, extreme, maxDev := 0.0, 0.0, 0
	for s, w := range ways[n1] {
		if w == 0 {
			continue
		}
		total += w
		if abs(s-mean2) >= dev {
			extreme += w
		}
		maxDev = max(maxDev, abs(s-mean2))
	}
	atMax := 0.0
	for s, w := range ways[n1] {
		if w != 0 && abs(s-mean2) == maxDev {
			atMax += w
		}
	}
	t.P = math.Min(1, extreme/total)
	t.MinP = math.Min(1, atMax/total)
	return t
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}
