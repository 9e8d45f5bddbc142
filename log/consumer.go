package log

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// StartAt says where a consumer starts on a partition it has no committed
// offset for.
type StartAt int

const (
	// StartEarliest starts at the partition's first readable offset.
	StartEarliest StartAt = iota
	// StartLatest starts at the partition's end: only new records.
	StartLatest
)

// ConsumerOptions tunes a Consumer. Zero values take the defaults noted.
type ConsumerOptions struct {
	// StartAt applies to partitions without a committed offset.
	StartAt StartAt
	// Offsets, when it has an entry for a partition, is where the consumer
	// starts on it, whatever the group committed. A consumer that
	// checkpoints its state together with its positions (the historian)
	// resumes from its own checkpoint: the committed offset may be ahead of
	// it (state lost) or behind it (crash between checkpoint and commit).
	Offsets map[int32]int64
	// MaxPollRecords bounds the records one Poll returns (at least one
	// fetched batch is always returned whole). Zero means 1000.
	MaxPollRecords int
	// FetchMaxBytes is the MaxBytes of each partition's fetches. Zero means
	// 1 MiB.
	FetchMaxBytes int
	// Prefetch is how many fetched batches may wait for Poll across all
	// partitions; partition readers block beyond it. Zero means 2 per
	// partition.
	Prefetch int
}

// Consumer is a named consumer of all partitions of one topic. It resumes at
// the group's committed offsets, reads every partition concurrently and
// commits the position after the records Poll returned. A Consumer is meant
// to be used by one goroutine (Poll and Commit); Close may be called from
// any goroutine.
type Consumer struct {
	l     Log
	group string
	topic string
	opts  ConsumerOptions

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	ch     chan fetched

	// held is a partition error seen while draining, returned by the next
	// Poll.
	held *fetched
	// more is Poll's scratch list of the waiting batches it merges.
	more [][]Record

	mu        sync.Mutex
	pos       map[int32]int64 // offset after the last record Poll returned
	committed map[int32]int64
	closed    bool
}

type fetched struct {
	partition int32
	recs      []Record
	err       error
}

// NewConsumer starts a consumer for group on every partition of topic.
func NewConsumer(l Log, group, topic string, opts ConsumerOptions) (*Consumer, error) {
	if group == "" {
		return nil, errors.New("new consumer: empty group name (name the consumer, e.g. \"historian\")")
	}
	if opts.MaxPollRecords <= 0 {
		opts.MaxPollRecords = 1000
	}
	if opts.FetchMaxBytes <= 0 {
		opts.FetchMaxBytes = 1 << 20
	}
	ctx, cancel := context.WithCancel(context.Background())
	info, err := l.Topic(ctx, topic)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("new consumer %s: %w", group, err)
	}
	if opts.Prefetch <= 0 {
		opts.Prefetch = 2 * len(info.Partitions)
	}
	c := &Consumer{
		l: l, group: group, topic: topic, opts: opts, ctx: ctx, cancel: cancel,
		ch: make(chan fetched, opts.Prefetch), pos: map[int32]int64{}, committed: map[int32]int64{},
	}
	starts := make(map[int32]int64, len(info.Partitions))
	for _, p := range info.Partitions {
		off, ok, err := l.CommittedOffset(ctx, group, topic, p.Partition)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("new consumer %s: %w", group, err)
		}
		if ok {
			c.committed[p.Partition] = off
		}
		switch o, set := opts.Offsets[p.Partition]; {
		case set:
			off = o
		case ok: // resume at the commit
		case opts.StartAt == StartLatest:
			off = p.End
		default:
			off = p.Start
		}
		starts[p.Partition] = off
		c.pos[p.Partition] = off
	}
	for p, off := range starts {
		c.wg.Add(1)
		go c.read(p, off)
	}
	return c, nil
}

