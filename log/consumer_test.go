package log_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/millstream/millstream/log"
	"github.com/millstream/millstream/log/embedded"
)

func openLog(t *testing.T, dir string) *embedded.Log {
	t.Helper()
	l, err := embedded.Open(dir, embedded.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func produceN(t *testing.T, l log.Log, topic string, from, n int) {
	t.Helper()
	var rs []*log.Record
	for i := from; i < from+n; i++ {
		rs = append(rs, &log.Record{Topic: topic, Key: []byte(fmt.Sprintf("k%d", i%7)), Value: []byte(fmt.Sprint(i))})
	}
	if err := l.ProduceSync(context.Background(), rs...); err != nil {
		t.Fatal(err)
	}
}

// pollN polls until it has n records.
func pollN(t *testing.T, c *log.Consumer, n int) []log.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []log.Record
	for len(out) < n {
		rs, err := c.Poll(ctx)
		if err != nil {
			t.Fatalf("Poll after %d of %d records: %v", len(out), n, err)
		}
		out = append(out, rs...)
	}
	if len(out) != n {
		t.Fatalf("polled %d records, want %d", len(out), n)
	}
	return out
}

func values(rs []log.Record) map[string]bool {
	m := map[string]bool{}
	for _, r := range rs {
		m[string(r.Value)] = true
	}
	return m
}

func TestConsumerResumesAtCommit(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir)
	ctx := context.Background()
	if err := l.CreateTopic(ctx, "points", log.TopicConfig{Partitions: 3}); err != nil {
		t.Fatal(err)
	}
	produceN(t, l, "points", 0, 100)
	c, err := log.NewConsumer(l, "historian", "points", log.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := pollN(t, c, 100)
	if len(values(got)) != 100 {
		t.Fatalf("got %d distinct records, want 100", len(values(got)))
	}
	// Per-partition order.
	last := map[int32]int64{0: -1, 1: -1, 2: -1}
	for _, r := range got {
		if r.Offset != last[r.Partition]+1 {
			t.Fatalf("partition %d: offset %d after %d", r.Partition, r.Offset, last[r.Partition])
		}
		last[r.Partition] = r.Offset
	}
	if err := c.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close()
	produceN(t, l, "points", 100, 30)
	l.Close()

	// Offsets survive a reopen; the consumer sees only the new records.
	l = openLog(t, dir)
	defer l.Close()
	c, err = log.NewConsumer(l, "historian", "points", log.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got = pollN(t, c, 30)
	for _, r := range got {
		var v int
		fmt.Sscanf(string(r.Value), "%d", &v)
		if v < 100 {
			t.Fatalf("resumed consumer re-read record %d", v)
		}
	}
	// Nothing more arrives: Poll honours its context.
	pctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if rs, err := c.Poll(pctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Poll with nothing new returned %d records, %v", len(rs), err)
	}
}

func TestConsumerStartLatestAndLiveWake(t *testing.T) {
	l := openLog(t, t.TempDir())
	defer l.Close()
	ctx := context.Background()
	if err := l.CreateTopic(ctx, "t", log.TopicConfig{Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	produceN(t, l, "t", 0, 10)
	c, err := log.NewConsumer(l, "live", "t", log.ConsumerOptions{StartAt: log.StartLatest})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan []log.Record)
	go func() { done <- pollN(t, c, 5) }()
	produceN(t, l, "t", 10, 5)
	got := <-done
	for _, r := range got {
		var v int
		fmt.Sscanf(string(r.Value), "%d", &v)
		if v < 10 {
			t.Fatalf("StartLatest consumer saw old record %d", v)
		}
	}
	if err := c.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	gs, _ := l.Groups(ctx)
	var sum int64
	for _, g := range gs {
		for _, o := range g.Offsets {
			if g.Group == "live" {
				sum += o.Offset
			}
		}
	}
	if sum != 15 {
		t.Fatalf("committed offsets sum to %d, want 15 (the end of both partitions)", sum)
	}
}

func TestConsumerCloseUnblocksPoll(t *testing.T) {
	l := openLog(t, t.TempDir())
	defer l.Close()
	if err := l.CreateTopic(context.Background(), "t", log.TopicConfig{Partitions: 4}); err != nil {
		t.Fatal(err)
	}
	c, err := log.NewConsumer(l, "g", "t", log.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error)
	go func() {
		_, err := c.Poll(context.Background())
		errc <- err
	}()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, log.ErrClosed) {
		t.Fatalf("Poll after Close: %v, want ErrClosed", err)
	}
	if _, err := log.NewConsumer(l, "g", "missing", log.ConsumerOptions{}); !errors.Is(err, log.ErrUnknownTopic) {
		t.Fatalf("consumer of a missing topic: %v", err)
	}
}

func TestConsumerSkipsDeletedRecords(t *testing.T) {
	l := openLog(t, t.TempDir())
	defer l.Close()
	ctx := context.Background()
	if err := l.CreateTopic(ctx, "t", log.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	produceN(t, l, "t", 0, 20)
	if err := l.CommitOffset(ctx, "g", "t", 0, 5); err != nil {
		t.Fatal(err)
	}
	if err := l.DeleteRecordsBefore(ctx, "t", 0, 12); err != nil {
		t.Fatal(err)
	}
	c, err := log.NewConsumer(l, "g", "t", log.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := pollN(t, c, 8)
	if got[0].Offset != 12 {
		t.Fatalf("first record after deleted range has offset %d, want 12", got[0].Offset)
	}
}

// Offsets overrides the group's commits, behind and ahead of them, and
// partitions it does not name still resume at their commit.
func TestConsumerStartOffsets(t *testing.T) {
	l := openLog(t, t.TempDir())
	defer l.Close()
	ctx := context.Background()
	if err := l.CreateTopic(ctx, "t", log.TopicConfig{Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	var rs []*log.Record
	for i := range 20 {
		rs = append(rs, &log.Record{Topic: "t", Partition: int32(i % 2), PartitionSet: true, Value: []byte(fmt.Sprint(i))})
	}
	if err := l.ProduceSync(ctx, rs...); err != nil {
		t.Fatal(err)
	}
	// Partition 0 committed at 8, partition 1 at 2.
	if err := l.CommitOffset(ctx, "g", "t", 0, 8); err != nil {
		t.Fatal(err)
	}
	if err := l.CommitOffset(ctx, "g", "t", 1, 2); err != nil {
		t.Fatal(err)
	}
	c, err := log.NewConsumer(l, "g", "t", log.ConsumerOptions{Offsets: map[int32]int64{0: 3}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if pos := c.Positions(); pos[0] != 3 || pos[1] != 2 {
		t.Fatalf("positions before polling = %v, want map[0:3 1:2]", pos)
	}
	got := pollN(t, c, (10-3)+(10-2))
	first := map[int32]int64{0: -1, 1: -1}
	for _, r := range got {
		if first[r.Partition] < 0 {
			first[r.Partition] = r.Offset
		}
	}
	if first[0] != 3 || first[1] != 2 {
		t.Fatalf("first offsets read = %v, want map[0:3 1:2]", first)
	}
	// Commit is unchanged in meaning: it records the positions reached.
	if err := c.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if off, _, _ := l.CommittedOffset(ctx, "g", "t", 0); off != 10 {
		t.Fatalf("committed %d on partition 0, want 10", off)
	}
}

// Batches that wait for Poll are merged into one result, in each
// partition's order, without losing or repeating a record, and within
// MaxPollRecords when every batch holds one record.
func TestConsumerPollMergesWaitingBatches(t *testing.T) {
	l := openLog(t, t.TempDir())
	defer l.Close()
	ctx := context.Background()
	if err := l.CreateTopic(ctx, "t", log.TopicConfig{Partitions: 3}); err != nil {
		t.Fatal(err)
	}
	const total = 120
	produceN(t, l, "t", 0, total)
	// FetchMaxBytes of 1: every fetch returns one record (a fetch always
	// returns at least one).
	c, err := log.NewConsumer(l, "merge", "t", log.ConsumerOptions{FetchMaxBytes: 1, Prefetch: 64, MaxPollRecords: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(200 * time.Millisecond) // the partition readers fill the prefetch queue
	last := map[int32]int64{0: -1, 1: -1, 2: -1}
	seen, merged := 0, false
	var prev []log.Record
	pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for seen < total {
		rs, err := c.Poll(pctx)
		if err != nil {
			t.Fatalf("Poll after %d records: %v", seen, err)
		}
		if len(rs) > 10 {
			t.Fatalf("Poll returned %d records, MaxPollRecords is 10", len(rs))
		}
		merged = merged || len(rs) > 1
		for _, r := range rs {
			if r.Offset != last[r.Partition]+1 {
				t.Fatalf("partition %d: offset %d after %d", r.Partition, r.Offset, last[r.Partition])
			}
			last[r.Partition] = r.Offset
		}
		seen += len(rs)
		// A result is the caller's: appending to the previous one must not
		// change this one.
		if prev != nil {
			keep := fmt.Sprint(rs[0].Partition, rs[0].Offset)
			_ = append(prev, log.Record{Partition: 9, Offset: -9})
			if got := fmt.Sprint(rs[0].Partition, rs[0].Offset); got != keep {
				t.Fatalf("appending to an earlier Poll result changed this one: %s, was %s", got, keep)
			}
		}
		prev = rs
	}
	if seen != total {
		t.Fatalf("polled %d records, want %d", seen, total)
	}
	if !merged {
		t.Fatal("no Poll returned more than one waiting batch")
	}
}
