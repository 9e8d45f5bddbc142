package uns

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/millstream/millstream/log"
	"github.com/millstream/millstream/sparkplug"
	pb "github.com/millstream/millstream/sparkplug/sparkplugb"
)

type published struct {
	mu   sync.Mutex
	msgs []struct {
		topic   string
		payload *pb.Payload
	}
}

func (p *published) publish(topic string, payload []byte, retain bool, qos byte) error {
	pl, err := sparkplug.Decode(payload)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.msgs = append(p.msgs, struct {
		topic   string
		payload *pb.Payload
	}{topic, pl})
	return nil
}

func (p *published) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.msgs)
}

// bornNormalizer returns a normaliser whose host has seen the NBIRTH of
// acme/press7 (Count Int32, Speed Double) and the DBIRTH of its device mold1
// (Mode String).
func bornNormalizer(t *testing.T, l log.Log) *Normalizer {
	t.Helper()
	// One partition: the broker keeps an edge node's messages in one
	// partition (broker.IngressPartitionKey); this test appends directly.
	if err := l.CreateTopic(context.Background(), "mqtt.ingress", log.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	ingestSpb(t, l, "spBv1.0/acme/NBIRTH/press7", 0,
		spbMetric(t, "bdSeq", 0, sparkplug.UInt64, sparkplug.UintValue(1)),
		spbMetric(t, "Count", 1, sparkplug.Int32, sparkplug.IntValue(7)),
		spbMetric(t, "Speed", 2, sparkplug.Double, sparkplug.FloatValue(1.5)))
	ingestSpb(t, l, "spBv1.0/acme/DBIRTH/press7/mold1", 1,
		spbMetric(t, "Mode", 3, sparkplug.String, sparkplug.StringValue("AUTO")))
	n := NewNormalizer(l, NormalizerOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	runUntil(t, l, n, 4)
	return n
}

func runCommander(t *testing.T, c *Commander) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	return func() {
		cancel()
		if err := <-errc; err != nil {
			t.Fatalf("commander: %v", err)
		}
	}
}

func audits(t *testing.T, l log.Log) []AuditRecord {
	t.Helper()
	var out []AuditRecord
	for _, r := range readAll(t, l, AuditTopic) {
		var a AuditRecord
		if err := json.Unmarshal(r.Value, &a); err != nil {
			t.Fatalf("audit record %s: %v", r.Value, err)
		}
		out = append(out, a)
	}
	return out
}

func TestCommanderSendsTypedCommandsWithAudit(t *testing.T) {
	l := openLog(t)
	n := bornNormalizer(t, l)
	pub := &published{}
	now := time.Now()
	c, err := NewCommander(l, n, CommanderOptions{Allow: []string{"acme/+/+", "acme/+/mold1/#"}, Publish: pub.publish, MaxAge: time.Minute,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	stop := runCommander(t, c)
	defer stop()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cases := []struct {
		path, value, status, reason string
	}{
		{"acme/press7/Count", "42", CommandSent, ""},
		{"acme/press7/Speed", "3", CommandSent, ""},
		{"acme/press7/mold1/Mode", `"MANUAL"`, CommandSent, ""},
		{"acme/press7/Count", `"many"`, CommandRejected, "Int32"},
		{"acme/press7/Nope", "1", CommandRejected, "no such metric"},
		{"acme/press9/Count", "1", CommandRejected, "not been born"},
		{"other/press7/Count", "1", CommandRejected, "not allowed"},
	}
	for i, cs := range cases {
		req, err := NewCommandRequest("", cs.path, json.RawMessage(cs.value), "tester")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Submit(ctx, req); err != nil {
			t.Fatal(err)
		}
		a, ok := c.Await(ctx, req.ID, "")
		if !ok {
			t.Fatalf("case %d: no audit result", i)
		}
		if a.Status != cs.status || !strings.Contains(a.Reason, cs.reason) || a.Path != cs.path || a.RequestedBy != "tester" || string(a.Value) != cs.value {
			t.Errorf("case %d %s=%s: audit %+v, want status %s reason ~%q", i, cs.path, cs.value, a, cs.status, cs.reason)
		}
	}
	if pub.len() != 3 {
		t.Fatalf("%d commands published, want 3", pub.len())
	}
	want := []struct {
		topic, metric string
		dt            sparkplug.DataType
		check         func(*pb.Payload_Metric) bool
	}{
		{"spBv1.0/acme/NCMD/press7", "Count", sparkplug.Int32, func(m *pb.Payload_Metric) bool { return m.GetIntValue() == 42 }},
		{"spBv1.0/acme/NCMD/press7", "Speed", sparkplug.Double, func(m *pb.Payload_Metric) bool { return m.GetDoubleValue() == 3 }},
		{"spBv1.0/acme/DCMD/press7/mold1", "Mode", sparkplug.String, func(m *pb.Payload_Metric) bool { return m.GetStringValue() == "MANUAL" }},
	}
	for i, w := range want {
		got := pub.msgs[i]
		m := got.payload.Metrics[0]
		if got.topic != w.topic || m.GetName() != w.metric || m.GetDatatype() != uint32(w.dt) || !w.check(m) {
			t.Errorf("command %d: %s %v, want %s %s %s", i, got.topic, m, w.topic, w.metric, w.dt)
		}
	}
	if got := len(audits(t, l)); got != len(cases) {
		t.Errorf("%d audit records, want %d", got, len(cases))
	}
}

func TestCommanderRefusesOldAndDisallowedCommands(t *testing.T) {
	l := openLog(t)
	n := bornNormalizer(t, l)
	pub := &published{}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	// With no allow list nothing is sent.
	c, err := NewCommander(l, n, CommanderOptions{Publish: pub.publish, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stop := runCommander(t, c)
	req, _ := NewCommandRequest("r1", "acme/press7/Count", json.RawMessage("1"), "")
	if _, err := c.Submit(ctx, req); err != nil {
		t.Fatal(err)
	}
	if a, ok := c.Await(ctx, "r1", ""); !ok || a.Status != CommandRejected || !strings.Contains(a.Reason, "commands.allow") {
		t.Errorf("default allow list: %+v", a)
	}
	// Resubmitted with the same id: awaited by its record, the answer is
	// the new request's, not the earlier one's.
	rec, err := c.Submit(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if a, ok := c.Await(ctx, "r1", CommandRef(rec)); !ok || a.Command != CommandRef(rec) {
		t.Errorf("resubmitted r1: got the outcome of %s, want that of %s", a.Command, CommandRef(rec))
	}
	stop()

	// A request written while nobody consumed, read two minutes later, expires.
	req, _ = NewCommandRequest("r2", "acme/press7/Count", json.RawMessage("2"), "")
	if _, err := c.Submit(ctx, req); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(2 * time.Minute)
	c2, _ := NewCommander(l, n, CommanderOptions{Allow: []string{"#"}, Publish: pub.publish, Logger: quiet, Now: func() time.Time { return later }})
	stop = runCommander(t, c2)
	defer stop()
	if a, ok := c2.Await(ctx, "r2", ""); !ok || a.Status != CommandExpired || !strings.Contains(a.Reason, "commands.max_age") {
		t.Errorf("old request: %+v", a)
	}
	if pub.len() != 0 {
		t.Errorf("%d commands published", pub.len())
	}
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	if _, ok := c2.Await(short, "r1", ""); ok {
		t.Error("r1 was handled again after the restart")
	}
	if _, err := NewCommandRequest("", "acme/press7/Count", json.RawMessage("null"), ""); err == nil {
		t.Error("null value accepted")
	}
	if _, err := NewCommandRequest("", "acme//Count", json.RawMessage("1"), ""); err == nil {
		t.Error("bad path accepted")
	}
}

// TestCommanderNeverSendsTwice: a request whose audit record is durable but
// whose offset was not committed (a crash between the two) is not sent again.
func TestCommanderNeverSendsTwice(t *testing.T) {
	l := openLog(t)
	n := bornNormalizer(t, l)
	pub := &published{}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := NewCommander(l, n, CommanderOptions{Allow: []string{"#"}, Publish: pub.publish, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stop := runCommander(t, c)
	req, _ := NewCommandRequest("a", "acme/press7/Count", json.RawMessage("5"), "")
	if _, err := c.Submit(ctx, req); err != nil {
		t.Fatal(err)
	}
	if a, ok := c.Await(ctx, "a", ""); !ok || a.Status != CommandSent {
		t.Fatalf("first command: %+v", a)
	}
	stop()
	if pub.len() != 1 {
		t.Fatalf("%d published", pub.len())
	}
	// Rewind the commander's offsets and its audit bookmark as if it had
	// crashed after writing the audit record, before committing.
	for topic, parts := range map[string]int32{CommandsTopic: 1, AuditTopic: 2} {
		for p := range parts {
			if err := l.CommitOffset(ctx, CommanderGroup, topic, p, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	c2, _ := NewCommander(l, n, CommanderOptions{Allow: []string{"#"}, Publish: pub.publish, Logger: quiet})
	stop = runCommander(t, c2)
	defer stop()
	req, _ = NewCommandRequest("b", "acme/press7/Count", json.RawMessage("6"), "")
	if _, err := c2.Submit(ctx, req); err != nil {
		t.Fatal(err)
	}
	if a, ok := c2.Await(ctx, "b", ""); !ok || a.Status != CommandSent {
		t.Fatalf("second command: %+v", a)
	}
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	if _, ok := c2.Await(short, "a", ""); ok {
		t.Error("command a handled again")
	}
	if pub.len() != 2 || pub.msgs[1].payload.Metrics[0].GetIntValue() != 6 {
		t.Errorf("published %d commands, want 2 (a once, then b)", pub.len())
	}
}
