package historian

import (
	"fmt"
	"math"

	"github.com/millstream/millstream/uns"
)

// SeriesInfo describes one series.
type SeriesInfo struct {
	ID   uint64
	Name string
	// Kind is the kind of the series' newest value (uns.Null when it has
	// no points).
	Kind uns.Kind
	// Last is the time of the series' newest point, NoTime if none.
	Last int64
}

// Select returns the series whose names match a UNS pattern ("+" matches
// one level, a final "#" any number of levels, including none), sorted by
// name.
func (db *DB) Select(pattern string) ([]SeriesInfo, error) {
	if err := uns.ValidatePattern(pattern); err != nil {
		return nil, err
	}
	var out []SeriesInfo
	var ids []uint64
	for _, name := range db.SeriesNames() {
		if !uns.MatchPattern(pattern, name) {
			continue
		}
		id, ok := db.Lookup(name)
		if !ok {
			continue
		}
		out = append(out, SeriesInfo{ID: id, Name: name, Last: NoTime})
		ids = append(ids, id)
	}
	last, err := db.Last(nil, ids, math.MaxInt64)
	if err != nil {
		return nil, err
	}
	for i, s := range last {
		if s.Time != NoTime {
			out[i].Kind, out[i].Last = s.Value.Kind(), s.Time
		}
	}
	return out, nil
}

// Query selects series and time range of one history query.
type Query struct {
	// Pattern selects the series (see Select).
	Pattern string
	// From and To bound the time range, ms, both inclusive.
	From, To int64
	// Step, when positive, aggregates with Agg into buckets of Step ms
	// starting at From; zero returns the raw points.
	Step int64
	Agg  Agg
	// Limit bounds the raw points returned per series (0: no bound); a
	// series cut short has Truncated set.
	Limit int
}

// Result is the answer of Query for one series.
type Result struct {
	SeriesInfo
	// Samples are the raw points (Step 0).
	Samples []Sample
	// Points are the aggregated values (Step > 0).
	Points    []Point
	Truncated bool
}

// Query answers q for every series matching its pattern.
func (db *DB) Query(q Query) ([]Result, error) {
	if q.To < q.From {
		return nil, fmt.Errorf("historian: to (%d) is before from (%d)", q.To, q.From)
	}
	if q.Step < 0 {
		return nil, fmt.Errorf("historian: negative step")
	}
	if q.Step > 0 && q.Agg == AggNone {
		q.Agg = AggAvg
	}
	series, err := db.Select(q.Pattern)
	if err != nil {
		return nil, err
	}
	out := make([]Result, 0, len(series))
	for _, s := range series {
		r := Result{SeriesInfo: s}
		if q.Step > 0 {
			r.Points, err = db.Aggregate(nil, s.ID, q.Agg, Buckets(q.From, q.To, q.Step))
		} else {
			r.Samples, err = db.Range(nil, s.ID, q.From, q.To)
			if q.Limit > 0 && len(r.Samples) > q.Limit {
				r.Samples, r.Truncated = r.Samples[:q.Limit], true
			}
		}
		if err != nil {
			return nil, fmt.Errorf("historian: %s: %w", s.Name, err)
		}
		out = append(out, r)
	}
	return out, nil
}
