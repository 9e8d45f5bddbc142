package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/crypto/bcrypt"

	"github.com/millstream/millstream/config"
	"github.com/millstream/millstream/log"
	"github.com/millstream/millstream/log/embedded"
)

// testTimeout bounds every wait on a real peer; it is a hang guard, never a
// timing assertion.
const testTimeout = 20 * time.Second

// syncBuffer collects log output for assertions.
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

// testLog is the real embedded log, closed at the end of the test (after the
// broker, whose cleanup was registered later) unless the test closed it.
type testLog struct {
	*embedded.Log
	once sync.Once
	err  error
}

func (l *testLog) Close() error {
	l.once.Do(func() { l.err = l.Log.Close() })
	return l.err
}

func openLog(t testing.TB, dir string) *testLog {
	t.Helper()
	el, err := embedded.Open(dir, embedded.Options{
		Fsync:         "group",
		FsyncInterval: time.Millisecond,
		Defaults:      log.TopicConfig{Partitions: 1, RetentionAge: -1, RetentionBytes: -1},
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("open log: %v", err)
	}
	l := &testLog{Log: el}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// testConfig is the default MQTT config with every listener on port 0.
func testConfig() config.MQTT {
	cfg := config.Default().MQTT
	cfg.Listeners = []config.Listener{
		{Name: "tcp", Type: "tcp", Address: "127.0.0.1:0"},
		{Name: "ws", Type: "websocket", Address: "127.0.0.1:0"},
	}
	return cfg
}

type testBroker struct {
	*Broker
	logs *syncBuffer
	reg  *prometheus.Registry
}

func startBroker(t testing.TB, cfg config.MQTT, l log.Log, opts Options) *testBroker {
	t.Helper()
	buf := &syncBuffer{}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	b, err := New(cfg, l, opts)
	if err != nil {
		t.Fatalf("broker.New: %v", err)
	}
	reg := prometheus.NewRegistry()
	if err := b.Register(reg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatalf("broker.Start: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return &testBroker{Broker: b, logs: buf, reg: reg}
}

func (b *testBroker) addr(name string) string { return b.Addrs()[name].String() }

func (b *testBroker) port(name string) string {
	_, p, _ := net.SplitHostPort(b.addr(name))
	return p
}

// metric returns the value of a metric with the given labels (nil: none).
func (b *testBroker) metric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := b.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			return metricValue(m)
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return 0
}

// waitMetric waits until a metric reaches want: some counters are updated
// just after the packet they count was written, so a peer may see the packet
// first.
func (b *testBroker) waitMetric(t *testing.T, name string, labels map[string]string, want float64) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		got := b.metric(t, name, labels)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s%v = %v, want %v", name, labels, got, want)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

// readTopic returns the records of a one-partition topic, waiting until at
// least n are there.
func readTopic(t *testing.T, l log.Log, topic string, n int) []log.Record {
	t.Helper()
	return readTopicPartition(t, l, topic, 0, n)
}

// readTopicPartition waits for the first n records of one partition.
func readTopicPartition(t *testing.T, l log.Log, topic string, partition int32, n int) []log.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var out []log.Record
	var off int64
	for len(out) < n {
		recs, err := l.Fetch(ctx, topic, partition, off, log.FetchOptions{Wait: true})
		if err != nil {
			t.Fatalf("fetch %s/%d at %d (have %d of %d records): %v", topic, partition, off, len(out), n, err)
		}
		for _, r := range recs {
			out = append(out, r)
			off = r.Offset + 1
		}
	}
	return out
}

// topicEnd is the end offset of partition 0.
func topicEnd(t *testing.T, l log.Log, topic string) int64 {
	t.Helper()
	info, err := l.Topic(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	return info.Partitions[0].End
}

func header(r log.Record, k string) string {
	v, ok := r.HeaderValue(k)
	if !ok {
		return "<absent>"
	}
	return string(v)
}

func pahoClient(t *testing.T, url, id string, configure func(*paho.ClientOptions)) (paho.Client, error) {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetAutoReconnect(false).
		SetConnectRetry(false).SetConnectTimeout(testTimeout).SetWriteTimeout(testTimeout)
	if configure != nil {
		configure(o)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(testTimeout) {
		return nil, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}

func mustPaho(t *testing.T, url, id string, configure func(*paho.ClientOptions)) paho.Client {
	t.Helper()
	c, err := pahoClient(t, url, id, configure)
	if err != nil {
		t.Fatalf("paho connect %s as %s: %v", url, id, err)
	}
	return c
}

func publish(t *testing.T, c paho.Client, topic string, qos byte, retain bool, payload string) error {
	t.Helper()
	tok := c.Publish(topic, qos, retain, payload)
	if !tok.WaitTimeout(testTimeout) {
		return errors.New("publish timed out")
	}
	return tok.Error()
}

// needTool skips (or under CI=true fails) when a peer program is missing.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (CI=true: install mosquitto-clients)", name)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

func runTool(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, needTool(t, name), args...).CombinedOutput()
	return string(out), err
}

func TestPublishLandsInLogWithHeaders(t *testing.T) {
	l := openLog(t, t.TempDir())
	b := startBroker(t, testConfig(), l, Options{})

	c := mustPaho(t, "tcp://"+b.addr("tcp"), "dev-1", nil)
	for qos := byte(0); qos <= 2; qos++ {
		if err := publish(t, c, fmt.Sprintf("plant/line1/q%d", qos), qos, qos == 1, fmt.Sprintf("payload-%d", qos)); err != nil {
			t.Fatalf("publish QoS %d: %v", qos, err)
		}
	}
	// MQTT 5 with content type and user properties, by a real client.
	out, err := runTool(t, "mosquitto_pub", "-h", "127.0.0.1", "-p", b.port("tcp"), "-V", "mqttv5", "-q", "1",
		"-i", "dev-5", "-t", "plant/line1/v5", "-m", `{"t":21.5}`,
		"-D", "publish", "content-type", "application/json",
		"-D", "publish", "user-property", "site", "north",
		"-D", "publish", "user-property", "site", "south")
	if err != nil {
		t.Fatalf("mosquitto_pub: %v: %s", err, out)
	}

	recs := readTopic(t, l, "mqtt.ingress", 4)
	if len(recs) != 4 {
		t.Fatalf("got %d records, want 4", len(recs))
	}
	for qos := 0; qos <= 2; qos++ {
		r := recs[qos]
		if string(r.Key) != fmt.Sprintf("plant/line1/q%d", qos) || string(r.Value) != fmt.Sprintf("payload-%d", qos) {
			t.Errorf("record %d: key %q value %q", qos, r.Key, r.Value)
		}
		if got := header(r, HeaderQoS); got != fmt.Sprint(qos) {
			t.Errorf("record %d: %s = %s", qos, HeaderQoS, got)
		}
		if got, want := header(r, HeaderRetain), fmt.Sprint(qos == 1); got != want {
			t.Errorf("record %d: %s = %s, want %s", qos, HeaderRetain, got, want)
		}
		if got := header(r, HeaderClientID); got != "dev-1" {
			t.Errorf("record %d: %s = %s", qos, HeaderClientID, got)
		}
		ts, err := time.Parse(time.RFC3339Nano, header(r, HeaderReceivedAt))
		if err != nil || ts.IsZero() || r.Timestamp.IsZero() {
			t.Errorf("record %d: bad receive time %q (%v), timestamp %v", qos, header(r, HeaderReceivedAt), err, r.Timestamp)
		}
		if got := header(r, HeaderContentType); got != "<absent>" {
			t.Errorf("record %d: v3.1.1 record has content type %q", qos, got)
		}
	}
	r := recs[3]
	if string(r.Value) != `{"t":21.5}` || header(r, HeaderClientID) != "dev-5" || header(r, HeaderContentType) != "application/json" {
		t.Errorf("v5 record: value %q headers %+v", r.Value, r.Headers)
	}
	var sites []string
	for _, h := range r.Headers {
		if h.Key == HeaderUserPropertyPrefix+"site" {
			sites = append(sites, string(h.Value))
		}
	}
	if strings.Join(sites, ",") != "north,south" {
		t.Errorf("user properties: got %v, want [north south]", sites)
	}

	if got := b.metric(t, "millstream_mqtt_messages_received_total", map[string]string{"listener": "tcp"}); got != 4 {
		t.Errorf("messages_received_total{tcp} = %v, want 4", got)
	}
	if got := b.metric(t, "millstream_mqtt_received_bytes_total", map[string]string{"listener": "tcp"}); got <= 0 {
		t.Errorf("received_bytes_total{tcp} = %v", got)
	}
	if got := b.metric(t, "millstream_mqtt_publishes_appended_total", nil); got < 3 {
		t.Errorf("publishes_appended_total = %v", got)
	}
	if got := b.metric(t, "millstream_mqtt_connections", map[string]string{"listener": "tcp"}); got < 1 {
		t.Errorf("connections{tcp} = %v, want at least the paho client", got)
	}
}

// copyDir copies a directory as it is on disk at this moment: what a crash
// right now would leave behind.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if info.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestQoS1AckedOnlyWhenDurable copies the log's files the moment each PUBACK
// arrives, without closing anything, and opens the copy: the acknowledged
// message must be in it.
func TestQoS1AckedOnlyWhenDurable(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir)
	b := startBroker(t, testConfig(), l, Options{})
	c := mustPaho(t, "tcp://"+b.addr("tcp"), "durable", nil)

	for i := range 3 {
		payload := fmt.Sprintf("m-%d", i)
		if err := publish(t, c, "plant/durable", 1, false, payload); err != nil {
			t.Fatal(err)
		}
		snap := filepath.Join(t.TempDir(), "copy")
		copyDir(t, dir, snap)
		l2 := openLog(t, snap)
		recs := readTopic(t, l2, "mqtt.ingress", i+1)
		if got := string(recs[i].Value); got != payload {
			t.Errorf("after PUBACK %d the reopened copy has %q at offset %d", i, got, i)
		}
		l2.Close()
	}
}

// TestAppendWaitMetric checks that millstream_mqtt_append_wait_seconds
// measures from the moment the PUBLISH was read: the broker's wait is part
// of the client's round trip, so the metric's sum can never exceed the sum of
// the round trips the client measured. (It did when it was taken from the
// record timestamp, which the log keeps in whole milliseconds.) Its part
// after the flush, millstream_mqtt_ack_handoff_seconds, is counted for every
// message too, and is smaller.
func TestAppendWaitMetric(t *testing.T) {
	l := openLog(t, t.TempDir())
	b := startBroker(t, testConfig(), l, Options{})
	c := mustPaho(t, "tcp://"+b.addr("tcp"), "waits", nil)
	const n = 50
	var rtt time.Duration
	for i := range n {
		t0 := time.Now()
		if err := publish(t, c, "plant/waits", 1, false, fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
		rtt += time.Since(t0)
	}
	mfs, err := b.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sums := map[string]time.Duration{}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "millstream_mqtt_append_wait_seconds", "millstream_mqtt_ack_handoff_seconds":
		default:
			continue
		}
		h := mf.GetMetric()[0].GetHistogram()
		if h.GetSampleCount() != n {
			t.Fatalf("%s has %d samples, want %d", mf.GetName(), h.GetSampleCount(), n)
		}
		sums[mf.GetName()] = time.Duration(h.GetSampleSum() * float64(time.Second))
	}
	wait, handoff := sums["millstream_mqtt_append_wait_seconds"], sums["millstream_mqtt_ack_handoff_seconds"]
	if wait <= 0 || wait > rtt {
		t.Errorf("append wait sums to %v over %d messages, but the client's round trips took %v in all", wait, n, rtt)
	}
	// The hand-off is the part of each wait after the log's flush, which
	// every message waited for here (one in flight at a time).
	if handoff <= 0 || handoff >= wait {
		t.Errorf("ack hand-off sums to %v, want above 0 and below the append wait's %v", handoff, wait)
	}
}

func TestSessionAndRetainedSurviveRestart(t *testing.T) {
	needTool(t, "mosquitto_sub")
	dir := t.TempDir()
	cfg := testConfig()

	l := openLog(t, dir)
	b := startBroker(t, cfg, l, Options{})
	port := b.port("tcp")
	// A persistent session: subscribe, then go offline.
	for _, args := range [][]string{
		{"-V", "mqttv311", "-i", "sub-v3", "-c", "-q", "1", "-t", "plant/#", "-E"},
		{"-V", "mqttv5", "-i", "sub-v5", "-c", "-x", "3600", "-q", "1", "-t", "plant/#", "-E"},
	} {
		if out, err := runTool(t, "mosquitto_sub", append([]string{"-h", "127.0.0.1", "-p", port}, args...)...); err != nil {
			t.Fatalf("mosquitto_sub %v: %v: %s", args, err, out)
		}
	}
	pub := mustPaho(t, "tcp://"+b.addr("tcp"), "pub", nil)
	if err := publish(t, pub, "status/line1", 1, true, "running"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := publish(t, pub, fmt.Sprintf("plant/m%d", i), 1, false, fmt.Sprintf("queued-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	pub.Disconnect(0)
	if err := b.Close(); err != nil {
		t.Fatalf("broker close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l = openLog(t, dir)
	b = startBroker(t, cfg, l, Options{})
	port = b.port("tcp")
	for _, args := range [][]string{
		{"-V", "mqttv311", "-i", "sub-v3", "-c", "-q", "1", "-t", "plant/#"},
		{"-V", "mqttv5", "-i", "sub-v5", "-c", "-x", "3600", "-q", "1", "-t", "plant/#"},
	} {
		out, err := runTool(t, "mosquitto_sub", append([]string{"-h", "127.0.0.1", "-p", port, "-v", "-C", "3", "-W", "15"}, args...)...)
		if err != nil {
			t.Fatalf("mosquitto_sub %v after restart: %v: %s", args, err, out)
		}
		for i := range 3 {
			if want := fmt.Sprintf("plant/m%d queued-%d", i, i); !strings.Contains(out, want) {
				t.Errorf("session %s after restart: missing %q in:\n%s", args[2], want, out)
			}
		}
	}
	out, err := runTool(t, "mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-t", "status/line1", "-C", "1", "-W", "15", "-v")
	if err != nil || strings.TrimSpace(out) != "status/line1 running" {
		t.Fatalf("retained message after restart: %v: %q", err, out)
	}
	if got := b.metric(t, "millstream_mqtt_retained_messages", nil); got != 1 {
		t.Errorf("retained_messages = %v, want 1", got)
	}
	// A clean start discards the stored session.
	b.waitMetric(t, "millstream_mqtt_persistent_sessions", nil, 2)
	if out, err := runTool(t, "mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-i", "sub-v3", "-t", "x", "-E"); err != nil {
		t.Fatalf("clean reconnect: %v: %s", err, out)
	}
	b.waitMetric(t, "millstream_mqtt_persistent_sessions", nil, 1)
}

// TestSessionTakeoverKeepsState connects a second time with the client id
// of a live persistent session: the session moves to the new connection and
// stays stored, including across a restart.
func TestSessionTakeoverKeepsState(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	l := openLog(t, dir)
	b := startBroker(t, cfg, l, Options{})
	url := "tcp://" + b.addr("tcp")
	persistent := func(got chan string) func(*paho.ClientOptions) {
		return func(o *paho.ClientOptions) {
			o.SetCleanSession(false).SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) })
		}
	}
	first := make(chan string, 10)
	c1 := mustPaho(t, url, "plc-7", persistent(first))
	if tok := c1.Subscribe("cmd/plc-7/#", 1, nil); !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	second := make(chan string, 10)
	mustPaho(t, url, "plc-7", persistent(second))
	b.waitMetric(t, "millstream_mqtt_persistent_sessions", nil, 1)
	pub := mustPaho(t, url, "hmi", nil)
	if err := publish(t, pub, "cmd/plc-7/start", 1, false, "go"); err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-second:
		if v != "go" {
			t.Errorf("got %q", v)
		}
	case <-time.After(testTimeout):
		t.Fatal("the taken-over session lost its subscription")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, dir)
	b = startBroker(t, cfg, l, Options{})
	if got := b.metric(t, "millstream_mqtt_persistent_sessions", nil); got != 1 {
		t.Errorf("persistent_sessions after restart = %v, want 1", got)
	}
	st, _ := b.state.StoredSubscriptions()
	if len(st) != 1 || st[0].Client != "plc-7" || st[0].Filter != "cmd/plc-7/#" {
		t.Errorf("stored subscriptions after takeover and restart: %+v", st)
	}
}

// TestWillMessageAppended kills a real client so that the broker publishes
// its will, which must land in the log marked as a will.
func TestWillMessageAppended(t *testing.T) {
	l := openLog(t, t.TempDir())
	b := startBroker(t, testConfig(), l, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, needTool(t, "mosquitto_sub"), "-h", "127.0.0.1", "-p", b.port("tcp"), "-i", "edge-node",
		"-t", "cmd/edge-node", "--will-topic", "spBv1.0/g/NDEATH/edge-node", "--will-payload", "dead", "--will-qos", "1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b.waitMetric(t, "millstream_mqtt_connections", map[string]string{"listener": "tcp"}, 1)
	// Connected at TCP level; wait for the MQTT session too: the client
	// subscribed once the broker counts a subscription.
	for deadline := time.Now().Add(testTimeout); atomic.LoadInt64(&b.srv.Info.Subscriptions) == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("mosquitto_sub did not subscribe")
		}
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	recs := readTopic(t, l, "mqtt.ingress", 1)
	r := recs[0]
	if string(r.Key) != "spBv1.0/g/NDEATH/edge-node" || string(r.Value) != "dead" ||
		header(r, HeaderWill) != "true" || header(r, HeaderClientID) != "edge-node" || header(r, HeaderQoS) != "1" {
		t.Errorf("will record: key %q value %q headers %+v", r.Key, r.Value, r.Headers)
	}
}

func TestStateTopicCompaction(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	l := openLog(t, dir)
	b := startBroker(t, cfg, l, Options{StateCompactRecords: 20})
	c := mustPaho(t, "tcp://"+b.addr("tcp"), "retainer", nil)
	for i := range 200 {
		if err := publish(t, c, fmt.Sprintf("cell/%d", i%5), 1, true, fmt.Sprintf("v%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	c.Disconnect(0)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	info, err := l.Topic(context.Background(), DefaultStateTopic)
	if err != nil {
		t.Fatal(err)
	}
	p := info.Partitions[0]
	if b.metrics.compactions.Load() == 0 || p.Start == 0 {
		t.Errorf("no compaction: %d snapshots, state topic [%d, %d)", b.metrics.compactions.Load(), p.Start, p.End)
	}
	if n := p.End - p.Start; n > 100 {
		t.Errorf("state topic still holds %d records for 5 retained messages", n)
	}
	l.Close()

	l = openLog(t, dir)
	b = startBroker(t, cfg, l, Options{StateCompactRecords: 20})
	for i := 195; i < 200; i++ {
		topic := fmt.Sprintf("cell/%d", i%5)
		got := make(chan string, 1)
		sub := mustPaho(t, "tcp://"+b.addr("tcp"), "reader", nil)
		tok := sub.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) })
		if !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
			t.Fatalf("subscribe: %v", tok.Error())
		}
		select {
		case v := <-got:
			if v != fmt.Sprintf("v%d", i) {
				t.Errorf("retained %s after compaction and restart = %q, want v%d", topic, v, i)
			}
		case <-time.After(testTimeout):
			t.Fatalf("no retained message on %s", topic)
		}
		sub.Disconnect(0)
	}
}

func hashFor(t *testing.T, pw string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

func TestAuthentication(t *testing.T) {
	l := openLog(t, t.TempDir())
	cfg := testConfig()
	no := false
	cfg.AllowAnonymous = &no
	cfg.Users = []config.User{{Username: "alice", PasswordHash: hashFor(t, "s3cret")}}
	b := startBroker(t, cfg, l, Options{})
	port := b.port("tcp")

	cases := []struct {
		args []string
		want string
	}{
		{[]string{"-V", "mqttv311", "-u", "alice", "-P", "wrong-pw"}, "bad user name or password"},
		{[]string{"-V", "mqttv5", "-u", "alice", "-P", "wrong-pw"}, "bad user name or password"},
		{[]string{"-V", "mqttv311", "-u", "mallory", "-P", "x"}, "bad user name or password"},
		{[]string{"-V", "mqttv311"}, "not authorised"},
		{[]string{"-V", "mqttv5"}, "not authorized"},
	}
	for _, c := range cases {
		args := append([]string{"-h", "127.0.0.1", "-p", port, "-i", "auth-test", "-t", "x", "-m", "y", "-q", "1"}, c.args...)
		out, err := runTool(t, "mosquitto_pub", args...)
		if err == nil {
			t.Errorf("mosquitto_pub %v succeeded, want refused", c.args)
			continue
		}
		if !strings.Contains(strings.ToLower(out), c.want) {
			t.Errorf("mosquitto_pub %v: output %q does not say %q", c.args, out, c.want)
		}
	}
	if out, err := runTool(t, "mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-u", "alice", "-P", "s3cret", "-t", "ok", "-m", "1", "-q", "1"); err != nil {
		t.Fatalf("valid credentials refused: %v: %s", err, out)
	}
	recs := readTopic(t, l, "mqtt.ingress", 1)
	if len(recs) != 1 || string(recs[0].Key) != "ok" {
		t.Errorf("ingress holds %d records, want only the authenticated one", len(recs))
	}
	logs := b.logs.String()
	if !strings.Contains(logs, "MQTT authentication failed") || !strings.Contains(logs, "remote=127.0.0.1:") || !strings.Contains(logs, "client=auth-test") {
		t.Errorf("failed auth not logged with client and remote address:\n%s", logs)
	}
	if strings.Contains(logs, "wrong-pw") {
		t.Error("a password appears in the logs")
	}
	if got := b.metric(t, "millstream_mqtt_auth_failures_total", map[string]string{"reason": "bad_credentials"}); got != 3 {
		t.Errorf("auth_failures_total{bad_credentials} = %v, want 3", got)
	}
}

func TestACLDeniedPublishNotStored(t *testing.T) {
	l := openLog(t, t.TempDir())
	cfg := testConfig()
	cfg.Users = []config.User{{Username: "alice", PasswordHash: hashFor(t, "pw")}}
	cfg.ACL = []config.ACL{{User: "alice", Action: "all", Allow: []string{"plant/alice/#"}}}
	b := startBroker(t, cfg, l, Options{})
	port := b.port("tcp")

	// MQTT 5: PUBACK 0x87, connection kept.
	v5 := dialV5(t, b.addr("tcp"), "alice-v5", "alice", "pw")
	resp, err := v5.Publish(context.Background(), &paho5Publish{Topic: "plant/bob/x", QoS: 1, Payload: []byte("denied")})
	if resp == nil || resp.ReasonCode != 0x87 {
		t.Fatalf("denied v5 publish: response %+v, error %v; want PUBACK 0x87", resp, err)
	}
	resp, err = v5.Publish(context.Background(), &paho5Publish{Topic: "plant/alice/x", QoS: 1, Payload: []byte("allowed")})
	if err != nil || resp.ReasonCode != 0 {
		t.Fatalf("allowed v5 publish on the same connection: %+v %v", resp, err)
	}
	// MQTT 3.1.1: disconnected (mochi's behaviour; v3 has no negative PUBACK).
	if out, err := runTool(t, "mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-u", "alice", "-P", "pw", "-q", "1", "-t", "plant/bob/y", "-m", "denied"); err == nil {
		t.Errorf("denied v3.1.1 QoS 1 publish succeeded: %s", out)
	}
	// Subscribing outside the ACL: SUBACK failure.
	out, _ := runTool(t, "mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-u", "alice", "-P", "pw", "-V", "mqttv5", "-t", "plant/#", "-E")
	if !strings.Contains(strings.ToLower(out), "denied") && !strings.Contains(strings.ToLower(out), "not authori") {
		t.Errorf("subscription outside the ACL: mosquitto_sub said %q", out)
	}
	if out, err := runTool(t, "mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-u", "alice", "-P", "pw", "-q", "1", "-t", "plant/alice/z", "-m", "allowed"); err != nil {
		t.Fatalf("allowed v3.1.1 publish: %v: %s", err, out)
	}

	// A will on a topic the ACL denies would let a client publish there by
	// disconnecting: the CONNECT is refused.
	_, err = pahoClient(t, "tcp://"+b.addr("tcp"), "alice-will", func(o *paho.ClientOptions) {
		o.SetUsername("alice").SetPassword("pw").SetWill("plant/bob/will", "x", 1, false).SetProtocolVersion(4)
	})
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "not authori") {
		t.Errorf("will on a denied topic: %v, want not authorized", err)
	}

	recs := readTopic(t, l, "mqtt.ingress", 2)
	if end := topicEnd(t, l, "mqtt.ingress"); end != 2 {
		t.Errorf("ingress has %d records, want 2", end)
	}
	for _, r := range recs {
		if string(r.Value) != "allowed" {
			t.Errorf("denied publish stored: %s %q", r.Key, r.Value)
		}
	}
	if got := b.metric(t, "millstream_mqtt_acl_denials_total", map[string]string{"action": "publish"}); got != 3 {
		t.Errorf("acl_denials_total{publish} = %v, want 3 (v5, v3.1.1, will)", got)
	}
}

func TestOversizePacketDisconnectsOnlyThatClient(t *testing.T) {
	l := openLog(t, t.TempDir())
	cfg := testConfig()
	cfg.Limits.MaxPacketSize = 1024
	b := startBroker(t, cfg, l, Options{})
	url := "tcp://" + b.addr("tcp")

	other := mustPaho(t, url, "other", nil)
	lost := make(chan error, 1)
	big := mustPaho(t, url, "big", func(o *paho.ClientOptions) {
		o.SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
	})
	tok := big.Publish("plant/big", 1, false, strings.Repeat("x", 4096))
	tok.WaitTimeout(testTimeout) // never acknowledged: the connection is closed
	select {
	case <-lost:
	case <-time.After(testTimeout):
		t.Fatal("oversize packet did not disconnect its client")
	}
	if err := publish(t, other, "plant/small", 1, false, "fine"); err != nil {
		t.Fatalf("other client after the oversize packet: %v", err)
	}
	recs := readTopic(t, l, "mqtt.ingress", 1)
	if end := topicEnd(t, l, "mqtt.ingress"); end != 1 || string(recs[0].Value) != "fine" {
		t.Errorf("ingress: %d records, first %q", end, recs[0].Value)
	}
	if !strings.Contains(b.logs.String(), "max_packet_size") {
		t.Error("oversize disconnect not logged")
	}
}

func TestMaxConnections(t *testing.T) {
	l := openLog(t, t.TempDir())
	cfg := testConfig()
	cfg.Limits.MaxConnections = 2
	b := startBroker(t, cfg, l, Options{})
	url := "tcp://" + b.addr("tcp")

	c1 := mustPaho(t, url, "c1", nil)
	mustPaho(t, url, "c2", nil)
	if _, err := pahoClient(t, url, "c3", nil); err == nil {
		t.Fatal("third connection accepted with max_connections 2")
	} else if !strings.Contains(strings.ToLower(err.Error()), "unavailable") {
		t.Errorf("third connection: %v, want server unavailable", err)
	}
	if !strings.Contains(b.logs.String(), "max_connections") {
		t.Error("refused connection not logged")
	}
	c1.Disconnect(0)
	// The server keeps serving: once a slot is free a client gets in. The
	// count drops when the server has closed c1's socket; retry until then.
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for {
		if _, err := pahoClient(t, url, "c4", nil); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("no connection accepted after one was closed")
		case <-time.After(20 * time.Millisecond):
		}
	}
	if got := b.metric(t, "millstream_mqtt_connections_rejected_total", nil); got < 1 {
		t.Errorf("connections_rejected_total = %v", got)
	}
}

func TestWebSocketPublish(t *testing.T) {
	l := openLog(t, t.TempDir())
	b := startBroker(t, testConfig(), l, Options{})
	c := mustPaho(t, "ws://"+b.addr("ws")+"/mqtt", "ws-client", nil)
	got := make(chan string, 1)
	if tok := c.Subscribe("hmi/#", 1, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
		t.Fatalf("subscribe over websocket: %v", tok.Error())
	}
	if err := publish(t, c, "hmi/button", 1, false, "pressed"); err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-got:
		if v != "pressed" {
			t.Errorf("delivered %q", v)
		}
	case <-time.After(testTimeout):
		t.Fatal("no delivery over websocket")
	}
	recs := readTopic(t, l, "mqtt.ingress", 1)
	if string(recs[0].Key) != "hmi/button" || header(recs[0], HeaderClientID) != "ws-client" {
		t.Errorf("record %s %+v", recs[0].Key, recs[0].Headers)
	}
	if got := b.metric(t, "millstream_mqtt_messages_received_total", map[string]string{"listener": "ws"}); got != 1 {
		t.Errorf("messages_received_total{ws} = %v", got)
	}
	b.waitMetric(t, "millstream_mqtt_messages_sent_total", map[string]string{"listener": "ws"}, 1)
}

