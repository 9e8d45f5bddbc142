package kafka

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	mlog "github.com/millstream/millstream/log"
)

// The partitioner must agree with log.PartitionForKey (so a key lands on the
// same partition on both backends) and with franz-go's and Java's default
// murmur2 key partitioner, so other Kafka clients producing the same keys
// keep per-key order with Millstream.
func TestPartitionerMatchesKafkaDefault(t *testing.T) {
	kafkaDefault := kgo.StickyKeyPartitioner(nil).ForTopic("t")
	ours := partitioner{}.ForTopic("t")
	for _, n := range []int{1, 2, 3, 4, 7, 16, 100} {
		for i := 0; i < 2000; i++ {
			key := []byte(fmt.Sprintf("enterprise/site%d/area/line/cell/asset-%d/tag", i%5, i))
			if i%3 == 0 {
				key = key[:i%len(key)+1]
			}
			got := ours.Partition(&kgo.Record{Key: key, Partition: -1}, n)
			if want := kafkaDefault.Partition(&kgo.Record{Key: key}, n); got != want {
				t.Fatalf("key %q among %d: ours %d, franz-go's murmur2 %d", key, n, got, want)
			}
			if want := int(mlog.PartitionForKey(key, int32(n))); got != want {
				t.Fatalf("key %q among %d: ours %d, log.PartitionForKey %d", key, n, got, want)
			}
		}
	}
	// An empty key is partition 0, as log.PartitionForKey says (Kafka
	// would spread unkeyed records; Millstream keeps them in one order).
	if p := ours.Partition(&kgo.Record{Key: nil, Partition: -1}, 8); p != 0 {
		t.Fatalf("empty key went to %d", p)
	}
	if p := ours.Partition(&kgo.Record{Partition: 5}, 8); p != 5 {
		t.Fatalf("set partition 5 went to %d", p)
	}
}

func TestOpenErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	cases := []struct {
		opts Options
		want string
	}{
		{Options{}, "no brokers"},
		{Options{Brokers: []string{"kafka-1"}}, "want host:port"},
		{Options{Brokers: []string{"127.0.0.1:9"}, TLS: TLSOptions{CAFile: "ca.pem"}}, "TLS is not enabled"},
		{Options{Brokers: []string{"127.0.0.1:9"}, TLS: TLSOptions{Enabled: true, CAFile: "/nonexistent/ca.pem"}}, "TLS CA file"},
		{Options{Brokers: []string{"127.0.0.1:9"}, TLS: TLSOptions{Enabled: true, CertFile: "c.pem"}}, "both cert_file and key_file"},
		{Options{Brokers: []string{"127.0.0.1:9"}, SASL: SASLOptions{Mechanism: "GSSAPI", User: "u"}}, "SASL mechanism \"GSSAPI\" unknown"},
		{Options{Brokers: []string{"127.0.0.1:9"}, SASL: SASLOptions{Mechanism: SASLPlain}}, "needs a user"},
		{Options{Brokers: []string{"127.0.0.1:9"}, ReplicationFactor: -2}, "negative"},
		// Nothing listens on the discard port: the error names the brokers.
		{Options{Brokers: []string{"127.0.0.1:9"}}, "no broker of [127.0.0.1:9] answered"},
	}
	for _, c := range cases {
		l, err := Open(ctx, c.opts)
		if err == nil {
			l.Close()
			t.Fatalf("Open(%+v) succeeded", c.opts)
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open(%+v) = %v, want it to say %q", c.opts, err, c.want)
		}
	}
}

func TestSASL(t *testing.T) {
	for _, mech := range []string{SASLPlain, SASLScramSHA256, SASLScramSHA512} {
		t.Run(mech, func(t *testing.T) {
			c := newCluster(t, 1, kfake.EnableSASL(), kfake.Superuser(mech, "mill", "stream"))
			opts := testOptions(c)
			opts.SASL = SASLOptions{Mechanism: strings.ToLower(mech), User: "mill", Password: "stream"}
			l := open(t, opts)
			if err := l.CreateTopic(ctxT(t), "t", mlog.TopicConfig{}); err != nil {
				t.Fatal(err)
			}
			if err := l.ProduceSync(ctxT(t), &mlog.Record{Topic: "t", Value: []byte("v")}); err != nil {
				t.Fatal(err)
			}
			opts.SASL.Password = "wrong"
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			if l, err := Open(ctx, opts); err == nil {
				l.Close()
				t.Fatal("Open with a wrong password succeeded")
			}
		})
	}
}

