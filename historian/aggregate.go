package historian

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/millstream/millstream/historian/block"
	"github.com/millstream/millstream/uns"
)

// Agg is an aggregate (or interpolation) computed per window of a Grid.
//
// Aggregates work on numeric values: float, int and uint values, and bools
// as 0 and 1. A point is invalid, and left out, when its value is NaN,
// null, a string or bytes, or its quality is bad. An invalid point still
// ends the hold of the point before it: for AggTWAvg and AggPrevious the
// value is unknown from an invalid point until the next valid one (a NaN
// reading means "no measurement", not "the last one still holds").
//
// A window without valid points yields no value, except for AggTWAvg,
// which yields the held value of the last point before the window when
// that point is valid. AggPrevious and AggLinear are interpolations at the
// grid time itself and ignore the window bounds.
type Agg uint8

// Aggregates.
const (
	AggNone   Agg = iota
	AggMin        // smallest value
	AggMax        // largest value
	AggAvg        // mean of the values (each point weighs the same)
	AggTWAvg      // time-weighted mean: each value holds until the next point
	AggFirst      // earliest value (of equal times, the first to arrive)
	AggLast       // latest value (of equal times, the last to arrive)
	AggCount      // number of valid points
	AggSum        // sum of the values
	AggStddev     // population standard deviation
	// AggDelta is the increase of a counter over the window: the sum of
	// the rises between consecutive valid values, starting from the last
	// point before the window if it is valid, where a fall is a counter
	// reset and counts as a rise from 0 to the new value (as Prometheus's
	// increase, without its extrapolation). Over adjacent windows the
	// deltas add up to the increase over the whole span.
	AggDelta
	// AggRate is AggDelta per second of window width.
	AggRate
	// AggPrevious is the value of the last point at or before the grid
	// time (step interpolation).
	AggPrevious
	// AggLinear interpolates linearly between the last point at or before
	// the grid time and the first after it; no value outside the data.
	AggLinear
)

var aggNames = [...]string{"", "min", "max", "avg", "twavg", "first", "last", "count", "sum", "stddev", "delta", "rate", "previous", "linear"}

func (a Agg) String() string {
	if int(a) < len(aggNames) {
		return aggNames[a]
	}
	return fmt.Sprintf("agg(%d)", a)
}

// AggNames lists the names ParseAgg accepts.
func AggNames() []string { return append([]string(nil), aggNames[1:]...) }

// ParseAgg reads an aggregate name (see AggNames; "mean" is avg,
// "increase" is delta, "interpolate" is linear).
func ParseAgg(s string) (Agg, error) {
	switch strings.ToLower(s) {
	case "mean":
		return AggAvg, nil
	case "increase":
		return AggDelta, nil
	case "interpolate":
		return AggLinear, nil
	}
	for i, n := range aggNames[1:] {
		if strings.EqualFold(s, n) {
			return Agg(i + 1), nil
		}
	}
	return AggNone, fmt.Errorf("aggregate %q: use one of %s", s, strings.Join(AggNames(), ", "))
}

// Point is one computed value.
type Point struct {
	Time  int64 // ms since the Unix epoch: the grid time
	Value float64
}

// Grid is where aggregates are evaluated: at times Start, Start+Step, ...
// up to End (inclusive), each over the window [t+Lo, t+Hi] (ms, both
// inclusive). Buckets of one step, labelled with their start, are Lo = 0,
// Hi = Step-1; Prometheus's range functions (t-range, t] are
// Lo = -range+1, Hi = 0.
type Grid struct {
	Start, End, Step int64
	Lo, Hi           int64
}

// Buckets returns the grid of consecutive step-wide buckets from from,
// the last one starting at or before to.
func Buckets(from, to, step int64) Grid {
	return Grid{Start: from, End: to, Step: step, Lo: 0, Hi: step - 1}
}

// maxGridPoints bounds the windows of one aggregation, as a query asking
// for more values than any chart can show is a mistake.
const maxGridPoints = 1_000_000

