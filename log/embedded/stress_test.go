package embedded

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/millstream/millstream/log"
)

// TestConcurrentReadWriteRetention runs producers, waiting readers, time
// lookups, size retention and DeleteRecordsBefore at once (meant for -race). Readers must
// see dense, ordered offsets and the values written at them, or
// ErrOffsetOutOfRange when retention overtook them.
func TestConcurrentReadWriteRetention(t *testing.T) {
	l := openT(t, t.TempDir(), Options{SegmentBytes: 8 << 10, RetentionCheckInterval: time.Millisecond})
	createTopic(t, l, "s", log.TopicConfig{Partitions: 2, RetentionBytes: 64 << 10, RetentionAge: -1})
	const producers, per = 4, 400
	ctx, cancel := context.WithTimeout(bg, 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	for g := 0; g < producers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < per; i++ {
				p := int32(g % 2)
				r := &log.Record{Topic: "s", Partition: p, PartitionSet: true, Value: []byte(fmt.Sprintf("%d-%d-%0100d", g, i, 0))}
				if err := l.ProduceSync(ctx, r); err != nil {
					errc <- err
					return
				}
			}
		}(g)
	}
	var rwg sync.WaitGroup
	total := int64(producers * per / 2)
	for p := int32(0); p < 2; p++ {
		rwg.Add(1)
		go func(p int32) {
			defer rwg.Done()
			off := int64(0)
			for off < total {
				rs, err := l.Fetch(ctx, "s", p, off, log.FetchOptions{Wait: true, MaxBytes: 4 << 10})
				if errors.Is(err, log.ErrOffsetOutOfRange) {
					info, _ := l.Topic(ctx, "s")
					if off >= info.Partitions[p].Start {
						errc <- fmt.Errorf("out of range at %d but start is %d", off, info.Partitions[p].Start)
						return
					}
					off = info.Partitions[p].Start
					continue
				}
				if err != nil {
					errc <- err
					return
				}
				for _, r := range rs {
					if r.Offset != off {
						errc <- fmt.Errorf("partition %d: got offset %d, want %d", p, r.Offset, off)
						return
					}
					off++
				}
			}
		}(p)
	}
	stop := make(chan struct{})
	var dwg sync.WaitGroup
	dwg.Add(1)
	go func() {
		defer dwg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			info, err := l.Topic(ctx, "s")
			if err != nil {
				return
			}
			if end := info.Partitions[1].End; end > 10 {
				if err := l.DeleteRecordsBefore(ctx, "s", 1, end-10); err != nil {
					errc <- err
					return
				}
			}
			// A time lookup races the deletions too: a segment deleted
			// under it is skipped, never an error.
			for p := int32(0); p < 2; p++ {
				if _, err := l.OffsetForTime(ctx, "s", p, time.Unix(0, 0)); err != nil {
					errc <- fmt.Errorf("offset for time of partition %d: %w", p, err)
					return
				}
			}
			time.Sleep(time.Millisecond) // pacing only; nothing waits on it
		}
	}()
	wg.Wait()
	rwg.Wait()
	close(stop)
	dwg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	l.EnforceRetention()
	info, _ := l.Topic(bg, "s")
	for _, p := range info.Partitions {
		if p.End != total {
			t.Fatalf("partition %d end %d, want %d", p.Partition, p.End, total)
		}
		if p.Partition == 0 && p.Bytes > 64<<10+8<<10 {
			t.Fatalf("partition 0 holds %d bytes despite 64 KiB retention", p.Bytes)
		}
	}
}

// TestFetchDuringClose reads while the log closes. Fetches read segment
// files without the partition lock, so Close can close a file under a read;
// every fetch must then end with ErrClosed, not with a bare file error.
func TestFetchDuringClose(t *testing.T) {
	l := openT(t, t.TempDir(), Options{SegmentBytes: 8 << 10})
	createTopic(t, l, "c", log.TopicConfig{Partitions: 1})
	for i := 0; i < 200; i++ {
		if err := l.ProduceSync(bg, &log.Record{Topic: "c", Value: make([]byte, 1<<10)}); err != nil {
			t.Fatal(err)
		}
	}
	const readers = 4
	errc := make(chan error, readers)
	started := make(chan struct{}, readers)
	for g := 0; g < readers; g++ {
		go func() {
			for n := 0; ; n++ {
				if n == 1 {
					started <- struct{}{}
				}
				if _, err := l.Fetch(bg, "c", 0, 0, log.FetchOptions{MaxBytes: 1 << 20}); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	for g := 0; g < readers; g++ {
		<-started
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for g := 0; g < readers; g++ {
		select {
		case err := <-errc:
			if !errors.Is(err, log.ErrClosed) {
				t.Errorf("fetch during Close: %v, want ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a fetch still succeeds 10 s after Close")
		}
	}
}

// TestReadsSurviveSegmentDeletion runs the file-reading half of a fetch and
// of a time lookup on segment state copied before DeleteRecordsBefore
// removed the first segments, as a reader outside the partition lock may.
// The fetch must report ErrOffsetOutOfRange, and the time lookup must skip
// the deleted segments and answer from the rest.
func TestReadsSurviveSegmentDeletion(t *testing.T) {
	l := openT(t, t.TempDir(), Options{SegmentBytes: 8 << 10})
	createTopic(t, l, "d", log.TopicConfig{Partitions: 1})
	base := time.UnixMilli(1_700_000_000_000)
	for i := 0; i < 40; i++ {
		r := &log.Record{Topic: "d", Value: make([]byte, 1<<10), Timestamp: base.Add(time.Duration(i) * time.Second)}
		if err := l.ProduceSync(bg, r); err != nil {
			t.Fatal(err)
		}
	}
	p, err := l.partition("d", 0)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.RLock()
	start, end := p.start, p.end
	views := p.viewsFrom(0, nil)
	p.mu.RUnlock()
	if len(views) < 3 {
		t.Fatalf("%d segments, want at least 3", len(views))
	}
	cut := views[2].s.base
	if err := l.DeleteRecordsBefore(bg, "d", 0, cut); err != nil {
		t.Fatal(err)
	}
	if _, err := p.readViews(views, 0, 10, log.FetchOptions{MaxBytes: 1 << 20}); !errors.Is(err, log.ErrOffsetOutOfRange) {
		t.Fatalf("read of a segment deleted meanwhile: %v, want ErrOffsetOutOfRange", err)
	}
	off, err := p.offsetForTimeIn(views, start, end, base.UnixMilli())
	if err != nil || off != cut {
		t.Fatalf("time lookup across deleted segments: offset %d, %v; want %d", off, err, cut)
	}
}
