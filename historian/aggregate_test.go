package historian

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/millstream/millstream/uns"
)

// naiveValue is the aggregate value of a sample, written out again rather
// than calling sampleValue, so the test checks the definition.
func naiveValue(s Sample) (float64, bool) {
	if s.Quality == uns.Bad {
		return 0, false
	}
	var f float64
	switch s.Value.Kind() {
	case uns.Float:
		f, _ = s.Value.Float()
	case uns.Int:
		i, _ := s.Value.Int()
		f = float64(i)
	case uns.Uint:
		u, _ := s.Value.Uint()
		f = float64(u)
	case uns.Bool:
		if b, _ := s.Value.Bool(); b {
			f = 1
		}
	default:
		return 0, false
	}
	return f, !math.IsNaN(f)
}

// naiveAgg computes one window [lo, hi] from all samples of a series in
// time order (equal times in arrival order), by the definitions in the Agg
// doc, as plainly as possible.
func naiveAgg(all []Sample, agg Agg, lo, hi int64) (float64, bool) {
	var in []float64
	for _, s := range all {
		if s.Time >= lo && s.Time <= hi {
			if f, ok := naiveValue(s); ok {
				in = append(in, f)
			}
		}
	}
	// at returns the value held at time ms: that of the last point at or
	// before it, if valid.
	at := func(ms int64) (float64, bool) {
		var last *Sample
		for i := range all {
			if all[i].Time <= ms {
				last = &all[i]
			}
		}
		if last == nil {
			return 0, false
		}
		return naiveValue(*last)
	}
	switch agg {
	case AggTWAvg:
		var sum float64
		var n int
		for ms := lo; ms <= hi; ms++ {
			if f, ok := at(ms); ok {
				sum += f
				n++
			}
		}
		if n == 0 {
			return 0, false
		}
		return sum / float64(n), true
	case AggPrevious:
		return at(lo)
	case AggLinear:
		var prev, next *Sample
		for i := range all {
			if all[i].Time <= lo {
				prev = &all[i]
			}
			if all[i].Time > lo && next == nil {
				next = &all[i]
			}
		}
		if prev == nil {
			return 0, false
		}
		pv, ok := naiveValue(*prev)
		if !ok {
			return 0, false
		}
		if prev.Time == lo {
			return pv, true
		}
		if next == nil {
			return 0, false
		}
		nv, ok := naiveValue(*next)
		if !ok {
			return 0, false
		}
		frac := float64(lo-prev.Time) / float64(next.Time-prev.Time)
		return pv + frac*(nv-pv), true
	case AggDelta, AggRate:
		if len(in) == 0 {
			return 0, false
		}
		seq := in
		var before *Sample
		for i := range all {
			if all[i].Time < lo {
				before = &all[i]
			}
		}
		if before != nil {
			if f, ok := naiveValue(*before); ok {
				seq = append([]float64{f}, in...)
			}
		}
		var inc float64
		for i := 1; i < len(seq); i++ {
			if seq[i] < seq[i-1] {
				inc += seq[i]
			} else {
				inc += seq[i] - seq[i-1]
			}
		}
		if agg == AggRate {
			return inc * 1000 / float64(hi-lo+1), true
		}
		return inc, true
	}
	if len(in) == 0 {
		return 0, false
	}
	sorted := append([]float64(nil), in...)
	sort.Float64s(sorted)
	var sum float64
	for _, f := range in {
		sum += f
	}
	mean := sum / float64(len(in))
	switch agg {
	case AggMin:
		return sorted[0], true
	case AggMax:
		return sorted[len(sorted)-1], true
	case AggAvg:
		return mean, true
	case AggFirst:
		return in[0], true
	case AggLast:
		return in[len(in)-1], true
	case AggCount:
		return float64(len(in)), true
	case AggSum:
		return sum, true
	case AggStddev:
		var ss float64
		for _, f := range in {
			ss += (f - mean) * (f - mean)
		}
		return math.Sqrt(ss / float64(len(in))), true
	}
	panic("naiveAgg: " + agg.String())
}

func approxEqual(a, b float64) bool {
	if a == b {
		return true
	}
	d := math.Abs(a - b)
	return d <= 1e-9*math.Max(math.Abs(a), math.Abs(b)) || d < 1e-9
}