// TestAppendFailureNotAcknowledged closes the log under a running broker: a
// QoS 1 publish must then get a failing PUBACK (v5) or a closed connection
// (v3.1.1), never a success.
func TestAppendFailureNotAcknowledged(t *testing.T) {
	l := openLog(t, t.TempDir())
	b := startBroker(t, testConfig(), l, Options{})
	v5 := dialV5(t, b.addr("tcp"), "v5", "", "")
	v3 := mustPaho(t, "tcp://"+b.addr("tcp"), "v3", nil)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	resp, err := v5.Publish(context.Background(), &paho5Publish{Topic: "plant/x", QoS: 1, Payload: []byte("lost?")})
	if resp == nil || resp.ReasonCode < 0x80 {
		t.Errorf("v5 publish with the log closed: response %+v, error %v; want a PUBACK >= 0x80", resp, err)
	}
	if err := publish(t, v3, "plant/y", 1, false, "lost?"); err == nil {
		t.Error("v3.1.1 publish with the log closed was acknowledged")
	}
	if got := b.metric(t, "millstream_mqtt_append_errors_total", nil); got != 2 {
		t.Errorf("append_errors_total = %v, want 2", got)
	}
	// QoS 0 is not acknowledged anyway; its failed append is counted.
	v3b := mustPaho(t, "tcp://"+b.addr("tcp"), "v3-qos0", nil)
	if err := publish(t, v3b, "plant/z", 0, false, "dropped"); err != nil {
		t.Fatal(err)
	}
	b.waitMetric(t, "millstream_mqtt_qos0_dropped_total", nil, 1)
}

func TestConfigErrors(t *testing.T) {
	l := openLog(t, t.TempDir())
	bad := map[string]func(*config.MQTT){
		"listeners[0]": func(c *config.MQTT) { c.Listeners[0].Type = "udp" },
		"name":         func(c *config.MQTT) { c.Listeners[1].Name = "tcp" },
		"password_hash": func(c *config.MQTT) {
			c.Users = []config.User{{Username: "a", PasswordHash: "plain"}}
		},
		"cert_file": func(c *config.MQTT) { c.Listeners[0].TLS.KeyFile = "k.pem" },
		"acl[0]":    func(c *config.MQTT) { c.ACL = []config.ACL{{User: "a", Action: "x", Allow: []string{"#"}}} },
	}
	for want, mutate := range bad {
		cfg := testConfig()
		mutate(&cfg)
		if _, err := New(cfg, l, Options{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("config error mentioning %q: got %v", want, err)
		}
	}
	// Bind failure: a port in use.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := testConfig()
	cfg.Listeners[1].Address = busy.Addr().String()
	b, err := New(cfg, l, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err == nil || !strings.Contains(err.Error(), `"ws"`) {
		t.Errorf("Start on a busy port: %v", err)
	}
	_ = b.Close()
}
