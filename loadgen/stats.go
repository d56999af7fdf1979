package loadgen

import (
	"math"
	"slices"
	"time"
)

// Percentile returns the p-th percentile (0 ≤ p ≤ 100) of sorted, by the
// nearest-rank method: the smallest value such that at least p% of the
// samples are at or below it. Nearest rank never invents a value that was
// not observed, so a p99 of 200 samples is the second largest sample.
// sorted must be in ascending order; an empty slice gives 0.
func Percentile(sorted []float64, p float64) float64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if p <= 0 {
		return sorted[0]
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	rank = max(1, min(rank, n))
	return sorted[rank-1]
}

// durationsNs converts durations to sorted nanoseconds.
func durationsNs(d []time.Duration) []float64 {
	out := make([]float64, len(d))
	for i, x := range d {
		out[i] = float64(x.Nanoseconds())
	}
	slices.Sort(out)
	return out
}

// Spread is how one figure varied across repetitions.
type Spread struct {
	// Median across repetitions is the figure reported; Min and Max are
	// the extremes, Q1 and Q3 the quartiles (nearest rank).
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	Q1     float64 `json:"q1"`
	Q3     float64 `json:"q3"`
	// Outliers lists repetitions beyond 1.5 IQR of the quartiles (Tukey's
	// fences). They are reported and kept, never dropped: see README.
	Outliers []int `json:"outliers,omitempty"`
}

// SpreadOf summarises per-repetition values.
func SpreadOf(perRep []float64) Spread {
	if len(perRep) == 0 {
		return Spread{}
	}
	s := slices.Clone(perRep)
	slices.Sort(s)
	sp := Spread{
		Median: median(s),
		Min:    s[0],
		Max:    s[len(s)-1],
		Q1:     Percentile(s, 25),
		Q3:     Percentile(s, 75),
	}
	if len(s) >= 4 {
		iqr := sp.Q3 - sp.Q1
		lo, hi := sp.Q1-1.5*iqr, sp.Q3+1.5*iqr
		for i, v := range perRep {
			if v < lo || v > hi {
				sp.Outliers = append(sp.Outliers, i)
			}
		}
	}
	return sp
}

// median of sorted values; the mean of the middle two for an even count.
func median(sorted []float64) float64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}