func TestErrorsMapToLogErrors(t *testing.T) {
	c := newCluster(t, 2)
	l := open(t, testOptions(c))
	ctx := ctxT(t)
	if err := l.CreateTopic(ctx, "small", mlog.TopicConfig{Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	err := l.ProduceSync(ctx, &mlog.Record{Topic: "small", Partition: 2, PartitionSet: true})
	if !errors.Is(err, mlog.ErrUnknownPartition) || !strings.Contains(err.Error(), "topic has 2 partitions") {
		t.Fatalf("produce to partition 2 of 2: %v, want ErrUnknownPartition naming the count", err)
	}
	err = l.ProduceSync(ctx, &mlog.Record{Topic: "small", Partition: -1, PartitionSet: true})
	if !errors.Is(err, mlog.ErrUnknownPartition) {
		t.Fatalf("produce to partition -1: %v", err)
	}
	err = l.ProduceSync(ctx, &mlog.Record{Topic: "small", Value: make([]byte, 2<<20)})
	if !errors.Is(err, mlog.ErrRecordTooLarge) {
		t.Fatalf("2 MiB record: %v, want ErrRecordTooLarge", err)
	}
	if _, err := l.Fetch(ctx, "small", 2, 0, mlog.FetchOptions{}); !errors.Is(err, mlog.ErrUnknownPartition) {
		t.Fatalf("fetch partition 2 of 2: %v", err)
	}
	if err := l.CommitOffset(ctx, "g", "small", 7, 0); !errors.Is(err, mlog.ErrUnknownPartition) {
		t.Fatalf("commit partition 7: %v", err)
	}
	if err := l.CreateTopic(ctx, "small", mlog.TopicConfig{}); !errors.Is(err, mlog.ErrTopicExists) {
		t.Fatalf("create existing: %v", err)
	}
	opts := testOptions(c)
	opts.ReplicationFactor = 5
	l5 := open(t, opts)
	if err := l5.CreateTopic(ctx, "rf5", mlog.TopicConfig{}); err == nil || !strings.Contains(err.Error(), "replication_factor") {
		t.Fatalf("replication factor 5 on 2 brokers: %v, want advice to lower it", err)
	}
}

func TestTopicConfigRoundTrip(t *testing.T) {
	c := newCluster(t, 1)
	opts := testOptions(c)
	opts.Defaults = mlog.TopicConfig{Partitions: 3, RetentionAge: 48 * time.Hour}
	l := open(t, opts)
	ctx := ctxT(t)
	if err := l.CreateTopic(ctx, "defaults", mlog.TopicConfig{}); err != nil {
		t.Fatal(err)
	}
	if err := l.CreateTopic(ctx, "forever", mlog.TopicConfig{Partitions: 2, RetentionAge: -1, RetentionBytes: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	info, err := l.Topic(ctx, "defaults")
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Partitions != 3 || info.Config.RetentionAge != 48*time.Hour || len(info.Partitions) != 3 {
		t.Fatalf("defaults topic = %+v", info)
	}
	info, err = l.Topic(ctx, "forever")
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Partitions != 2 || info.Config.RetentionAge != -1 || info.Config.RetentionBytes != 1<<30 {
		t.Fatalf("forever topic = %+v", info.Config)
	}
}

// A partition's leader moving to another broker must not break Fetch (plain
// or waiting): the stale leader answers NOT_LEADER and the log follows.
func TestFetchFollowsLeaderMove(t *testing.T) {
	c := newCluster(t, 3)
	l := open(t, testOptions(c))
	ctx := ctxT(t)
	if err := l.CreateTopic(ctx, "moving", mlog.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	if err := l.ProduceSync(ctx, &mlog.Record{Topic: "moving", Value: []byte("a")}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Fetch(ctx, "moving", 0, 0, mlog.FetchOptions{}); err != nil {
		t.Fatal(err)
	}
	old := c.LeaderFor("moving", 0)
	if err := c.MoveTopicPartition("moving", 0, (old+1)%3); err != nil {
		t.Fatal(err)
	}
	rs, err := l.Fetch(ctx, "moving", 0, 0, mlog.FetchOptions{})
	if err != nil || len(rs) != 1 || string(rs[0].Value) != "a" {
		t.Fatalf("fetch after leader move: %v %v", rs, err)
	}
	done := make(chan error, 1)
	go func() {
		rs, err := l.Fetch(ctx, "moving", 0, 1, mlog.FetchOptions{Wait: true})
		if err == nil && (len(rs) != 1 || string(rs[0].Value) != "b") {
			err = fmt.Errorf("got %v", rs)
		}
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := c.MoveTopicPartition("moving", 0, old); err != nil {
		t.Fatal(err)
	}
	if err := l.ProduceSync(ctx, &mlog.Record{Topic: "moving", Value: []byte("b")}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("waiting fetch across a leader move: %v", err)
	}
}

// Many partitions waiting at once share one long poll per broker; every
// one is woken by its own record, and a non-waiting fetch is not held up.
func TestManyWaitingFetches(t *testing.T) {
	c := newCluster(t, 2)
	opts := testOptions(c)
	opts.FetchWait = 2 * time.Second // a stuck waiter would show as a timeout
	l := open(t, opts)
	ctx := ctxT(t)
	const parts = 24
	if err := l.CreateTopic(ctx, "wide", mlog.TopicConfig{Partitions: parts}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errc := make(chan error, parts)
	for p := int32(0); p < parts; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rs, err := l.Fetch(ctx, "wide", p, 0, mlog.FetchOptions{Wait: true})
			if err == nil && (len(rs) != 1 || string(rs[0].Value) != fmt.Sprint(p)) {
				err = fmt.Errorf("partition %d got %v", p, rs)
			}
			errc <- err
		}()
	}
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	if rs, err := l.Fetch(ctx, "wide", 0, 0, mlog.FetchOptions{}); err != nil || len(rs) != 0 {
		t.Fatalf("immediate fetch beside waiters: %v %v", rs, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("immediate fetch took %v behind the long polls", d)
	}
	for p := int32(0); p < parts; p++ {
		if err := l.ProduceSync(ctx, &mlog.Record{Topic: "wide", Partition: p, PartitionSet: true, Value: []byte(fmt.Sprint(p))}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// Produce blocks while MaxBufferedRecords are unacknowledged; a cancelled
// context gets the promise called with its error, and Close fails what
// Kafka never acknowledged with ErrClosed instead of dropping it.
func TestBackpressureAndClose(t *testing.T) {
	c := newCluster(t, 1, kfake.SeedTopics(1, "stuck"))
	opts := testOptions(c)
	opts.MaxBufferedRecords = 2
	opts.CloseTimeout = 300 * time.Millisecond
	l := open(t, opts)
	// From now on the broker holds produce requests until release.
	release := make(chan struct{})
	defer close(release)
	c.ControlKey(0, func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		c.SleepControl(func() { <-release })
		return nil, nil, false
	})
	results := make(chan error, 3)
	for i := 0; i < 2; i++ {
		l.Produce(ctxT(t), &mlog.Record{Topic: "stuck", Value: []byte("v")}, func(_ *mlog.Record, err error) { results <- err })
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	l.Produce(ctx, &mlog.Record{Topic: "stuck", Value: []byte("v")}, func(_ *mlog.Record, err error) { results <- err })
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("third Produce returned after %v; want it blocked until its context ended", d)
	}
	if err := <-results; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("blocked Produce: %v, want context.DeadlineExceeded", err)
	}
	if err := l.Close(); err == nil {
		t.Fatal("Close with unacknowledged records returned nil")
	}
	for i := 0; i < 2; i++ {
		select {
		case err := <-results:
			if !errors.Is(err, mlog.ErrClosed) {
				t.Fatalf("unacknowledged record after Close: %v, want ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("promise of an unacknowledged record never called")
		}
	}
}

func TestMetrics(t *testing.T) {
	c := newCluster(t, 1, kfake.SeedTopics(2, "m"))
	l := open(t, testOptions(c))
	reg := prometheus.NewRegistry()
	if err := l.Register(reg); err != nil {
		t.Fatal(err)
	}
	if err := l.ProduceSync(ctxT(t), &mlog.Record{Topic: "m", Key: []byte("k"), Value: []byte("12345")}, &mlog.Record{Topic: "m", Value: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				got[mf.GetName()] += m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				got[mf.GetName()] += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	want := map[string]float64{
		"millstream_log_appended_records_total":         2,
		"millstream_log_appended_bytes_total":           7,
		"millstream_log_kafka_produce_duration_seconds": 2,
	}
	for name, v := range want {
		if got[name] != v {
			t.Errorf("%s = %v, want %v", name, got[name], v)
		}
	}
}
