package uns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/millstream/millstream/log"
	"github.com/millstream/millstream/log/kafka"
	"github.com/millstream/millstream/sparkplug"
	pb "github.com/millstream/millstream/sparkplug/sparkplugb"
)

// cutDialer lets a test cut every connection of one Kafka client, now and
// later: to the cluster, the groupMember has crashed.
type cutDialer struct {
	mu    sync.Mutex
	cut   bool
	conns []net.Conn
}

func (d *cutDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cut {
		return nil, errors.New("cut")
	}
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err == nil {
		d.conns = append(d.conns, c)
	}
	return c, err
}

func (d *cutDialer) cutAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cut = true
	for _, c := range d.conns {
		c.Close()
	}
}

func openKafka(t *testing.T, c *kfake.Cluster, extra ...kgo.Opt) *kafka.Log {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := kafka.Open(ctx, kafka.Options{
		Brokers:                c.ListenAddrs(),
		GroupHeartbeatInterval: 100 * time.Millisecond,
		GroupSessionTimeout:    6 * time.Second, // Kafka's (and kfake's) minimum
		GroupRebalanceTimeout:  5 * time.Second,
		CloseTimeout:           time.Second,
		Defaults:               log.TopicConfig{Partitions: 4, RetentionAge: -1, RetentionBytes: -1},
		Logger:                 slog.New(slog.NewTextHandler(io.Discard, nil)),
		ClientOptions:          extra,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// groupFactory is what node passes on the Kafka backend.
func groupFactory(l *kafka.Log, maxPoll int) GroupConsumerFactory {
	return func(ctx context.Context, group string, topics []string, cb GroupCallbacks) (GroupConsumer, error) {
		gc, err := l.GroupConsumer(ctx, group, topics, kafka.GroupOptions{
			MaxPollRecords: maxPoll, OnAssigned: cb.OnAssigned, OnRevoked: cb.OnRevoked, OnLost: cb.OnLost,
		})
		if err != nil {
			return nil, err
		}
		return gc, nil
	}
}

// plant publishes to a 4-partition ingress topic as the broker does: plain
// messages by topic, Sparkplug messages by edge node.
type plant struct {
	t     *testing.T
	l     log.Log
	seq   map[string]uint64
	count int // points the messages so far make
}

func (p *plant) put(topic string, partition int32, value []byte) {
	p.t.Helper()
	err := p.l.ProduceSync(context.Background(), &log.Record{Topic: "mqtt.ingress", Partition: partition, PartitionSet: true,
		Key: []byte(topic), Value: value, Timestamp: received})
	if err != nil {
		p.t.Fatal(err)
	}
}

func (p *plant) plain(i int) {
	topic := fmt.Sprintf("acme/p1/m%d", i%7)
	p.put(topic, log.PartitionForKey([]byte(topic), 4), fmt.Appendf(nil, `{"a": %d}`, i))
	p.count++
}

func (p *plant) spb(node, typ string, ms ...*pb.Payload_Metric) {
	p.t.Helper()
	pl := &pb.Payload{Timestamp: proto.Uint64(uint64(received.UnixMilli())), Metrics: ms}
	if typ != "NDEATH" {
		pl.Seq = proto.Uint64(p.seq[node] % 256)
		p.seq[node]++
	}
	b, err := sparkplug.Encode(pl)
	if err != nil {
		p.t.Fatal(err)
	}
	p.put("spBv1.0/plant/"+typ+"/"+node, SparkplugPartition("plant", node, 4), b)
}

func (p *plant) birth(node string) {
	p.seq[node] = 0
	p.spb(node, "NBIRTH",
		spbMetric(p.t, "bdSeq", 0, sparkplug.UInt64, sparkplug.UintValue(1)),
		spbMetric(p.t, "Temperature", 1, sparkplug.Double, sparkplug.FloatValue(20)))
	p.count += 2
}

// data is an NDATA by alias only: it resolves only with the node's birth.
func (p *plant) data(node string, v float64) {
	p.spb(node, "NDATA", spbMetric(p.t, "", 1, sparkplug.Double, sparkplug.FloatValue(v)))
	p.count++
}

func (p *plant) round(nodes []string, from, n int) {
	for i := from; i < from+n; i++ {
		p.plain(i)
		p.data(nodes[i%len(nodes)], float64(i))
	}
}

type groupMember struct {
	name   string
	n      *Normalizer
	cancel context.CancelFunc
	errc   chan error
}

func startGroupMember(t *testing.T, name string, l *kafka.Log, maxPoll int, beforeCommit func() error) *groupMember {
	t.Helper()
	n := NewNormalizer(l, NormalizerOptions{
		Logger:             slog.New(slog.NewTextHandler(io.Discard, nil)).With("member", name),
		Partitions:         4,
		CheckpointInterval: 200 * time.Millisecond,
		GroupConsumer:      groupFactory(l, maxPoll),
	})
	n.beforeCommit = beforeCommit
	ctx, cancel := context.WithCancel(context.Background())
	m := &groupMember{name: name, n: n, cancel: cancel, errc: make(chan error, 1)}
	go func() { m.errc <- n.Run(ctx) }()
	return m
}

func (m *groupMember) stop(t *testing.T) {
	t.Helper()
	m.cancel()
	select {
	case err := <-m.errc:
		if err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not stop", m.name)
	}
}

// pointSources counts uns.points records by source position.
func pointSources(t *testing.T, l log.Log) (map[string]int, int) {
	t.Helper()
	got, total := map[string]int{}, 0
	for _, r := range readAll(t, l, PointsTopic) {
		src, _ := r.HeaderValue(HeaderSource)
		got[string(src)]++
		total++
	}
	return got, total
}

func waitFor(t *testing.T, what string, cond func() bool, ms ...*groupMember) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		for _, m := range ms {
			select {
			case err := <-m.errc:
				t.Fatalf("%s stopped while waiting for %s: %v", m.name, what, err)
			default:
			}
		}
		if time.Now().After(deadline) {
			for _, m := range ms {
				t.Logf("%s: %d records, %d points, %d skipped, %d edge nodes", m.name, m.n.m.records.Load(), m.n.m.points.Load(), m.n.m.skipped.Load(), len(m.n.SparkplugNodes()))
			}
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestNormalizerGroupScaleOut is the scale-out check for the normaliser on
// Kafka (kfake): two members split a 4-partition ingress topic carrying
// plain and Sparkplug traffic; one stops cleanly and the other takes over;
// a third joins and crashes after writing a batch it did not commit; the
// survivor takes over again. Every point is in uns.points exactly once,
// and no edge node is asked to rebirth: each moved with its checkpoint.
func TestNormalizerGroupScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a Kafka session timeout")
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	l := openKafka(t, c)
	if err := l.CreateTopic(context.Background(), "mqtt.ingress", log.TopicConfig{Partitions: 4}); err != nil {
		t.Fatal(err)
	}
	pl := &plant{t: t, l: l, seq: map[string]uint64{}}
	nodes := []string{"e0", "e1", "e2", "e3", "e4", "e5", "e6", "e7"}
	parts := map[int32]bool{}
	for _, nd := range nodes {
		parts[SparkplugPartition("plant", nd, 4)] = true
		pl.birth(nd)
	}
	if len(parts) < 3 {
		t.Fatalf("edge nodes land on partitions %v only; the test needs them spread", parts)
	}
	pl.round(nodes, 0, 40)
	total := func() int { // uns.points is created by the first member
		info, err := l.Topic(context.Background(), PointsTopic)
		n := 0
		for _, p := range info.Partitions {
			n += int(p.End - p.Start)
		}
		if err != nil {
			return 0
		}
		return n
	}
	// allPoints is the condition of every wait below; a failed wait says
	// how far uns.points got.
	lastTotal := 0
	allPoints := func() bool { lastTotal = total(); return lastTotal >= pl.count }
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("uns.points held %d points at the last check, %d expected", lastTotal, pl.count)
		}
	})

	a := startGroupMember(t, "a", l, 10, nil)
	b := startGroupMember(t, "b", l, 10, nil)
	// Traffic keeps coming while b joins and the partitions are split.
	next := 40
	for deadline := time.Now().Add(30 * time.Second); a.n.m.records.Load() == 0 || b.n.m.records.Load() == 0; next += 5 {
		if time.Now().After(deadline) {
			t.Fatalf("the members did not split the work: a read %d records, b %d", a.n.m.records.Load(), b.n.m.records.Load())
		}
		pl.round(nodes, next, 5)
		time.Sleep(50 * time.Millisecond)
	}
	waitFor(t, "the points so far", allPoints, a, b)
	for _, x := range a.n.SparkplugNodes() {
		for _, y := range b.n.SparkplugNodes() {
			if x.EdgeNode == y.EdgeNode {
				t.Errorf("edge node %s is in the hosts of both members", x.EdgeNode)
			}
		}
	}
	if k := len(a.n.SparkplugNodes()) + len(b.n.SparkplugNodes()); k != len(nodes) {
		t.Errorf("the members know %d edge nodes together, want %d", k, len(nodes))
	}

	// a stops cleanly while records keep coming; b takes everything over.
	pl.round(nodes, next, 20)
	a.stop(t)
	pl.round(nodes, next+20, 40)
	waitFor(t, "b to take over", allPoints, b)
	if len(b.n.SparkplugNodes()) != len(nodes) {
		t.Errorf("b knows %d edge nodes after the takeover, want %d", len(b.n.SparkplugNodes()), len(nodes))
	}

	// A third groupMember joins with small batches and crashes (its network is
	// cut: no commit, no goodbye) after writing a batch it did not commit.
	cut := &cutDialer{}
	lc := openKafka(t, c, kgo.Dialer(cut.dial))
	var crashed sync.WaitGroup
	crashed.Add(1)
	batches := 0
	crash := errors.New("simulated crash")
	cm := startGroupMember(t, "c", lc, 3, func() error {
		if batches++; batches == 4 {
			cut.cutAll()
			crashed.Done()
			return crash
		}
		return nil
	})
	defer cm.cancel()
	// c gets partitions from b (a clean handover) and works on them.
	for i := next + 60; i < next+120; i += 10 {
		pl.round(nodes, i, 10)
		time.Sleep(50 * time.Millisecond)
	}
	done := make(chan struct{})
	go func() { crashed.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("c never crashed")
	}
	pl.round(nodes, next+120, 20)
	waitFor(t, "b to take over from the crashed groupMember", allPoints, b)
	time.Sleep(300 * time.Millisecond) // a duplicate would show up now
	b.stop(t)

	got, n := pointSources(t, l)
	if n != pl.count || len(got) != pl.count {
		t.Errorf("uns.points holds %d records with %d distinct sources, want %d", n, len(got), pl.count)
	}
	for src, k := range got {
		if k != 1 {
			t.Errorf("point %s written %d times", src, k)
		}
	}
	if cm.n.m.points.Load() == 0 || b.n.m.skipped.Load() == 0 {
		t.Errorf("c wrote %d points, b skipped %d: the crash left nothing to skip; the test proves less than it should",
			cm.n.m.points.Load(), b.n.m.skipped.Load())
	}
	for _, m := range []*groupMember{a, b, cm} {
		if r := m.n.m.rebirths.Load(); r != 0 {
			t.Errorf("%s asked for %d rebirths: an edge node moved without its state", m.name, r)
		}
	}
}
