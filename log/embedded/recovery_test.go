package embedded

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/millstream/millstream/log"
)

var bg = context.Background()

func createTopic(t testing.TB, l *Log, name string, cfg log.TopicConfig) {
	t.Helper()
	if err := l.CreateTopic(bg, name, cfg); err != nil {
		t.Fatal(err)
	}
}

// produceBatches writes n batches of per records each to partition 0 (one
// ProduceSync per batch, so one batch on disk each) and returns the values.
func produceBatches(t testing.TB, l *Log, topic string, n, per int, from int) []string {
	t.Helper()
	var vals []string
	for b := 0; b < n; b++ {
		var rs []*log.Record
		for i := 0; i < per; i++ {
			v := fmt.Sprintf("rec-%06d-%s", from+len(vals), strings.Repeat("x", (from+len(vals))%37))
			vals = append(vals, v)
			rs = append(rs, &log.Record{Topic: topic, Partition: 0, PartitionSet: true, Key: []byte("k"), Value: []byte(v),
				Headers: []log.Header{{Key: "h", Value: []byte(v[:5])}}})
		}
		if err := l.ProduceSync(bg, rs...); err != nil {
			t.Fatal(err)
		}
	}
	return vals
}

func readAll(t testing.TB, l *Log, topic string, p int32) []log.Record {
	t.Helper()
	info, err := l.Topic(bg, topic)
	if err != nil {
		t.Fatal(err)
	}
	off := info.Partitions[p].Start
	var out []log.Record
	for {
		rs, err := l.Fetch(bg, topic, p, off, log.FetchOptions{})
		if err != nil {
			t.Fatalf("Fetch @%d: %v", off, err)
		}
		if len(rs) == 0 {
			return out
		}
		out = append(out, rs...)
		off = rs[len(rs)-1].Offset + 1
	}
}

func segFiles(t testing.TB, dir, topic string, p int, ext string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "topics", topic, fmt.Sprint(p), "*"+ext))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func checkValues(t testing.TB, got []log.Record, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i, r := range got {
		if r.Offset != int64(i) || string(r.Value) != want[i] || string(r.Key) != "k" || len(r.Headers) != 1 || string(r.Headers[0].Value) != want[i][:5] {
			t.Fatalf("record %d: offset %d value %q, want offset %d value %q", i, r.Offset, r.Value, i, want[i])
		}
	}
}

func TestLockExcludesSecondOpen(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	_, err := Open(dir, Options{Logger: quietLogger()})
	if err == nil {
		t.Fatal("second Open of the same directory succeeded")
	}
	if !strings.Contains(err.Error(), "in use") || !strings.Contains(err.Error(), fmt.Sprint(os.Getpid())) {
		t.Fatalf("second Open error %q does not say the directory is in use by pid %d", err, os.Getpid())
	}
	l.Close()
	l2, err := Open(dir, Options{Logger: quietLogger()})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	l2.Close()
}

func TestBadOptions(t *testing.T) {
	if _, err := Open(t.TempDir(), Options{Fsync: "sometimes"}); err == nil || !strings.Contains(err.Error(), "always") {
		t.Fatalf("bad fsync policy: %v", err)
	}
}

func TestReopenKeepsRecordsAndOffsets(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{SegmentBytes: 4 << 10})
	createTopic(t, l, "t", log.TopicConfig{Partitions: 2, RetentionAge: -1})
	vals := produceBatches(t, l, "t", 40, 10, 0)
	if err := l.CommitOffset(bg, "hist", "t", 0, 123); err != nil {
		t.Fatal(err)
	}
	info, _ := l.Topic(bg, "t")
	if info.Partitions[0].Segments < 3 {
		t.Fatalf("partition has %d segments with 4 KiB segments, want several (roll by size)", info.Partitions[0].Segments)
	}
	l.Close()

	l = openT(t, dir, Options{SegmentBytes: 4 << 10})
	if r := l.Recovered(); len(r) != 0 {
		t.Fatalf("clean reopen reported recovery: %+v", r)
	}
	checkValues(t, readAll(t, l, "t", 0), vals)
	if o, ok, err := l.CommittedOffset(bg, "hist", "t", 0); err != nil || !ok || o != 123 {
		t.Fatalf("committed offset after reopen: %d %v %v", o, ok, err)
	}
	info2, _ := l.Topic(bg, "t")
	if info2.Config != info.Config || info2.Partitions[0] != info.Partitions[0] {
		t.Fatalf("topic after reopen %+v, before %+v", info2, info)
	}
	more := produceBatches(t, l, "t", 3, 5, len(vals))
	checkValues(t, readAll(t, l, "t", 0), append(vals, more...))
}

