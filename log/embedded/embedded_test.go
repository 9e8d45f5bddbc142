package embedded

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strconv"
	"testing"

	"github.com/millstream/millstream/log"
	"github.com/millstream/millstream/log/logtest"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func openT(t testing.TB, dir string, opts Options) *Log {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestConformance(t *testing.T) {
	logtest.Run(t, func(t *testing.T) log.Log {
		return openT(t, t.TempDir(), Options{SegmentBytes: 8 << 10})
	})
}

func TestConformanceAlways(t *testing.T) {
	logtest.Run(t, func(t *testing.T) log.Log {
		return openT(t, t.TempDir(), Options{Fsync: FsyncAlways})
	})
}

// TestFetchAcrossReadAheadChunks reads batches of mixed sizes, some larger
// than one read-ahead chunk and some straddling a chunk's end, from every
// offset and with record limits, and checks every record comes back whole.
func TestFetchAcrossReadAheadChunks(t *testing.T) {
	l := openT(t, t.TempDir(), Options{})
	ctx := context.Background()
	if err := l.CreateTopic(ctx, "t", log.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	sizes := []int{10, readAhead - 100, 3, readAhead + 5000, 7, 2 * readAhead, 1, 1, readAhead / 2, readAhead / 2, 50}
	value := func(i, n int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, n) }
	for i, n := range sizes {
		// One Produce at a time: each record is a batch of its own.
		if err := l.ProduceSync(ctx, &log.Record{Topic: "t", Key: []byte(strconv.Itoa(i)), Value: value(i, n)}); err != nil {
			t.Fatal(err)
		}
	}
	for from := range sizes {
		for _, limit := range []int{0, 1, 3} {
			next := int64(from)
			for next < int64(len(sizes)) {
				rs, err := l.Fetch(ctx, "t", 0, next, log.FetchOptions{MaxRecords: limit, MaxBytes: 8 * readAhead})
				if err != nil || len(rs) == 0 {
					t.Fatalf("Fetch(from %d, max %d) = %d records, %v", next, limit, len(rs), err)
				}
				for _, r := range rs {
					i := int(r.Offset)
					if r.Offset != next || string(r.Key) != strconv.Itoa(i) || !bytes.Equal(r.Value, value(i, sizes[i])) {
						t.Fatalf("Fetch from %d: record at offset %d (want %d) has key %q and a %d-byte value (want %d)", from, r.Offset, next, r.Key, len(r.Value), sizes[i])
					}
					next++
				}
			}
		}
	}
}