func (g Grid) check() error {
	switch {
	case g.Step <= 0:
		return fmt.Errorf("historian: step %dms must be positive", g.Step)
	case g.End < g.Start:
		return fmt.Errorf("historian: end %d before start %d", g.End, g.Start)
	case g.Hi < g.Lo:
		return fmt.Errorf("historian: empty window [%d, %d]", g.Lo, g.Hi)
	case (g.End-g.Start)/g.Step >= maxGridPoints:
		return fmt.Errorf("historian: %d values per series asked for; at most %d (use a larger step)", (g.End-g.Start)/g.Step+1, maxGridPoints)
	}
	return nil
}

func (g Grid) last() int64 { return g.Start + (g.End-g.Start)/g.Step*g.Step }

// numeric is a series' points reduced to what aggregates use: times, and
// values with NaN for invalid points.
type numeric struct {
	t []int64
	v []float64
}

func numericValue(p *block.Points, k int) float64 {
	if p.QualityAt(k) == uns.Bad {
		return math.NaN()
	}
	return sampleValue(p.Value(k), uns.Good)
}

// sampleValue is the aggregate value of a point: NaN when invalid.
func sampleValue(v uns.Value, q uns.Quality) float64 {
	if q == uns.Bad {
		return math.NaN()
	}
	if f, ok := v.Float(); ok {
		return f
	}
	if b, ok := v.Bool(); ok {
		if b {
			return 1
		}
		return 0
	}
	return math.NaN()
}

// rangeNumeric is Range for aggregation: the points of id with from ≤ time
// ≤ to, in time order (equal times in arrival order), as numeric values.
// It keeps 16 bytes a point where Range keeps a Sample.
func (db *DB) rangeNumeric(id uint64, from, to int64, n *numeric) error {
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.closed {
		return ErrClosed
	}
	s := db.byID[id]
	if s == nil {
		return fmt.Errorf("%w: %d", ErrUnknownSeries, id)
	}
	r := readers.Get().(*reader)
	defer readers.Put(r)
	inOrder := true
	last := int64(math.MinInt64)
	for _, src := range s.sources() {
		lo, hi := src.bounds()
		if hi < from || lo > to {
			continue
		}
		p, err := r.points(id, src)
		if err != nil {
			return err
		}
		i := sort.Search(p.Len(), func(k int) bool { return p.Times[k] >= from })
		j := sort.Search(p.Len(), func(k int) bool { return p.Times[k] > to })
		if i < j && p.Times[i] < last {
			inOrder = false
		}
		n.t = append(n.t, p.Times[i:j]...)
		for k := i; k < j; k++ {
			n.v = append(n.v, numericValue(p, k))
		}
		if i < j {
			last = max(last, p.Times[j-1])
		}
	}
	if !inOrder {
		sort.Stable(n)
	}
	return nil
}

func (n *numeric) Len() int           { return len(n.t) }
func (n *numeric) Less(i, j int) bool { return n.t[i] < n.t[j] }
func (n *numeric) Swap(i, j int) {
	n.t[i], n.t[j] = n.t[j], n.t[i]
	n.v[i], n.v[j] = n.v[j], n.v[i]
}

// Next returns the first point of series id after time after (of equal
// times, the first to arrive), or a Sample with Time NoTime.
func (db *DB) Next(id uint64, after int64) (Sample, error) {
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.closed {
		return Sample{Time: NoTime}, ErrClosed
	}
	s := db.byID[id]
	if s == nil {
		return Sample{Time: NoTime}, fmt.Errorf("%w: %d", ErrUnknownSeries, id)
	}
	r := readers.Get().(*reader)
	defer readers.Put(r)
	best := Sample{Time: NoTime}
	// Earlier sources first: on equal times the one visited first wins.
	for _, src := range s.sources() {
		lo, hi := src.bounds()
		if hi <= after || (best.Time != NoTime && max(lo, after+1) >= best.Time) {
			continue
		}
		p, err := r.points(id, src)
		if err != nil {
			return Sample{Time: NoTime}, err
		}
		i := sort.Search(p.Len(), func(k int) bool { return p.Times[k] > after })
		if i < p.Len() && (best.Time == NoTime || p.Times[i] < best.Time) {
			best = Sample{p.Times[i], p.Value(i), p.QualityAt(i)}
		}
	}
	return best, nil
}

