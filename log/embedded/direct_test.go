package embedded

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/millstream/millstream/log"
)

// writeMixed appends rounds of small records (written buffered) and groups
// of large ones (written directly), at sizes that put batch ends anywhere in
// a block, and returns the values in order.
func writeMixed(t *testing.T, l *Log, topic string, rounds int) [][]byte {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, 11))
	var vals [][]byte
	value := func(n int) []byte {
		v := bytes.Repeat([]byte{byte('a' + len(vals)%26)}, n)
		copy(v, fmt.Sprintf("#%d#", len(vals)))
		vals = append(vals, v)
		return v
	}
	produce := func(sizes ...int) {
		rs := make([]*log.Record, len(sizes))
		for i, n := range sizes {
			rs[i] = &log.Record{Topic: topic, Key: []byte("k"), Value: value(n)}
		}
		if err := l.ProduceSync(bg, rs...); err != nil {
			t.Fatal(err)
		}
	}
	for r := 0; r < rounds; r++ {
		for range 1 + rng.IntN(4) {
			produce(10+rng.IntN(300), 10+rng.IntN(3000))
		}
		switch r % 3 {
		case 0: // one group of several large records
			produce(400_000+rng.IntN(100_000), 400_000+rng.IntN(100_000), 400_000+rng.IntN(99_999))
		case 1: // one record larger than a batch target
			produce(batchTarget + 1 + rng.IntN(100_000))
		case 2: // many mid-sized records: more than one batch per write
			sizes := make([]int, 1_000)
			for i := range sizes {
				sizes[i] = 1_000 + rng.IntN(2_000)
			}
			produce(sizes...)
		}
	}
	return vals
}

func checkDirectValues(t *testing.T, what string, got []log.Record, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d records, want %d", what, len(got), len(want))
	}
	for i, r := range got {
		if r.Offset != int64(i) || !bytes.Equal(r.Value, want[i]) {
			t.Fatalf("%s: record %d (offset %d, %d bytes) differs from what was written (%d bytes)", what, i, r.Offset, len(r.Value), len(want[i]))
		}
	}
}

// TestDirectWrites writes large batches with O_DIRECT among small buffered
// ones, across segment rolls, and reads everything back: while the log is
// open, from a copy taken while it was open (as after a crash), and after a
// clean close, which leaves no zero tail on any segment.
func TestDirectWrites(t *testing.T) {
	dir := t.TempDir()
	if !directSupported(t, t.TempDir()) {
		return
	}
	l := openT(t, dir, Options{SegmentBytes: 5 << 20})
	if err := l.CreateTopic(bg, "d", log.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	// A reader tails the partition while it is written: the blocks that
	// direct writes rewrite hold bytes it has already read.
	tailed := make(chan []log.Record, 1)
	go func() {
		var got []log.Record
		defer func() { tailed <- got }()
		for off := int64(0); ; {
			rs, err := l.Fetch(bg, "d", 0, off, log.FetchOptions{Wait: true, MaxBytes: 256 << 10})
			if err != nil {
				t.Errorf("tailing fetch @%d: %v", off, err)
				return
			}
			for _, r := range rs {
				if string(r.Value) == "END" {
					return
				}
				got = append(got, r)
				off = r.Offset + 1
			}
		}
	}()
	want := writeMixed(t, l, "d", 24)
	if err := l.ProduceSync(bg, &log.Record{Topic: "d", Value: []byte("END")}); err != nil {
		t.Fatal(err)
	}
	checkDirectValues(t, "tailing reader", <-tailed, want)
	want = append(want, []byte("END"))
	if n := l.m.directWrites.Load(); n < 10 {
		t.Fatalf("%d direct writes; want every large group written directly", n)
	}
	checkDirectValues(t, "open log", readAll(t, l, "d", 0), want)

	crashed := t.TempDir()
	copyDir(t, dir, crashed)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	segs := segFiles(t, dir, "d", 0, ".log")
	if len(segs) < 3 {
		t.Fatalf("%d segments; want rolls between direct writes", len(segs))
	}
	for _, s := range segs {
		b, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > 0 && b[len(b)-1] == 0 && bytes.Count(b[len(b)-dioAlign/2:], []byte{0}) == dioAlign/2 {
			t.Errorf("%s ends in zeros after Close; the padding of direct writes must be cut", filepath.Base(s))
		}
	}

	for name, d := range map[string]string{"closed": dir, "copied while open": crashed} {
		l2 := openT(t, d, Options{SegmentBytes: 5 << 20})
		if rep := l2.Recovered(); len(rep) != 0 {
			t.Errorf("%s: recovery reported %+v; a zero tail is not damage", name, rep)
		}
		checkDirectValues(t, name, readAll(t, l2, "d", 0), want)
		// Appending goes on at the right offset, buffered and direct.
		r := &log.Record{Topic: "d", Value: bytes.Repeat([]byte("z"), 2_000_000)}
		if err := l2.ProduceSync(bg, r); err != nil || r.Offset != int64(len(want)) {
			t.Fatalf("%s: append after reopening: offset %d (%v), want %d", name, r.Offset, err, len(want))
		}
		l2.Close()
	}
}

// TestDirectWritesOff checks that NoDirectIO and a filesystem without
// O_DIRECT both keep every batch in the page cache, with the same result.
func TestDirectWritesOff(t *testing.T) {
	t.Run("NoDirectIO", func(t *testing.T) {
		l := openT(t, t.TempDir(), Options{NoDirectIO: true})
		if err := l.CreateTopic(bg, "d", log.TopicConfig{Partitions: 1}); err != nil {
			t.Fatal(err)
		}
		want := writeMixed(t, l, "d", 6)
		if n := l.m.directWrites.Load(); n != 0 {
			t.Fatalf("%d direct writes with NoDirectIO", n)
		}
		checkDirectValues(t, "NoDirectIO", readAll(t, l, "d", 0), want)
	})
	t.Run("unsupported", func(t *testing.T) {
		defer func(f func(string) (int, error)) { openDirectFile = f }(openDirectFile)
		openDirectFile = func(string) (int, error) { return -1, errors.New("invalid argument (test)") }
		var logs lockedBuffer
		opts := Options{}
		opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		l := openT(t, t.TempDir(), opts)
		if err := l.CreateTopic(bg, "d", log.TopicConfig{Partitions: 1}); err != nil {
			t.Fatal(err)
		}
		want := writeMixed(t, l, "d", 6)
		if n := l.m.directWrites.Load(); n != 0 || !l.noDirect.Load() {
			t.Fatalf("%d direct writes, direct I/O off: %v", n, l.noDirect.Load())
		}
		checkDirectValues(t, "unsupported", readAll(t, l, "d", 0), want)
		if got := strings.Count(logs.String(), "direct I/O is not available"); got != 1 {
			t.Errorf("said %d times that direct I/O is not available; want once:\n%s", got, logs.String())
		}
	})
}

// lockedBuffer collects log output written from the log's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *lockedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
