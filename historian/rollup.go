package historian

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"path/filepath"
	"slices"
	"time"

	"github.com/millstream/millstream/uns"
)

// Rollups: per series, per 1-minute and per 1-hour bucket, the count, sum,
// min, max, first and last of its valid values (as Agg defines them).
// They answer min, max, avg, sum, count, first and last queries with steps
// of whole minutes or hours without reading the raw points, and they stay
// when raw retention has deleted the raw points (Options.RollupRetention).
//
// Each tier is a DB of its own in a subdirectory (rollup-1m, rollup-1h)
// holding six float series per source series, "<path>/count",
// "<path>/sum", ... with one point per non-empty bucket at the bucket's
// start. Its checkpoint is the rolled-up watermark: every bucket before it
// has been computed.
//
// Flush advances the watermark to the start of the hour that holds the
// newest point of any series minus the out-of-order window, and computes
// the buckets up to it from the raw points first, so a crash never leaves
// a watermark ahead of rolled-up data. A point that arrives for a time
// before the watermark (late data) marks its hour dirty; the next Flush
// recomputes that hour's buckets from the raw points and appends them
// again: of several values at one bucket time, queries take the last
// written. After a crash, the replay of the log marks such hours again.
type rollups struct {
	tiers [2]*rollupTier
	// watermark: every bucket that ends before it is rolled up (ms).
	watermark int64
	// dirty hours (bucket starts, ms) per series id: late points landed
	// there after they were rolled up.
	dirty map[uint64]map[int64]bool
	// newest is the newest point time appended to any series.
	newest int64
}

type rollupTier struct {
	db    *DB
	width int64 // bucket width, ms
}

const (
	minuteMs = 60_000
	hourMs   = 3_600_000
)

var rollupStats = [...]string{"count", "sum", "min", "max", "first", "last"}

const (
	statCount = iota
	statSum
	statMin
	statMax
	statFirst
	statLast
)

func openRollups(o Options) (*rollups, error) {
	r := &rollups{dirty: map[uint64]map[int64]bool{}, newest: math.MinInt64, watermark: math.MinInt64}
	for i, t := range []struct {
		name      string
		width     int64
		partition time.Duration
		retention time.Duration
	}{
		{"rollup-1m", minuteMs, 24 * time.Hour, o.RollupRetention1m},
		{"rollup-1h", hourMs, 30 * 24 * time.Hour, o.RollupRetention1h},
	} {
		db, err := Open(Options{Dir: filepath.Join(o.Dir, t.name), Partition: t.partition,
			OutOfOrderWindow: 24 * time.Hour, Retention: t.retention, NoRollups: true})
		if err != nil {
			r.close()
			return nil, err
		}
		r.tiers[i] = &rollupTier{db: db, width: t.width}
	}
	// The tiers are written together; the lower watermark is the safe one.
	for i, t := range r.tiers {
		w := int64(math.MinInt64)
		if c := t.db.Checkpoint(); len(c) == 8 {
			w = int64(binary.LittleEndian.Uint64(c))
		}
		if i == 0 || w < r.watermark {
			r.watermark = w
		}
	}
	return r, nil
}

func (r *rollups) close() error {
	var errs []error
	for _, t := range r.tiers {
		if t != nil {
			errs = append(errs, t.db.Close())
		}
	}
	return errors.Join(errs...)
}

// noteAppend records a point of series id at time t; called under db.mu.
func (r *rollups) noteAppend(id uint64, t int64) {
	r.newest = max(r.newest, t)
	if t < r.watermark {
		h := floorTo(t, hourMs)
		if r.dirty[id] == nil {
			r.dirty[id] = map[int64]bool{}
		}
		r.dirty[id][h] = true
	}
}

func floorTo(t, w int64) int64 {
	f := t - t%w
	if t < 0 && t%w != 0 {
		f -= w
	}
	return f
}

// bucketStats are one bucket's statistics.
type bucketStats [6]float64

// rollUp computes the buckets of [from, to) of every series (and the dirty
// hours) and flushes the tiers with the new watermark. It runs before the
// raw flush, outside db.mu (it reads through the query path).
func (db *DB) rollUp() error {
	r := db.rollups
	db.mu.Lock()
	if r.newest == math.MinInt64 {
		db.mu.Unlock()
		return nil
	}
	to := floorTo(r.newest-db.windowM, hourMs)
	from := r.watermark
	dirty := r.dirty
	r.dirty = map[uint64]map[int64]bool{}
	ids := make([]uint64, 0, len(db.byID))
	for id := range db.byID {
		ids = append(ids, id)
	}
	db.mu.Unlock()
	if to <= from && len(dirty) == 0 {
		return nil
	}
	slices.Sort(ids)
	var n numeric
	for _, id := range ids {
		name, _ := db.Name(id)
		spans := [][2]int64{}
		if to > from {
			spans = append(spans, [2]int64{from, to - 1})
		}
		for _, h := range slices.Sorted(maps.Keys(dirty[id])) {
			spans = append(spans, [2]int64{h, h + hourMs - 1})
		}
		for _, sp := range spans {
			n.t, n.v = n.t[:0], n.v[:0]
			if err := db.rangeNumeric(id, sp[0], sp[1], &n); err != nil {
				return err
			}
			for _, t := range r.tiers {
				if err := t.write(name, &n); err != nil {
					return err
				}
			}
		}
	}
	w := max(to, from)
	ck := binary.LittleEndian.AppendUint64(nil, uint64(w))
	for _, t := range r.tiers {
		if err := t.db.Flush(ck); err != nil {
			return fmt.Errorf("historian: rollups: %w", err)
		}
	}
	db.mu.Lock()
	r.watermark = w
	db.mu.Unlock()
	return nil
}

