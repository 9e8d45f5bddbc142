package log

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// ProduceAll produces rs through produce and waits until every one is
// reported, returning the first error. It waits for every promise even when
// one fails early, so rs are not written to after it returns. Backends
// implement ProduceSync with it.
func ProduceAll(ctx context.Context, produce func(context.Context, *Record, func(*Record, error)), rs ...*Record) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	wg.Add(len(rs))
	for _, r := range rs {
		produce(ctx, r, func(_ *Record, err error) {
			if err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
			wg.Done()
		})
	}
	wg.Wait()
	return first
}

// HeaderValues returns the values of header that keep accepts (all if keep
// is nil) on the records of topic from the given offset of each partition
// (the partition's start if missing) to its end. Writers that make their
// output exactly once use it at start: the records after their last
// checkpoint or bookmark carry the sources already written.
func HeaderValues(ctx context.Context, l Log, topic, header string, from map[int32]int64, keep func([]byte) bool) (map[string]bool, error) {
	info, err := l.Topic(ctx, topic)
	if err != nil {
		return nil, err
	}
	done := map[string]bool{}
	for _, p := range info.Partitions {
		off, ok := from[p.Partition]
		if !ok {
			off = p.Start
		}
		for off < p.End {
			recs, err := l.Fetch(ctx, topic, p.Partition, max(off, p.Start), FetchOptions{})
			if err != nil {
				return nil, fmt.Errorf("read %s/%d: %w", topic, p.Partition, err)
			}
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				if v, ok := r.HeaderValue(header); ok && (keep == nil || keep(v)) {
					done[string(v)] = true
				}
				off = r.Offset + 1
			}
		}
	}
	return done, nil
}

// Batch collects asynchronous appends and waits for all of them: a
// consumer that writes derived records produces a poll's worth, then waits
// until they are durable before it commits. It is reusable after Wait, and
// its promise is bound once, so that an append costs no closure.
type Batch struct {
	wg      sync.WaitGroup
	mu      sync.Mutex
	errs    []error
	promise func(*Record, error)
}

// NewBatch returns an empty batch.
func NewBatch() *Batch {
	b := &Batch{}
	b.promise = b.done
	return b
}

func (b *Batch) done(_ *Record, err error) {
	if err != nil {
		b.Fail(err)
	}
	b.wg.Done()
}

// Produce appends r to l as part of the batch.
func (b *Batch) Produce(ctx context.Context, l Log, r *Record) {
	b.wg.Add(1)
	l.Produce(ctx, r, b.promise)
}

// Fail records an error of the batch that did not come from an append.
func (b *Batch) Fail(err error) {
	b.mu.Lock()
	b.errs = append(b.errs, err)
	b.mu.Unlock()
}

// Wait returns once every append of the batch is reported, with their
// errors joined, and readies the batch for reuse.
func (b *Batch) Wait() error {
	b.wg.Wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	err := errors.Join(b.errs...)
	b.errs = b.errs[:0]
	return err
}