// read fetches one partition and hands batches to Poll.
func (c *Consumer) read(p int32, off int64) {
	defer c.wg.Done()
	for {
		recs, err := c.l.Fetch(c.ctx, c.topic, p, off, FetchOptions{MaxBytes: c.opts.FetchMaxBytes, Wait: true})
		if c.ctx.Err() != nil {
			return
		}
		if errors.Is(err, ErrOffsetOutOfRange) {
			// Retention or DeleteRecordsBefore removed records the group had
			// not read yet, or the offset is past the end: continue at the
			// nearest readable offset, as Kafka's auto.offset.reset does.
			info, ierr := c.l.Topic(c.ctx, c.topic)
			if ierr == nil && int(p) < len(info.Partitions) {
				pi := info.Partitions[p]
				if off < pi.Start {
					off = pi.Start
					continue
				}
				if off > pi.End {
					off = pi.End
					continue
				}
			}
		}
		if err == nil && len(recs) == 0 {
			continue
		}
		select {
		case c.ch <- fetched{partition: p, recs: recs, err: err}:
		case <-c.ctx.Done():
			return
		}
		if err != nil {
			return
		}
		off = recs[len(recs)-1].Offset + 1
	}
}

// Poll blocks until records from any partition are available, ctx is done or
// the consumer is closed. A read error of a partition is returned once; that
// partition then stops (close and recreate the consumer to retry).
//
// Records may come back although ctx has ended (both were ready), and
// Positions and Commit count them from then on: a caller that checkpoints
// or commits on its way out processes them first, or the next run starts
// after records nobody processed.
func (c *Consumer) Poll(ctx context.Context) ([]Record, error) {
	var f fetched
	if c.held != nil {
		f, c.held = *c.held, nil
		return nil, fmt.Errorf("consumer %s: %s/%d: %w", c.group, c.topic, f.partition, f.err)
	}
	select {
	case f = <-c.ch:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.ctx.Done():
		return nil, fmt.Errorf("consumer %s: %w", c.group, ErrClosed)
	}
	if f.err != nil {
		return nil, fmt.Errorf("consumer %s: %s/%d: %w", c.group, c.topic, f.partition, f.err)
	}
	c.advance(f)
	// The batches already waiting are gathered first and copied once into
	// a slice of their total size: appending them one by one regrew the
	// slice and was a tenth of a busy server's garbage.
	more := c.more[:0]
	n := len(f.recs)
gather:
	for n < c.opts.MaxPollRecords {
		select {
		case g := <-c.ch:
			if g.err != nil {
				c.held = &g
				break gather
			}
			more = append(more, g.recs)
			n += len(g.recs)
			c.advance(g)
		default:
			break gather
		}
	}
	if len(more) == 0 {
		return f.recs, nil
	}
	out := make([]Record, 0, n)
	out = append(out, f.recs...)
	for i, recs := range more {
		out = append(out, recs...)
		more[i] = nil
	}
	c.more = more[:0]
	return out, nil
}

func (c *Consumer) advance(f fetched) {
	c.mu.Lock()
	c.pos[f.partition] = f.recs[len(f.recs)-1].Offset + 1
	c.mu.Unlock()
}

// Commit durably commits, for every partition, the offset after the last
// record Poll returned.
func (c *Consumer) Commit(ctx context.Context) error {
	return c.CommitWith(ctx)
}

// CommitWith commits what Commit would and, in the same durable write
// (where the log is an OffsetsCommitter), extra offsets under the
// consumer's group: a consumer that writes to another topic commits its
// input position and a bookmark of its output together.
func (c *Consumer) CommitWith(ctx context.Context, extra ...TopicPartitionOffset) error {
	c.mu.Lock()
	var todo []TopicPartitionOffset
	for p, off := range c.pos {
		if cur, ok := c.committed[p]; !ok || cur != off {
			todo = append(todo, TopicPartitionOffset{Topic: c.topic, Partition: p, Offset: off})
		}
	}
	c.mu.Unlock()
	own := len(todo)
	todo = append(todo, extra...)
	if len(todo) == 0 {
		return nil
	}
	if err := CommitOffsets(ctx, c.l, c.group, todo); err != nil {
		return fmt.Errorf("consumer %s: commit %s: %w", c.group, c.topic, err)
	}
	c.mu.Lock()
	for _, o := range todo[:own] {
		c.committed[o.Partition] = o.Offset
	}
	c.mu.Unlock()
	return nil
}

// Close stops the partition readers. It does not commit.
func (c *Consumer) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	return nil
}

// Positions returns, per partition, the offset after the last record Poll
// returned: what Commit would commit. A consumer that checkpoints its own
// state stores these with it.
func (c *Consumer) Positions() map[int32]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[int32]int64, len(c.pos))
	for p, off := range c.pos {
		out[p] = off
	}
	return out
}
