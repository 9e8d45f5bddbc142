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
	"strings"
	"testing"
	"time"

	"github.com/millstream/millstream/uns"
)

// tierData fills db with random points of every kind over 12 partitions
// of testOpts (10 s each): in order, within the window, late, equal
// times, kind changes, nulls, NaN, ±Inf, -0, empty strings and bytes,
// with flushes and a compaction in between; it returns the model, the
// ids and the newest time.
func tierData(t *testing.T, db *DB, seed uint64) (model, []uint64, int64) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 7))
	names := []string{"a/b/temp", "a/b/state", "a/c/count", "a/c/flag", "a/d/raw"}
	kinds := []uns.Kind{uns.Float, uns.String, uns.Uint, uns.Bool, uns.Bytes}
	ids := make([]uint64, len(names))
	for i, n := range names {
		var err error
		if ids[i], err = db.Series(n); err != nil {
			t.Fatal(err)
		}
	}
	m := model{}
	now := int64(1_700_000_000_000)
	for step := range 1200 {
		k := r.IntN(len(ids))
		ts := now
		switch r.IntN(10) {
		case 0:
			ts = now - r.Int64N(60_000)
		case 1:
			ts = now - r.Int64N(2_000)
		case 2:
		default:
			now += 1 + r.Int64N(200)
			ts = now
		}
		kind := kinds[k]
		if r.IntN(80) == 0 {
			kind = uns.Int
		}
		var v uns.Value
		switch kind {
		case uns.Float:
			v = randomValue(r, uns.Float)
		case uns.String:
			v = uns.StringValue([]string{"", "idle", "run"}[r.IntN(3)])
		case uns.Uint:
			v = uns.UintValue(math.MaxUint64 - uint64(r.IntN(5)))
		case uns.Bool:
			v = uns.BoolValue(r.IntN(2) == 0)
		case uns.Bytes:
			v = uns.BytesValue([][]byte{{}, {0, 1}, {255}}[r.IntN(3)])
		case uns.Int:
			v = uns.IntValue(r.Int64N(1000) - 500)
		}
		if r.IntN(20) == 0 {
			v = uns.Value{}
		}
		q := uns.Quality(r.IntN(4))
		if err := db.Append(ids[k], ts, v, q); err != nil {
			t.Fatal(err)
		}
		m[ids[k]] = append(m[ids[k]], Sample{ts, v, q})
		if step%97 == 0 {
			if err := db.Flush([]byte(fmt.Sprint(step))); err != nil {
				t.Fatal(err)
			}
		}
		if step == 600 {
			if err := db.Compact(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := db.Flush([]byte("end")); err != nil {
		t.Fatal(err)
	}
	return m, ids, now
}

// answers records what the queries say, to compare before and after.
type answers struct {
	ranges [][]Sample
	lasts  [][]Sample
	aggs   [][]Point
}

func queryAll(t *testing.T, db *DB, ids []uint64, now int64) answers {
	t.Helper()
	var a answers
	spans := [][2]int64{{math.MinInt64, math.MaxInt64}, {now - 90_000, now - 45_000}, {now - 31_000, now - 9_000}}
	for _, id := range ids {
		for _, sp := range spans {
			got, err := db.Range(nil, id, sp[0], sp[1])
			if err != nil {
				t.Fatal(err)
			}
			a.ranges = append(a.ranges, got)
		}
		for _, agg := range []Agg{AggAvg, AggMax, AggTWAvg, AggLast, AggCount, AggDelta, AggLinear} {
			got, err := db.Aggregate(nil, id, agg, Buckets(now-130_000, now, 7_000))
			if err != nil {
				t.Fatal(err)
			}
			a.aggs = append(a.aggs, got)
		}
	}
	for _, at := range []int64{now - 100_000, now - 50_000, now - 25_000, now - 12_345, now, math.MaxInt64} {
		got, err := db.Last(nil, ids, at)
		if err != nil {
			t.Fatal(err)
		}
		a.lasts = append(a.lasts, got)
	}
	return a
}

func sameAnswers(t *testing.T, what string, got, want answers) {
	t.Helper()
	for i := range want.ranges {
		if err := sameSamples(got.ranges[i], want.ranges[i]); err != nil {
			t.Fatalf("%s: range %d: %v", what, i, err)
		}
	}
	for i := range want.lasts {
		if err := sameSamples(got.lasts[i], want.lasts[i]); err != nil {
			t.Fatalf("%s: last %d: %v", what, i, err)
		}
	}
	for i := range want.aggs {
		if len(got.aggs[i]) != len(want.aggs[i]) {
			t.Fatalf("%s: aggregate %d: %d values, want %d", what, i, len(got.aggs[i]), len(want.aggs[i]))
		}
		for k := range want.aggs[i] {
			g, w := got.aggs[i][k], want.aggs[i][k]
			if g.Time != w.Time || (g.Value != w.Value && !(math.IsNaN(g.Value) && math.IsNaN(w.Value))) {
				t.Fatalf("%s: aggregate %d value %d: %v, want %v", what, i, k, g, w)
			}
		}
	}
}

func tierOpts(dir string, tier TierOptions) Options {
	o := testOpts
	o.Dir = dir
	o.Tier = tier
	return o
}

func openTier(t *testing.T, dir string, tier TierOptions) *DB {
	t.Helper()
	db, err := Open(tierOpts(dir, tier))
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// localParts lists the partition starts that have local files.
func localParts(db *DB) []int64 {
	db.mu.RLock()
	defer db.mu.RUnlock()
	var out []int64
	for _, f := range db.files {
		if !slices.Contains(out, f.start) {
			out = append(out, f.start)
		}
	}
	slices.Sort(out)
	return out
}

// testTiering: a query spanning the Parquet tier and the local tier
// returns the same as before tiering, before and after a restart, and
// after late data for a tiered partition is stored and tiered again.
func testTiering(t *testing.T, tier TierOptions, store ObjectStore) {
	dir := t.TempDir()
	db := openTier(t, dir, tier)
	defer func() { db.Close() }()
	m, ids, now := tierData(t, db, 1)
	before := queryAll(t, db, ids, now)
	for id := range m {
		if err := sameSamples(before.ranges[slices.Index(ids, id)*3], m.rangeOf(id, math.MinInt64, math.MaxInt64)); err != nil {
			t.Fatal(err)
		}
	}
	partsBefore := localParts(db)
	cut := now - 40_000
	n, err := db.TierBefore(context.Background(), cut)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 || n >= len(partsBefore) {
		t.Fatalf("tiered %d of %d partitions: the test needs both tiers", n, len(partsBefore))
	}
	for _, p := range localParts(db) {
		if p <= cut-db.partMs {
			t.Fatalf("partition %d still local after tiering", p)
		}
	}
	hdb, _ := filepath.Glob(filepath.Join(dir, "p*.hdb"))
	if len(hdb) != len(db.files) {
		t.Fatalf("%d partition files on disk, %d live", len(hdb), len(db.files))
	}
	keys, err := store.List(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != n {
		t.Fatalf("%d objects in the store, %d exports: %v", len(keys), n, keys)
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, "date=2023-11-14/p") || !strings.HasSuffix(k, ".parquet") {
			t.Fatalf("object key %s", k)
		}
	}
	sameAnswers(t, "after tiering", queryAll(t, db, ids, now), before)
	db.Close()
	db = openTier(t, dir, tier)
	sameAnswers(t, "after a restart", queryAll(t, db, ids, now), before)

	// Late points into a tiered partition: stored locally, answered with
	// the tier, then tiered into a second object of that partition.
	late := now - 70_000
	for i, id := range ids {
		v := uns.IntValue(int64(i))
		if err := db.Append(id, late, v, uns.Good); err != nil {
			t.Fatal(err)
		}
		m[id] = append(m[id], Sample{late, v, uns.Good})
	}
	if err := db.Flush([]byte("late")); err != nil {
		t.Fatal(err)
	}
	check := func(what string) {
		for _, id := range ids {
			got, err := db.Range(nil, id, math.MinInt64, math.MaxInt64)
			if err != nil {
				t.Fatal(err)
			}
			if err := sameSamples(got, m.rangeOf(id, math.MinInt64, math.MaxInt64)); err != nil {
				t.Fatalf("%s: series %d: %v", what, id, err)
			}
			for _, at := range []int64{late, late - 1, now} {
				l, err := db.Last(nil, []uint64{id}, at)
				if err != nil {
					t.Fatal(err)
				}
				if err := sameSamples(l, []Sample{m.last(id, at)}); err != nil {
					t.Fatalf("%s: last of %d at %d: %v", what, id, at, err)
				}
			}
		}
	}
	check("late data beside the tier")
	if n, err := db.TierBefore(context.Background(), cut); err != nil || n != 1 {
		t.Fatalf("tiering the late data: %d, %v", n, err)
	}
	check("late data tiered")
	db.Close()
	db = openTier(t, dir, tier)
	check("late data tiered, restarted")
	if got := string(db.Checkpoint()); got != "late" {
		t.Fatalf("checkpoint %q", got)
	}

	// Retention deletes tiered partitions, objects included.
	k, err := db.DropBefore(cut)
	if err != nil || k == 0 {
		t.Fatalf("retention: %d, %v", k, err)
	}
	if keys, _ := store.List(context.Background(), ""); len(keys) != 0 {
		t.Fatalf("objects left after retention: %v", keys)
	}
	if len(db.tiers) != 0 {
		t.Fatalf("%d tier objects left", len(db.tiers))
	}
	if hti, _ := filepath.Glob(filepath.Join(dir, "t*.hti")); len(hti) != 0 {
		t.Fatalf("tier indexes left: %v", hti)
	}
}

func TestTieringToDir(t *testing.T) {
	root := t.TempDir()
	testTiering(t, TierOptions{Dir: root}, DirStore{Root: root})
}

// TestTieringCrash stops an export at every step, as a kill -9 would, and
// checks that the restarted historian answers exactly as before, leaves
// no stray files, and that the next export completes and cleans up the
// orphaned object.
func TestTieringCrash(t *testing.T) {
	steps := []string{"written", "uploaded", "verified", "indexed", "committed", "removed one"}
	defer func() { tierCrash = nil }()
	for _, step := range steps {
		t.Run(step, func(t *testing.T) {
			root := t.TempDir()
			store := DirStore{Root: root}
			tier := TierOptions{Dir: root}
			dir := t.TempDir()
			db := openTier(t, dir, tier)
			m, ids, now := tierData(t, db, 2)
			before := queryAll(t, db, ids, now)
			tierCrash = func(s string) bool { return s == step }
			if _, err := db.TierBefore(context.Background(), now-40_000); !errors.Is(err, errTierCrash) {
				t.Fatalf("no crash at %s: %v", step, err)
			}
			tierCrash = nil
			db.Close() // the process is gone; Close writes nothing
			db = openTier(t, dir, tier)
			defer func() { db.Close() }()
			sameAnswers(t, "after the crash", queryAll(t, db, ids, now), before)
			for id := range m {
				got, err := db.Range(nil, id, math.MinInt64, math.MaxInt64)
				if err != nil {
					t.Fatal(err)
				}
				if err := sameSamples(got, m.rangeOf(id, math.MinInt64, math.MaxInt64)); err != nil {
					t.Fatal(err)
				}
			}
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				n := e.Name()
				if strings.Contains(n, ".tmp") {
					t.Errorf("leftover %s", n)
				}
				if _, _, ok := parsePartFileName(n); ok && !slices.ContainsFunc(db.files, func(f *partFile) bool { return f.name == n }) {
					t.Errorf("unlisted partition file %s", n)
				}
			}
			if _, err := db.TierBefore(context.Background(), now-40_000); err != nil {
				t.Fatal(err)
			}
			sameAnswers(t, "after the next export", queryAll(t, db, ids, now), before)
			keys, _ := store.List(context.Background(), "")
			var live []string
			for _, o := range db.tiers {
				live = append(live, o.key)
			}
			slices.Sort(keys)
			slices.Sort(live)
			if !slices.Equal(keys, live) {
				t.Fatalf("objects %v, live %v", keys, live)
			}
		})
	}
}

// TestTierAfter: ApplyTiering moves only partitions older than After,
// and the Ingester's options validation refuses a store without an age
// and two stores.
func TestTierAfter(t *testing.T) {
	root := t.TempDir()
	db := openTier(t, t.TempDir(), TierOptions{After: 30 * time.Second, Dir: root})
	defer db.Close()
	_, _, now := tierData(t, db, 3)
	n, err := db.ApplyTiering(context.Background(), time.UnixMilli(now))
	if err != nil || n == 0 {
		t.Fatalf("tiered %d, %v", n, err)
	}
	for _, p := range localParts(db) {
		if p+db.partMs <= now-30_000 {
			t.Fatalf("partition %d ended more than 30s before %d and is still local", p, now)
		}
	}
	for _, o := range db.tiers {
		if o.start+db.partMs > now-30_000 {
			t.Fatalf("partition %d tiered too early", o.start)
		}
	}
	if _, err := Open(tierOpts(t.TempDir(), TierOptions{After: time.Hour})); err == nil {
		t.Fatal("After without a store accepted")
	}
	if _, err := Open(tierOpts(t.TempDir(), TierOptions{Dir: root, S3: &S3Options{Endpoint: "127.0.0.1:1", Bucket: "b"}})); err == nil {
		t.Fatal("two stores accepted")
	}
}
