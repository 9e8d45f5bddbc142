package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	mlog "github.com/millstream/millstream/log"
)

// partitioner places records exactly as log.PartitionForKey does (Kafka's
// default murmur2 partitioner, with an empty key on partition 0), or on the
// partition the caller set. It is consistent: a key never moves to another
// partition because its own is briefly unavailable, since that would break
// per-key order.
type partitioner struct{}

func (partitioner) ForTopic(string) kgo.TopicPartitioner { return topicPartitioner{} }

type topicPartitioner struct{}

func (topicPartitioner) RequiresConsistency(*kgo.Record) bool { return true }

// Partition uses r.Partition when it is >= 0 (Produce sets -1 for "hash the
// key"). A set partition beyond the topic's n is refused by returning -1,
// which fails the record; the record's pick notes n for the error message.
func (topicPartitioner) Partition(r *kgo.Record, n int) int {
	if r.Partition >= 0 {
		if int(r.Partition) < n {
			return int(r.Partition)
		}
		if p, ok := r.Context.Value(pickKey{}).(*pick); ok {
			p.n.Store(int32(n))
		}
		return -1
	}
	return int(mlog.PartitionForKey(r.Key, int32(n)))
}

type pickKey struct{}

// pick records that the partitioner refused a caller-set partition.
type pick struct{ n atomic.Int32 }

func recordSize(r *mlog.Record) int {
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

// Produce hands r to the Kafka producer. The promise runs once Kafka has
// acknowledged r with acks=all, or r failed. Produce blocks while
// MaxBufferedRecords/MaxBufferedBytes are in flight; if ctx ends first the
// promise gets ctx's error. Once buffered, a record is no longer tied to ctx:
// it is delivered or fails on its own, so one caller's cancellation never
// fails records of another caller batched with it.
func (l *Log) Produce(ctx context.Context, r *mlog.Record, promise func(*mlog.Record, error)) {
	if promise == nil {
		promise = func(*mlog.Record, error) {}
	}
	if err := l.checkOpen("produce to " + r.Topic); err != nil {
		promise(r, err)
		return
	}
	// The cached metadata answers for existing topics without a request; a
	// missing topic fails here at once instead of after the producer's
	// unknown-topic retries.
	m, err := l.topicMeta(ctx, r.Topic, false)
	if err != nil {
		promise(r, fmt.Errorf("kafka log: produce: %w", err))
		return
	}
	if r.PartitionSet && r.Partition < 0 {
		promise(r, fmt.Errorf("kafka log: produce: %w: %s/%d (topic has %d partitions)", mlog.ErrUnknownPartition, r.Topic, r.Partition, len(m.leaders)))
		return
	}
	if size := recordSize(r); size > l.opts.MaxRecordBytes {
		promise(r, fmt.Errorf("kafka log: produce: %w: %d bytes in topic %s (limit %d, Options.MaxRecordBytes; the topic's max.message.bytes must allow it too)", mlog.ErrRecordTooLarge, size, r.Topic, l.opts.MaxRecordBytes))
		return
	}
	kr := &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Timestamp: r.Timestamp, Partition: -1}
	if len(r.Headers) > 0 {
		kr.Headers = make([]kgo.RecordHeader, len(r.Headers))
		for i, h := range r.Headers {
			kr.Headers[i] = kgo.RecordHeader{Key: h.Key, Value: h.Value}
		}
	}
	var pk *pick
	if r.PartitionSet {
		kr.Partition = r.Partition
		pk = &pick{}
		kr.Context = context.WithValue(context.WithoutCancel(ctx), pickKey{}, pk)
	} else {
		kr.Context = context.WithoutCancel(ctx)
	}
	start := time.Now()
	l.cl.Produce(ctx, kr, func(kr *kgo.Record, err error) {
		if err != nil {
			if pk != nil && pk.n.Load() > 0 {
				err = fmt.Errorf("%w: %s/%d (topic has %d partitions)", mlog.ErrUnknownPartition, r.Topic, r.Partition, pk.n.Load())
			} else {
				if errors.Is(err, kerr.UnknownTopicOrPartition) {
					// The topic was deleted: forget it so the next
					// Produce re-checks instead of trusting the cache.
					l.forget(r.Topic)
				}
				err = mapErr(err)
			}
			l.m.failed.WithLabelValues(r.Topic).Inc()
			promise(r, fmt.Errorf("kafka log: produce to %s: %w", r.Topic, err))
			return
		}
		r.Partition = kr.Partition
		r.Offset = kr.Offset
		r.Timestamp = time.UnixMilli(kr.Timestamp.UnixMilli())
		l.m.produced(r.Topic, recordSize(r), time.Since(start))
		promise(r, nil)
	})
}

// ProduceSync produces rs and waits until Kafka acknowledged all of them or
// one failed. It waits for every promise even when one fails early, so rs
// are not written to after it returns.
func (l *Log) ProduceSync(ctx context.Context, rs ...*mlog.Record) error {
	return mlog.ProduceAll(ctx, l.Produce, rs...)
}
