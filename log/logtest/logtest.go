// Package logtest is a conformance suite for implementations of log.Log. Every
// backend (embedded, Kafka) runs it, so it uses only the log.Log interface and
// nothing specific to one backend.
package logtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/millstream/millstream/log"
)

// Run runs the suite. open returns a fresh, empty log for each subtest; the
// suite closes it (open may also register a cleanup that closes it again).
// Topic names are unique per subtest so a backend may share state.
func Run(t *testing.T, open func(t *testing.T) log.Log) {
	tests := []struct {
		name string
		fn   func(t *testing.T, l log.Log)
	}{
		{"CreateTopic", testCreateTopic},
		{"ProduceFetchOrder", testProduceFetchOrder},
		{"KeyPicksPartition", testKeyPicksPartition},
		{"RecordFields", testRecordFields},
		{"FetchLimits", testFetchLimits},
		{"FetchOutOfRange", testFetchOutOfRange},
		{"FetchWaitWakes", testFetchWaitWakes},
		{"FetchWaitCancel", testFetchWaitCancel},
		{"ProduceAsync", testProduceAsync},
		{"ConcurrentProducers", testConcurrentProducers},
		{"OffsetForTime", testOffsetForTime},
		{"CommitOffsets", testCommitOffsets},
		{"DeleteRecordsBefore", testDeleteRecordsBefore},
		{"UnknownTopic", testUnknownTopic},
		{"ConsumerAcrossPartitions", testConsumerAcrossPartitions},
		{"Close", testClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := open(t)
			defer l.Close()
			tc.fn(t, l)
		})
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func topicName(t *testing.T) string {
	return fmt.Sprintf("logtest.%s.%d", sanitize(t.Name()), time.Now().UnixNano())
}

func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '_'
		}
	}
	if len(b) > 150 {
		b = b[len(b)-150:]
	}
	return string(b)
}

func mustCreate(t *testing.T, l log.Log, name string, parts int32) {
	t.Helper()
	if err := l.CreateTopic(ctxT(t), name, log.TopicConfig{Partitions: parts, RetentionAge: -1, RetentionBytes: -1}); err != nil {
		t.Fatalf("CreateTopic(%s): %v", name, err)
	}
}

func produce(t *testing.T, l log.Log, topic string, p int32, values ...string) []*log.Record {
	t.Helper()
	rs := make([]*log.Record, len(values))
	for i, v := range values {
		rs[i] = &log.Record{Topic: topic, Partition: p, PartitionSet: true, Value: []byte(v)}
	}
	if err := l.ProduceSync(ctxT(t), rs...); err != nil {
		t.Fatalf("ProduceSync: %v", err)
	}
	return rs
}

func fetchAll(t *testing.T, l log.Log, topic string, p int32, from int64) []log.Record {
	t.Helper()
	var out []log.Record
	for {
		rs, err := l.Fetch(ctxT(t), topic, p, from, log.FetchOptions{})
		if err != nil {
			t.Fatalf("Fetch(%s/%d @%d): %v", topic, p, from, err)
		}
		if len(rs) == 0 {
			return out
		}
		out = append(out, rs...)
		from = rs[len(rs)-1].Offset + 1
	}
}

