package historian

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// compareRollups checks that every rollup-able aggregate on minute- and
// hour-aligned grids equals the computation from raw points, and returns
// how many windows the rollups answered.
func compareRollups(t *testing.T, db *DB, ids []uint64, start int64) int {
	t.Helper()
	used := 0
	for _, id := range ids {
		for _, g := range []Grid{
			Buckets(start, start+6*hourMs-1, minuteMs),
			Buckets(start+7*minuteMs, start+5*hourMs, 5*minuteMs),
			Buckets(start, start+7*hourMs, hourMs),
			Buckets(start-hourMs, start+8*hourMs, 2*hourMs),
		} {
			for _, agg := range []Agg{AggMin, AggMax, AggAvg, AggSum, AggCount, AggFirst, AggLast} {
				got, err := db.Aggregate(nil, id, agg, g)
				if err != nil {
					t.Fatal(err)
				}
				want, err := db.aggregateRaw(nil, id, agg, g)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != len(want) {
					t.Fatalf("series %d %s %+v: %d values, raw gives %d", id, agg, g, len(got), len(want))
				}
				for k := range got {
					if got[k].Time != want[k].Time || !approxEqual(got[k].Value, want[k].Value) {
						t.Fatalf("series %d %s %+v: value %d = %v, raw gives %v", id, agg, g, k, got[k], want[k])
					}
				}
				if db.rollups.tierFor(g) != nil && g.Start+g.Hi < db.rollups.watermark {
					used++
				}
			}
		}
	}
	return used
}

// TestRollupsEqualRaw: random data with NaN, nulls, strings, bad quality,
// gaps and out-of-order points, then late points into hours already
// rolled up, a restart and raw retention.
func TestRollupsEqualRaw(t *testing.T) {
	for seed := range uint64(3) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 11))
			dir := t.TempDir()
			opts := Options{Dir: dir, Partition: time.Hour, OutOfOrderWindow: time.Minute}
			db, err := Open(opts)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
			var ids []uint64
			for i := range 3 {
				id, err := db.Series(fmt.Sprintf("a/b/s%d", i))
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, id)
			}
			tm := start
			lastFlush := tm
			for tm < start+6*hourMs {
				tm += int64(1000 + r.IntN(20_000))
				if r.IntN(50) == 0 {
					tm += int64(r.IntN(30 * minuteMs)) // gap
				}
				for _, id := range ids {
					at := tm
					if r.IntN(10) == 0 {
						at -= int64(r.IntN(2 * minuteMs)) // out of order
					}
					s := randomAggSample(r, at)
					if err := db.Append(id, s.Time, s.Value, s.Quality); err != nil {
						t.Fatal(err)
					}
				}
				if tm-lastFlush > 20*minuteMs {
					if err := db.Flush(nil); err != nil {
						t.Fatal(err)
					}
					lastFlush = tm
				}
			}
			if err := db.Flush(nil); err != nil {
				t.Fatal(err)
			}
			if db.rollups.watermark < start+4*hourMs {
				t.Fatalf("watermark %d, want at least 4 hours rolled up", db.rollups.watermark-start)
			}
			if compareRollups(t, db, ids, start) == 0 {
				t.Fatal("no query used the rollups")
			}
			// Late points into rolled-up hours: right before and after
			// the next flush recomputes them.
			for range 20 {
				id := ids[r.IntN(len(ids))]
				s := randomAggSample(r, start+int64(r.IntN(3*hourMs)))
				if err := db.Append(id, s.Time, s.Value, s.Quality); err != nil {
					t.Fatal(err)
				}
			}
			compareRollups(t, db, ids, start)
			if err := db.Flush(nil); err != nil {
				t.Fatal(err)
			}
			if len(db.rollups.dirty) != 0 {
				t.Fatalf("dirty hours left after a flush: %v", db.rollups.dirty)
			}
			compareRollups(t, db, ids, start)
			before, err := db.Aggregate(nil, ids[0], AggAvg, Buckets(start, start+6*hourMs-1, hourMs))
			if err != nil {
				t.Fatal(err)
			}
			// Restart: the rollups and the watermark are durable.
			db.Close()
			if db, err = Open(opts); err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if compareRollups(t, db, ids, start) == 0 {
				t.Fatal("no query used the rollups after a restart")
			}
			// Raw retention: the rolled-up history outlives the points.
			if _, err := db.DropBefore(start + 3*hourMs); err != nil {
				t.Fatal(err)
			}
			after, err := db.Aggregate(nil, ids[0], AggAvg, Buckets(start, start+6*hourMs-1, hourMs))
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := db.Range(nil, ids[0], start, start+3*hourMs-1)
			if len(raw) != 0 || len(after) != len(before) {
				t.Fatalf("after retention: %d raw points left, %d hourly values (was %d)", len(raw), len(after), len(before))
			}
			for k := range after {
				if after[k] != before[k] {
					t.Fatalf("hour %d: %v after retention, %v before", k, after[k], before[k])
				}
			}
		})
	}
}
