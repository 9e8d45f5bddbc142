package historian

import (
	"context"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/millstream/millstream/historian/synth"
	"github.com/millstream/millstream/log"
	"github.com/millstream/millstream/uns"
)

type genSample struct {
	tag int
	t   int64
	v   uns.Value
	q   uns.Quality
}

// timeMajor generates the reference data set in arrival order: every tag's
// sample for one second, then the next second.
func timeMajor(set *synth.Set) []genSample {
	sigs := make([]*synth.Signal, set.Tags())
	for i := range sigs {
		sigs[i] = set.Signal(i)
	}
	out := make([]genSample, 0, set.Tags()*set.Samples())
	for range set.Samples() {
		for i, g := range sigs {
			t, v, q, _ := g.Next()
			out = append(out, genSample{i, t, v, q})
		}
	}
	return out
}

func dirBytes(b *testing.B, dir string) int64 {
	ents, err := os.ReadDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	var n int64
	for _, e := range ents {
		fi, err := os.Stat(filepath.Join(dir, e.Name()))
		if err != nil {
			b.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

// BenchmarkIngest appends 500 tags × 30 min of the reference data set in
// arrival order to a fresh DB and flushes it, on one goroutine: the ingest
// rate including encoding and the fsynced write. It reports the bytes per
// sample of the whole directory (index, manifest and series names
// included) after the flush and after Compact.
func BenchmarkIngest(b *testing.B) {
	set := synth.New(synth.Config{Tags: 500, Duration: 30 * time.Minute, Seed: 1})
	data := timeMajor(set)
	var flushed, compacted int64
	for b.Loop() {
		dir := b.TempDir()
		db, err := Open(Options{Dir: dir})
		if err != nil {
			b.Fatal(err)
		}
		ids := make([]uint64, set.Tags())
		for i := range ids {
			if ids[i], err = db.Series(set.Path(i)); err != nil {
				b.Fatal(err)
			}
		}
		for _, s := range data {
			if err := db.Append(ids[s.tag], s.t, s.v, s.q); err != nil {
				b.Fatal(err)
			}
		}
		if err := db.Flush([]byte("offset")); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		flushed = dirBytes(b, dir)
		if err := db.Compact(); err != nil {
			b.Fatal(err)
		}
		compacted = dirBytes(b, dir)
		db.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(len(data))*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
	b.ReportMetric(float64(flushed)/float64(len(data)), "disk-B/sample")
	b.ReportMetric(float64(compacted)/float64(len(data)), "compacted-B/sample")
}

// BenchmarkRangeDay reads one day of one 1 Hz analog tag (86,400 points)
// from disk, after a restart.
func BenchmarkRangeDay(b *testing.B) {
	dir := b.TempDir()
	db, err := Open(Options{Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	set := synth.New(synth.Config{Tags: 1, Seed: 1})
	id, _ := db.Series(set.Path(0))
	g := set.Signal(0)
	first := int64(0)
	for {
		t, v, q, ok := g.Next()
		if !ok {
			break
		}
		if first == 0 {
			first = t
		}
		if err := db.Append(id, t, v, q); err != nil {
			b.Fatal(err)
		}
	}
	if err := db.Flush(nil); err != nil {
		b.Fatal(err)
	}
	if err := db.Compact(); err != nil {
		b.Fatal(err)
	}
	db.Close()
	if db, err = Open(Options{Dir: dir}); err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var dst []Sample
	for b.Loop() {
		if dst, err = db.Range(dst[:0], id, first, first+86_400_000); err != nil {
			b.Fatal(err)
		}
	}
	if len(dst) != 86400 {
		b.Fatalf("%d points", len(dst))
	}
}

// BenchmarkLast10k asks for the last value of 10,000 tags (10 minutes of
// data each), cold (the first query after a restart: one block per tag
// read and decoded) and warm (newest points known in memory, from appends
// or an earlier query).
func BenchmarkLast10k(b *testing.B) {
	dir := b.TempDir()
	db, err := Open(Options{Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	set := synth.New(synth.Config{Tags: 10000, Duration: 10 * time.Minute, Seed: 1})
	ids := make([]uint64, set.Tags())
	var end int64
	for i := range ids {
		ids[i], _ = db.Series(set.Path(i))
		g := set.Signal(i)
		for {
			t, v, q, ok := g.Next()
			if !ok {
				break
			}
			end = max(end, t)
			if err := db.Append(ids[i], t, v, q); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := db.Flush(nil); err != nil {
		b.Fatal(err)
	}
	b.Run("warm", func(b *testing.B) {
		var dst []Sample
		for b.Loop() {
			dst, _ = db.Last(dst[:0], ids, end)
		}
	})
	db.Close()
	b.Run("cold", func(b *testing.B) {
		var dst []Sample
		for b.Loop() {
			b.StopTimer()
			if db, err = Open(Options{Dir: dir}); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if dst, err = db.Last(dst[:0], ids, end); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			db.Close()
			b.StartTimer()
		}
		if len(dst) != len(ids) || dst[0].Time != end {
			b.Fatalf("last %+v", dst[0])
		}
	})
}

// BenchmarkAvgMonth computes the 1-minute average of one 1 Hz analog tag
// over 30 days (2.59 M points, 43,200 buckets) after a restart: from the
// 1-minute rollups (the default), and from the raw points (NoRollups).
func BenchmarkAvgMonth(b *testing.B) {
	for _, c := range []struct {
		name      string
		noRollups bool
	}{{"rollup", false}, {"raw", true}} {
		b.Run(c.name, func(b *testing.B) {
			dir := b.TempDir()
			opts := Options{Dir: dir, NoRollups: c.noRollups}
			db, err := Open(opts)
			if err != nil {
				b.Fatal(err)
			}
			set := synth.New(synth.Config{Tags: 1, Duration: 30 * 24 * time.Hour, Seed: 1})
			id, _ := db.Series(set.Path(0))
			g := set.Signal(0)
			first := int64(math.MinInt64)
			for {
				t, v, q, ok := g.Next()
				if !ok {
					break
				}
				if first == math.MinInt64 {
					first = t
				}
				if err := db.Append(id, t, v, q); err != nil {
					b.Fatal(err)
				}
			}
			if err := db.Flush(nil); err != nil {
				b.Fatal(err)
			}
			if err := db.Compact(); err != nil {
				b.Fatal(err)
			}
			db.Close()
			if db, err = Open(opts); err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			start := floorTo(first, minuteMs)
			grid := Buckets(start, start+30*24*hourMs-1, minuteMs)
			var dst []Point
			for b.Loop() {
				if dst, err = db.Aggregate(dst[:0], id, AggAvg, grid); err != nil {
					b.Fatal(err)
				}
			}
			if len(dst) < 43_000 {
				b.Fatalf("%d buckets", len(dst))
			}
		})
	}
}

// BenchmarkRebuild replays uns.points (200 tags × 10 min of the reference
// data set, JSON and protobuf records) from the embedded log into an empty
// historian until it is caught up: the rebuild rate, records/s, parsing
// and flushing included.
func BenchmarkRebuild(b *testing.B) {
	set := synth.New(synth.Config{Tags: 200, Duration: 10 * time.Minute, Seed: 1})
	data := timeMajor(set)
	pts := make([]uns.Point, len(data))
	for i, s := range data {
		pts[i] = uns.Point{Path: set.Path(s.tag), Time: time.UnixMilli(s.t), Value: s.v, Quality: s.q, Source: "bench"}
	}
	l := openTestLog(b)
	if err := l.CreateTopic(context.Background(), uns.PointsTopic, log.TopicConfig{Partitions: 4}); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < len(pts); i += 10_000 {
		producePoints(b, l, pts[i:min(i+10_000, len(pts))])
	}
	for b.Loop() {
		db, err := Open(Options{Dir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		in := NewIngester(l, db, IngestOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		done := make(chan error, 1)
		go func() { done <- in.Run(ctx) }()
		for !in.CaughtUp() || in.Stats().Records < int64(len(pts)) {
			time.Sleep(time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		db.Close()
	}
	b.ReportMetric(float64(len(pts))*float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkIngestDeadband is BenchmarkIngest with a deadband on every
// series (the synthetic analog tags have 0.01 resolution and noise of
// σ 0.01–0.1; counters, states and bools change by at least 1). It reports
// bytes per *original* sample, and the share of samples stored.
func BenchmarkIngestDeadband(b *testing.B) {
	set := synth.New(synth.Config{Tags: 500, Duration: 30 * time.Minute, Seed: 1})
	data := timeMajor(set)
	for _, dev := range []float64{0.05, 0.2, 1} {
		b.Run(strconv.FormatFloat(dev, 'g', -1, 64), func(b *testing.B) { benchDeadband(b, set, data, dev) })
	}
}

func benchDeadband(b *testing.B, set *synth.Set, data []genSample, dev float64) {
	var compacted int64
	var stored int
	for b.Loop() {
		dir := b.TempDir()
		db, err := Open(Options{Dir: dir, Deadband: func(string) float64 { return dev }})
		if err != nil {
			b.Fatal(err)
		}
		ids := make([]uint64, set.Tags())
		for i := range ids {
			if ids[i], err = db.Series(set.Path(i)); err != nil {
				b.Fatal(err)
			}
		}
		for _, s := range data {
			if err := db.Append(ids[s.tag], s.t, s.v, s.q); err != nil {
				b.Fatal(err)
			}
		}
		if err := db.Flush([]byte("offset")); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := db.Compact(); err != nil {
			b.Fatal(err)
		}
		compacted = dirBytes(b, dir)
		stored = 0
		for _, id := range ids {
			pts, err := db.Range(nil, id, math.MinInt64, math.MaxInt64)
			if err != nil {
				b.Fatal(err)
			}
			stored += len(pts)
		}
		db.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(len(data))*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
	b.ReportMetric(float64(compacted)/float64(len(data)), "compacted-B/sample")
	b.ReportMetric(float64(stored)/float64(len(data)), "stored-fraction")
}
