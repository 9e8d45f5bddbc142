package kafkaproto

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	mlog "github.com/millstream/millstream/log"
)

func newClient(t testing.TB, addr string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	base := []kgo.Opt{
		kgo.SeedBrokers(addr),
		kgo.FetchMaxWait(200 * time.Millisecond),
		kgo.RetryTimeout(10 * time.Second),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
	}
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

type po struct {
	p   int32
	off int64
}

// pollUntil polls cl until want records arrived in total or the deadline.
func pollUntil(t *testing.T, ctx context.Context, cl *kgo.Client, want int) []*kgo.Record {
	t.Helper()
	var got []*kgo.Record
	for len(got) < want {
		if ctx.Err() != nil {
			t.Fatalf("got %d of %d records before the deadline", len(got), want)
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := cl.PollRecords(pctx, want-len(got))
		cancel()
		fs.EachError(func(topic string, p int32, err error) {
			if pctx.Err() == nil {
				t.Fatalf("fetch %s/%d: %v", topic, p, err)
			}
		})
		got = append(got, fs.Records()...)
	}
	return got
}

// TestKgoProduceConsumeGroup produces with an idempotent acks=all producer,
// consumes half with a consumer group, commits, restarts the consumer and
// checks it continues exactly after the committed offsets.
func TestKgoProduceConsumeGroup(t *testing.T) {
	env := startEnv(t, Options{GroupPrefix: "kafka."})
	env.createTopic(t, "events", 3)
	ctx := testCtx(t, 60*time.Second)

	prod := newClient(t, env.addr, kgo.RequiredAcks(kgo.AllISRAcks()))
	defer prod.Close()
	const n = 300
	ts := time.UnixMilli(1_700_000_000_123)
	var recs []*kgo.Record
	for i := 0; i < n; i++ {
		recs = append(recs, &kgo.Record{
			Topic: "events", Key: []byte(fmt.Sprintf("asset-%d", i%10)), Value: []byte(fmt.Sprintf("value-%d", i)),
			Headers:   []kgo.RecordHeader{{Key: "source", Value: []byte("test")}, {Key: "i", Value: []byte(fmt.Sprint(i))}},
			Timestamp: ts.Add(time.Duration(i) * time.Millisecond),
		})
	}
	if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	// The offsets the server reported are where the log put the records.
	logRecs := env.readAll(t, "events")
	if len(logRecs) != n {
		t.Fatalf("log has %d records, want %d", len(logRecs), n)
	}
	byPO := map[po]mlog.Record{}
	for _, r := range logRecs {
		byPO[po{r.Partition, r.Offset}] = r
	}
	for _, r := range recs {
		lr, ok := byPO[po{r.Partition, r.Offset}]
		if !ok || !bytes.Equal(lr.Value, r.Value) || !bytes.Equal(lr.Key, r.Key) {
			t.Fatalf("record %s reported at %d/%d, log has %q there", r.Value, r.Partition, r.Offset, lr.Value)
		}
		if !lr.Timestamp.Equal(r.Timestamp) {
			t.Fatalf("timestamp %v, want %v", lr.Timestamp, r.Timestamp)
		}
		if len(lr.Headers) != 2 || lr.Headers[0].Key != "source" || string(lr.Headers[1].Value) != string(r.Headers[1].Value) {
			t.Fatalf("headers %v", lr.Headers)
		}
		if want := mlog.PartitionForKey(r.Key, 3); r.Partition != want {
			t.Fatalf("key %s went to partition %d, the log's partitioner says %d", r.Key, r.Partition, want)
		}
	}

	consume := func(want int) []*kgo.Record {
		cl := newClient(t, env.addr, kgo.ConsumerGroup("g1"), kgo.ConsumeTopics("events"),
			kgo.DisableAutoCommit(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.FetchMaxBytes(4096), kgo.FetchMaxPartitionBytes(1024))
		defer cl.Close()
		got := pollUntil(t, ctx, cl, want)
		if err := cl.CommitRecords(ctx, got...); err != nil {
			t.Fatalf("commit: %v", err)
		}
		return got
	}
	first := consume(n / 2)
	// The commit is in the log under the prefixed group name.
	committed := map[int32]int64{}
	for _, r := range first {
		committed[r.Partition] = max(committed[r.Partition], r.Offset+1)
	}
	for p, want := range committed {
		off, ok, err := env.l.CommittedOffset(ctx, "kafka.g1", "events", p)
		if err != nil || !ok || off != want {
			t.Fatalf("log committed offset of partition %d = %d, %v, %v; want %d", p, off, ok, err, want)
		}
	}
	second := consume(n - len(first))
	seen := map[po]bool{}
	for _, r := range append(first, second...) {
		k := po{r.Partition, r.Offset}
		if seen[k] {
			t.Fatalf("record %d/%d consumed twice", r.Partition, r.Offset)
		}
		seen[k] = true
		lr := byPO[k]
		if !bytes.Equal(lr.Value, r.Value) || !r.Timestamp.Equal(lr.Timestamp) || len(r.Headers) != 2 || r.Headers[0].Key != "source" {
			t.Fatalf("consumed %d/%d = %q %v %v, log has %q %v", r.Partition, r.Offset, r.Value, r.Timestamp, r.Headers, lr.Value, lr.Timestamp)
		}
	}
	if len(seen) != n {
		t.Fatalf("consumed %d distinct records, want %d", len(seen), n)
	}
}

// TestKgoGroupRebalance runs two members of one group: they split the
// partitions, and when one leaves the other gets them all.
func TestKgoGroupRebalance(t *testing.T) {
	for _, balancer := range []struct {
		name string
		b    kgo.GroupBalancer
	}{{"range", kgo.RangeBalancer()}, {"cooperative-sticky", kgo.CooperativeStickyBalancer()}} {
		t.Run(balancer.name, func(t *testing.T) {
			env := startEnv(t, Options{})
			env.createTopic(t, "lines", 4)
			ctx := testCtx(t, 60*time.Second)

			type tracker struct {
				mu   sync.Mutex
				have map[int32]bool
			}
			newMember := func(tr *tracker) *kgo.Client {
				return newClient(t, env.addr, kgo.ConsumerGroup("g2"), kgo.ConsumeTopics("lines"),
					kgo.Balancers(balancer.b), kgo.SessionTimeout(6*time.Second), kgo.HeartbeatInterval(200*time.Millisecond),
					kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
						tr.mu.Lock()
						for _, p := range m["lines"] {
							tr.have[p] = true
						}
						tr.mu.Unlock()
					}),
					kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
						tr.mu.Lock()
						for _, p := range m["lines"] {
							delete(tr.have, p)
						}
						tr.mu.Unlock()
					}),
					kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
						tr.mu.Lock()
						for _, p := range m["lines"] {
							delete(tr.have, p)
						}
						tr.mu.Unlock()
					}))
			}
			snapshot := func(tr *tracker) []int32 {
				tr.mu.Lock()
				defer tr.mu.Unlock()
				var out []int32
				for p := range tr.have {
					out = append(out, p)
				}
				sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
				return out
			}
			// Members only take part in rebalances while they poll.
			poll := func(cl *kgo.Client, stop <-chan struct{}) {
				for {
					select {
					case <-stop:
						return
					default:
					}
					pctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
					cl.PollFetches(pctx)
					cancel()
				}
			}
			waitFor := func(what string, cond func() bool) {
				t.Helper()
				for !cond() {
					if ctx.Err() != nil {
						t.Fatalf("timed out waiting for %s", what)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			t1, t2 := &tracker{have: map[int32]bool{}}, &tracker{have: map[int32]bool{}}
			c1 := newMember(t1)
			defer c1.Close()
			stop1 := make(chan struct{})
			done1 := make(chan struct{})
			go func() { poll(c1, stop1); close(done1) }()
			defer func() { close(stop1); <-done1 }()
			waitFor("member 1 to own all 4 partitions", func() bool { return len(snapshot(t1)) == 4 })

			c2 := newMember(t2)
			stop2 := make(chan struct{})
			done2 := make(chan struct{})
			go func() { poll(c2, stop2); close(done2) }()
			waitFor("the members to split the partitions 2/2", func() bool {
				a, b := snapshot(t1), snapshot(t2)
				if len(a) != 2 || len(b) != 2 {
					return false
				}
				all := map[int32]bool{}
				for _, p := range append(a, b...) {
					all[p] = true
				}
				return len(all) == 4
			})
			close(stop2)
			<-done2
			c2.Close() // leaves the group
			waitFor("member 1 to own all 4 partitions after member 2 left", func() bool { return len(snapshot(t1)) == 4 })
		})
	}
}