func TestIndexRebuild(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentBytes: 16 << 10}
	l := openT(t, dir, opts)
	createTopic(t, l, "t", log.TopicConfig{Partitions: 1})
	base := time.UnixMilli(1_700_000_000_000)
	var vals []string
	for i := 0; i < 2000; i++ {
		v := fmt.Sprintf("rec-%06d-%s", i, strings.Repeat("x", i%37))
		vals = append(vals, v)
		r := &log.Record{Topic: "t", Key: []byte("k"), Value: []byte(v), Timestamp: base.Add(time.Duration(i) * time.Second), Headers: []log.Header{{Key: "h", Value: []byte(v[:5])}}}
		if err := l.ProduceSync(bg, r); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	idx := segFiles(t, dir, "t", 0, ".index")
	tidx := segFiles(t, dir, "t", 0, ".timeindex")
	if len(idx) < 3 || len(tidx) != len(idx) {
		t.Fatalf("%d index and %d time index files, want several each", len(idx), len(tidx))
	}
	want, _ := os.ReadFile(idx[1])
	// Delete some indexes, corrupt others.
	os.Remove(idx[0])
	os.Remove(tidx[1])
	os.WriteFile(idx[1], []byte("garbage"), 0o644)
	os.WriteFile(idx[2], bytes.Repeat([]byte{0xff}, 16), 0o644)

	l = openT(t, dir, opts)
	checkValues(t, readAll(t, l, "t", 0), vals)
	got, err := os.ReadFile(idx[1])
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("rebuilt index differs from the original (err %v)", err)
	}
	if _, err := os.Stat(idx[0]); err != nil {
		t.Fatalf("deleted index not rebuilt: %v", err)
	}
	for _, i := range []int{0, 1, 777, 1500, 1999} {
		rs, err := l.Fetch(bg, "t", 0, int64(i), log.FetchOptions{MaxRecords: 1})
		if err != nil || len(rs) != 1 || string(rs[0].Value) != vals[i] {
			t.Fatalf("Fetch(%d) = %v, %v", i, rs, err)
		}
		o, err := l.OffsetForTime(bg, "t", 0, base.Add(time.Duration(i)*time.Second-time.Millisecond))
		if err != nil || o != int64(i) {
			t.Fatalf("OffsetForTime(record %d) = %d, %v", i, o, err)
		}
	}
}

