package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/millstream/millstream/log"
	"github.com/millstream/millstream/log/kafka"
	"github.com/millstream/millstream/uns"
)

func openKafka(t *testing.T, c *kfake.Cluster) *kafka.Log {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := kafka.Open(ctx, kafka.Options{
		Brokers:                c.ListenAddrs(),
		GroupHeartbeatInterval: 100 * time.Millisecond,
		GroupSessionTimeout:    6 * time.Second,
		GroupRebalanceTimeout:  5 * time.Second,
		CloseTimeout:           time.Second,
		Defaults:               log.TopicConfig{Partitions: 4, RetentionAge: -1, RetentionBytes: -1},
		Logger:                 slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func groupFactory(l *kafka.Log) uns.GroupConsumerFactory {
	return func(ctx context.Context, group string, topics []string, cb uns.GroupCallbacks) (uns.GroupConsumer, error) {
		gc, err := l.GroupConsumer(ctx, group, topics, kafka.GroupOptions{MaxPollRecords: 50, OnAssigned: cb.OnAssigned, OnRevoked: cb.OnRevoked, OnLost: cb.OnLost})
		if err != nil {
			return nil, err
		}
		return gc, nil
	}
}

// TestRollupGroupSplitsAndTakesOver: on Kafka (kfake), two nodes' rollup
// steps split the 4 partitions of uns.points; when one stops, the other
// takes its partitions over with their state, and every window is written
// exactly once.
func TestRollupGroupSplitsAndTakesOver(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	la, lb := openKafka(t, c), openKafka(t, c)
	if err := la.CreateTopic(context.Background(), uns.PointsTopic, log.TopicConfig{}); err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	const tags = 16
	var all []uns.Point
	put := func(fromMin, toMin int) {
		var pts []uns.Point
		for m := fromMin; m < toMin; m++ {
			for s := 0; s < 60; s += 10 {
				for k := range tags {
					pts = append(pts, uns.Point{Path: fmt.Sprintf("acme/l1/m%d/temp", k), Time: t0.Add(time.Duration(m)*time.Minute + time.Duration(s)*time.Second),
						Value: uns.FloatValue(float64(m*100 + s + k)), Quality: uns.Good})
				}
			}
		}
		writePoints(t, la, pts)
		all = append(all, pts...)
	}
	// The clock stays inside the data: only newer points close windows.
	began := time.Now()
	now := func() time.Time { return t0.Add(time.Since(began)) }
	start := func(l *kafka.Log) (*Rollup, func() error) {
		r, err := NewRollup(l, RollupOptions{Interval: time.Minute, Grace: time.Second, CheckpointInterval: 200 * time.Millisecond,
			Logger: quiet, Now: now, GroupConsumer: groupFactory(l)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- r.Run(ctx) }()
		return r, func() error { cancel(); return <-errc }
	}
	count := func() int { return len(readRollups(t, la, "uns.rollups.1m")) }
	waitFor := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); count() < n; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				have := map[string]bool{}
				for _, g := range readRollups(t, la, "uns.rollups.1m") {
					have[g.Path+"|"+g.Start.Format("15:04")] = true
				}
				var missing []string
				for m := 0; m < 5; m++ { // minutes 0 to 4
					for k := range tags {
						key := fmt.Sprintf("acme/l1/m%d/temp|%s", k, t0.Add(time.Duration(m)*time.Minute).Format("15:04"))
						if !have[key] {
							missing = append(missing, key)
						}
					}
				}
				t.Fatalf("%d of %d rollups; missing %v", count(), n, missing)
			}
		}
	}

	ra, stopA := start(la)
	rb, stopB := start(lb)
	time.Sleep(2 * time.Second) // both have joined and the group is balanced
	put(0, 3)
	waitFor(2 * tags) // minutes 0 and 1 closed by newer points
	// Both members got work.
	for deadline := time.Now().Add(20 * time.Second); ra.emitted.Load() == 0 || rb.emitted.Load() == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the partitions were not split: a wrote %d, b %d", ra.emitted.Load(), rb.emitted.Load())
		}
	}
	if err := stopA(); err != nil {
		t.Fatal(err)
	}
	put(3, 6) // minute 5 closes minutes 3 and 4; it stays open itself
	want := naive(all, time.Minute)
	for k, w := range want {
		if w.Start.Equal(t0.Add(5 * time.Minute)) {
			delete(want, k)
		}
	}
	waitFor(len(want))
	time.Sleep(300 * time.Millisecond)
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, g := range readRollups(t, la, "uns.rollups.1m") {
		k := g.Path + "|" + g.Start.Format(time.RFC3339)
		seen[k]++
		if w := want[k]; g.Count != w.Count || g.Sum != w.Sum {
			t.Errorf("rollup %s = %+v, want %+v", k, g, w)
		}
	}
	for k := range want {
		if seen[k] != 1 {
			t.Errorf("window %s written %d times", k, seen[k])
		}
	}
}

