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

// TestConcurrentReadWriteRetention runs producers, waiting readers, size
// retention and DeleteRecordsBefore at once (meant for -race). Readers must
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
