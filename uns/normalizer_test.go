package uns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/millstream/millstream/log"
	"github.com/millstream/millstream/log/embedded"
)

func openLog(t *testing.T) *embedded.Log {
	t.Helper()
	l, err := embedded.Open(t.TempDir(), embedded.Options{
		Defaults: log.TopicConfig{Partitions: 2, RetentionAge: -1, RetentionBytes: -1},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func ingest(t *testing.T, l log.Log, topic, payload string) {
	t.Helper()
	err := l.ProduceSync(context.Background(), &log.Record{Topic: "mqtt.ingress", Key: []byte(topic), Value: []byte(payload), Timestamp: received})
	if err != nil {
		t.Fatal(err)
	}
}

// readAll returns every record of a topic, all partitions.
func readAll(t *testing.T, l log.Log, topic string) []log.Record {
	t.Helper()
	info, err := l.Topic(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	var out []log.Record
	for _, p := range info.Partitions {
		for off := p.Start; off < p.End; {
			recs, err := l.Fetch(context.Background(), topic, p.Partition, off, log.FetchOptions{})
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, recs...)
			off = recs[len(recs)-1].Offset + 1
		}
	}
	return out
}

// runUntil runs n until uns.points holds want records, then stops it.
func runUntil(t *testing.T, l log.Log, n *Normalizer, want int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- n.Run(ctx) }()
	deadline := time.After(20 * time.Second)
	for {
		info, err := l.Topic(context.Background(), PointsTopic)
		if err == nil {
			got := 0
			for _, p := range info.Partitions {
				got += int(p.End - p.Start)
			}
			if got >= want {
				break
			}
		}
		select {
		case err := <-errc:
			t.Fatalf("normaliser stopped early: %v", err)
		case <-deadline:
			t.Fatalf("uns.points did not reach %d records", want)
		case <-time.After(5 * time.Millisecond):
		}
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestNormalizerWritesPointsAndDeadLetters(t *testing.T) {
	l := openLog(t)
	if err := l.CreateTopic(context.Background(), "mqtt.ingress", log.TopicConfig{}); err != nil {
		t.Fatal(err)
	}
	ingest(t, l, "acme/p1/press7/temp", "21.5")
	ingest(t, l, "acme/p1/press7", `{"count": 42, "state": "RUN"}`)
	ingest(t, l, "acme/p1/press7/bad", `{"value": [1, 2]}`)
	ingest(t, l, "spBv1.0/plant/NDATA/node1", "\x08\x01")

	tree := NewTree()
	n := NewNormalizer(l, NormalizerOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Tree: tree})
	runUntil(t, l, n, 3)
	if v, ok := tree.Browse("acme/p1/press7"); !ok || len(v.Children) != 3 {
		t.Errorf("namespace tree at acme/p1/press7: %+v", v)
	}
	// A new normaliser (a restart) loads the tree from uns.points.
	tree2 := NewTree()
	n2 := NewNormalizer(l, NormalizerOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Tree: tree2, TreeWindow: 100 * 365 * 24 * time.Hour}) // points carry a fixed 2026 time
	runUntil(t, l, n2, 3)
	if tree2.Len() != 3 {
		t.Errorf("tree loaded at start has %d tags, want 3", tree2.Len())
	}

	got := map[string]Point{}
	for _, r := range readAll(t, l, PointsTopic) {
		p, err := ParsePointJSON(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		if string(r.Key) != p.Asset() {
			t.Errorf("record key %q, want the asset %q", r.Key, p.Asset())
		}
		got[p.Path] = p
	}
	if v, _ := got["acme/p1/press7/temp"].Value.Float(); v != 21.5 {
		t.Errorf("temp = %v", got["acme/p1/press7/temp"].Value)
	}
	if v, _ := got["acme/p1/press7/count"].Value.Int(); v != 42 {
		t.Errorf("count = %v", got["acme/p1/press7/count"].Value)
	}
	if s, _ := got["acme/p1/press7/state"].Value.Str(); s != "RUN" {
		t.Errorf("state = %v", got["acme/p1/press7/state"].Value)
	}
	if len(got) != 3 {
		t.Errorf("%d points: %v", len(got), got)
	}
	dl := readAll(t, l, DeadLetterTopic)
	if len(dl) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dl))
	}
	reason, _ := dl[0].HeaderValue(HeaderReason)
	origin, _ := dl[0].HeaderValue(HeaderOrigin)
	if string(dl[0].Value) != `{"value": [1, 2]}` || !strings.Contains(string(reason), "array") || string(origin) != "mqtt.ingress/0/2" && !strings.HasPrefix(string(origin), "mqtt.ingress/") {
		t.Errorf("dead letter %q reason %q origin %q", dl[0].Value, reason, origin)
	}
	if v := n.m.sparkplug.Load(); v != 1 {
		t.Errorf("sparkplug records counted %d, want 1", v)
	}
}

