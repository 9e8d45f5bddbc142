package historian

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/millstream/millstream/uns"
)

// model is the naive reference: every stored sample per series in arrival
// order.
type model map[uint64][]Sample

func (m model) clone() model {
	c := model{}
	for id, s := range m {
		c[id] = slices.Clone(s)
	}
	return c
}

func (m model) rangeOf(id uint64, from, to int64) []Sample {
	var out []Sample
	for _, s := range m[id] {
		if s.Time >= from && s.Time <= to {
			out = append(out, s)
		}
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].Time < out[b].Time })
	return out
}

func (m model) last(id uint64, at int64) Sample {
	best := Sample{Time: NoTime}
	for _, s := range m[id] {
		if s.Time <= at && (best.Time == NoTime || s.Time >= best.Time) {
			best = s
		}
	}
	return best
}

func sameSamples(a, b []Sample) error {
	if len(a) != len(b) {
		return fmt.Errorf("%d samples, want %d", len(a), len(b))
	}
	for i := range a {
		if a[i].Time != b[i].Time || !a[i].Value.Equal(b[i].Value) || a[i].Quality != b[i].Quality {
			return fmt.Errorf("sample %d is (%d %v %s), want (%d %v %s)", i,
				a[i].Time, a[i].Value, a[i].Quality, b[i].Time, b[i].Value, b[i].Quality)
		}
	}
	return nil
}

var testOpts = Options{Partition: 10 * time.Second, OutOfOrderWindow: 2 * time.Second, HeadPoints: 7}