// TestTornTail damages the active segment at random places: cuts it, flips
// bytes, appends garbage. Every batch wholly before the damage must survive,
// the truncation must be reported and appends continue at the right offset.
func TestTornTail(t *testing.T) {
	src := t.TempDir()
	l := openT(t, src, Options{})
	createTopic(t, l, "t", log.TopicConfig{Partitions: 1})
	vals := produceBatches(t, l, "t", 60, 3, 0)
	l.Close()
	segs := segFiles(t, src, "t", 0, ".log")
	if len(segs) != 1 {
		t.Fatalf("%d segments, want 1", len(segs))
	}
	orig, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	// Batch boundaries of the undamaged segment. Batches usually hold the 3
	// records of one ProduceSync, but not always: records are queued one by
	// one, and the writer may take the queue between two of them.
	type span struct{ end, next, count int64 }
	var spans []span
	if _, err := ScanSegment(bytes.NewReader(orig), 0, int64(len(orig)), func(b ScannedBatch) error {
		spans = append(spans, span{b.Pos + int64(len(b.Raw)), b.BaseOffset + int64(b.Count), int64(b.Count)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	keptBefore := func(damage int64) int64 {
		var n int64
		for _, s := range spans {
			if s.end <= damage {
				n = s.next
			}
		}
		return n
	}
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	seed := rng.Int63()
	t.Logf("seed %d", seed)
	rng = rand.New(rand.NewSource(seed))
	for iter := 0; iter < 40; iter++ {
		data := append([]byte(nil), orig...)
		var damage int64
		var what string
		switch iter % 4 {
		case 0: // cut anywhere
			damage = rng.Int63n(int64(len(data)))
			data = data[:damage]
			what = fmt.Sprintf("cut at %d", damage)
		case 1: // flip a byte in the second half
			damage = int64(len(data)/2) + rng.Int63n(int64(len(data)/2))
			data[damage] ^= byte(1 + rng.Intn(255))
			what = fmt.Sprintf("flip at %d", damage)
		case 2: // flip several bytes in the tail, then cut
			from := int64(len(data)) - 1 - rng.Int63n(500)
			cut := from + 1 + rng.Int63n(int64(len(data))-from)
			orig := append([]byte(nil), data[from:cut]...)
			for k := 0; k < 5; k++ {
				p := from + rng.Int63n(cut-from)
				data[p] ^= 0xa5
			}
			// The first byte that differs: a byte flipped twice is intact.
			damage = cut
			for i := range orig {
				if data[from+int64(i)] != orig[i] {
					damage = from + int64(i)
					break
				}
			}
			data = data[:cut]
			what = fmt.Sprintf("flips from %d, cut at %d", damage, cut)
		case 3: // garbage appended (a torn write of a batch that never completed)
			damage = int64(len(data))
			g := make([]byte, 1+rng.Intn(100))
			rng.Read(g)
			data = append(data, g...)
			what = fmt.Sprintf("%d garbage bytes appended", len(g))
		}
		dir := t.TempDir()
		copyDir(t, src, dir)
		if err := os.WriteFile(segFiles(t, dir, "t", 0, ".log")[0], data, 0o644); err != nil {
			t.Fatal(err)
		}
		l, err := Open(dir, Options{Logger: quietLogger()})
		if err != nil {
			t.Fatalf("%s: Open: %v", what, err)
		}
		kept := keptBefore(damage)
		got := readAll(t, l, "t", 0)
		t.Logf("%s: %d of %d records kept", what, kept, len(vals))
		checkValues(t, got, vals[:kept])
		reps := l.Recovered()
		atBoundary := false
		validEnd := int64(0)
		for _, s := range spans {
			atBoundary = atBoundary || s.end == int64(len(data))
			if s.end <= damage {
				validEnd = s.end
			}
		}
		// A tail of zeros only (a cut a byte or two into the next batch's
		// length field) cannot be told from preallocated space: it is
		// dropped without a report, as nothing in it was ever complete.
		zerosOnly := !bytes.ContainsFunc(data[validEnd:], func(r rune) bool { return r != 0 })
		if len(data) > 0 && !atBoundary && !zerosOnly {
			if len(reps) != 1 || reps[0].Topic != "t" || reps[0].Partition != 0 || reps[0].BytesTruncated <= 0 || reps[0].Reason == "" {
				t.Fatalf("%s: recovery reports %+v, want one truncation", what, reps)
			}
			if fi, _ := os.Stat(reps[0].Segment); fi == nil || fi.Size() != reps[0].At || reps[0].At+reps[0].BytesTruncated != int64(len(data)) {
				t.Fatalf("%s: report %+v does not match the file", what, reps[0])
			}
		}
		if iter%4 == 0 && len(reps) == 1 && int64(len(data))-reps[0].At >= batchHeaderSize {
			// A cut that keeps the torn batch's header: its records are counted.
			var torn int64
			for _, s := range spans {
				if s.end > damage {
					torn = s.count
					break
				}
			}
			if reps[0].RecordsTruncated != torn {
				t.Fatalf("%s: report counts %d truncated records, want the torn batch's %d", what, reps[0].RecordsTruncated, torn)
			}
		}
		r := &log.Record{Topic: "t", Key: []byte("k"), Value: []byte("after")}
		if err := l.ProduceSync(bg, r); err != nil || r.Offset != kept {
			t.Fatalf("%s: append after recovery got offset %d (%v), want %d", what, r.Offset, err, kept)
		}
		l.Close()
		// And once more: the repaired log reopens cleanly.
		l = openT(t, dir, Options{})
		if len(l.Recovered()) != 0 {
			t.Fatalf("%s: second reopen still recovering: %+v", what, l.Recovered())
		}
		if got := readAll(t, l, "t", 0); int64(len(got)) != kept+1 || string(got[kept].Value) != "after" {
			t.Fatalf("%s: after reopen %d records", what, len(got))
		}
		l.Close()
	}
}

func copyDir(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if fi.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestRetentionBySize(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{SegmentBytes: 4 << 10})
	createTopic(t, l, "t", log.TopicConfig{Partitions: 1, RetentionBytes: 20 << 10, RetentionAge: -1})
	vals := produceBatches(t, l, "t", 200, 2, 0)
	before, _ := l.Topic(bg, "t")
	l.EnforceRetention()
	after, _ := l.Topic(bg, "t")
	p := after.Partitions[0]
	if p.Bytes > 20<<10 || p.Bytes < 20<<10-8<<10 {
		t.Fatalf("partition is %d bytes after size retention of 20 KiB (was %d)", p.Bytes, before.Partitions[0].Bytes)
	}
	if p.Start == 0 || p.End != int64(len(vals)) {
		t.Fatalf("start %d end %d after retention", p.Start, p.End)
	}
	if _, err := l.Fetch(bg, "t", 0, 0, log.FetchOptions{}); !errors.Is(err, log.ErrOffsetOutOfRange) {
		t.Fatalf("fetch of a deleted offset: %v", err)
	}
	got := readAll(t, l, "t", 0)
	if got[0].Offset != p.Start || string(got[len(got)-1].Value) != vals[len(vals)-1] {
		t.Fatalf("records after retention start at %d, want %d", got[0].Offset, p.Start)
	}
	if n := len(segFiles(t, dir, "t", 0, ".log")); n != p.Segments {
		t.Fatalf("%d segment files on disk, %d reported", n, p.Segments)
	}
	l.Close()
	l = openT(t, dir, Options{SegmentBytes: 4 << 10})
	if info, _ := l.Topic(bg, "t"); info.Partitions[0].Start != p.Start {
		t.Fatalf("start after reopen %d, want %d", info.Partitions[0].Start, p.Start)
	}
}

func TestRetentionByAgeKeepsActiveSegment(t *testing.T) {
	dir := t.TempDir()
	// Every append rolls: each batch is its own segment.
	l := openT(t, dir, Options{SegmentAge: time.Nanosecond})
	createTopic(t, l, "t", log.TopicConfig{Partitions: 1, RetentionAge: time.Hour})
	old := time.Now().Add(-2 * time.Hour)
	for i := 0; i < 5; i++ {
		if err := l.ProduceSync(bg, &log.Record{Topic: "t", Value: []byte("old"), Timestamp: old}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 3; i++ {
		if err := l.ProduceSync(bg, &log.Record{Topic: "t", Value: []byte("new")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.ProduceSync(bg, &log.Record{Topic: "t", Value: []byte("old-in-active"), Timestamp: old}); err != nil {
		t.Fatal(err)
	}
	info, _ := l.Topic(bg, "t")
	if info.Partitions[0].Segments != 9 {
		t.Fatalf("%d segments, want 9 (roll by age)", info.Partitions[0].Segments)
	}
	l.EnforceRetention()
	info, _ = l.Topic(bg, "t")
	p := info.Partitions[0]
	if p.Start != 5 || p.Segments != 4 {
		t.Fatalf("after age retention start %d segments %d, want 5 and 4 (old active segment kept)", p.Start, p.Segments)
	}
	got := readAll(t, l, "t", 0)
	if len(got) != 4 || string(got[3].Value) != "old-in-active" {
		t.Fatalf("records after retention: %d", len(got))
	}
}

func TestRetentionLoopRuns(t *testing.T) {
	l := openT(t, t.TempDir(), Options{SegmentAge: time.Nanosecond, RetentionCheckInterval: time.Millisecond})
	createTopic(t, l, "t", log.TopicConfig{Partitions: 1, RetentionAge: time.Minute})
	old := time.Now().Add(-time.Hour)
	for i := 0; i < 3; i++ {
		if err := l.ProduceSync(bg, &log.Record{Topic: "t", Value: []byte("old"), Timestamp: old}); err != nil {
			t.Fatal(err)
		}
	}
	// The loop deletes the sealed segments; wait for it by fetching from the
	// end, which does not depend on timing.
	deadline := time.After(20 * time.Second)
	for {
		info, _ := l.Topic(bg, "t")
		if info.Partitions[0].Start == 2 {
			return
		}
		select {
		case <-deadline:
			t.Fatalf("retention loop did not run: %+v", info.Partitions[0])
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func TestDeleteRecordsBeforePersists(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{SegmentBytes: 2 << 10})
	createTopic(t, l, "t", log.TopicConfig{Partitions: 1})
	vals := produceBatches(t, l, "t", 50, 2, 0)
	if err := l.DeleteRecordsBefore(bg, "t", 0, 33); err != nil {
		t.Fatal(err)
	}
	info, _ := l.Topic(bg, "t")
	segsBefore := info.Partitions[0].Segments
	l.Close()
	l = openT(t, dir, Options{SegmentBytes: 2 << 10})
	info, _ = l.Topic(bg, "t")
	if info.Partitions[0].Start != 33 || info.Partitions[0].Segments != segsBefore {
		t.Fatalf("after reopen start %d segments %d, want 33 and %d", info.Partitions[0].Start, info.Partitions[0].Segments, segsBefore)
	}
	got := readAll(t, l, "t", 0)
	if len(got) != len(vals)-33 || got[0].Offset != 33 || string(got[0].Value) != vals[33] {
		t.Fatalf("records after reopen: %d from %d", len(got), got[0].Offset)
	}
	if n := len(segFiles(t, dir, "t", 0, ".log")); n >= 100/2 {
		t.Fatalf("%d segment files left; segments below offset 33 not deleted", n)
	}
}

func TestBackpressureHonoursContext(t *testing.T) {
	l := openT(t, t.TempDir(), Options{MaxBufferedBytes: 1})
	createTopic(t, l, "t", log.TopicConfig{Partitions: 1})
	// With a 1-byte budget only one record can be pending at a time (an
	// oversize record is admitted into an empty buffer). Producing with a
	// cancelled context must then fail fast whenever the buffer is taken,
	// and the records refused that way must not be appended.
	ctx, cancel := context.WithCancel(bg)
	cancel()
	errs := make(chan error, 200)
	for i := 0; i < 200; i++ {
		l.Produce(ctx, &log.Record{Topic: "t", Value: bytes.Repeat([]byte("v"), 100)}, func(_ *log.Record, err error) { errs <- err })
	}
	var ok, cancelled int
	for i := 0; i < 200; i++ {
		switch err := <-errs; {
		case err == nil:
			ok++
		case errors.Is(err, context.Canceled):
			cancelled++
		default:
			t.Fatalf("unexpected error %v", err)
		}
	}
	if ok == 0 {
		t.Fatal("no record got through a 1-byte buffer (an oversize record must pass when the buffer is empty)")
	}
	info, _ := l.Topic(bg, "t")
	if info.Partitions[0].End != int64(ok) {
		t.Fatalf("%d records acknowledged but end offset %d", ok, info.Partitions[0].End)
	}
	if err := l.ProduceSync(bg, &log.Record{Topic: "t", Value: make([]byte, 9<<20)}); !errors.Is(err, log.ErrRecordTooLarge) {
		t.Fatalf("9 MiB record: %v, want ErrRecordTooLarge", err)
	}
}

// TestSealedSegmentCorruptTail damages the tail of a sealed (not the last)
// segment: Open truncates it, reports it, and reads skip the lost offsets
// instead of failing, so consumers move on to the next segment.
func TestSealedSegmentCorruptTail(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentBytes: 4 << 10}
	l := openT(t, dir, opts)
	createTopic(t, l, "t", log.TopicConfig{Partitions: 1})
	vals := produceBatches(t, l, "t", 200, 2, 0)
	l.Close()
	segs := segFiles(t, dir, "t", 0, ".log")
	if len(segs) < 3 {
		t.Fatalf("%d segments, want >= 3", len(segs))
	}
	victim := segs[1]
	b, _ := os.ReadFile(victim)
	b[len(b)-3] ^= 0xff
	os.WriteFile(victim, b, 0o644)

	l = openT(t, dir, opts)
	reps := l.Recovered()
	if len(reps) != 1 || reps[0].Segment != victim {
		t.Fatalf("recovery reports %+v, want one for %s", reps, victim)
	}
	got := readAll(t, l, "t", 0)
	if len(got) >= len(vals) || got[len(got)-1].Offset != int64(len(vals)-1) {
		t.Fatalf("read %d records ending at %d after losing a batch", len(got), got[len(got)-1].Offset)
	}
	prev := int64(-1)
	gaps := 0
	for _, r := range got {
		if string(r.Value) != vals[r.Offset] {
			t.Fatalf("offset %d holds %q, want %q", r.Offset, r.Value, vals[r.Offset])
		}
		if r.Offset != prev+1 {
			gaps++
		}
		prev = r.Offset
	}
	if gaps != 1 {
		t.Fatalf("%d gaps in offsets, want exactly one (the lost batch)", gaps)
	}
}

// TestProduceFromPromise chains appends from promises with a tiny buffer:
// the buffer space of acknowledged records is free before their promises
// run, so this must not deadlock.
func TestProduceFromPromise(t *testing.T) {
	l := openT(t, t.TempDir(), Options{MaxBufferedBytes: 1})
	createTopic(t, l, "t", log.TopicConfig{Partitions: 1})
	done := make(chan error, 1)
	var chain func(n int) func(*log.Record, error)
	chain = func(n int) func(*log.Record, error) {
		return func(_ *log.Record, err error) {
			if err != nil || n == 0 {
				done <- err
				return
			}
			l.Produce(bg, &log.Record{Topic: "t", Value: []byte("v")}, chain(n-1))
		}
	}
	l.Produce(bg, &log.Record{Topic: "t", Value: []byte("v")}, chain(50))
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("chained Produce from promises deadlocked")
	}
	if info, _ := l.Topic(bg, "t"); info.Partitions[0].End != 51 {
		t.Fatalf("end %d, want 51", info.Partitions[0].End)
	}
}

// TestPreallocatedTail checks the zero-filled space the writer keeps ahead
// of small appends: a crash image with it opens without a truncation report
// and with every record; a batch torn inside it is reported like any torn
// tail; sealing and Close cut it off.
func TestPreallocatedTail(t *testing.T) {
	src := t.TempDir()
	l := openT(t, src, Options{})
	createTopic(t, l, "t", log.TopicConfig{Partitions: 1})
	vals := produceBatches(t, l, "t", 60, 3, 0)
	p, err := l.partition("t", 0)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.RLock()
	logical := p.active.synced
	p.mu.RUnlock()
	seg := segFiles(t, src, "t", 0, ".log")[0]
	if fi, err := os.Stat(seg); err != nil || fi.Size() <= logical {
		t.Fatalf("segment is %d bytes for %d bytes of batches: small appends are not preallocated", fi.Size(), logical)
	}
	crash := t.TempDir()
	copyDir(t, src, crash) // what a SIGKILL would leave: everything acknowledged is fsynced
	l.Close()
	if fi, _ := os.Stat(seg); fi.Size() != logical {
		t.Fatalf("after Close the segment is %d bytes, want %d (preallocated space not cut)", fi.Size(), logical)
	}

	image, err := os.ReadFile(segFiles(t, crash, "t", 0, ".log")[0])
	if err != nil {
		t.Fatal(err)
	}
	var lastBatch []byte
	if _, err := ScanSegment(bytes.NewReader(image), 0, logical, func(b ScannedBatch) error {
		lastBatch = append(lastBatch[:0], b.Raw...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	torn := append([]byte(nil), image...)
	copy(torn[logical:], lastBatch[:len(lastBatch)/2])

	for _, c := range []struct {
		name   string
		data   []byte
		report bool
	}{{"zero tail", image, false}, {"batch torn inside the zero tail", torn, true}} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			copyDir(t, crash, dir)
			path := segFiles(t, dir, "t", 0, ".log")[0]
			if err := os.WriteFile(path, c.data, 0o644); err != nil {
				t.Fatal(err)
			}
			l := openT(t, dir, Options{})
			reps := l.Recovered()
			if c.report != (len(reps) == 1) || len(reps) > 1 {
				t.Fatalf("recovery reports %+v, want a report: %v", reps, c.report)
			}
			if c.report && (reps[0].At != logical || reps[0].RecordsTruncated != 3) {
				t.Fatalf("report %+v, want the torn batch of 3 records at %d", reps[0], logical)
			}
			checkValues(t, readAll(t, l, "t", 0), vals)
			if fi, _ := os.Stat(path); fi.Size() != logical {
				t.Fatalf("after recovery the segment is %d bytes, want %d", fi.Size(), logical)
			}
			more := produceBatches(t, l, "t", 5, 3, len(vals))
			l.Close()
			l = openT(t, dir, Options{})
			if len(l.Recovered()) != 0 {
				t.Fatalf("second reopen still recovering: %+v", l.Recovered())
			}
			checkValues(t, readAll(t, l, "t", 0), append(append([]string(nil), vals...), more...))
		})
	}
}

// TestPreallocatedSegmentsRoll fills several small segments with small
// appends: every sealed segment ends at its last batch and reads back.
func TestPreallocatedSegmentsRoll(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{SegmentBytes: 4 << 10})
	createTopic(t, l, "t", log.TopicConfig{Partitions: 1})
	vals := produceBatches(t, l, "t", 200, 2, 0)
	segs := segFiles(t, dir, "t", 0, ".log")
	if len(segs) < 3 {
		t.Fatalf("%d segments, want several", len(segs))
	}
	for _, s := range segs[:len(segs)-1] {
		b, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		end, err := ScanSegment(bytes.NewReader(b), 0, int64(len(b)), func(ScannedBatch) error { return nil })
		if err != nil || end != int64(len(b)) {
			t.Fatalf("sealed segment %s: %d bytes, batches end at %d (%v)", s, len(b), end, err)
		}
	}
	checkValues(t, readAll(t, l, "t", 0), vals)
	l.Close()
	l = openT(t, dir, Options{SegmentBytes: 4 << 10})
	if len(l.Recovered()) != 0 {
		t.Fatalf("reopen reports %+v", l.Recovered())
	}
	checkValues(t, readAll(t, l, "t", 0), vals)
}

// TestRollFailureFailsAppends removes a partition's directory under the
// log, so that rolling to a new segment fails: the records waiting for the
// roll, and every later one, must get an error instead of hanging (the
// writer used to retry the roll forever, at full CPU).
func TestRollFailureFailsAppends(t *testing.T) {
	l := openT(t, t.TempDir(), Options{SegmentBytes: 8 << 10})
	createTopic(t, l, "t", log.TopicConfig{Partitions: 1})
	val := bytes.Repeat([]byte("v"), 1<<10)
	if err := l.ProduceSync(bg, &log.Record{Topic: "t", Value: val}); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(l.topicDir("t"), "0")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	var failed int
	for i := 0; i < 20; i++ {
		err := l.ProduceSync(ctx, &log.Record{Topic: "t", Value: val})
		if ctx.Err() != nil {
			t.Fatalf("append %d still waiting after 10 s: the writer is stuck", i)
		}
		if err != nil {
			failed++
		}
	}
	if failed == 0 {
		t.Fatal("160 KiB appended to 8 KiB segments whose directory is gone, and no append failed")
	}
	info, err := l.Topic(bg, "t")
	if err != nil {
		t.Fatal(err)
	}
	if end := info.Partitions[0].End; end > 20 {
		t.Fatalf("end offset %d after at most 20 appends", end)
	}
}