// Aggregate evaluates agg for series id on grid g and appends the values
// to dst (see Agg for which windows yield none).
func (db *DB) Aggregate(dst []Point, id uint64, agg Agg, g Grid) ([]Point, error) {
	if err := g.check(); err != nil {
		return dst, err
	}
	if agg == AggNone || int(agg) >= len(aggNames) {
		return dst, fmt.Errorf("historian: unknown aggregate %d", agg)
	}
	if db.rollups != nil && rollupAgg(agg) {
		if t := db.rollups.tierFor(g); t != nil {
			var err error
			var done bool
			if dst, g, done, err = db.fromRollups(dst, t, id, agg, g); err != nil || done {
				return dst, err
			}
		}
	}
	return db.aggregateRaw(dst, id, agg, g)
}

// fromRollups answers the windows of g that lie before the rollup
// watermark from tier t, and returns the rest of the grid (done when
// nothing is left). A series with late points not yet rolled up in the
// range is answered from raw points throughout, so the answer never
// depends on when it is asked.
func (db *DB) fromRollups(dst []Point, t *rollupTier, id uint64, agg Agg, g Grid) ([]Point, Grid, bool, error) {
	db.mu.RLock()
	w := db.rollups.watermark
	s := db.byID[id]
	var name string
	if s != nil {
		name = s.name
	}
	dirtyHere := false
	for h := range db.rollups.dirty[id] {
		if h+hourMs > g.Start && h <= g.last()+g.Hi {
			dirtyHere = true
		}
	}
	db.mu.RUnlock()
	if s == nil || dirtyHere || g.Start+g.Hi >= w {
		return dst, g, false, nil
	}
	// The last window ending before the watermark.
	last := min(g.Start+(w-1-g.Hi-g.Start)/g.Step*g.Step, g.last())
	g1 := g
	g1.End = last
	dst, err := db.aggregateRollup(dst, t, name, agg, g1)
	if err != nil || last == g.last() {
		return dst, g, true, err
	}
	g.Start = last + g.Step
	return dst, g, false, nil
}

// aggregateRaw is Aggregate from the raw points.
func (db *DB) aggregateRaw(dst []Point, id uint64, agg Agg, g Grid) ([]Point, error) {
	from, to := g.Start+g.Lo, g.last()+g.Hi
	if agg == AggPrevious || agg == AggLinear {
		from, to = g.Start, g.last()
	}
	var n numeric
	if err := db.rangeNumeric(id, from, to, &n); err != nil {
		return dst, err
	}
	// The point before the data, for what holds into the first window.
	prev := math.NaN()
	prevT, hasPrev := int64(0), false
	if agg == AggTWAvg || agg == AggDelta || agg == AggRate || agg == AggPrevious || agg == AggLinear {
		ls, err := db.Last(nil, []uint64{id}, from-1)
		if err != nil {
			return dst, err
		}
		if ls[0].Time != NoTime {
			prev, prevT, hasPrev = sampleValue(ls[0].Value, ls[0].Quality), ls[0].Time, true
		}
	}
	// The point after the data, for linear interpolation at the end.
	next := Sample{Time: NoTime}
	if agg == AggLinear {
		var err error
		if next, err = db.Next(id, to); err != nil {
			return dst, err
		}
	}
	a := aggregator{n: &n, prev: prev, prevT: prevT, hasPrev: hasPrev,
		nextT: next.Time, nextV: sampleValue(next.Value, next.Quality)}
	for t := g.Start; t <= g.End; t += g.Step {
		var v float64
		var ok bool
		if agg == AggPrevious || agg == AggLinear {
			v, ok = a.interpolate(agg, t)
		} else {
			v, ok = a.window(agg, t+g.Lo, t+g.Hi)
		}
		if ok {
			dst = append(dst, Point{t, v})
		}
		if t > math.MaxInt64-g.Step {
			break
		}
	}
	return dst, nil
}

