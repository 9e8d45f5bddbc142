package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/millstream/millstream/log"
	"github.com/millstream/millstream/log/embedded"
	"github.com/millstream/millstream/uns"
)

var t0 = time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)

func openLog(t *testing.T) *embedded.Log {
	t.Helper()
	l, err := embedded.Open(t.TempDir(), embedded.Options{
		Defaults: log.TopicConfig{Partitions: 2, RetentionAge: -1, RetentionBytes: -1},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	if err := l.CreateTopic(context.Background(), uns.PointsTopic, log.TopicConfig{}); err != nil {
		t.Fatal(err)
	}
	return l
}

func writePoints(t *testing.T, l log.Log, pts []uns.Point) {
	t.Helper()
	for i := range pts {
		p := &pts[i]
		err := l.ProduceSync(context.Background(), &log.Record{Topic: uns.PointsTopic, Key: []byte(p.Asset()), Value: uns.AppendPointJSON(nil, p), Timestamp: p.Time,
			Headers: []log.Header{{Key: uns.HeaderContentType, Value: []byte("application/json")}}})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func readRollups(t *testing.T, l log.Log, topic string) []Record {
	t.Helper()
	info, err := l.Topic(context.Background(), topic)
	if errors.Is(err, log.ErrUnknownTopic) {
		return nil // not created yet
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []Record
	for _, p := range info.Partitions {
		for off := p.Start; off < p.End; {
			recs, err := l.Fetch(context.Background(), topic, p.Partition, off, log.FetchOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				var rec Record
				if err := json.Unmarshal(r.Value, &rec); err != nil {
					t.Fatal(err)
				}
				out = append(out, rec)
				off = r.Offset + 1
			}
		}
	}
	return out
}

// run runs r until the output holds want records (and then a little more,
// so that extra ones would show), then stops it.
func run(t *testing.T, l log.Log, r *Rollup, want int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- r.Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, err := l.Topic(context.Background(), r.Output())
		n := 0
		if err == nil {
			for _, p := range info.Partitions {
				n += int(p.End - p.Start)
			}
		}
		if n >= want {
			break
		}
		select {
		case err := <-errc:
			t.Fatalf("rollup stopped early: %v (%d of %d records)", err, n, want)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d rollup records after 20 s", n, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// naive computes the rollups of pts the obvious way.
func naive(pts []uns.Point, interval time.Duration) map[string]Record {
	out := map[string]Record{}
	for _, p := range pts {
		v, ok := numeric(p)
		if !ok {
			continue
		}
		start := p.Time.Truncate(interval)
		k := p.Path + "|" + start.Format(time.RFC3339)
		r, seen := out[k]
		if !seen {
			r = Record{Path: p.Path, Start: start, End: start.Add(interval), Min: v, Max: v, First: v, Last: v}
		}
		r.Count++
		r.Sum += v
		r.Min, r.Max = math.Min(r.Min, v), math.Max(r.Max, v)
		r.Last = v // points are in time order per tag in these tests
		r.Avg = r.Sum / float64(r.Count)
		out[k] = r
	}
	return out
}

func TestRollupMatchesNaive(t *testing.T) {
	l := openLog(t)
	rng := rand.New(rand.NewPCG(7, 7))
	var pts []uns.Point
	for s := 0; s < 3*60; s += 2 { // three minutes, a point every 2 s per tag
		at := t0.Add(time.Duration(s) * time.Second)
		pts = append(pts,
			uns.Point{Path: "acme/l1/m1/temp", Time: at, Value: uns.FloatValue(20 + rng.Float64()), Quality: uns.Good, Unit: "degC"},
			uns.Point{Path: "acme/l1/m2/count", Time: at, Value: uns.IntValue(int64(s)), Quality: uns.Good},
			uns.Point{Path: "acme/l1/m2/running", Time: at, Value: uns.BoolValue(s%4 == 0), Quality: uns.Good})
		if s%30 == 0 { // left out: text, NaN, bad quality
			pts = append(pts,
				uns.Point{Path: "acme/l1/m2/state", Time: at, Value: uns.StringValue("RUN"), Quality: uns.Good},
				uns.Point{Path: "acme/l1/m1/temp", Time: at, Value: uns.FloatValue(math.NaN()), Quality: uns.Good},
				uns.Point{Path: "acme/l1/m1/temp", Time: at, Value: uns.FloatValue(999), Quality: uns.Bad})
		}
	}
	writePoints(t, l, pts)
	// A late point: for the first minute of m1/temp, after its window closed.
	late := uns.Point{Path: "acme/l1/m1/temp", Time: t0.Add(10 * time.Second), Value: uns.FloatValue(-100), Quality: uns.Good}
	writePoints(t, l, []uns.Point{late})

	began := time.Now()
	r, err := NewRollup(l, RollupOptions{Interval: time.Minute, Grace: 100 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now: func() time.Time { return t0.Add(time.Hour).Add(time.Since(began)) }})
	if err != nil {
		t.Fatal(err)
	}
	want := naive(pts, time.Minute)
	run(t, l, r, len(want))
	got := readRollups(t, l, "uns.rollups.1m")
	if len(got) != len(want) {
		t.Fatalf("%d rollups, want %d", len(got), len(want))
	}
	for _, g := range got {
		w, ok := want[g.Path+"|"+g.Start.Format(time.RFC3339)]
		if !ok {
			t.Errorf("unexpected rollup %+v", g)
			continue
		}
		if g.Count != w.Count || math.Abs(g.Sum-w.Sum) > 1e-9 || g.Min != w.Min || g.Max != w.Max || g.First != w.First || g.Last != w.Last ||
			math.Abs(g.Avg-w.Avg) > 1e-9 || !g.End.Equal(w.End) || g.Interval != "1m" {
			t.Errorf("rollup %s %s = %+v, want %+v", g.Path, g.Start, g, w)
		}
		if g.Path == "acme/l1/m1/temp" && g.Unit != "degC" {
			t.Errorf("unit %q", g.Unit)
		}
	}
	if r.late.Load() != 1 {
		t.Errorf("%d late points, want 1", r.late.Load())
	}
}

// TestRollupRestartWritesEachWindowOnce: a graceful stop (checkpoint at
// stop) and a crash (output written, no checkpoint) in the middle of the
// stream; every window ends up in the output exactly once.
func TestRollupRestartWritesEachWindowOnce(t *testing.T) {
	l := openLog(t)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	point := func(min, sec int) uns.Point {
		return uns.Point{Path: fmt.Sprintf("acme/l1/m%d/temp", sec%3), Time: t0.Add(time.Duration(min)*time.Minute + time.Duration(sec)*time.Second),
			Value: uns.FloatValue(float64(min*100 + sec)), Quality: uns.Good}
	}
	var all []uns.Point
	batch := func(fromMin, toMin int) []uns.Point {
		var pts []uns.Point
		for m := fromMin; m < toMin; m++ {
			for s := 0; s < 60; s += 5 {
				pts = append(pts, point(m, s))
			}
		}
		all = append(all, pts...)
		return pts
	}
	// The clock stays inside the data at first (only newer points close
	// windows), then jumps an hour ahead and runs.
	var offset time.Duration
	began := time.Now()
	now := func() time.Time { return t0.Add(offset).Add(time.Since(began)) }

	writePoints(t, l, batch(0, 3))
	r1, _ := NewRollup(l, RollupOptions{Interval: time.Minute, Logger: quiet, Now: now})
	run(t, l, r1, 2*3) // minutes 0 and 1 of 3 tags closed; minute 2 open, checkpointed at stop

	writePoints(t, l, batch(3, 5))
	r2, _ := NewRollup(l, RollupOptions{Interval: time.Minute, Logger: quiet, Now: now, CheckpointInterval: time.Hour})
	crashed := errors.New("crash")
	r2.beforeCheckpoint = func() error { return crashed }
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- r2.Run(ctx) }()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if n := len(readRollups(t, l, "uns.rollups.1m")); n >= 4*3 || time.Now().After(deadline) {
			break
		}
	}
	cancel() // the stop's checkpoint "crashes": no checkpoint after the first run's
	if err := <-errc; !errors.Is(err, crashed) {
		t.Fatalf("second run: %v", err)
	}

	writePoints(t, l, batch(5, 6))
	offset = time.Hour // now every window can close
	r3, _ := NewRollup(l, RollupOptions{Interval: time.Minute, Grace: 100 * time.Millisecond, Logger: quiet, Now: now})
	want := naive(all, time.Minute)
	run(t, l, r3, len(want))
	got := readRollups(t, l, "uns.rollups.1m")
	seen := map[string]int{}
	for _, g := range got {
		k := g.Path + "|" + g.Start.Format(time.RFC3339)
		seen[k]++
		if w := want[k]; g.Count != w.Count || g.Sum != w.Sum {
			t.Errorf("rollup %s = %+v, want %+v", k, g, w)
		}
	}
	for k := range want {
		if seen[k] != 1 {
			t.Errorf("window %s written %d times", k, seen[k])
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d rollups, want %d", len(got), len(want))
	}
}

func TestIntervalName(t *testing.T) {
	for d, want := range map[time.Duration]string{time.Minute: "1m", 15 * time.Minute: "15m", time.Hour: "1h", 24 * time.Hour: "1d", 30 * time.Second: "30s", 90 * time.Second: "90s"} {
		if got := IntervalName(d); got != want {
			t.Errorf("IntervalName(%s) = %s, want %s", d, got, want)
		}
	}
	if _, err := NewRollup(nil, RollupOptions{Interval: 1500 * time.Millisecond}); err == nil {
		t.Error("a 1.5 s interval was accepted")
	}
}