// TestNormalizerRestartAfterUncommittedBatch stops the normaliser after a
// batch is durable in uns.points but before it is committed, as a crash
// would, and checks that the restarted normaliser writes every point exactly
// once.
func TestNormalizerRestartAfterUncommittedBatch(t *testing.T) {
	l := openLog(t)
	if err := l.CreateTopic(context.Background(), "mqtt.ingress", log.TopicConfig{}); err != nil {
		t.Fatal(err)
	}
	const msgs = 50
	for i := 0; i < msgs; i++ {
		ingest(t, l, fmt.Sprintf("acme/p1/m%d", i%5), fmt.Sprintf(`{"a": %d, "b": %d}`, i, -i))
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	crash := errors.New("simulated crash before commit")
	n1 := NewNormalizer(l, NormalizerOptions{Logger: quiet})
	n1.beforeCommit = func() error { return crash }
	if err := n1.Run(context.Background()); !errors.Is(err, crash) {
		t.Fatalf("first run: %v", err)
	}
	written := len(readAll(t, l, PointsTopic))
	if written == 0 {
		t.Fatal("the interrupted batch wrote nothing; the test proves nothing")
	}

	for i := msgs; i < msgs+10; i++ {
		ingest(t, l, fmt.Sprintf("acme/p1/m%d", i%5), fmt.Sprintf(`{"a": %d, "b": %d}`, i, -i))
	}
	// The second run stops again before committing its second batch.
	n2 := NewNormalizer(l, NormalizerOptions{Logger: quiet})
	calls := 0
	n2.beforeCommit = func() error {
		if calls++; calls == 2 {
			return crash
		}
		return nil
	}
	// It may also catch up in one batch and never reach a second commit:
	// then stop it once everything is written.
	ctx2, cancel2 := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- n2.Run(ctx2) }()
	for stopped := false; !stopped; {
		select {
		case err := <-errc:
			if err != nil && !errors.Is(err, crash) {
				t.Fatalf("second run: %v", err)
			}
			stopped = true
		case <-time.After(5 * time.Millisecond):
			if len(readAll(t, l, PointsTopic)) >= 2*(msgs+10) {
				cancel2()
			}
		}
	}
	cancel2()
	n3 := NewNormalizer(l, NormalizerOptions{Logger: quiet})
	runUntil(t, l, n3, 2*(msgs+10))
	if n2.m.skipped.Load() == 0 {
		t.Errorf("the restart skipped nothing although the interrupted batch wrote %d points", written)
	}

	seen := map[string]int{}
	for _, r := range readAll(t, l, PointsTopic) {
		src, _ := r.HeaderValue(HeaderSource)
		seen[string(src)]++
	}
	if len(seen) != 2*(msgs+10) {
		t.Errorf("%d distinct points, want %d", len(seen), 2*(msgs+10))
	}
	for src, k := range seen {
		if k != 1 {
			t.Errorf("point %s written %d times", src, k)
		}
	}
}

// TestNormalizerBatchWait checks that under a steady trickle the normaliser
// gathers what arrives within BatchWait into one batch, and that the first
// message after a quiet spell is read at once.
func TestNormalizerBatchWait(t *testing.T) {
	l := openLog(t)
	if err := l.CreateTopic(context.Background(), "mqtt.ingress", log.TopicConfig{}); err != nil {
		t.Fatal(err)
	}
	n := NewNormalizer(l, NormalizerOptions{BatchWait: 2 * time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- n.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}()
	points := func() int {
		info, err := l.Topic(context.Background(), PointsTopic)
		if err != nil {
			return 0
		}
		return int(info.Partitions[0].End)
	}
	ingest(t, l, "acme/p1/m0", `{"a": 0}`)
	start := time.Now()
	for points() < 1 {
		if time.Since(start) > 10*time.Second {
			t.Fatal("the first message was not normalised")
		}
		time.Sleep(5 * time.Millisecond)
	}
	first := time.Since(start)
	for i := 1; i <= 20; i++ {
		ingest(t, l, "acme/p1/m0", fmt.Sprintf(`{"a": %d}`, i))
		time.Sleep(5 * time.Millisecond)
	}
	for points() < 21 {
		if time.Since(start) > 20*time.Second {
			t.Fatalf("%d of 21 points after 20 s", points())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The 20 trickled messages came within BatchWait of the first read:
	// a few more batches, not twenty. (The consumer prefetches up to two
	// fetches and holds a third while Poll waits; those come in the batch
	// after the wait, everything else in the one after.)
	if b := n.m.batches.Load(); b > 4 {
		t.Fatalf("%d batches for a trickle of 20 messages within batch_wait, want at most 4", b)
	}
	if first > time.Second {
		t.Fatalf("the first message after a quiet spell took %v: it waited for batch_wait", first)
	}
}

// TestNormalizerBatchWaitNotWhenBehind: with a backlog, full reads follow
// each other without BatchWait pauses.
func TestNormalizerBatchWaitNotWhenBehind(t *testing.T) {
	l := openLog(t)
	if err := l.CreateTopic(context.Background(), "mqtt.ingress", log.TopicConfig{}); err != nil {
		t.Fatal(err)
	}
	// Larger than one fetch (1 MiB), so it takes several reads.
	const backlog = 10000
	pad := strings.Repeat("x", 200)
	var recs []*log.Record
	for i := range backlog {
		recs = append(recs, &log.Record{Topic: "mqtt.ingress", Key: []byte("acme/p1/m0"), Value: []byte(fmt.Sprintf(`{"a": %d, "note": "%s"}`, i, pad)), Timestamp: received})
	}
	if err := l.ProduceSync(context.Background(), recs...); err != nil {
		t.Fatal(err)
	}
	n := NewNormalizer(l, NormalizerOptions{BatchWait: time.Hour, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	runUntil(t, l, n, 2*backlog) // a number and a string point each
	// No pause while a full read is waiting. Once less than that is left
	// there may be one before the read of the rest, and there is one after
	// it. Pausing during the backlog would make about ten.
	if w := n.m.waits.Load(); w > 2 {
		t.Fatalf("%d batch_wait pauses while working off a backlog of %d records", w, backlog)
	}
}
