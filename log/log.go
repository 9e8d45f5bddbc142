// Package log defines Millstream's durable, replayable event log: the source of
// truth that every other component reads from and that everything derived
// (historian, twins, alerts, replication progress) can be rebuilt from.
//
// The model follows Apache Kafka so that the same components run on the embedded
// log (package log/embedded, the default) or on a Kafka cluster:
//
//   - A topic has a fixed number of partitions. Order is guaranteed within a
//     partition. The record key picks the partition (murmur2, as Kafka's Java
//     client and franz-go do), so all records of one key - one asset - stay in
//     order.
//   - Every record in a partition has an offset, assigned densely from 0 at
//     append time. A partition's readable range is [start, end): start moves up
//     when retention deletes old segments, end is the offset the next record
//     will get (the high watermark).
//   - Records carry key, value, headers and a timestamp of millisecond
//     precision. Reads are by offset, or by timestamp through OffsetForTime.
//   - Named consumers commit offsets durably and resume from them on restart.
//
// Durability: Produce and ProduceSync report success only once the record is
// durable under the log's fsync policy. Callers that acknowledge something to a
// peer (an MQTT PUBACK, an HTTP 2xx) do so only after that report.
package log

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Header is one record header. Keys may repeat.
type Header struct {
	Key   string
	Value []byte
}

// Record is one entry of the log.
//
// On produce, Topic, Key, Value, Headers and optionally Timestamp (zero means
// now) are set by the caller; Partition is chosen from the key unless the caller
// sets it explicitly via PartitionSet. Offset and Partition are filled in when
// the record has been appended.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
	// Timestamp is truncated to milliseconds when stored.
	Timestamp time.Time
	Key       []byte
	Value     []byte
	Headers   []Header
	// PartitionSet makes Produce use Partition as given instead of hashing Key.
	PartitionSet bool
}

// HeaderValue returns the value of the first header named key.
func (r *Record) HeaderValue(key string) ([]byte, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return h.Value, true
		}
	}
	return nil, false
}

// TopicConfig configures a topic at creation. Zero values mean "use the log's
// defaults".
type TopicConfig struct {
	Partitions int32
	// RetentionAge deletes whole segments whose newest record is older than
	// this. Negative means keep forever.
	RetentionAge time.Duration
	// RetentionBytes deletes the oldest whole segments of a partition while the
	// partition is larger than this. Negative means no size limit.
	RetentionBytes int64
}

// TopicInfo describes an existing topic.
type TopicInfo struct {
	Name       string
	Config     TopicConfig
	Partitions []PartitionInfo
}

// PartitionInfo describes one partition of a topic.
type PartitionInfo struct {
	Partition int32
	// Start is the first readable offset; End the offset of the next record.
	Start, End int64
	Bytes      int64
	Segments   int
}

// GroupOffsets are the committed offsets of one consumer group.
type GroupOffsets struct {
	Group   string
	Offsets []TopicPartitionOffset
}

// TopicPartitionOffset is one committed offset.
type TopicPartitionOffset struct {
	Topic     string
	Partition int32
	Offset    int64
}

// FetchOptions bounds one Fetch.
type FetchOptions struct {
	// MaxBytes bounds the total size of returned records; at least one record
	// is returned when one is available, whatever its size. 0 means 1 MiB.
	MaxBytes int
	// MaxRecords bounds the number of records returned; 0 means no bound.
	MaxRecords int
	// Wait makes Fetch block until at least one record at or after the offset
	// exists or ctx is done. Without Wait, Fetch returns at once, possibly
	// with no records.
	Wait bool
}