// write appends the statistics of every non-empty bucket of n.
func (t *rollupTier) write(name string, n *numeric) error {
	var ids [6]uint64
	var have bool
	for i := 0; i < len(n.t); {
		b := floorTo(n.t[i], t.width)
		var st bucketStats
		cnt := 0
		for ; i < len(n.t) && n.t[i] < b+t.width; i++ {
			x := n.v[i]
			if math.IsNaN(x) {
				continue
			}
			if cnt == 0 {
				st[statMin], st[statMax], st[statFirst] = x, x, x
			}
			cnt++
			st[statSum] += x
			st[statMin], st[statMax], st[statLast] = min(st[statMin], x), max(st[statMax], x), x
		}
		if cnt == 0 {
			continue
		}
		st[statCount] = float64(cnt)
		if !have {
			for k, s := range rollupStats {
				id, err := t.db.Series(name + "/" + s)
				if err != nil {
					return err
				}
				ids[k] = id
			}
			have = true
		}
		for k := range st {
			if err := t.db.Append(ids[k], b, uns.FloatValue(st[k]), uns.Good); err != nil {
				return err
			}
		}
	}
	return nil
}

// rollupAgg reports whether agg can be computed from bucket statistics.
func rollupAgg(agg Agg) bool {
	switch agg {
	case AggMin, AggMax, AggAvg, AggSum, AggCount, AggFirst, AggLast:
		return true
	}
	return false
}

// tierFor returns the coarsest tier whose buckets tile g's windows.
func (r *rollups) tierFor(g Grid) *rollupTier {
	if g.Lo != 0 || g.Hi != g.Step-1 {
		return nil
	}
	for i := len(r.tiers) - 1; i >= 0; i-- {
		t := r.tiers[i]
		if g.Step%t.width == 0 && floorTo(g.Start, t.width) == g.Start {
			return t
		}
	}
	return nil
}

// aggregateRollup computes agg on the windows of g from tier t's buckets.
func (db *DB) aggregateRollup(dst []Point, t *rollupTier, name string, agg Agg, g Grid) ([]Point, error) {
	need := map[Agg][]int{
		AggMin: {statMin}, AggMax: {statMax}, AggAvg: {statSum, statCount}, AggSum: {statSum},
		AggCount: {statCount}, AggFirst: {statFirst}, AggLast: {statLast},
	}[agg]
	from, to := g.Start, g.last()+g.Hi
	// Per stat, the buckets in time order, of several values at one time
	// the last written. Every stat series has the same bucket times (all
	// six are written together), so the columns line up.
	cols := make([][]float64, len(need))
	var times []int64
	var samples []Sample
	for k, st := range need {
		id, ok := t.db.Lookup(name + "/" + rollupStats[st])
		if !ok {
			return dst, nil // no bucket of this series was ever rolled up
		}
		var err error
		if samples, err = t.db.Range(samples[:0], id, from, to); err != nil {
			return dst, err
		}
		col := make([]float64, 0, len(samples))
		for i, s := range samples {
			f, _ := s.Value.Float()
			if i > 0 && samples[i-1].Time == s.Time {
				col[len(col)-1] = f
				continue
			}
			col = append(col, f)
			if k == 0 {
				times = append(times, s.Time)
			}
		}
		if len(col) != len(times) {
			return dst, fmt.Errorf("%w: rollup columns of %s disagree", ErrCorrupt, name)
		}
		cols[k] = col
	}
	// times is sorted: Range returns time order.
	i := 0
	for w := g.Start; w <= g.End; w += g.Step {
		for i < len(times) && times[i] < w {
			i++
		}
		var v float64
		cnt := 0
		for ; i < len(times) && times[i] <= w+g.Hi; i++ {
			x := cols[0][i]
			switch {
			case cnt == 0:
				v = x
			case agg == AggMin:
				v = min(v, x)
			case agg == AggMax:
				v = max(v, x)
			case agg == AggSum, agg == AggCount, agg == AggAvg:
				v += x
			case agg == AggLast:
				v = x
			}
			if agg == AggAvg {
				cnt += int(cols[1][i])
			} else {
				cnt++
			}
		}
		if cnt == 0 {
			continue
		}
		if agg == AggAvg {
			v /= float64(cnt)
		}
		dst = append(dst, Point{w, v})
		if w > math.MaxInt64-g.Step {
			break
		}
	}
	return dst, nil
}
