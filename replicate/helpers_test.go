package replicate

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	mlog "github.com/millstream/millstream/log"
	"github.com/millstream/millstream/log/embedded"
)

// wanLink is a TCP proxy on 127.0.0.1 standing for the WAN: Cut drops every
// connection and refuses new ones (the listener is closed, so connecting
// gets "connection refused"), Restore listens again on the same address.
type wanLink struct {
	t      testing.TB
	addr   string
	target string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	down  bool
	cuts  int
}

func newWANLink(t testing.TB, target string) *wanLink {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &wanLink{t: t, addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	go w.serve(ln)
	return w
}

func (w *wanLink) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if !w.track(c) {
			c.Close()
			continue
		}
		go w.pipe(c)
	}
}

func (w *wanLink) track(c net.Conn) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.down {
		return false
	}
	w.conns[c] = struct{}{}
	return true
}

func (w *wanLink) untrack(c net.Conn) {
	w.mu.Lock()
	delete(w.conns, c)
	w.mu.Unlock()
	c.Close()
}

func (w *wanLink) pipe(c net.Conn) {
	defer w.untrack(c)
	d, err := net.DialTimeout("tcp", w.target, time.Second)
	if err != nil {
		return
	}
	if !w.track(d) {
		d.Close()
		return
	}
	defer w.untrack(d)
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(d, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, d); done <- struct{}{} }()
	<-done
}

// Cut drops all connections and refuses new ones.
func (w *wanLink) Cut() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.down {
		return
	}
	w.down = true
	w.cuts++
	w.ln.Close()
	for c := range w.conns {
		c.Close()
	}
}

// Restore accepts connections again.
func (w *wanLink) Restore() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.down {
		return
	}
	var ln net.Listener
	var err error
	for i := 0; i < 100; i++ { // the port may linger for a moment
		if ln, err = net.Listen("tcp", w.addr); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		w.t.Errorf("restore WAN link on %s: %v", w.addr, err)
		return
	}
	w.ln, w.down = ln, false
	go w.serve(ln)
}

func (w *wanLink) Close() {
	w.Cut()
}

// advertised makes kfake advertise the proxy's address in its metadata, so
// every client, after the seed, still goes through the WAN link.
type advertised struct {
	net.Listener
	addr net.Addr
}

func (a advertised) Addr() net.Addr { return a.addr }

// newRemote starts a kfake cluster (one broker) behind a WAN link.
func newRemote(t testing.TB, opts ...kfake.Opt) (*kfake.Cluster, *wanLink) {
	var link *wanLink
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.ListenFn(func(network, addr string) (net.Listener, error) {
		ln, err := net.Listen(network, addr)
		if err != nil {
			return nil, err
		}
		link = newWANLink(t, ln.Addr().String())
		return advertised{Listener: ln, addr: link.ln.Addr()}, nil
	})}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		link.Close()
		c.Close()
	})
	return c, link
}

func openLocal(t testing.TB, dir string, partitions int32) *embedded.Log {
	l, err := embedded.Open(dir, embedded.Options{Defaults: mlog.TopicConfig{Partitions: partitions}})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// testOptions are fast-reacting options for tests.
func testOptions(c *kfake.Cluster, flows ...Flow) Options {
	return Options{
		Site:           "plant1",
		Remote:         Remote{Brokers: c.ListenAddrs(), CreateTopics: true, DialTimeout: time.Second, ClientOptions: fastClient()},
		Flows:          flows,
		CommitInterval: 50 * time.Millisecond,
		StatsInterval:  100 * time.Millisecond,
		ProbeInterval:  50 * time.Millisecond,
		RetryBackoff:   100 * time.Millisecond,
		CloseTimeout:   300 * time.Millisecond,
	}
}

func fastClient() []kgo.Opt {
	return []kgo.Opt{
		kgo.RetryBackoffFn(func(int) time.Duration { return 50 * time.Millisecond }),
		kgo.MetadataMinAge(50 * time.Millisecond),
		kgo.RequestTimeoutOverhead(time.Second),
	}
}

// running is a Replicator running in the background.
type running struct {
	r      *Replicator
	cancel context.CancelFunc
	done   chan error
}

func start(t testing.TB, l mlog.Log, opts Options) *running {
	t.Helper()
	r, err := New(l, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	run := &running{r: r, cancel: cancel, done: make(chan error, 1)}
	go func() { run.done <- r.Run(ctx) }()
	t.Cleanup(func() { run.stop(t) })
	return run
}

func (run *running) stop(t testing.TB) {
	t.Helper()
	if run.cancel == nil {
		return
	}
	run.cancel()
	run.cancel = nil
	select {
	case err := <-run.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return within 20 s of its context ending")
	}
}

// waitCaughtUp waits until every flow's checkpoint reached the end of its
// topics.
func waitCaughtUp(t testing.TB, r *Replicator, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		bl, err := r.Backlog(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		for _, b := range bl {
			n += b.Records
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("backlog still %d records after %s (%+v)", n, within, bl)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readRemote reads every record of topic from the remote, in partition
// order.
func readRemote(t testing.TB, c *kfake.Cluster, topic string, extra ...kgo.Opt) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	ends.Each(func(o kadm.ListedOffset) { want += int(o.Offset) })
	var out []*kgo.Record
	for len(out) < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read remote %s: got %d of %d records", topic, len(out), want)
		}
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	return out
}

func produceLocal(t testing.TB, l mlog.Log, topic string, recs ...*mlog.Record) {
	t.Helper()
	for _, r := range recs {
		r.Topic = topic
	}
	if err := l.ProduceSync(context.Background(), recs...); err != nil {
		t.Fatal(err)
	}
}

func srcOf(t testing.TB, r *kgo.Record) string {
	for _, h := range r.Headers {
		if h.Key == HeaderSource {
			return string(h.Value)
		}
	}
	t.Errorf("remote record %s/%d/%d has no %s header", r.Topic, r.Partition, r.Offset, HeaderSource)
	return fmt.Sprint(r.Offset)
}

func headersOf(hs []kgo.RecordHeader) []mlog.Header {
	out := make([]mlog.Header, 0, len(hs))
	for _, h := range hs {
		out = append(out, mlog.Header{Key: h.Key, Value: h.Value})
	}
	return out
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelError}))
}