// TestKgoCompression produces with every codec kgo supports and checks the
// log holds the records.
func TestKgoCompression(t *testing.T) {
	env := startEnv(t, Options{})
	env.createTopic(t, "z", 1)
	ctx := testCtx(t, 30*time.Second)
	codecs := []struct {
		name string
		c    kgo.CompressionCodec
	}{{"none", kgo.NoCompression()}, {"gzip", kgo.GzipCompression()}, {"snappy", kgo.SnappyCompression()}, {"lz4", kgo.Lz4Compression()}, {"zstd", kgo.ZstdCompression()}}
	want := 0
	for _, c := range codecs {
		cl := newClient(t, env.addr, kgo.ProducerBatchCompression(c.c), kgo.ProducerLinger(50*time.Millisecond))
		var recs []*kgo.Record
		for i := 0; i < 50; i++ {
			recs = append(recs, &kgo.Record{Topic: "z", Value: bytes.Repeat([]byte(c.name+fmt.Sprint(i)), 20)})
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		cl.Close()
		want += len(recs)
		got := env.readAll(t, "z")
		if len(got) != want {
			t.Fatalf("%s: log has %d records, want %d", c.name, len(got), want)
		}
		if last := got[len(got)-1].Value; !bytes.Equal(last, recs[len(recs)-1].Value) {
			t.Fatalf("%s: last record %q", c.name, last)
		}
	}
}
