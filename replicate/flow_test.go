package replicate

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	mlog "github.com/millstream/millstream/log"
	"github.com/millstream/millstream/uns"
)

// TestPointsFlowFilters replicates uns.points through include patterns and
// deny rules, JSON and protobuf points mixed: only selected, not denied
// points arrive, and the flow's counters say why the rest stayed.
func TestPointsFlowFilters(t *testing.T) {
	c, _ := newRemote(t)
	l := openLocal(t, t.TempDir(), 2)
	defer l.Close()
	flow := Flow{Name: "points", Topics: []string{uns.PointsTopic}, Include: []string{"acme/p1/#"},
		Deny: []string{"acme/p1/+/recipe", "acme/p1/lab/#"}, RemoteTopic: "cloud.points"}
	var recs []*mlog.Record
	want := map[string][]string{}
	for i, path := range []string{"acme/p1/press1/temp", "acme/p1/press1/recipe", "acme/p1/lab/spectro/peak", "acme/p2/press1/temp", "acme/p1/press2/speed"} {
		r := pointRecord(t, path, i%2 == 1)
		recs = append(recs, r)
		if strings.HasSuffix(path, "temp") && strings.Contains(path, "p1") || strings.HasSuffix(path, "speed") {
			want[string(r.Key)] = append(want[string(r.Key)], string(r.Value))
		}
	}
	if err := l.CreateTopic(context.Background(), uns.PointsTopic, mlog.TopicConfig{Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	produceLocal(t, l, uns.PointsTopic, recs...)
	run := start(t, l, testOptions(c, flow))
	waitCaughtUp(t, run.r, 20*time.Second)
	m := run.r.m
	sent := counterValue(t, m.sentRecords.WithLabelValues("points"))
	den := counterValue(t, m.denied.WithLabelValues("points"))
	filt := counterValue(t, m.filtered.WithLabelValues("points"))
	run.stop(t)
	got := readRemote(t, c, "cloud.points")
	checkExactlyOnce(t, got, want, 2)
	for _, r := range got {
		p, err := uns.ParsePointRecord(&mlog.Record{Value: r.Value, Headers: headersOf(r.Headers)})
		if err != nil {
			t.Fatalf("remote point: %v", err)
		}
		if strings.Contains(p.Path, "recipe") || strings.Contains(p.Path, "lab") || strings.Contains(p.Path, "p2") {
			t.Errorf("point %s reached the remote", p.Path)
		}
	}
	if sent != 2 || den != 2 || filt != 1 {
		t.Errorf("sent %v, denied %v, filtered %v; want 2, 2, 1", sent, den, filt)
	}
}

// TestBacklogRetentionAlert: with the WAN down a backlog builds up; once its
// oldest record is older than 0.8 of the topic's retention age the ratio
// metric says so and a warning is logged.
func TestBacklogRetentionAlert(t *testing.T) {
	c, link := newRemote(t)
	link.Cut()
	l := openLocal(t, t.TempDir(), 1)
	defer l.Close()
	ctx := context.Background()
	if err := l.CreateTopic(ctx, "t", mlog.TopicConfig{Partitions: 1, RetentionAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	produceLocal(t, l, "t",
		&mlog.Record{Key: []byte("a"), Value: []byte("old"), Timestamp: now.Add(-50 * time.Minute)},
		&mlog.Record{Key: []byte("a"), Value: []byte("new"), Timestamp: now})
	var logs syncBuffer
	opts := testOptions(c, Flow{Name: "f", Topics: []string{"t"}})
	opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	run := start(t, l, opts)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "close to local retention") {
		if time.Now().After(deadline) {
			t.Fatalf("no retention warning within 10 s; log:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	ratio := counterValue(t, run.r.m.retentionRatio.WithLabelValues("f"))
	if ratio < 0.83 || ratio > 0.85 {
		t.Errorf("retention ratio %v, want about 50/60", ratio)
	}
	if n := counterValue(t, run.r.m.backlogRecords.WithLabelValues("f")); n != 2 {
		t.Errorf("backlog %v records, want 2", n)
	}
	if lag := counterValue(t, run.r.m.lagSeconds.WithLabelValues("f")); lag < 2990 || lag > 3100 {
		t.Errorf("lag %v s, want about 3000", lag)
	}
	if up := counterValue(t, run.r.m.wanUp); up != 0 {
		t.Errorf("wan_up %v with the link cut", up)
	}
	// The retention warning comes from the local backlog alone and can come
	// before the first dial through the cut link has failed.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st := run.r.Status()
		if st.WANUp {
			t.Fatalf("status %+v with the link cut", st)
		}
		if st.LastError != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %+v: no connection error within 10 s with the link cut", st)
		}
	}
	link.Restore()
	waitCaughtUp(t, run.r, 20*time.Second)
	if st := run.r.Status(); !st.WANUp {
		t.Errorf("status %+v after restore", st)
	}
	deadline = time.Now().Add(10 * time.Second)
	for counterValue(t, run.r.m.retentionRatio.WithLabelValues("f")) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("retention ratio not back to 0 after catching up")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRetriesLogQuietly keeps a flow failing (its remote is not there) and
// checks that the failures are counted and logged, but only the first as a
// warning: an outage of hours must not fill the log with one warning every
// RetryBackoff.
func TestRetriesLogQuietly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: every dial is refused
	l := openLocal(t, t.TempDir(), 1)
	defer l.Close()
	var logs syncBuffer
	opts := Options{
		Site:          "plant1",
		Remote:        Remote{Brokers: []string{addr}, DialTimeout: 200 * time.Millisecond, ClientOptions: fastClient()},
		Flows:         []Flow{{Name: "events", Topics: []string{"line.events"}, Include: []string{"#"}, RemoteTopic: "cloud.events"}},
		ProbeInterval: 50 * time.Millisecond,
		RetryBackoff:  20 * time.Millisecond,
		CloseTimeout:  100 * time.Millisecond,
		Logger:        slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	run := start(t, l, opts)
	count := func(level string) int {
		n := 0
		for line := range strings.SplitSeq(logs.String(), "\n") {
			if strings.Contains(line, "level="+level) && strings.Contains(line, `msg="replication session ended; retrying"`) {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(20 * time.Second)
	for count("DEBUG") < 5 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	run.stop(t)
	if n := count("DEBUG"); n < 5 {
		t.Fatalf("%d failed sessions logged at debug level in 20 s, want at least 5:\n%s", n, logs.String())
	}
	if n := count("WARN"); n != 1 {
		t.Errorf("%d warnings for one unchanged failure, want 1:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "failed_since_last_warning=") {
		t.Errorf("repeated failures do not say how many there were:\n%s", logs.String())
	}
}

func TestRetryLogWarnsAgain(t *testing.T) {
	var logs syncBuffer
	rl := retryLog{log: slog.New(slog.NewTextHandler(&logs, nil)), msg: "ended"}
	errA, errB := errors.New("refused"), errors.New("unknown topic")
	rl.failed(errA, 0, time.Second)        // first: warns
	rl.failed(errA, 0, time.Second)        // same error: quiet
	rl.failed(errB, 0, time.Second)        // another error: warns
	rl.failed(errB, retryRan, time.Second) // after a session that ran: warns
	rl.failed(errB, 0, time.Second)        // quiet
	rl.lastWarn = time.Now().Add(-retryRepeat)
	rl.failed(errB, 0, time.Second) // a reminder: warns, with the count
	if n := strings.Count(logs.String(), "level=WARN"); n != 4 {
		t.Errorf("%d warnings, want 4:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "failed_since_last_warning=1") {
		t.Errorf("the reminder does not count the quiet failures:\n%s", logs.String())
	}
}