func openTest(t *testing.T, dir string) *DB {
	t.Helper()
	o := testOpts
	o.Dir = dir
	// A tier store beside the directory: TierBefore works, nothing tiers
	// by itself (no After).
	o.Tier.Dir = dir + ".tier"
	db, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func randomValue(r *rand.Rand, kind uns.Kind) uns.Value {
	if r.IntN(15) == 0 {
		return uns.Value{}
	}
	switch kind {
	case uns.Int:
		return uns.IntValue(r.Int64N(100) - 50)
	case uns.String:
		return uns.StringValue([]string{"idle", "running", "fault"}[r.IntN(3)])
	}
	if r.IntN(12) == 0 {
		return uns.FloatValue([]float64{math.NaN(), math.Inf(1), math.Inf(-1), math.Copysign(0, -1)}[r.IntN(4)])
	}
	return uns.FloatValue(math.Round(r.NormFloat64()*1000) / 100)
}

// TestAgainstModel drives the DB with random appends (in order, within the
// out-of-order window, late, equal times, gaps, kind changes, nulls, NaN,
// ±Inf, -0), flushes, compactions and crash-restarts, and checks every
// query against the naive model.
func TestAgainstModel(t *testing.T) {
	for seed := range uint64(6) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 99))
			dir := t.TempDir()
			db := openTest(t, dir)
			defer func() { db.Close() }()
			names := []string{"a/b/temp", "a/b/state", "a/c/count"}
			ids := make([]uint64, len(names))
			for i, n := range names {
				var err error
				if ids[i], err = db.Series(n); err != nil {
					t.Fatal(err)
				}
			}
			live, committed := model{}, model{}
			kinds := []uns.Kind{uns.Float, uns.String, uns.Int}
			now := int64(1_700_000_000_000)
			var ckpt []byte
			for step := range 1500 {
				switch op := r.IntN(100); {
				case op < 85:
					k := r.IntN(len(ids))
					var ts int64
					switch r.IntN(10) {
					case 0:
						ts = now - r.Int64N(60_000) // late, maybe many partitions back
					case 1:
						ts = now - r.Int64N(2_000) // within the window
					case 2:
						ts = now // equal time
					default:
						now += 1 + r.Int64N(1500)
						ts = now
					}
					kind := kinds[k]
					if r.IntN(60) == 0 {
						// A tag reconfigured: its values change kind.
						kinds[k] = []uns.Kind{uns.Float, uns.Int, uns.String}[r.IntN(3)]
						kind = kinds[k]
					}
					v := randomValue(r, kind)
					q := uns.Good
					if r.IntN(10) == 0 {
						q = uns.Quality(r.IntN(4))
					}
					if err := db.Append(ids[k], ts, v, q); err != nil {
						t.Fatal(err)
					}
					live[ids[k]] = append(live[ids[k]], Sample{ts, v, q})
				case op < 90:
					ckpt = []byte(fmt.Sprint("offset-", step))
					if err := db.Flush(ckpt); err != nil {
						t.Fatal(err)
					}
					committed = live.clone()
				case op < 92:
					if err := db.Compact(); err != nil {
						t.Fatal(err)
					}
				case op < 93:
					if _, err := db.TierBefore(context.Background(), now-r.Int64N(40_000)); err != nil {
						t.Fatal(err)
					}
				case op < 95:
					// Crash: what was not flushed is gone (the log replays it).
					if err := db.Close(); err != nil {
						t.Fatal(err)
					}
					db = openTest(t, dir)
					live = committed.clone()
					if got := db.Checkpoint(); string(got) != string(ckpt) {
						t.Fatalf("checkpoint %q after restart, want %q", got, ckpt)
					}
					for i, n := range names {
						if id, ok := db.Lookup(n); ok && id != ids[i] {
							t.Fatalf("series %s has id %d after restart, was %d", n, id, ids[i])
						} else if !ok && len(committed[ids[i]]) > 0 {
							t.Fatalf("series %s lost", n)
						}
						if id, err := db.Series(n); err != nil || id != ids[i] {
							t.Fatalf("series %s re-created with id %d (%v), was %d", n, id, err, ids[i])
						}
					}
				default:
					for _, id := range ids {
						from := now - r.Int64N(80_000)
						to := from + r.Int64N(80_000)
						got, err := db.Range(nil, id, from, to)
						if err != nil {
							t.Fatal(err)
						}
						if err := sameSamples(got, live.rangeOf(id, from, to)); err != nil {
							t.Fatalf("step %d: range of %d [%d, %d]: %v", step, id, from, to, err)
						}
					}
					at := now - r.Int64N(30_000)
					if r.IntN(3) == 0 {
						at = now + 1
					}
					got, err := db.Last(nil, ids, at)
					if err != nil {
						t.Fatal(err)
					}
					for i, id := range ids {
						if err := sameSamples(got[i:i+1], []Sample{live.last(id, at)}); err != nil {
							t.Fatalf("step %d: last of %d at %d: %v", step, id, at, err)
						}
					}
				}
			}
			// Everything, after a final flush, compaction and restart.
			if err := db.Flush(nil); err != nil {
				t.Fatal(err)
			}
			if err := db.Compact(); err != nil {
				t.Fatal(err)
			}
			db.Close()
			db = openTest(t, dir)
			for _, id := range ids {
				got, err := db.Range(nil, id, math.MinInt64, math.MaxInt64)
				if err != nil {
					t.Fatal(err)
				}
				if err := sameSamples(got, live.rangeOf(id, math.MinInt64, math.MaxInt64)); err != nil {
					t.Fatalf("final range of %d: %v", id, err)
				}
			}
			// Compaction leaves one file per partition.
			parts := map[int64]int{}
			for _, f := range db.files {
				parts[f.start]++
			}
			for p, n := range parts {
				if n != 1 {
					t.Fatalf("partition %d has %d files after Compact", p, n)
				}
			}
		})
	}
}