// Log is a durable, partitioned, replayable record log.
//
// All methods are safe for concurrent use.
type Log interface {
	// CreateTopic creates a topic. It returns ErrTopicExists if it exists.
	CreateTopic(ctx context.Context, name string, cfg TopicConfig) error
	// Topics lists all topics, sorted by name.
	Topics(ctx context.Context) ([]TopicInfo, error)
	// Topic describes one topic, or returns ErrUnknownTopic.
	Topic(ctx context.Context, name string) (TopicInfo, error)

	// Produce appends r asynchronously and calls promise (if not nil) exactly
	// once, when r is durable under the fsync policy or has failed. Produce
	// blocks while the log's buffers are full (backpressure) until there is
	// room or ctx is done; if ctx ends first, promise is called with ctx's
	// error. Records produced by one goroutine to one partition are appended
	// in the order of the Produce calls. The promise may run on the log's
	// internal goroutine: it must return quickly and must not wait for
	// another append (no ProduceSync inside a promise).
	Produce(ctx context.Context, r *Record, promise func(*Record, error))
	// ProduceSync appends records and returns when all are durable or one
	// failed. Records are filled in with partition and offset.
	ProduceSync(ctx context.Context, rs ...*Record) error

	// Fetch reads records of one partition from offset on. An offset below the
	// partition's start returns ErrOffsetOutOfRange; an offset equal to the end
	// returns no records (or waits, with Wait).
	Fetch(ctx context.Context, topic string, partition int32, offset int64, opts FetchOptions) ([]Record, error)
	// OffsetForTime returns the offset of the first record whose timestamp is
	// at or after t, or the partition's end offset if there is none.
	OffsetForTime(ctx context.Context, topic string, partition int32, t time.Time) (int64, error)

	// CommitOffset durably records that consumer group has processed partition
	// up to (not including) offset.
	CommitOffset(ctx context.Context, group, topic string, partition int32, offset int64) error
	// CommittedOffset returns the committed offset, and false if there is none.
	CommittedOffset(ctx context.Context, group, topic string, partition int32) (int64, bool, error)

	// Groups lists the committed offsets of every consumer group, for lag
	// reporting.
	Groups(ctx context.Context) ([]GroupOffsets, error)

	// DeleteRecordsBefore makes offsets below offset unreadable and frees the
	// segments that lie entirely below it (as Kafka's DeleteRecords). Used to
	// compact state topics after a snapshot.
	DeleteRecordsBefore(ctx context.Context, topic string, partition int32, offset int64) error

	// Close flushes and fsyncs everything appended and releases resources.
	Close() error
}

// OffsetsCommitter is implemented by logs that commit several offsets of
// one group in one durable write (both of Millstream's backends). Call
// CommitOffsets rather than asserting it.
type OffsetsCommitter interface {
	CommitOffsets(ctx context.Context, group string, offsets []TopicPartitionOffset) error
}

// CommitOffsets durably commits offsets of group: in one write where l is an
// OffsetsCommitter, else one CommitOffset at a time.
func CommitOffsets(ctx context.Context, l Log, group string, offsets []TopicPartitionOffset) error {
	if oc, ok := l.(OffsetsCommitter); ok {
		return oc.CommitOffsets(ctx, group, offsets)
	}
	for _, o := range offsets {
		if err := l.CommitOffset(ctx, group, o.Topic, o.Partition, o.Offset); err != nil {
			return err
		}
	}
	return nil
}

// Errors shared by all implementations. Implementations wrap them with context;
// test with errors.Is.
var (
	ErrUnknownTopic      = errors.New("unknown topic")
	ErrTopicExists       = errors.New("topic already exists")
	ErrUnknownPartition  = errors.New("unknown partition")
	ErrOffsetOutOfRange  = errors.New("offset out of range")
	ErrClosed            = errors.New("log is closed")
	ErrRecordTooLarge    = errors.New("record too large")
	ErrInvalidTopicName  = errors.New("invalid topic name")
	ErrInvalidPartitions = errors.New("invalid partition count")
)

// ValidateTopicName checks a topic name against the rules Kafka uses, so topics
// move freely between backends: 1-249 characters of [a-zA-Z0-9._-], not "." or "..".
func ValidateTopicName(name string) error {
	if name == "" || len(name) > 249 || name == "." || name == ".." {
		return fmt.Errorf("%w %q: must be 1-249 characters and not \".\" or \"..\"", ErrInvalidTopicName, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w %q: character %q not allowed (use a-z A-Z 0-9 . _ -)", ErrInvalidTopicName, name, c)
		}
	}
	return nil
}

// PartitionForKey returns the partition a key maps to among n partitions. It is
// Kafka's default partitioner (murmur2, positive, modulo n), so a key lands on
// the same partition on the embedded log and on a Kafka cluster. A nil or empty
// key maps to partition 0.
func PartitionForKey(key []byte, n int32) int32 {
	if n <= 1 || len(key) == 0 {
		return 0
	}
	return int32((murmur2(key) & 0x7fffffff) % uint32(n))
}

// murmur2 is the 32-bit MurmurHash2 variant used by Kafka's Java client.
func murmur2(data []byte) uint32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	length := len(data)
	h := seed ^ uint32(length)
	n := length / 4
	for i := 0; i < n; i++ {
		i4 := i * 4
		k := uint32(data[i4]) | uint32(data[i4+1])<<8 | uint32(data[i4+2])<<16 | uint32(data[i4+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	switch length % 4 {
	case 3:
		h ^= uint32(data[(length&^3)+2]) << 16
		fallthrough
	case 2:
		h ^= uint32(data[(length&^3)+1]) << 8
		fallthrough
	case 1:
		h ^= uint32(data[length&^3])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}