// stopRaceSource is a group consumer whose second Poll returns records
// although the run's context has just ended, as a real consumer may when
// both are ready at once. Commit marks everything returned as processed.
type stopRaceSource struct {
	cb        uns.GroupCallbacks
	a, b      []log.Record
	stop      context.CancelFunc
	polls     int
	committed int64 // the position Commit claimed
	returned  int64
}

func (s *stopRaceSource) Poll(ctx context.Context) ([]log.Record, error) {
	s.polls++
	switch s.polls {
	case 1:
		s.cb.OnAssigned(ctx, map[string][]int32{uns.PointsTopic: {0}})
		s.returned = s.a[len(s.a)-1].Offset + 1
		return s.a, nil
	case 2:
		s.stop()
		s.returned = s.b[len(s.b)-1].Offset + 1
		return s.b, nil
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

func (s *stopRaceSource) Commit(context.Context) error { s.committed = s.returned; return nil }
func (s *stopRaceSource) Positions() map[string]map[int32]int64 {
	return map[string]map[int32]int64{uns.PointsTopic: {0: s.returned}}
}
func (s *stopRaceSource) Close() error { return nil }

// TestRollupStopFoldsInWhatItCommits: records a Poll returns as the run
// stops are counted by the final commit, so they must be in the final
// checkpoint too; otherwise the next owner of the partition (a Kafka group
// starts at the committed offset) never sees them.
func TestRollupStopFoldsInWhatItCommits(t *testing.T) {
	l := openLog(t)
	var recs []log.Record
	for i := range 20 {
		p := uns.Point{Path: "acme/l1/m1/temp", Time: t0.Add(time.Duration(i) * time.Second), Value: uns.FloatValue(float64(i)), Quality: uns.Good}
		recs = append(recs, log.Record{Topic: uns.PointsTopic, Partition: 0, Offset: int64(i), Key: []byte(p.Asset()), Value: uns.AppendPointJSON(nil, &p), Timestamp: p.Time,
			Headers: []log.Header{{Key: uns.HeaderContentType, Value: []byte("application/json")}}})
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src := &stopRaceSource{a: recs[:10], b: recs[10:], stop: cancel}
	r, err := NewRollup(l, RollupOptions{Interval: time.Minute, CheckpointInterval: time.Hour,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: func() time.Time { return t0 },
		GroupConsumer: func(_ context.Context, _ string, _ []string, cb uns.GroupCallbacks) (uns.GroupConsumer, error) {
			src.cb = cb
			return src, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if src.committed != 20 {
		t.Fatalf("the final commit claimed position %d, want 20 (both batches)", src.committed)
	}
	info, err := l.Topic(context.Background(), r.stateTopic())
	if err != nil {
		t.Fatal(err)
	}
	p := info.Partitions[0]
	if p.End == p.Start {
		t.Fatal("no checkpoint written at the stop")
	}
	last, err := l.Fetch(context.Background(), r.stateTopic(), 0, p.End-1, log.FetchOptions{MaxRecords: 1})
	if err != nil || len(last) == 0 {
		t.Fatalf("read the checkpoint: %v", err)
	}
	var cp checkpoint
	if err := json.Unmarshal(last[0].Value, &cp); err != nil {
		t.Fatal(err)
	}
	if cp.Position != src.committed {
		t.Fatalf("the final checkpoint is at position %d but the commit claimed %d: the records between were never folded in", cp.Position, src.committed)
	}
}
