package replicate

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	mlog "github.com/millstream/millstream/log"
	"github.com/millstream/millstream/uns"
)

// waitLocal waits until topic holds n records and returns them.
func waitLocal(t *testing.T, l mlog.Log, topic string, n int) []mlog.Record {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var out []mlog.Record
		info, err := l.Topic(ctx, topic)
		if err == nil {
			for _, p := range info.Partitions {
				recs, err := l.Fetch(ctx, topic, p.Partition, p.Start, mlog.FetchOptions{MaxBytes: 1 << 20})
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, recs...)
			}
		}
		if len(out) >= n {
			if len(out) > n {
				t.Fatalf("%s holds %d records, want %d", topic, len(out), n)
			}
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %d records after 15 s, want %d", topic, len(out), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func remoteCommand(t *testing.T, cl *kgo.Client, id, path string, value any) {
	t.Helper()
	v, _ := json.Marshal(value)
	b, err := json.Marshal(uns.CommandRequest{ID: id, Path: path, Value: v})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "commands", Key: []byte(path), Value: b}).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// audit writes the audit record the Commander would write for the request
// record r.
func audit(t *testing.T, l mlog.Log, r mlog.Record, status string) {
	t.Helper()
	var req uns.CommandRequest
	if err := json.Unmarshal(r.Value, &req); err != nil {
		t.Fatal(err)
	}
	a := uns.AuditRecord{ID: req.ID, Path: req.Path, Value: req.Value, RequestedBy: req.RequestedBy, RequestedAt: r.Timestamp,
		HandledAt: time.Now(), Status: status, Command: fmt.Sprintf("%s/%d/%d", r.Topic, r.Partition, r.Offset)}
	v, _ := json.Marshal(a)
	produceLocal(t, l, uns.AuditTopic, &mlog.Record{Key: []byte(req.Path), Value: v})
}

// TestCommandsRoundTrip: a command on the remote commands topic reaches
// the local commands topic once (a duplicate and another site's command do
// not), its audit record goes back to the remote results topic, a local
// command's audit record does not, and a restart neither routes nor
// forwards anything again.
func TestCommandsRoundTrip(t *testing.T) {
	c, _ := newRemote(t, kfake.SeedTopics(1, "commands"))
	l := openLocal(t, t.TempDir(), 1)
	defer l.Close()
	opts := testOptions(c)
	opts.Commands = Commands{Enabled: true, Paths: []string{"acme/p1/#"}}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	remoteCommand(t, cl, "c1", "acme/p1/press7/setpoint", 42)
	remoteCommand(t, cl, "c2", "acme/p2/press1/setpoint", 1)  // another site's
	remoteCommand(t, cl, "c1", "acme/p1/press7/setpoint", 42) // sent twice by the cloud

	run := start(t, l, opts)
	recs := waitLocal(t, l, uns.CommandsTopic, 1)
	r := recs[0]
	var req uns.CommandRequest
	if err := json.Unmarshal(r.Value, &req); err != nil {
		t.Fatal(err)
	}
	if req.ID != "c1" || req.Path != "acme/p1/press7/setpoint" || string(req.Value) != "42" || req.RequestedBy != "cloud" || string(r.Key) != req.Path {
		t.Errorf("local command %+v key %s", req, r.Key)
	}
	if o, ok := r.HeaderValue(HeaderOrigin); !ok || string(o) != "commands/0/0" {
		t.Errorf("%s header %q", HeaderOrigin, o)
	}

	// A local command (from the HTTP API) and its audit record: not the
	// cloud's business.
	produceLocal(t, l, uns.CommandsTopic, &mlog.Record{Key: []byte("acme/p1/press7/speed"),
		Value: []byte(`{"id":"local1","path":"acme/p1/press7/speed","value":1}`)})
	local := waitLocal(t, l, uns.CommandsTopic, 2)
	audit(t, l, local[1], uns.CommandRejected)
	audit(t, l, r, uns.CommandSent)

	results := readRemoteN(t, c, "commands.results", 1)
	var a uns.AuditRecord
	if err := json.Unmarshal(results[0].Value, &a); err != nil {
		t.Fatal(err)
	}
	if a.ID != "c1" || a.Status != uns.CommandSent || string(results[0].Key) != "acme/p1/press7/setpoint" {
		t.Errorf("result %+v", a)
	}
	run.stop(t)

	// Restart, and the cloud sends c1 yet again plus a new c3.
	remoteCommand(t, cl, "c1", "acme/p1/press7/setpoint", 42)
	remoteCommand(t, cl, "c3", "acme/p1/press7/setpoint", 43)
	run = start(t, l, opts)
	recs = waitLocal(t, l, uns.CommandsTopic, 3)
	if err := json.Unmarshal(recs[2].Value, &req); err != nil || req.ID != "c3" {
		t.Errorf("third local command %s, want c3", recs[2].Value)
	}
	audit(t, l, recs[2], uns.CommandExpired)
	results = readRemoteN(t, c, "commands.results", 2)
	if err := json.Unmarshal(results[1].Value, &a); err != nil || a.ID != "c3" || a.Status != uns.CommandExpired {
		t.Errorf("second result %s", results[1].Value)
	}
	time.Sleep(200 * time.Millisecond) // room for a wrong extra record
	run.stop(t)
	waitLocal(t, l, uns.CommandsTopic, 3)
	readRemoteN(t, c, "commands.results", 2)
	if n := counterValue(t, run.r.m.cmdSkipped.WithLabelValues("duplicate")); n != 1 {
		t.Errorf("duplicates skipped after restart %v, want 1", n)
	}
}

// readRemoteN waits until topic holds n records, and fails on more.
func readRemoteN(t *testing.T, c interface{ ListenAddrs() []string }, topic string, n int) []*kgo.Record {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics(topic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		if err != nil {
			t.Fatal(err)
		}
		var out []*kgo.Record
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		for ctx.Err() == nil {
			cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { out = append(out, r) })
		}
		cancel()
		cl.Close()
		if len(out) > n {
			t.Fatalf("remote %s holds %d records, want %d", topic, len(out), n)
		}
		if len(out) == n {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("remote %s holds %d records after 15 s, want %d", topic, len(out), n)
		}
	}
}
