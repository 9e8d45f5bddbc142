package kafkaproto

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

const benchRecordSize = 1024

// BenchmarkProduce measures produce throughput of 1 KiB records from kgo
// (idempotent, acks=all, default batching) over loopback into the embedded
// log with its default group-commit fsync. b.N is the number of records.
func BenchmarkProduce(b *testing.B) {
	env := startEnv(b, Options{})
	env.createTopic(b, "bench", 4)
	cl := newClient(b, env.addr, kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(time.Millisecond),
		kgo.MaxBufferedRecords(100_000))
	defer cl.Close()
	ctx := context.Background()
	value := make([]byte, benchRecordSize)
	b.SetBytes(benchRecordSize)
	b.ResetTimer()
	errs := make(chan error, 1)
	for i := 0; i < b.N; i++ {
		cl.Produce(ctx, &kgo.Record{Topic: "bench", Partition: int32(i % 4), Value: value}, func(_ *kgo.Record, err error) {
			if err != nil {
				select {
				case errs <- err:
				default:
				}
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
}

// BenchmarkFetch measures consume throughput of 1 KiB records with kgo
// (direct partition consumption from the start) over loopback.
func BenchmarkFetch(b *testing.B) {
	env := startEnv(b, Options{})
	env.createTopic(b, "bench", 4)
	prod := newClient(b, env.addr, kgo.ProducerLinger(time.Millisecond), kgo.MaxBufferedRecords(100_000))
	ctx := context.Background()
	value := make([]byte, benchRecordSize)
	for i := 0; i < b.N; i++ {
		prod.Produce(ctx, &kgo.Record{Topic: "bench", Partition: int32(i % 4), Value: value}, nil)
	}
	if err := prod.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	prod.Close()
	b.SetBytes(benchRecordSize)
	b.ResetTimer()
	cl := newClient(b, env.addr, kgo.ConsumeTopics("bench"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer cl.Close()
	got := 0
	deadline := time.Now().Add(5 * time.Minute)
	for got < b.N {
		if time.Now().After(deadline) {
			b.Fatalf("consumed %d of %d records", got, b.N)
		}
		fs := cl.PollFetches(ctx)
		if err := fs.Err(); err != nil {
			b.Fatal(err)
		}
		got += fs.NumRecords()
	}
}