func testCreateTopic(t *testing.T, l log.Log) {
	ctx := ctxT(t)
	name := topicName(t)
	if err := l.CreateTopic(ctx, name, log.TopicConfig{Partitions: 3}); err != nil {
		t.Fatal(err)
	}
	if err := l.CreateTopic(ctx, name, log.TopicConfig{Partitions: 3}); !errors.Is(err, log.ErrTopicExists) {
		t.Fatalf("second CreateTopic: got %v, want ErrTopicExists", err)
	}
	if err := l.CreateTopic(ctx, "bad/name", log.TopicConfig{}); !errors.Is(err, log.ErrInvalidTopicName) {
		t.Fatalf("CreateTopic(bad/name): got %v, want ErrInvalidTopicName", err)
	}
	info, err := l.Topic(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != name || len(info.Partitions) != 3 {
		t.Fatalf("Topic = %+v, want 3 partitions", info)
	}
	for i, p := range info.Partitions {
		if p.Partition != int32(i) || p.Start != 0 || p.End != 0 {
			t.Fatalf("new partition %+v, want start=end=0", p)
		}
	}
	name2 := name + "-b"
	if err := l.CreateTopic(ctx, name2, log.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	ts, err := l.Topics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for i, ti := range ts {
		if i > 0 && ts[i-1].Name >= ti.Name {
			t.Fatalf("Topics not sorted: %q before %q", ts[i-1].Name, ti.Name)
		}
		if ti.Name == name || ti.Name == name2 {
			seen = append(seen, ti.Name)
		}
	}
	if len(seen) != 2 {
		t.Fatalf("Topics lists %v of %q,%q", seen, name, name2)
	}
}

func testProduceFetchOrder(t *testing.T, l log.Log) {
	name := topicName(t)
	mustCreate(t, l, name, 2)
	var vals []string
	for i := 0; i < 500; i++ {
		vals = append(vals, fmt.Sprintf("v%03d", i))
	}
	rs := produce(t, l, name, 1, vals...)
	for i, r := range rs {
		if r.Partition != 1 || r.Offset != int64(i) {
			t.Fatalf("record %d got partition %d offset %d, want 1/%d", i, r.Partition, r.Offset, i)
		}
	}
	got := fetchAll(t, l, name, 1, 0)
	if len(got) != len(vals) {
		t.Fatalf("fetched %d records, want %d", len(got), len(vals))
	}
	for i, r := range got {
		if r.Offset != int64(i) || string(r.Value) != vals[i] || r.Topic != name || r.Partition != 1 {
			t.Fatalf("record %d = %s/%d@%d %q, want @%d %q", i, r.Topic, r.Partition, r.Offset, r.Value, i, vals[i])
		}
	}
	// Fetch from the middle.
	mid := fetchAll(t, l, name, 1, 250)
	if len(mid) != 250 || mid[0].Offset != 250 || string(mid[0].Value) != "v250" {
		t.Fatalf("fetch from 250: %d records, first %+v", len(mid), mid[0])
	}
	if other := fetchAll(t, l, name, 0, 0); len(other) != 0 {
		t.Fatalf("partition 0 has %d records, want 0", len(other))
	}
	info, _ := l.Topic(ctxT(t), name)
	if info.Partitions[1].End != 500 || info.Partitions[0].End != 0 {
		t.Fatalf("end offsets %+v", info.Partitions)
	}
}

func testKeyPicksPartition(t *testing.T, l log.Log) {
	name := topicName(t)
	mustCreate(t, l, name, 4)
	keys := []string{"plant/a/press1", "plant/a/press2", "plant/b/oven", "x", "y", "z"}
	for round := 0; round < 3; round++ {
		for _, k := range keys {
			r := &log.Record{Topic: name, Key: []byte(k), Value: []byte(fmt.Sprintf("%s-%d", k, round))}
			if err := l.ProduceSync(ctxT(t), r); err != nil {
				t.Fatal(err)
			}
			if want := log.PartitionForKey([]byte(k), 4); r.Partition != want {
				t.Fatalf("key %q went to partition %d, want %d", k, r.Partition, want)
			}
		}
	}
	for p := int32(0); p < 4; p++ {
		last := map[string]int{}
		for _, r := range fetchAll(t, l, name, p, 0) {
			if log.PartitionForKey(r.Key, 4) != p {
				t.Fatalf("key %q found in partition %d", r.Key, p)
			}
			var round int
			fmt.Sscanf(string(r.Value[len(r.Key)+1:]), "%d", &round)
			if prev, ok := last[string(r.Key)]; ok && round != prev+1 {
				t.Fatalf("key %q out of order: round %d after %d", r.Key, round, prev)
			}
			last[string(r.Key)] = round
		}
	}
}

func testRecordFields(t *testing.T, l log.Log) {
	name := topicName(t)
	mustCreate(t, l, name, 1)
	ts := time.UnixMilli(1700000000123)
	in := []*log.Record{
		{Topic: name, Key: []byte("k1"), Value: []byte("hello"), Timestamp: ts.Add(900 * time.Microsecond),
			Headers: []log.Header{{Key: "qos", Value: []byte("1")}, {Key: "qos", Value: []byte("2")}, {Key: "empty", Value: []byte{}}}},
		{Topic: name, Value: bytes.Repeat([]byte{0, 1, 2, 255}, 1000)},
		{Topic: name, Key: []byte{}, Value: []byte{}},
	}
	before := time.Now().Truncate(time.Millisecond)
	if err := l.ProduceSync(ctxT(t), in...); err != nil {
		t.Fatal(err)
	}
	got := fetchAll(t, l, name, 0, 0)
	if len(got) != 3 {
		t.Fatalf("got %d records", len(got))
	}
	r := got[0]
	if string(r.Key) != "k1" || string(r.Value) != "hello" || !r.Timestamp.Equal(ts) {
		t.Fatalf("record 0 = key %q value %q ts %v, want k1 hello %v (truncated to ms)", r.Key, r.Value, r.Timestamp, ts)
	}
	if len(r.Headers) != 3 || r.Headers[0].Key != "qos" || string(r.Headers[0].Value) != "1" || string(r.Headers[1].Value) != "2" || r.Headers[2].Key != "empty" || len(r.Headers[2].Value) != 0 {
		t.Fatalf("headers = %+v", r.Headers)
	}
	if v, ok := r.HeaderValue("qos"); !ok || string(v) != "1" {
		t.Fatalf("HeaderValue(qos) = %q %v", v, ok)
	}
	if !bytes.Equal(got[1].Value, in[1].Value) || len(got[1].Key) != 0 {
		t.Fatalf("record 1 value mismatch")
	}
	if got[1].Timestamp.Before(before) || got[1].Timestamp.After(time.Now().Add(time.Second)) {
		t.Fatalf("zero timestamp became %v, want about now", got[1].Timestamp)
	}
	if len(got[2].Value) != 0 || len(got[2].Key) != 0 || len(got[2].Headers) != 0 {
		t.Fatalf("empty record came back as %+v", got[2])
	}
}

func testFetchLimits(t *testing.T, l log.Log) {
	name := topicName(t)
	mustCreate(t, l, name, 1)
	var vals []string
	for i := 0; i < 100; i++ {
		vals = append(vals, string(bytes.Repeat([]byte{'a' + byte(i%26)}, 1000)))
	}
	produce(t, l, name, 0, vals...)
	rs, err := l.Fetch(ctxT(t), name, 0, 10, log.FetchOptions{MaxRecords: 7})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 7 || rs[0].Offset != 10 || rs[6].Offset != 16 {
		t.Fatalf("MaxRecords 7: got %d records from %d", len(rs), rs[0].Offset)
	}
	rs, err = l.Fetch(ctxT(t), name, 0, 0, log.FetchOptions{MaxBytes: 10_000})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) == 0 || len(rs) > 12 {
		t.Fatalf("MaxBytes 10000 with 1000-byte records returned %d records", len(rs))
	}
	rs, err = l.Fetch(ctxT(t), name, 0, 5, log.FetchOptions{MaxBytes: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 || rs[0].Offset != 5 {
		t.Fatalf("MaxBytes 1 must still return one record, got %d", len(rs))
	}
}

func testFetchOutOfRange(t *testing.T, l log.Log) {
	name := topicName(t)
	mustCreate(t, l, name, 1)
	produce(t, l, name, 0, "a", "b", "c")
	ctx := ctxT(t)
	if rs, err := l.Fetch(ctx, name, 0, 3, log.FetchOptions{}); err != nil || len(rs) != 0 {
		t.Fatalf("fetch at end: %d records, %v; want none, nil", len(rs), err)
	}
	if _, err := l.Fetch(ctx, name, 0, 4, log.FetchOptions{}); !errors.Is(err, log.ErrOffsetOutOfRange) {
		t.Fatalf("fetch past end: %v, want ErrOffsetOutOfRange", err)
	}
	if _, err := l.Fetch(ctx, name, 0, -1, log.FetchOptions{}); !errors.Is(err, log.ErrOffsetOutOfRange) {
		t.Fatalf("fetch at -1: %v, want ErrOffsetOutOfRange", err)
	}
	if _, err := l.Fetch(ctx, name, 1, 0, log.FetchOptions{}); err == nil {
		t.Fatal("fetch of partition 1 of a 1-partition topic succeeded")
	}
	r := &log.Record{Topic: name, Partition: 5, PartitionSet: true}
	if err := l.ProduceSync(ctx, r); err == nil {
		t.Fatal("produce to partition 5 of a 1-partition topic succeeded")
	}
}

func testFetchWaitWakes(t *testing.T, l log.Log) {
	name := topicName(t)
	mustCreate(t, l, name, 1)
	produce(t, l, name, 0, "first")
	type result struct {
		rs  []log.Record
		err error
	}
	const waiters = 4
	res := make(chan result, waiters)
	started := make(chan struct{}, waiters)
	for i := 0; i < waiters; i++ {
		go func() {
			started <- struct{}{}
			rs, err := l.Fetch(ctxT(t), name, 0, 1, log.FetchOptions{Wait: true})
			res <- result{rs, err}
		}()
	}
	for i := 0; i < waiters; i++ {
		<-started
	}
	// The waiters may or may not be blocked yet; either way each must see
	// the record appended now, and nothing else may wake them.
	produce(t, l, name, 0, "second")
	for i := 0; i < waiters; i++ {
		r := <-res
		if r.err != nil {
			t.Fatalf("Fetch with Wait: %v", r.err)
		}
		if len(r.rs) != 1 || r.rs[0].Offset != 1 || string(r.rs[0].Value) != "second" {
			t.Fatalf("Fetch with Wait returned %+v, want offset 1 \"second\"", r.rs)
		}
	}
}

func testFetchWaitCancel(t *testing.T, l log.Log) {
	name := topicName(t)
	mustCreate(t, l, name, 1)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := l.Fetch(ctx, name, 0, 0, log.FetchOptions{Wait: true})
		errc <- err
	}()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Fetch with Wait returned %v, want context.Canceled", err)
	}
	rs, err := l.Fetch(ctxT(t), name, 0, 0, log.FetchOptions{})
	if err != nil || len(rs) != 0 {
		t.Fatalf("Fetch without Wait on an empty partition: %d records, %v", len(rs), err)
	}
}

func testProduceAsync(t *testing.T, l log.Log) {
	name := topicName(t)
	mustCreate(t, l, name, 1)
	const n = 1000
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	offsets := make([]int64, n)
	calls := make([]int, n)
	wg.Add(n)
	for i := 0; i < n; i++ {
		i := i
		l.Produce(ctxT(t), &log.Record{Topic: name, Value: []byte(fmt.Sprint(i))}, func(r *log.Record, err error) {
			mu.Lock()
			if err != nil {
				errs = append(errs, err)
			}
			offsets[i] = r.Offset
			calls[i]++
			mu.Unlock()
			wg.Done()
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d produce errors, first: %v", len(errs), errs[0])
	}
	for i := 0; i < n; i++ {
		if calls[i] != 1 || offsets[i] != int64(i) {
			t.Fatalf("record %d: promise called %d times, offset %d; want once, offset %d (one goroutine keeps order)", i, calls[i], offsets[i], i)
		}
	}
	// A promise-less Produce must not panic, and a failing one reports.
	l.Produce(ctxT(t), &log.Record{Topic: name, Value: []byte("x")}, nil)
	done := make(chan error, 1)
	l.Produce(ctxT(t), &log.Record{Topic: name + "-missing"}, func(_ *log.Record, err error) { done <- err })
	if err := <-done; !errors.Is(err, log.ErrUnknownTopic) {
		t.Fatalf("produce to a missing topic: %v, want ErrUnknownTopic", err)
	}
}

func testConcurrentProducers(t *testing.T, l log.Log) {
	name := topicName(t)
	mustCreate(t, l, name, 3)
	const goroutines, per = 16, 50
	var wg sync.WaitGroup
	errc := make(chan error, goroutines)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < per; i++ {
				r := &log.Record{Topic: name, Key: []byte(fmt.Sprintf("g%d", g)), Value: []byte(fmt.Sprintf("%d", i))}
				if err := l.ProduceSync(ctxT(t), r); err != nil {
					errc <- err
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	total := 0
	for p := int32(0); p < 3; p++ {
		next := map[string]int{}
		for i, r := range fetchAll(t, l, name, p, 0) {
			if r.Offset != int64(i) {
				t.Fatalf("partition %d: record %d has offset %d (offsets must be dense)", p, i, r.Offset)
			}
			var v int
			fmt.Sscanf(string(r.Value), "%d", &v)
			if v != next[string(r.Key)] {
				t.Fatalf("producer %s: got %d, want %d (per-producer order)", r.Key, v, next[string(r.Key)])
			}
			next[string(r.Key)]++
			total++
		}
	}
	if total != goroutines*per {
		t.Fatalf("found %d records, want %d", total, goroutines*per)
	}
}

func testOffsetForTime(t *testing.T, l log.Log) {
	name := topicName(t)
	mustCreate(t, l, name, 1)
	base := time.UnixMilli(1_700_000_000_000)
	var rs []*log.Record
	for i := 0; i < 200; i++ {
		rs = append(rs, &log.Record{Topic: name, Value: []byte("v"), Timestamp: base.Add(time.Duration(i) * time.Second)})
	}
	if err := l.ProduceSync(ctxT(t), rs...); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	cases := []struct {
		at   time.Time
		want int64
	}{
		{base.Add(-time.Hour), 0},
		{base, 0},
		{base.Add(500 * time.Millisecond), 1},
		{base.Add(100 * time.Second), 100},
		{base.Add(199 * time.Second), 199},
		{base.Add(200 * time.Second), 200},
	}
	for _, c := range cases {
		got, err := l.OffsetForTime(ctx, name, 0, c.at)
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("OffsetForTime(base+%v) = %d, want %d", c.at.Sub(base), got, c.want)
		}
	}
	if _, err := l.OffsetForTime(ctx, name+"-missing", 0, base); !errors.Is(err, log.ErrUnknownTopic) {
		t.Fatalf("OffsetForTime on a missing topic: %v", err)
	}
}

func testCommitOffsets(t *testing.T, l log.Log) {
	ctx := ctxT(t)
	name := topicName(t)
	mustCreate(t, l, name, 2)
	produce(t, l, name, 0, "a", "b", "c")
	group := "g-" + name
	if _, ok, err := l.CommittedOffset(ctx, group, name, 0); err != nil || ok {
		t.Fatalf("CommittedOffset before commit: ok=%v err=%v, want none", ok, err)
	}
	if err := l.CommitOffset(ctx, group, name, 0, 2); err != nil {
		t.Fatal(err)
	}
	if err := l.CommitOffset(ctx, group, name, 1, 0); err != nil {
		t.Fatal(err)
	}
	if err := l.CommitOffset(ctx, group+"-other", name, 0, 1); err != nil {
		t.Fatal(err)
	}
	if err := l.CommitOffset(ctx, group, name, 0, 3); err != nil {
		t.Fatal(err)
	}
	if o, ok, err := l.CommittedOffset(ctx, group, name, 0); err != nil || !ok || o != 3 {
		t.Fatalf("CommittedOffset = %d %v %v, want 3", o, ok, err)
	}
	gs, err := l.Groups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := map[string][]log.TopicPartitionOffset{}
	for _, g := range gs {
		for _, o := range g.Offsets {
			if o.Topic == name {
				found[g.Group] = append(found[g.Group], o)
			}
		}
	}
	want := map[string][]log.TopicPartitionOffset{
		group:            {{Topic: name, Partition: 0, Offset: 3}, {Topic: name, Partition: 1, Offset: 0}},
		group + "-other": {{Topic: name, Partition: 0, Offset: 1}},
	}
	if fmt.Sprint(found) != fmt.Sprint(want) {
		t.Fatalf("Groups = %v, want %v", found, want)
	}
	if err := l.CommitOffset(ctx, group, name+"-missing", 0, 1); !errors.Is(err, log.ErrUnknownTopic) {
		t.Fatalf("commit to a missing topic: %v, want ErrUnknownTopic", err)
	}
}

func testDeleteRecordsBefore(t *testing.T, l log.Log) {
	ctx := ctxT(t)
	name := topicName(t)
	mustCreate(t, l, name, 1)
	var vals []string
	for i := 0; i < 50; i++ {
		vals = append(vals, fmt.Sprint(i))
	}
	produce(t, l, name, 0, vals...)
	if err := l.DeleteRecordsBefore(ctx, name, 0, 20); err != nil {
		t.Fatal(err)
	}
	info, _ := l.Topic(ctx, name)
	if info.Partitions[0].Start != 20 || info.Partitions[0].End != 50 {
		t.Fatalf("after DeleteRecordsBefore(20): start %d end %d, want 20 50", info.Partitions[0].Start, info.Partitions[0].End)
	}
	if _, err := l.Fetch(ctx, name, 0, 19, log.FetchOptions{}); !errors.Is(err, log.ErrOffsetOutOfRange) {
		t.Fatalf("fetch below start: %v, want ErrOffsetOutOfRange", err)
	}
	got := fetchAll(t, l, name, 0, 20)
	if len(got) != 30 || got[0].Offset != 20 || string(got[0].Value) != "20" {
		t.Fatalf("fetch from start: %d records", len(got))
	}
	if o, err := l.OffsetForTime(ctx, name, 0, time.UnixMilli(0)); err != nil || o != 20 {
		t.Fatalf("OffsetForTime(epoch) after delete = %d %v, want 20", o, err)
	}
	// Moving backwards is a no-op; past the end is an error.
	if err := l.DeleteRecordsBefore(ctx, name, 0, 5); err != nil {
		t.Fatal(err)
	}
	if info, _ := l.Topic(ctx, name); info.Partitions[0].Start != 20 {
		t.Fatalf("start moved back to %d", info.Partitions[0].Start)
	}
	if err := l.DeleteRecordsBefore(ctx, name, 0, 51); !errors.Is(err, log.ErrOffsetOutOfRange) {
		t.Fatalf("DeleteRecordsBefore past end: %v, want ErrOffsetOutOfRange", err)
	}
	produce(t, l, name, 0, "next")
	if got := fetchAll(t, l, name, 0, 50); len(got) != 1 || got[0].Offset != 50 {
		t.Fatalf("append after delete: %+v", got)
	}
	if err := l.DeleteRecordsBefore(ctx, name, 0, 51); err != nil {
		t.Fatalf("DeleteRecordsBefore(end): %v", err)
	}
	if rs, err := l.Fetch(ctx, name, 0, 51, log.FetchOptions{}); err != nil || len(rs) != 0 {
		t.Fatalf("fetch at end of emptied partition: %d, %v", len(rs), err)
	}
}

func testUnknownTopic(t *testing.T, l log.Log) {
	ctx := ctxT(t)
	name := topicName(t)
	if _, err := l.Topic(ctx, name); !errors.Is(err, log.ErrUnknownTopic) {
		t.Fatalf("Topic: %v", err)
	}
	if _, err := l.Fetch(ctx, name, 0, 0, log.FetchOptions{}); !errors.Is(err, log.ErrUnknownTopic) {
		t.Fatalf("Fetch: %v", err)
	}
	if err := l.ProduceSync(ctx, &log.Record{Topic: name}); !errors.Is(err, log.ErrUnknownTopic) {
		t.Fatalf("ProduceSync: %v", err)
	}
	if err := l.DeleteRecordsBefore(ctx, name, 0, 0); !errors.Is(err, log.ErrUnknownTopic) {
		t.Fatalf("DeleteRecordsBefore: %v", err)
	}
	if _, _, err := l.CommittedOffset(ctx, "g", name, 0); !errors.Is(err, log.ErrUnknownTopic) {
		t.Fatalf("CommittedOffset: %v", err)
	}
}

func testClose(t *testing.T, l log.Log) {
	ctx := ctxT(t)
	name := topicName(t)
	mustCreate(t, l, name, 1)
	produce(t, l, name, 0, "a")
	errc := make(chan error, 1)
	go func() {
		_, err := l.Fetch(ctx, name, 0, 1, log.FetchOptions{Wait: true})
		errc <- err
	}()
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-errc; err == nil {
		t.Fatal("Fetch with Wait returned nil error after Close, want an error")
	}
	if err := l.ProduceSync(ctx, &log.Record{Topic: name}); err == nil {
		t.Fatal("ProduceSync after Close succeeded")
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// testConsumerAcrossPartitions runs log.Consumer on the backend: one waiting
// reader per partition, live records reach Poll from every partition, and a
// new consumer of the group resumes at the committed positions.
func testConsumerAcrossPartitions(t *testing.T, l log.Log) {
	name := topicName(t)
	const parts = 6
	mustCreate(t, l, name, parts)
	group := "g-" + name
	c, err := log.NewConsumer(l, group, name, log.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	poll := func(c *log.Consumer, n int) map[string]bool {
		t.Helper()
		got := map[string]bool{}
		ctx := ctxT(t)
		for len(got) < n {
			rs, err := c.Poll(ctx)
			if err != nil {
				t.Fatalf("Poll after %d of %d records: %v", len(got), n, err)
			}
			for _, r := range rs {
				if got[string(r.Value)] {
					t.Fatalf("record %q polled twice", r.Value)
				}
				got[string(r.Value)] = true
			}
		}
		return got
	}
	// The readers are waiting on empty partitions; each record wakes one.
	for round := 0; round < 3; round++ {
		for p := int32(0); p < parts; p++ {
			produce(t, l, name, p, fmt.Sprintf("r%d-p%d", round, p))
		}
		if got := poll(c, parts); len(got) != parts {
			t.Fatalf("round %d: polled %v", round, got)
		}
	}
	if err := c.Commit(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	for p := int32(0); p < parts; p++ {
		produce(t, l, name, p, fmt.Sprintf("after-p%d", p))
	}
	c2, err := log.NewConsumer(l, group, name, log.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	got := poll(c2, parts)
	for p := 0; p < parts; p++ {
		if !got[fmt.Sprintf("after-p%d", p)] {
			t.Fatalf("resumed consumer polled %v, want the %d records after the commit", got, parts)
		}
	}
}