// TestAggregatesAgainstNaive: random series with NaN, nulls, strings, bad
// quality, gaps, duplicate times and out-of-order (including late) input,
// spread over several flushes, compared window by window against naive
// computations over the stored raw points, for bucket grids and
// Prometheus-style sliding windows.
func TestAggregatesAgainstNaive(t *testing.T) {
	for seed := range uint64(12) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 7))
			dir := t.TempDir()
			db, err := Open(Options{Dir: dir, Partition: 500 * time.Millisecond, OutOfOrderWindow: 50 * time.Millisecond, HeadPoints: 16})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			id, err := db.Series("a/b/c")
			if err != nil {
				t.Fatal(err)
			}
			var input []Sample
			add := func(s Sample) {
				input = append(input, s)
				if err := db.Append(id, s.Time, s.Value, s.Quality); err != nil {
					t.Fatal(err)
				}
			}
			tm := int64(1000)
			for i := range 300 {
				if i%70 == 69 {
					if err := db.Flush(nil); err != nil {
						t.Fatal(err)
					}
				}
				switch x := r.IntN(20); {
				case x == 0:
					tm += int64(r.IntN(400)) // gap
				case x == 1 && tm > 1200:
					// Out of order, sometimes past the window (late path).
					add(randomAggSample(r, tm-int64(r.IntN(200))))
					continue
				case x == 2:
					// Duplicate time.
				default:
					tm += int64(1 + r.IntN(20))
				}
				add(randomAggSample(r, tm))
			}
			// The raw points: the naive reference works on what a raw
			// query returns, which must be the input in time order.
			all, err := db.Range(nil, id, math.MinInt64, math.MaxInt64)
			if err != nil {
				t.Fatal(err)
			}
			want := append([]Sample(nil), input...)
			sort.SliceStable(want, func(a, b int) bool { return want[a].Time < want[b].Time })
			if err := sameSamples(all, want); err != nil {
				t.Fatalf("raw points: %v", err)
			}
			grids := []Grid{
				Buckets(900, tm+100, 1+int64(r.IntN(200))),
				Buckets(1000+int64(r.IntN(500)), tm-int64(r.IntN(300)), 1+int64(r.IntN(50))),
				// Prometheus range functions: (t-range, t] every step.
				{Start: 1000, End: tm + 50, Step: 37, Lo: -120 + 1, Hi: 0},
				{Start: 950, End: tm, Step: 100, Lo: -20 + 1, Hi: 0},
			}
			for _, g := range grids {
				for agg := AggMin; agg <= AggLinear; agg++ {
					got, err := db.Aggregate(nil, id, agg, g)
					if err != nil {
						t.Fatal(err)
					}
					k := 0
					for at := g.Start; at <= g.End; at += g.Step {
						w, ok := naiveAgg(all, agg, at+g.Lo, at+g.Hi)
						if agg == AggPrevious || agg == AggLinear {
							w, ok = naiveAgg(all, agg, at, at)
						}
						if !ok {
							if k < len(got) && got[k].Time == at {
								t.Fatalf("%s %+v at %d: got %v, want no value", agg, g, at, got[k].Value)
							}
							continue
						}
						if k >= len(got) || got[k].Time != at {
							t.Fatalf("%s %+v at %d: no value, want %v", agg, g, at, w)
						}
						if !approxEqual(got[k].Value, w) {
							t.Fatalf("%s %+v at %d: got %v, want %v", agg, g, at, got[k].Value, w)
						}
						k++
					}
					if k != len(got) {
						t.Fatalf("%s %+v: %d values, want %d", agg, g, len(got), k)
					}
				}
			}
		})
	}
}

func randomAggSample(r *rand.Rand, tm int64) Sample {
	q := uns.Good
	switch r.IntN(15) {
	case 0:
		q = uns.Bad
	case 1:
		q = uns.Uncertain
	}
	var v uns.Value
	switch x := r.IntN(30); {
	case x == 0:
		v = uns.FloatValue(math.NaN())
	case x == 1:
		v = uns.Value{} // null
	case x == 2:
		v = uns.StringValue("off")
	case x == 3:
		v = uns.BoolValue(r.IntN(2) == 0)
	case x < 8:
		v = uns.IntValue(int64(r.IntN(100)))
	case x < 12:
		// A counter-like value, with resets.
		v = uns.UintValue(uint64(r.IntN(1000)))
	default:
		v = uns.FloatValue(math.Round(r.NormFloat64()*1000) / 100)
	}
	return Sample{Time: tm, Value: v, Quality: q}
}

func TestParseAgg(t *testing.T) {
	for _, n := range AggNames() {
		a, err := ParseAgg(n)
		if err != nil || a.String() != n {
			t.Fatalf("ParseAgg(%q) = %v, %v", n, a, err)
		}
	}
	if a, _ := ParseAgg("increase"); a != AggDelta {
		t.Fatalf("increase = %v", a)
	}
	if _, err := ParseAgg("median"); err == nil {
		t.Fatal("ParseAgg(median) did not fail")
	}
}

func TestGridLimits(t *testing.T) {
	db := openTest(t, t.TempDir())
	id, _ := db.Series("a/b")
	for _, g := range []Grid{
		{Start: 0, End: 10, Step: 0, Hi: 0},
		{Start: 10, End: 0, Step: 1, Hi: 0},
		{Start: 0, End: 10, Step: 1, Lo: 1, Hi: 0},
		Buckets(0, 1e12, 1),
	} {
		if _, err := db.Aggregate(nil, id, AggAvg, g); err == nil {
			t.Errorf("grid %+v accepted", g)
		}
	}
}