func TestSeriesIDsAreStable(t *testing.T) {
	a := openTest(t, t.TempDir())
	defer a.Close()
	b := openTest(t, t.TempDir())
	defer b.Close()
	ia, _ := a.Series("x/y/z")
	_, _ = b.Series("other/tag")
	ib, _ := b.Series("x/y/z")
	if ia != ib {
		t.Fatalf("ids %d and %d for the same name in two directories", ia, ib)
	}
	if _, err := a.Series("bad/+/path"); !errors.Is(err, uns.ErrPath) {
		t.Fatalf("wildcard path: %v", err)
	}
	if err := a.Append(12345, 1, uns.IntValue(1), uns.Good); !errors.Is(err, ErrUnknownSeries) {
		t.Fatalf("unknown id: %v", err)
	}
}

// Files a crashed flush or compaction left behind are not part of the
// state and are removed; a damaged manifest is an error, not an empty DB.
func TestOpenCleansUpAndRejectsCorruption(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	id, _ := db.Series("a/b")
	for i := range 30 {
		if err := db.Append(id, int64(i)*1000, uns.FloatValue(float64(i)), uns.Good); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Flush([]byte("c1")); err != nil {
		t.Fatal(err)
	}
	db.Close()
	stray := []string{partFileName(0, 99), "MANIFEST.tmp123"}
	for _, n := range stray {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("junk"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A torn series record after the committed length.
	f, _ := os.OpenFile(filepath.Join(dir, seriesLogName), os.O_APPEND|os.O_WRONLY, 0)
	f.Write([]byte{5, 'a'})
	f.Close()
	db = openTest(t, dir)
	got, err := db.Range(nil, id, 0, math.MaxInt64)
	if err != nil || len(got) != 30 {
		t.Fatalf("%d points, %v", len(got), err)
	}
	db.Close()
	for _, n := range stray {
		if _, err := os.Stat(filepath.Join(dir, n)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s not removed: %v", n, err)
		}
	}
	m := filepath.Join(dir, manifestName)
	b, _ := os.ReadFile(m)
	b[len(b)/2] ^= 1
	os.WriteFile(m, b, 0o644)
	if _, err := Open(Options{Dir: dir}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("damaged manifest: %v", err)
	}
}

// A block damaged on disk is reported by the query that reads it.
func TestCorruptBlockIsAnError(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	id, _ := db.Series("a/b")
	for i := range 5 {
		db.Append(id, int64(i), uns.IntValue(int64(i)), uns.Good)
	}
	if err := db.Flush(nil); err != nil {
		t.Fatal(err)
	}
	name := db.files[0].name
	db.Close()
	p := filepath.Join(dir, name)
	b, _ := os.ReadFile(p)
	b[len(fileMagic)+3] ^= 0x10
	os.WriteFile(p, b, 0o644)
	db = openTest(t, dir)
	defer db.Close()
	if _, err := db.Range(nil, id, 0, 10); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("damaged block: %v", err)
	}
}

func TestDeadband(t *testing.T) {
	o := testOpts
	o.Dir = t.TempDir()
	o.Deadband = func(s string) float64 {
		if s == "a/noisy" {
			return 0.5
		}
		return 0
	}
	db, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	noisy, _ := db.Series("a/noisy")
	exact, _ := db.Series("a/exact")
	in := []float64{10, 10.2, 10.4, 9.8, 10.6, 10.7, 10.7, 12, 12.1, 12.1}
	for i, v := range in {
		db.Append(noisy, int64(i), uns.FloatValue(v), uns.Good)
		db.Append(exact, int64(i), uns.FloatValue(v), uns.Good)
	}
	db.Append(noisy, 10, uns.FloatValue(12.2), uns.Bad) // quality change: always kept
	got, _ := db.Range(nil, noisy, 0, 100)
	// 10 stored; 10.6 exceeds 0.5 (held 9.8 stored first); 12 exceeds
	// (held 10.7 first); the bad point (held 12.1 first).
	want := []int64{0, 3, 4, 6, 7, 9, 10}
	var times []int64
	for _, s := range got {
		times = append(times, s.Time)
	}
	if !slices.Equal(times, want) {
		t.Fatalf("deadband kept times %v, want %v", times, want)
	}
	if all, _ := db.Range(nil, exact, 0, 100); len(all) != len(in) {
		t.Fatalf("series without deadband kept %d of %d", len(all), len(in))
	}
	// Every dropped value is within the deviation of the last stored one.
	for i, v := range in {
		var last Sample
		for _, s := range got {
			if s.Time <= int64(i) {
				last = s
			}
		}
		if f, _ := last.Value.Float(); math.Abs(f-v) > 0.5 {
			t.Fatalf("value %v at %d is %v from the stored %v", v, i, math.Abs(f-v), f)
		}
	}
}

// Appends, flushes, compactions and queries may run concurrently (run
// with -race to check the locking).
func TestConcurrentUse(t *testing.T) {
	db := openTest(t, t.TempDir())
	defer db.Close()
	id, _ := db.Series("a/b/c")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 2000 {
			if err := db.Append(id, int64(i)*100, uns.FloatValue(float64(i)), uns.Good); err != nil {
				t.Error(err)
				return
			}
			if i%500 == 0 {
				if err := db.Flush(nil); err != nil {
					t.Error(err)
					return
				}
			}
		}
	}()
	var dst []Sample
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		var err error
		if dst, err = db.Range(dst[:0], id, 0, math.MaxInt64); err != nil {
			t.Fatal(err)
		}
		for i := 1; i < len(dst); i++ {
			if dst[i].Time <= dst[i-1].Time {
				t.Fatalf("out of order at %d", i)
			}
		}
		if _, err := db.Last(nil, []uint64{id}, math.MaxInt64); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := db.Range(nil, id, 0, math.MaxInt64); len(got) != 2000 {
		t.Fatalf("%d points", len(got))
	}
}

// After a restart, the newest point of every series comes from the
// partition files' indexes: "current value" queries read no block (a
// damaged block does not disturb them), older ones still do.
func TestColdLastReadsNoBlock(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	a, _ := db.Series("a/b")
	c, _ := db.Series("a/c")
	want := map[uint64]Sample{}
	for i := range 40 {
		v := uns.FloatValue(float64(i) / 4)
		if err := db.Append(a, int64(i)*1000, v, uns.Good); err != nil {
			t.Fatal(err)
		}
		want[a] = Sample{int64(i) * 1000, v, uns.Good}
	}
	// Equal last times: the last to arrive wins, across flushes too.
	for i, v := range []uns.Value{uns.StringValue("x"), uns.Value{}, uns.BytesValue([]byte{0, 1})} {
		if err := db.Append(c, 5000, v, uns.Quality(i)); err != nil {
			t.Fatal(err)
		}
		if err := db.Flush(nil); err != nil {
			t.Fatal(err)
		}
		want[c] = Sample{5000, v, uns.Quality(i)}
	}
	db.Close()
	// Damage every block byte after the file magic, keep the index.
	for _, f := range mustGlob(t, filepath.Join(dir, "p*.hdb")) {
		db := openTest(t, dir)
		var pf *partFile
		for _, x := range db.files {
			if filepath.Join(dir, x.name) == f {
				pf = x
			}
		}
		end := int64(len(fileMagic))
		for _, e := range pf.refs {
			end = max(end, e.ref.off+e.ref.size)
		}
		db.Close()
		b, _ := os.ReadFile(f)
		for i := len(fileMagic); i < int(end); i++ {
			b[i] ^= 0x55
		}
		os.WriteFile(f, b, 0o644)
	}
	db = openTest(t, dir)
	defer db.Close()
	got, err := db.Last(nil, []uint64{a, c}, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	if err := sameSamples(got, []Sample{want[a], want[c]}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Last(nil, []uint64{a}, 20_000); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("older last value read no block: %v", err)
	}
}

func mustGlob(t *testing.T, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(pattern)
	if err != nil || len(m) == 0 {
		t.Fatalf("glob %s: %v %v", pattern, m, err)
	}
	return m
}