// aggregator computes windows over one series' numeric points.
type aggregator struct {
	n       *numeric
	prev    float64 // value of the point before n (NaN: invalid)
	prevT   int64
	hasPrev bool
	nextT   int64 // time of the point after n, or NoTime
	nextV   float64
}

// before returns the value of the last point before index i.
func (a *aggregator) before(i int) (float64, bool) {
	if i > 0 {
		return a.n.v[i-1], true
	}
	return a.prev, a.hasPrev
}

func (a *aggregator) window(agg Agg, lo, hi int64) (float64, bool) {
	t, v := a.n.t, a.n.v
	i := sort.Search(len(t), func(k int) bool { return t[k] >= lo })
	j := i + sort.Search(len(t)-i, func(k int) bool { return t[i+k] > hi })
	switch agg {
	case AggTWAvg:
		var sum, dur float64
		held, ok := a.before(i)
		from := lo
		if !ok {
			held = math.NaN()
		}
		for k := i; k <= j; k++ {
			until := hi + 1
			if k < j {
				until = t[k]
			}
			if !math.IsNaN(held) && until > from {
				d := float64(until - from)
				sum += held * d
				dur += d
			}
			if k < j {
				held, from = v[k], t[k]
			}
		}
		if dur == 0 {
			return 0, false
		}
		return sum / dur, true
	case AggDelta, AggRate:
		last, ok := a.before(i)
		ok = ok && !math.IsNaN(last)
		var inc float64
		seen := false
		for k := i; k < j; k++ {
			x := v[k]
			if math.IsNaN(x) {
				continue
			}
			seen = true
			if ok {
				if x >= last {
					inc += x - last
				} else {
					inc += x // reset: counted from 0
				}
			}
			last, ok = x, true
		}
		if !seen {
			return 0, false
		}
		if agg == AggRate {
			inc /= float64(hi-lo+1) / 1000
		}
		return inc, true
	}
	var cnt int
	var sum, mn, mx, first, last float64
	for k := i; k < j; k++ {
		x := v[k]
		if math.IsNaN(x) {
			continue
		}
		if cnt == 0 {
			mn, mx, first = x, x, x
		}
		cnt++
		sum += x
		mn, mx, last = min(mn, x), max(mx, x), x
	}
	if cnt == 0 {
		return 0, false
	}
	switch agg {
	case AggMin:
		return mn, true
	case AggMax:
		return mx, true
	case AggAvg:
		return sum / float64(cnt), true
	case AggFirst:
		return first, true
	case AggLast:
		return last, true
	case AggCount:
		return float64(cnt), true
	case AggSum:
		return sum, true
	case AggStddev:
		// Two passes: the one-pass formula loses precision on values
		// with a large mean, typical of counters and absolute readings.
		mean := sum / float64(cnt)
		var ss float64
		for k := i; k < j; k++ {
			if x := v[k]; !math.IsNaN(x) {
				ss += (x - mean) * (x - mean)
			}
		}
		return math.Sqrt(ss / float64(cnt)), true
	}
	return 0, false
}

func (a *aggregator) interpolate(agg Agg, at int64) (float64, bool) {
	t, v := a.n.t, a.n.v
	j := sort.Search(len(t), func(k int) bool { return t[k] > at }) // first after
	var pt int64
	var pv float64
	switch {
	case j > 0:
		pt, pv = t[j-1], v[j-1]
	case a.hasPrev:
		pt, pv = a.prevT, a.prev
	default:
		return 0, false
	}
	if math.IsNaN(pv) {
		return 0, false
	}
	if agg == AggPrevious || pt == at {
		return pv, true
	}
	nt, nv := a.nextT, a.nextV
	if j < len(t) {
		nt, nv = t[j], v[j]
	}
	if nt == NoTime || math.IsNaN(nv) {
		return 0, false
	}
	return pv + (nv-pv)*float64(at-pt)/float64(nt-pt), true
}
