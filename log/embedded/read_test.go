package embedded

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/millstream/millstream/log"
)

// A read leaves a hint where it stopped, so that a consumer tailing the
// topic starts its next read there rather than at the sparse index entry
// before it; reads of any other offset still return exactly their records.
func TestReadHint(t *testing.T) {
	l := openT(t, t.TempDir(), Options{})
	ctx := context.Background()
	if err := l.CreateTopic(ctx, "t", log.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	// 40 batches of 3 records each, all within one index interval.
	const batches, per = 40, 3
	for b := range batches {
		var rs []*log.Record
		for i := range per {
			rs = append(rs, &log.Record{Topic: "t", Key: []byte("k"), Value: []byte(fmt.Sprintf("v%04d", b*per+i))})
		}
		if err := l.ProduceSync(ctx, rs...); err != nil {
			t.Fatal(err)
		}
	}
	p, err := l.partition("t", 0)
	if err != nil {
		t.Fatal(err)
	}
	view := func() segView {
		p.mu.RLock()
		defer p.mu.RUnlock()
		return p.segs[0].view()
	}
	v := view()
	if len(v.index) != 1 || v.synced >= indexInterval {
		t.Fatalf("test wants one index entry for the whole segment; have %d entries over %d bytes", len(v.index), v.synced)
	}
	// Where the batch holding each offset starts. (A ProduceSync of three
	// records is usually one batch, but the writer may take the first
	// record before the others arrive.)
	var scanned []ScannedBatch
	if _, err := ScanSegment(p.segs[0].f, 0, v.synced, func(b ScannedBatch) error {
		scanned = append(scanned, b)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	batchAt := func(off int64) int64 {
		for _, b := range scanned {
			if b.BaseOffset <= off && off < b.BaseOffset+int64(b.Count) {
				return b.Pos
			}
		}
		t.Fatalf("no batch holds offset %d", off)
		return 0
	}

	fetch := func(off int64, max int) []log.Record {
		t.Helper()
		rs, err := l.Fetch(ctx, "t", 0, off, log.FetchOptions{MaxRecords: max, MaxBytes: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range rs {
			want := fmt.Sprintf("v%04d", off+int64(i))
			if r.Offset != off+int64(i) || string(r.Value) != want {
				t.Fatalf("Fetch(%d, max %d)[%d] = offset %d %q, want offset %d %q", off, max, i, r.Offset, r.Value, off+int64(i), want)
			}
		}
		return rs
	}

	// A read that ends at a batch boundary (or inside a batch): the next
	// starts at the batch holding its offset.
	fetch(0, 30)
	if got, want := view().lookup(30), batchAt(30); got != want {
		t.Fatalf("after reading offsets 0-29, lookup(30) = %d, want %d (the batch holding 30)", got, want)
	}
	// One that ends inside a batch: the next starts at the batch's start.
	fetch(30, 4)
	if got, want := view().lookup(34), batchAt(34); got != want {
		t.Fatalf("after reading offsets 30-33, lookup(34) = %d, want %d (the batch holding 34)", got, want)
	}
	// An offset before the hint is found from the index.
	if got := view().lookup(5); got != 0 {
		t.Fatalf("lookup(5) = %d, want 0 (the index entry)", got)
	}

	// Readers at random offsets with random limits, each leaving hints the
	// next must not be misled by.
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		off := r.Int64N(batches * per)
		rs := fetch(off, 1+r.IntN(7))
		if len(rs) == 0 {
			t.Fatalf("Fetch(%d) returned nothing", off)
		}
	}
}

// countingReader counts the reads a chunkReader makes.
type countingReader struct {
	r            *bytes.Reader
	reads, bytes int
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	c.reads++
	c.bytes += len(p)
	return c.r.ReadAt(p, off)
}

// A batch the chunk does not hold whole (cut off by its end, or larger
// than a chunk) starts the next chunk, keeping what was read: reading a
// segment reads each of its bytes once.
func TestChunkReaderReadsEachByteOnce(t *testing.T) {
	var seg []byte
	var e batchEncoder
	var sizes []int
	for i := range 40 {
		size := 5000 + i
		if i%7 == 3 {
			size = readAhead + 20000*i // larger than a chunk
		}
		sizes = append(sizes, size)
		e.reset(int64(i))
		e.add(&log.Record{Key: []byte("k"), Value: bytes.Repeat([]byte{'x'}, size)})
		seg = append(seg, e.finish()...)
	}
	cr := &countingReader{r: bytes.NewReader(seg)}
	c := chunkReader{r: cr}
	pos, limit := int64(0), int64(len(seg))
	for i, size := range sizes {
		h, raw, err := c.batch(pos, limit)
		if err != nil {
			t.Fatalf("batch %d at %d: %v", i, pos, err)
		}
		recs, err := decodeRecords(raw, h, "t", 0, 0, nil)
		if err != nil || len(recs) != 1 || len(recs[0].Value) != size {
			t.Fatalf("batch %d: %d records, %v", i, len(recs), err)
		}
		pos += h.size()
	}
	if cr.bytes != len(seg) {
		t.Fatalf("read %d bytes in %d reads for a %d-byte segment, want each byte once", cr.bytes, cr.reads, len(seg))
	}
	// A torn last batch is still reported as torn.
	c = chunkReader{r: bytes.NewReader(seg[:len(seg)-10])}
	pos = 0
	var lastErr error
	for pos < int64(len(seg)-10) {
		h, _, err := c.batch(pos, int64(len(seg)-10))
		if err != nil {
			lastErr = err
			break
		}
		pos += h.size()
	}
	if !errors.Is(lastErr, errCorrupt) {
		t.Fatalf("torn last batch: %v, want errCorrupt", lastErr)
	}
}
