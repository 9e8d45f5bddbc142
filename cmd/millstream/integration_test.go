package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	mlog "github.com/millstream/millstream/log"
	"github.com/millstream/millstream/sparkplug"
	"github.com/millstream/millstream/sparkplug/sparkplugb"
)

// These tests build the real binary and drive it with real MQTT clients
// (mosquitto_pub from the Debian package), as a user would.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func millstreamBin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "millstream-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "millstream")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// needTool skips when a peer is missing, or fails under CI=true (DESIGN.md, Testing).
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required under CI=true (apt-get install mosquitto-clients)", name)
		}
		t.Skipf("%s not installed (apt-get install mosquitto-clients)", name)
	}
	return p
}

type server struct {
	cmd     *exec.Cmd
	mqtt    string // host:port of the tcp listener
	http    string // base URL
	kafka   string // host:port of the Kafka endpoint, when enabled
	stderr  *bytes.Buffer
	mu      *sync.Mutex
	waitErr chan error
}

// writeConfig writes a config with every listener on port 0, so tests run in
// parallel and never collide with a server on the default ports.
func writeConfig(t *testing.T, dir, extra string) string {
	t.Helper()
	p := filepath.Join(dir, "millstream.yaml")
	cfg := `data_dir: ` + filepath.Join(dir, "data") + `
mqtt:
  listeners:
    - {name: tcp, type: tcp, address: "127.0.0.1:0"}
http:
  address: "127.0.0.1:0"
logging:
  format: json
` + extra
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// startServer runs `millstream run` and waits for its "millstream started"
// log line, which carries the bound addresses.
func startServer(t *testing.T, cfgPath string) *server {
	t.Helper()
	return startServerEnv(t, cfgPath)
}

// startServerEnv is startServer with environment variables (KEY=value) added
// to the test's own.
func startServerEnv(t *testing.T, cfgPath string, env ...string) *server {
	t.Helper()
	cmd := exec.Command(millstreamBin(t), "run", "--config", cfgPath)
	cmd.Env = append(os.Environ(), env...)
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{cmd: cmd, stderr: &bytes.Buffer{}, mu: &sync.Mutex{}, waitErr: make(chan error, 1)}
	go func() { s.waitErr <- cmd.Wait(); pw.Close() }()
	started := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			s.mu.Lock()
			s.stderr.Write(line)
			s.stderr.WriteByte('\n')
			s.mu.Unlock()
			var m map[string]any
			if json.Unmarshal(line, &m) == nil && m["msg"] == "millstream started" {
				started <- m
			}
		}
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-s.waitErr
		}
		if t.Failed() {
			t.Logf("server log:\n%s", s.log())
		}
	})
	select {
	case m := <-started:
		s.mqtt, _ = m["mqtt_tcp"].(string)
		s.http = "http://" + m["http"].(string)
		s.kafka, _ = m["kafka"].(string)
	case err := <-s.waitErr:
		t.Fatalf("server exited before starting: %v\n%s", err, s.log())
	case <-time.After(30 * time.Second):
		t.Fatalf("server did not start within 30s:\n%s", s.log())
	}
	return s
}

func (s *server) log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stderr.String()
}

// metrics returns the server's /metrics page.
func (s *server) metrics(t *testing.T) string {
	t.Helper()
	resp, err := http.Get(s.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func (s *server) port() string { return s.mqtt[strings.LastIndexByte(s.mqtt, ':')+1:] }

func (s *server) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-s.waitErr:
		if sig == syscall.SIGTERM && err != nil {
			t.Fatalf("server exited with %v after SIGTERM\n%s", err, s.log())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("server did not exit after %v", sig)
	}
}

// replay runs `millstream replay` and parses its JSON lines.
func replay(t *testing.T, args ...string) []mlog.Record {
	t.Helper()
	cmd := exec.Command(millstreamBin(t), append([]string{"replay"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("replay %v: %v\n%s", args, err, stderr.String())
	}
	var recs []mlog.Record
	for _, line := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		r, err := mlog.ParseRecordJSON(line)
		if err != nil {
			t.Fatalf("replay printed a line that is not a record: %v\n%s", err, line)
		}
		recs = append(recs, r)
	}
	return recs
}

func header(r mlog.Record, k string) string {
	v, _ := r.HeaderValue(k)
	return string(v)
}

// The README's quick start: publish with mosquitto_pub, replay with the CLI
// from the running server and, after shutdown, from the data dir.
func TestQuickStart(t *testing.T) {
	pub := needTool(t, "mosquitto_pub")
	dir := t.TempDir()
	s := startServer(t, writeConfig(t, dir, ""))

	out, err := exec.Command(pub, "-h", "127.0.0.1", "-p", s.port(), "-q", "1", "-i", "press-7",
		"-t", "acme/plant1/press/temperature", "-m", `{"value": 71.5}`).CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", err, out)
	}

	check := func(recs []mlog.Record) {
		t.Helper()
		// Millstream's own Sparkplug host STATE messages are there too.
		recs = slices.DeleteFunc(recs, func(r mlog.Record) bool { return strings.HasPrefix(string(r.Key), "spBv1.0/STATE/") })
		if len(recs) != 1 {
			t.Fatalf("want 1 record, got %d: %+v", len(recs), recs)
		}
		r := recs[0]
		if string(r.Key) != "acme/plant1/press/temperature" || string(r.Value) != `{"value": 71.5}` {
			t.Fatalf("record key/value: %q %q", r.Key, r.Value)
		}
		for k, want := range map[string]string{"mqtt.qos": "1", "mqtt.client_id": "press-7", "mqtt.retain": "false"} {
			if got := header(r, k); got != want {
				t.Errorf("header %s = %q, want %q (headers %v)", k, got, want, r.Headers)
			}
		}
		if at, err := time.Parse(time.RFC3339Nano, header(r, "mqtt.received_at")); err != nil || at.Sub(r.Timestamp).Abs() > time.Millisecond {
			t.Errorf("header mqtt.received_at = %q (%v), record timestamp %v", header(r, "mqtt.received_at"), err, r.Timestamp)
		}
	}
	check(replay(t, "--topic", "mqtt.ingress", "--server", s.http))

	body := s.metrics(t)
	if !strings.Contains(body, "millstream_") {
		t.Fatalf("/metrics has no millstream metrics:\n%.2000s", body)
	}
	// One P less than Go's default, unless GOMAXPROCS says (see serverProcs).
	if os.Getenv("GOMAXPROCS") == "" {
		want := fmt.Sprintf("\ngo_sched_gomaxprocs_threads %d\n", max(1, runtime.GOMAXPROCS(0)-1))
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", strings.TrimSpace(want))
		}
	}

	s.stop(t, syscall.SIGTERM)
	check(replay(t, "--topic", "mqtt.ingress", "--data-dir", filepath.Join(dir, "data")))
}

// GOMAXPROCS in the environment overrides the server's own choice.
func TestGOMAXPROCSFromEnvironment(t *testing.T) {
	s := startServerEnv(t, writeConfig(t, t.TempDir(), ""), "GOMAXPROCS=3")
	if !strings.Contains(s.metrics(t), "\ngo_sched_gomaxprocs_threads 3\n") {
		t.Errorf("/metrics lacks go_sched_gomaxprocs_threads 3")
	}
	if !strings.Contains(s.log(), `"gomaxprocs_from":"the GOMAXPROCS environment variable"`) {
		t.Errorf("start-up log does not say where GOMAXPROCS came from:\n%s", s.log())
	}
	s.stop(t, syscall.SIGTERM)
}

// TestDiskFull fills the data directory's filesystem (a 4 MiB tmpfs) with
// QoS 1 publishes: the partition that cannot write stops acknowledging, the
// server keeps running and reports it (/readyz 503, the gauge), and after
// space is freed and the server restarted every acknowledged message is in
// the log and new ones are taken. Needs mount(2) (root): skipped without.
func TestDiskFull(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4M", "tmpfs", data).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a small tmpfs to fill (needs root): %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", data).Run() })
	cfg := writeConfig(t, dir, "")
	s := startServer(t, cfg)

	c, err := dialBench(context.Background(), "tcp://"+s.mqtt, "filler", "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	payload := bytes.Repeat([]byte("x"), 1000)
	var acked []int
	for i := 1; i < 100_000; i++ {
		_ = c.conn.SetDeadline(time.Now().Add(10 * time.Second))
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "fill",
			PacketID: uint16(i%65535 + 1), Payload: append([]byte(fmt.Sprintf("%06d:", i)), payload...)}
		if err := c.write(&pk); err != nil {
			break
		}
		ack, err := c.read()
		if err != nil {
			break // the broker disconnects a publisher whose message it cannot store
		}
		if ack.FixedHeader.Type != packets.Puback || ack.PacketID != pk.PacketID {
			t.Fatalf("expected the PUBACK of %d, got type %d id %d", pk.PacketID, ack.FixedHeader.Type, ack.PacketID)
		}
		acked = append(acked, i)
	}
	if len(acked) == 0 || len(acked) > 5000 {
		t.Fatalf("%d messages acknowledged on a 4 MiB filesystem", len(acked))
	}
	resp, err := http.Get(s.http + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "mqtt.ingress/0 accepts no appends") || !strings.Contains(string(body), "no space left") {
		t.Errorf("/readyz with a full disk: %d %s", resp.StatusCode, body)
	}
	if m := s.metrics(t); !strings.Contains(m, `millstream_log_partition_failed{partition="0",topic="mqtt.ingress"} 1`) {
		t.Errorf("/metrics does not report the failed partition")
	}
	if !strings.Contains(s.log(), "the disk is full: free space") {
		t.Errorf("the log does not say what to do:\n%s", s.log())
	}
	s.stop(t, syscall.SIGTERM)

	if out, err := exec.Command("mount", "-o", "remount,size=64M", data).CombinedOutput(); err != nil {
		t.Fatalf("remount: %v %s", err, out)
	}
	s = startServer(t, cfg)
	got := map[int]bool{}
	for _, r := range topicRecords(t, s, "mqtt.ingress") {
		if string(r.Key) == "fill" {
			var n int
			fmt.Sscanf(string(r.Value), "%d:", &n)
			got[n] = true
		}
	}
	for _, i := range acked {
		if !got[i] {
			t.Fatalf("message %d was acknowledged before the disk filled and is not in the log after the restart (%d of %d there)", i, len(got), len(acked))
		}
	}
	if out, err := exec.Command(needTool(t, "mosquitto_pub"), "-h", "127.0.0.1", "-p", s.port(), "-q", "1", "-t", "fill", "-m", "after").CombinedOutput(); err != nil {
		t.Fatalf("publish after the restart: %v %s", err, out)
	}
	resp, err = http.Get(s.http + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz after the restart with space: %d", resp.StatusCode)
	}
	t.Logf("%d messages acknowledged before the disk filled; all there after the restart", len(acked))
	s.stop(t, syscall.SIGTERM)
}

// log.fsync_min_interval reaches the log: a QoS 1 publish right after
// another is acknowledged only once the interval since the first one's fsync
// has passed, and what was acknowledged is in the log.
func TestFsyncMinInterval(t *testing.T) {
	pub := needTool(t, "mosquitto_pub")
	const gap = time.Second
	s := startServer(t, writeConfig(t, t.TempDir(), "log:\n  fsync_min_interval: 1s\n"))
	publish := func(msg string) time.Duration {
		t.Helper()
		start := time.Now()
		out, err := exec.Command(pub, "-h", "127.0.0.1", "-p", s.port(), "-q", "1", "-t", "spaced", "-m", msg).CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_pub: %v\n%s", err, out)
		}
		return time.Since(start)
	}
	first := publish("one")
	second := publish("two")
	t.Logf("PUBACK after %v, then %v", first, second)
	if second < gap/2 {
		t.Errorf("second QoS 1 publish acknowledged after %v; with fsync_min_interval %v it waits for the next fsync", second, gap)
	}
	if second > gap+5*time.Second {
		t.Errorf("second QoS 1 publish acknowledged after %v, long after fsync_min_interval %v", second, gap)
	}
	var got []string
	for _, r := range topicRecords(t, s, "mqtt.ingress") {
		if string(r.Key) == "spaced" { // not the server's own status messages
			got = append(got, string(r.Value))
		}
	}
	if !slices.Equal(got, []string{"one", "two"}) {
		t.Errorf("mqtt.ingress holds %q, want [one two]", got)
	}
	s.stop(t, syscall.SIGTERM)
}

// 10,000 QoS 1 messages from real mosquitto_pub clients; the server is killed
// with SIGKILL right after the last PUBACK. Every acknowledged message must be
// in the log exactly once, in per-topic order.
func TestKill9AfterLastPuback(t *testing.T) {
	pub := needTool(t, "mosquitto_pub")
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "log:\n  partitions: 4\n")
	s := startServer(t, cfg)

	const topics, perTopic = 4, 2500
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, topics)
	for i := 0; i < topics; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// -l publishes one message per stdin line; mosquitto_pub exits
			// only after the PUBACK of its last message.
			cmd := exec.CommandContext(ctx, pub, "-h", "127.0.0.1", "-p", s.port(), "-q", "1",
				"-i", fmt.Sprintf("kill9-%d", i), "-t", fmt.Sprintf("line/%d/counter", i), "-l")
			var in bytes.Buffer
			for n := 0; n < perTopic; n++ {
				fmt.Fprintf(&in, "%d\n", n)
			}
			cmd.Stdin = &in
			if out, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("mosquitto_pub topic %d: %v\n%s", i, err, out)
			}
		}()
	}
	wg.Wait()
	s.stop(t, syscall.SIGKILL) // right after the last PUBACK
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// Restart on the same data dir (recovery runs), then read everything back.
	s2 := startServer(t, cfg)
	recs := replay(t, "--topic", "mqtt.ingress", "--server", s2.http)
	next := map[string]int{}
	// Millstream's own messages (the Sparkplug host STATE) are in the
	// ingress topic too; count the publishers' only.
	recs = slices.DeleteFunc(recs, func(r mlog.Record) bool { return !strings.HasPrefix(string(r.Key), "line/") })
	for _, r := range recs {
		var n int
		if _, err := fmt.Sscanf(string(r.Value), "%d", &n); err != nil {
			t.Fatalf("unexpected value %q", r.Value)
		}
		k := string(r.Key)
		if n != next[k] {
			t.Fatalf("topic %s: got message %d, want %d (lost, duplicated or reordered)", k, n, next[k])
		}
		next[k]++
	}
	for i := 0; i < topics; i++ {
		k := fmt.Sprintf("line/%d/counter", i)
		if next[k] != perTopic {
			t.Errorf("topic %s: %d of %d acknowledged messages in the log", k, next[k], perTopic)
		}
	}
	if len(recs) != topics*perTopic {
		t.Errorf("log holds %d records, want %d", len(recs), topics*perTopic)
	}
}

// A bad config file is rejected at start-up with file:line and what to do.
func TestBadConfigIsRejectedWithLine(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "bad.yaml")
	os.WriteFile(p, []byte("log:\n  fsync: sometimes\n  fsyncc: 1ms\n"), 0o644)
	out, err := exec.Command(millstreamBin(t), "run", "--config", p).CombinedOutput()
	if err == nil {
		t.Fatalf("server started with a bad config:\n%s", out)
	}
	for _, want := range []string{"bad.yaml:2", "sometimes", "bad.yaml:3", "fsyncc"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("error output lacks %q:\n%s", want, out)
		}
	}
}

// points reads uns.points from a running server's API (all partitions,
// from the start).
func points(t *testing.T, s *server) []mlog.Record {
	t.Helper()
	return topicRecords(t, s, "uns.points")
}

// topicRecords reads up to 10,000 records of a topic through the server's
// replay API (none if the topic does not exist yet).
func topicRecords(t *testing.T, s *server, topic string) []mlog.Record {
	t.Helper()
	resp, err := http.Get(s.http + "/api/v1/topics/" + topic + "/records?limit=10000")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil
	}
	var body struct {
		Records []json.RawMessage `json:"records"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	var recs []mlog.Record
	for _, raw := range body.Records {
		r, err := mlog.ParseRecordJSON(raw)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	return recs
}

func waitPoints(t *testing.T, s *server, n int) []mlog.Record {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		recs := points(t, s)
		if len(recs) >= n || time.Now().After(deadline) {
			return recs
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestKafkaBackend runs millstream with log.backend: kafka against a Kafka
// cluster (kfake in tests): an MQTT message acknowledged at QoS 1 is in the
// cluster's mqtt.ingress topic, the normaliser turns it into points on the
// cluster's uns.points, and after a kill -9 and a restart it resumes from the
// offsets committed in Kafka without writing a point twice.
func TestKafkaBackend(t *testing.T) {
	pub := needTool(t, "mosquitto_pub")
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	// A short session timeout: after the kill -9 the cluster moves the dead
	// node's partitions to the restarted one after it.
	cfg := writeConfig(t, t.TempDir(), "log:\n  backend: kafka\n  kafka:\n    brokers: ["+cluster.ListenAddrs()[0]+"]\n    group_session_timeout: 6s\n")
	s := startServer(t, cfg)
	publish := func(s *server, topic, payload string) {
		out, err := exec.Command(pub, "-h", "127.0.0.1", "-p", s.port(), "-q", "1", "-t", topic, "-m", payload).CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_pub: %v\n%s", err, out)
		}
	}
	publish(s, "acme/plant1/press7", `{"temperature": 71.5, "count": 1042}`)

	// The acknowledged message is in the cluster, read by a plain Kafka client.
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ConsumeTopics("mqtt.ingress"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fetches := cl.PollFetches(ctx)
	if err := fetches.Err(); err != nil {
		t.Fatalf("consume mqtt.ingress from Kafka: %v", err)
	}
	var keys []string // the Sparkplug host's STATE message is there too
	for _, r := range fetches.Records() {
		keys = append(keys, string(r.Key))
	}
	if !slices.Contains(keys, "acme/plant1/press7") {
		t.Fatalf("mqtt.ingress on Kafka holds %v, not the message", keys)
	}

	if got := waitPoints(t, s, 2); len(got) != 2 {
		t.Fatalf("%d points on uns.points, want 2", len(got))
	}
	s.stop(t, syscall.SIGKILL)
	s2 := startServer(t, cfg)
	publish(s2, "acme/plant1/press7/speed", "12.5")
	waitPoints(t, s2, 3)
	time.Sleep(300 * time.Millisecond) // a re-written point would come before the new one
	if got := points(t, s2); len(got) != 3 {
		t.Fatalf("after kill -9 and restart: %d points, want 3 (none twice)", len(got))
	}
}

// TestKafkaEndpointWithKcat: kcat (librdkafka) reads what MQTT clients
// published from Millstream's Kafka endpoint, and what kcat produces is in
// the log and visible through the HTTP replay API.
func TestKafkaEndpointWithKcat(t *testing.T) {
	pub := needTool(t, "mosquitto_pub")
	kcat := needTool(t, "kcat")
	s := startServer(t, writeConfig(t, t.TempDir(), "kafka_endpoint:\n  enabled: true\n  address: 127.0.0.1:0\n"))
	if s.kafka == "" {
		t.Fatal("the started log line has no kafka address")
	}
	if out, err := exec.Command(pub, "-h", "127.0.0.1", "-p", s.port(), "-q", "1", "-t", "acme/line1/temp", "-m", "21.5").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, kcat, "-b", s.kafka, "-C", "-t", "mqtt.ingress", "-p", "0", "-o", "beginning", "-e", "-q", "-f", "%k=%s\n").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "acme/line1/temp=21.5\n") {
		t.Fatalf("kcat -C: %v\n%s", err, out)
	}

	// A consumer group on mqtt.ingress: the second run starts where the
	// first one committed.
	group := func() string {
		out, err := exec.CommandContext(ctx, kcat, "-b", s.kafka, "-G", "export", "-X", "auto.offset.reset=earliest",
			"-X", "fetch.wait.max.ms=100", "-e", "-q", "-f", "%k=%s\n", "mqtt.ingress").CombinedOutput()
		if err != nil {
			t.Fatalf("kcat -G: %v\n%s", err, out)
		}
		return string(out)
	}
	if out := group(); !strings.Contains(out, "acme/line1/temp=21.5\n") {
		t.Fatalf("first kcat -G run:\n%s", out)
	}
	if out, err := exec.Command(pub, "-h", "127.0.0.1", "-p", s.port(), "-q", "1", "-t", "acme/line1/temp", "-m", "22.5").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", err, out)
	}
	if out := group(); out != "acme/line1/temp=22.5\n" {
		t.Fatalf("second kcat -G run, want only the new message:\n%s", out)
	}

	// What Kafka clients produce goes to the log, not to MQTT subscribers.
	sub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://127.0.0.1:" + s.port()).SetClientID("kafka-watch"))
	if tok := sub.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer sub.Disconnect(0)
	unexpected := make(chan string, 16)
	if tok := sub.Subscribe("#", 1, func(_ paho.Client, m paho.Message) {
		if !m.Retained() { // the retained Sparkplug host STATE is expected
			unexpected <- m.Topic()
		}
	}); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}

	produce := exec.CommandContext(ctx, kcat, "-b", s.kafka, "-P", "-t", "plant.events", "-k", "line1")
	produce.Stdin = strings.NewReader("started\n")
	if out, err := produce.CombinedOutput(); err != nil {
		t.Fatalf("kcat -P: %v\n%s", err, out)
	}
	resp, err := http.Get(s.http + "/api/v1/topics/plant.events/records?from=0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var page struct {
		Records []struct {
			Key   string `json:"key"`
			Value string `json:"value"`
		} `json:"records"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil || len(page.Records) != 1 || page.Records[0].Key != "line1" || page.Records[0].Value != "started" {
		t.Fatalf("records kcat produced: %v %+v", err, page)
	}
	select {
	case topic := <-unexpected:
		t.Errorf("an MQTT subscriber on # received %s after a Kafka produce", topic)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestReplicateToAnotherMillstream: an edge Millstream replicates its
// points to a "cloud" Millstream through the cloud's Kafka endpoint, over
// the edge's outbound connection; denied data stays at the edge; a command
// the cloud writes to its commands topic reaches the edge, is audited
// there, and the audit comes back to the cloud's commands.results.
func TestReplicateToAnotherMillstream(t *testing.T) {
	pub := needTool(t, "mosquitto_pub")
	cloud := startServer(t, writeConfig(t, t.TempDir(), "kafka_endpoint:\n  enabled: true\n  address: 127.0.0.1:0\n"))
	edge := startServer(t, writeConfig(t, t.TempDir(), `replicate:
  enabled: true
  site: plant1
  remote:
    brokers: [`+cloud.kafka+`]
    compression: lz4
  flows:
    - name: points
      topics: [uns.points]
      include: [acme/#]
      deny: [acme/plant1/secret/#]
      remote_topic: plant1.points
    - name: rollups
      topics: [uns.rollups.1m]
      deny: [acme/plant1/secret/#]
  commands:
    enabled: true
pipeline:
  rollup_intervals: [1m]
  rollup_grace: 500ms
`))
	for topic, payload := range map[string]string{"acme/plant1/press7": `{"temperature": 71.5}`, "acme/plant1/secret/recipe": `{"sugar": 42}`} {
		if out, err := exec.Command(pub, "-h", "127.0.0.1", "-p", edge.port(), "-q", "1", "-t", topic, "-m", payload).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub: %v\n%s", err, out)
		}
	}
	remote := func(topic string) []mlog.Record { return topicRecords(t, cloud, topic) }
	deadline := time.Now().Add(30 * time.Second)
	var got []mlog.Record
	for len(got) == 0 && time.Now().Before(deadline) {
		got = remote("plant1.points")
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // a denied point would come with the other
	got = remote("plant1.points")
	if len(got) != 1 || string(got[0].Key) != "acme/plant1/press7" {
		t.Fatalf("the cloud has %d replicated points: %+v", len(got), got)
	}
	if src, _ := got[0].HeaderValue("millstream.src"); !strings.HasPrefix(string(src), "plant1/uns.points/") {
		t.Errorf("replicated point's source header %q", src)
	}

	// The transformation before leaving the plant: one-minute rollups of
	// points from two minutes ago (closed by the clock) reach the cloud.
	minute := time.Now().Add(-2 * time.Minute).Truncate(time.Minute)
	var lines []string
	for i := range 6 {
		lines = append(lines, fmt.Sprintf(`{"value": %d, "timestamp": %d}`, 10*(i+1), minute.Add(time.Duration(i)*10*time.Second).UnixMilli()))
	}
	cmdPub := exec.Command(pub, "-h", "127.0.0.1", "-p", edge.port(), "-q", "1", "-t", "acme/plant1/press7/speed", "-l")
	cmdPub.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	if out, err := cmdPub.CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", err, out)
	}
	var rollup map[string]any
	for deadline := time.Now().Add(30 * time.Second); rollup == nil && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, r := range remote("uns.rollups.1m") {
			var v map[string]any
			if json.Unmarshal(r.Value, &v) == nil && v["path"] == "acme/plant1/press7/speed" {
				rollup = v
			}
		}
	}
	if rollup == nil || rollup["count"] != 6.0 || rollup["avg"] != 35.0 || rollup["min"] != 10.0 || rollup["max"] != 60.0 {
		t.Fatalf("the cloud's one-minute rollup of press7/speed: %v", rollup)
	}

	// Cloud to edge: a command request on the cloud's commands topic. The
	// edge has no commands.allow, so it is audited as rejected, and that
	// audit record comes back.
	cl, err := kgo.NewClient(kgo.SeedBrokers(cloud.kafka))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := `{"id":"cloud-1","path":"acme/plant1/press7/Setpoint","value":42,"requested_by":"cloud-operator"}`
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "commands", Key: []byte("acme/plant1/press7/Setpoint"), Value: []byte(req)}).FirstErr(); err != nil {
		t.Fatalf("produce the cloud command: %v", err)
	}
	var result map[string]any
	for deadline := time.Now().Add(30 * time.Second); result == nil && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, r := range remote("commands.results") {
			var a map[string]any
			if json.Unmarshal(r.Value, &a) == nil && a["id"] == "cloud-1" {
				result = a
			}
		}
	}
	if result == nil || result["status"] != "rejected" || !strings.Contains(fmt.Sprint(result["reason"]), "commands.allow") {
		t.Fatalf("command result on the cloud: %v", result)
	}
}

// TestHistorian: points published over MQTT are in /api/v1/history within
// a second; a kill -9 and restart, and a rebuild from the log after the
// historian's directory is deleted (with /readyz saying when it is done),
// answer the same queries identically.
func TestHistorian(t *testing.T) {
	pub := needTool(t, "mosquitto_pub")
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "")
	s := startServer(t, cfg)
	base := time.Now().Add(-time.Minute).UnixMilli()
	var lines []string
	for i := range 50 {
		lines = append(lines, fmt.Sprintf(`{"value": %d.5, "timestamp": %d}`, i, base+int64(i)*1000))
	}
	publish := func(s *server, topic string, payload string) {
		cmd := exec.Command(pub, "-h", "127.0.0.1", "-p", s.port(), "-q", "1", "-t", topic, "-l")
		cmd.Stdin = strings.NewReader(payload)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub: %v\n%s", err, out)
		}
	}
	publish(s, "acme/p1/press7/temperature", strings.Join(lines, "\n")+"\n")
	published := time.Now()

	query := func(s *server, q string) string {
		resp, err := http.Get(s.http + "/api/v1/history?" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /api/v1/history?%s: %s %s", q, resp.Status, b)
		}
		return string(b)
	}
	from, to := strconv.FormatInt(base-1000, 10), strconv.FormatInt(base+60_000, 10)
	raw := "series=acme/p1/%2B/temperature&from=" + from + "&to=" + to
	agg := "series=acme/%23&from=" + strconv.FormatInt(base, 10) + "&to=" + to + "&step=10s&agg=avg"
	var got string
	for {
		got = query(s, raw)
		if strings.Count(got, "],[")+1 >= 50 && strings.Contains(got, "49.5") {
			break
		}
		if time.Since(published) > time.Second {
			t.Fatalf("1 s after the last PUBACK the history holds: %s", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	metrics := s.metrics(t)
	if !strings.Contains(metrics, "millstream_historian_points_total 50") || !strings.Contains(metrics, "millstream_historian_caught_up 1") {
		t.Errorf("historian metrics:\n%s", grepLines(metrics, "millstream_historian_"))
	}
	wantAgg := query(s, agg)
	if !strings.Contains(wantAgg, ",5],") || !strings.Contains(wantAgg, ",45]") {
		t.Fatalf("10 s averages: %s", wantAgg)
	}

	s.stop(t, syscall.SIGKILL)
	s2 := startServer(t, cfg)
	waitReady(t, s2)
	if again := query(s2, raw); again != got {
		t.Errorf("after kill -9 and restart:\n%s\nwant\n%s", again, got)
	}
	if again := query(s2, agg); again != wantAgg {
		t.Errorf("aggregates after kill -9 and restart:\n%s\nwant\n%s", again, wantAgg)
	}

	s2.stop(t, syscall.SIGTERM)
	if err := os.RemoveAll(filepath.Join(dir, "data", "historian")); err != nil {
		t.Fatal(err)
	}
	s3 := startServer(t, cfg)
	waitReady(t, s3)
	if again := query(s3, raw); again != got {
		t.Errorf("after a rebuild from the log:\n%s\nwant\n%s", again, got)
	}
	if again := query(s3, agg); again != wantAgg {
		t.Errorf("aggregates after a rebuild from the log:\n%s\nwant\n%s", again, wantAgg)
	}
}

// TestHistorianTier: points two days old move to the Parquet tier (a
// directory here; the historian package tests S3 against MinIO); queries
// answer the same before and after, online and offline (millstream query
// --config reads the tier the configuration names).
func TestHistorianTier(t *testing.T) {
	pub := needTool(t, "mosquitto_pub")
	dir := t.TempDir()
	tierDir := filepath.Join(dir, "tier")
	cfg := writeConfig(t, dir, "historian:\n  partition: 1h\n  out_of_order_window: 1m\n  tier:\n    after: 2h\n    interval: 1s\n    dir: "+tierDir+"\n")
	s := startServer(t, cfg)
	base := time.Now().Add(-48 * time.Hour).Truncate(time.Hour)
	var lines []string
	for i := range 120 {
		lines = append(lines, fmt.Sprintf(`{"value": %d, "timestamp": %d}`, i, base.Add(time.Duration(i)*time.Minute).UnixMilli()))
	}
	cmd := exec.Command(pub, "-h", "127.0.0.1", "-p", s.port(), "-q", "1", "-t", "acme/p1/m1/flow", "-l")
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", err, out)
	}
	q := "series=acme/p1/m1/flow&from=" + strconv.FormatInt(base.UnixMilli(), 10) + "&to=" + strconv.FormatInt(base.Add(3*time.Hour).UnixMilli(), 10) + "&step=30m&agg=avg"
	get := func() string {
		resp, err := http.Get(s.http + "/api/v1/history?" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	var before string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if before = get(); strings.Contains(before, ",104.5]") || time.Now().After(deadline) {
			break
		}
	}
	if !strings.Contains(before, ",14.5]") || !strings.Contains(before, ",104.5]") {
		t.Fatalf("30-minute averages before tiering: %s", before)
	}
	// Both hours move to Parquet files.
	var files []string
	for deadline := time.Now().Add(30 * time.Second); len(files) < 2 && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		files = nil
		_ = filepath.WalkDir(tierDir, func(p string, d os.DirEntry, err error) error {
			if err == nil && strings.HasSuffix(p, ".parquet") {
				files = append(files, p)
			}
			return nil
		})
	}
	if len(files) < 2 {
		t.Fatalf("Parquet files in %s: %v", tierDir, files)
	}
	if after := get(); after != before {
		t.Errorf("after tiering:\n%s\nwant\n%s", after, before)
	}
	s.stop(t, syscall.SIGTERM)
	out, err := exec.Command(millstreamBin(t), "query", "acme/p1/m1/flow", "--config", cfg, "--format", "json",
		"--from", strconv.FormatInt(base.UnixMilli(), 10), "--to", strconv.FormatInt(base.Add(3*time.Hour).UnixMilli(), 10), "--step", "30m", "--agg", "avg").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != strings.TrimSpace(before) {
		t.Errorf("millstream query --config (offline, through the tier): %v\n%s\nwant\n%s", err, out, before)
	}
}

// waitReady waits until /readyz answers 200.
func waitReady(t *testing.T, s *server) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.http + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz not 200 after 30 s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestKafkaEndpointSCRAM: a user enrolled with `millstream passwd --scram`
// authenticates from kcat (librdkafka) with SCRAM-SHA-512 and PLAIN; a wrong
// password and anonymous clients are refused.
func TestKafkaEndpointSCRAM(t *testing.T) {
	kcat := needTool(t, "kcat")
	cmd := exec.Command(millstreamBin(t), "passwd", "--scram", "--cost", "4")
	cmd.Stdin = strings.NewReader("fieldbus\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("passwd --scram: %v", err)
	}
	var entry strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		entry.WriteString("      " + line + "\n")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "millstream.yaml")
	yaml := "data_dir: " + filepath.Join(dir, "data") + "\nhttp:\n  address: 127.0.0.1:0\nlogging:\n  format: json\n" +
		"kafka_endpoint:\n  enabled: true\n  address: 127.0.0.1:0\n" +
		"mqtt:\n  listeners:\n    - {name: tcp, type: tcp, address: \"127.0.0.1:0\"}\n  allow_anonymous: false\n  users:\n    - username: connect\n" + entry.String()
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	list := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, kcat, append([]string{"-b", s.kafka, "-L", "-m", "2"}, args...)...).CombinedOutput()
		return string(out), err
	}
	for _, mech := range []string{"SCRAM-SHA-512", "PLAIN"} {
		if out, err := list("-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms="+mech, "-X", "sasl.username=connect", "-X", "sasl.password=fieldbus"); err != nil || !strings.Contains(out, "mqtt.ingress") {
			t.Errorf("kcat %s: %v\n%s", mech, err, out)
		}
	}
	if out, err := list("-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=SCRAM-SHA-256", "-X", "sasl.username=connect", "-X", "sasl.password=wrong"); err == nil {
		t.Errorf("kcat with a wrong password listed the topics:\n%s", out)
	}
	if out, err := list(); err == nil {
		t.Errorf("anonymous kcat listed the topics:\n%s", out)
	}
}

// TestPlainJSONBecomesPoints publishes a JSON object of tags with
// mosquitto_pub and reads the normalised points from uns.points; after a
// kill -9 and a restart the normaliser resumes without writing any point
// twice.
func TestPlainJSONBecomesPoints(t *testing.T) {
	pub := needTool(t, "mosquitto_pub")
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "")
	s := startServer(t, cfg)
	publish := func(s *server, topic, payload string) {
		out, err := exec.Command(pub, "-h", "127.0.0.1", "-p", s.port(), "-q", "1", "-t", topic, "-m", payload).CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_pub: %v\n%s", err, out)
		}
	}
	publish(s, "acme/plant1/press7", `{"temperature": 71.5, "count": 1042, "state": "RUN"}`)
	recs := waitPoints(t, s, 3)
	want := map[string]string{"acme/plant1/press7/temperature": "71.5", "acme/plant1/press7/count": "1042", "acme/plant1/press7/state": "RUN"}
	for _, r := range recs {
		var p struct {
			Path  string          `json:"path"`
			Value json.RawMessage `json:"value"`
		}
		if err := json.Unmarshal(r.Value, &p); err != nil {
			t.Fatal(err)
		}
		if w, ok := want[p.Path]; !ok || strings.Trim(string(p.Value), `"`) != w {
			t.Errorf("point %s = %s", p.Path, p.Value)
		}
		if string(r.Key) != "acme/plant1/press7" {
			t.Errorf("point %s keyed %q, want the asset", p.Path, r.Key)
		}
		delete(want, p.Path)
	}
	if len(want) != 0 {
		t.Fatalf("points missing: %v (got %d records)", want, len(recs))
	}
	// The live namespace is updated once the batch is durable, right after
	// the points become readable: poll briefly.
	var view struct {
		Children []struct {
			Path  string `json:"path"`
			Point struct {
				Value any `json:"value"`
			} `json:"point"`
		} `json:"children"`
	}
	for deadline := time.Now().Add(20 * time.Second); len(view.Children) < 3 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		resp, err := http.Get(s.http + "/api/v1/uns?path=acme/plant1/press7")
		if err != nil {
			t.Fatal(err)
		}
		_ = json.NewDecoder(resp.Body).Decode(&view)
		resp.Body.Close()
	}
	if len(view.Children) != 3 || view.Children[0].Path != "acme/plant1/press7/count" || view.Children[0].Point.Value != 1042.0 {
		t.Errorf("GET /api/v1/uns?path=acme/plant1/press7: %+v", view)
	}

	s.stop(t, syscall.SIGKILL)
	s2 := startServer(t, cfg)
	publish(s2, "acme/plant1/press7/speed", "12.5")
	// The normaliser reads the ingress topic in order, so a point written
	// again for the first message would be appended before the new one.
	recs = waitPoints(t, s2, 4)
	seen := map[string]bool{}
	for _, r := range recs {
		src := header(r, "uns.src")
		if seen[src] {
			t.Errorf("point from %s written twice", src)
		}
		seen[src] = true
	}
	if len(recs) != 4 {
		t.Errorf("uns.points holds %d points after the restart, want 4", len(recs))
	}
}

// TestTahuEdgeNode runs a real Sparkplug B edge node written by others
// (Eclipse Tahu's JavaScript client, npm sparkplug-client; see
// testdata/tahu): it births a node and a device with aliased metrics,
// publishes data by alias and dies abruptly. Every metric shows up in the
// namespace by name with its type and last value, stale after the death.
func TestTahuEdgeNode(t *testing.T) {
	node := needTool(t, "node")
	modules := filepath.Join("testdata", "tahu", "node_modules", "sparkplug-client")
	if _, err := os.Stat(modules); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing under CI=true: run scripts/install-deps.sh (npm ci in testdata/tahu)", modules)
		}
		t.Skipf("%s not installed (cd cmd/millstream/testdata/tahu && npm ci)", modules)
	}
	// Defaults: anonymous clients on loopback. The Tahu client sends an
	// empty password when it has none, which must be accepted.
	cfg := writeConfig(t, t.TempDir(), "")
	s := startServer(t, cfg)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "edge-node.js", "tcp://127.0.0.1:"+s.port())
	cmd.Dir = filepath.Join("testdata", "tahu")
	out, err := cmd.CombinedOutput()
	if !strings.Contains(string(out), "published") {
		t.Fatalf("edge node: %v\n%s", err, out)
	}

	type point struct {
		Type    string `json:"type"`
		Value   any    `json:"value"`
		Quality string `json:"quality"`
		Source  string `json:"source"`
	}
	get := func(path string) (point, bool) {
		resp, err := http.Get(s.http + "/api/v1/uns?path=" + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v struct {
			Point *point `json:"point"`
		}
		if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&v) != nil || v.Point == nil {
			return point{}, false
		}
		return *v.Point, true
	}
	want := map[string]point{
		"acme/press7/Motor/Temperature": {"float", 21.5, "stale", "spb:acme/press7"},
		"acme/press7/Count":             {"int", 8.0, "stale", "spb:acme/press7"},
		"acme/press7/Running":           {"bool", true, "stale", "spb:acme/press7"},
		"acme/press7/Recipe":            {"string", "PX-20", "stale", "spb:acme/press7"},
		"acme/press7/mold1/Pressure":    {"float", 4.25, "stale", "spb:acme/press7/mold1"},
	}
	deadline := time.Now().Add(20 * time.Second)
	for path, w := range want {
		for {
			got, ok := get(path)
			if ok && got == w {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s = %+v (found %v), want %+v", path, got, ok, w)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	resp, err := http.Get(s.http + "/api/v1/sparkplug/nodes")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var nodes struct {
		Nodes []struct {
			Group     string `json:"group"`
			EdgeNode  string `json:"edge_node"`
			Online    bool   `json:"online"`
			Rebirths  int    `json:"rebirths_requested"`
			SeqErrors int    `json:"seq_errors"`
		} `json:"nodes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&nodes); err != nil || len(nodes.Nodes) != 1 {
		t.Fatalf("sparkplug nodes: %v %+v", err, nodes)
	}
	if n := nodes.Nodes[0]; n.Group != "acme" || n.EdgeNode != "press7" || n.Online || n.Rebirths != 0 || n.SeqErrors != 0 {
		t.Errorf("edge node state after its death: %+v", n)
	}
}

// TestCommandsToTahuEdgeNode: commands posted to the HTTP API reach a real
// Sparkplug edge node (Eclipse Tahu's client) as NCMD and DCMD, typed with
// the datatype the node declared in its birth; a command to a path that is
// not allowed is refused; every request is on commands.audit.
func TestCommandsToTahuEdgeNode(t *testing.T) {
	node := needTool(t, "node")
	if _, err := os.Stat(filepath.Join("testdata", "tahu", "node_modules", "sparkplug-client")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("sparkplug-client is missing under CI=true: run scripts/install-deps.sh")
		}
		t.Skip("sparkplug-client not installed (cd cmd/millstream/testdata/tahu && npm ci)")
	}
	s := startServer(t, writeConfig(t, t.TempDir(), "commands:\n  allow: [acme/press8/Setpoint, acme/press8/mold1/+]\n"))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "edge-node-commands.js", "tcp://127.0.0.1:"+s.port(), "2")
	cmd.Dir = filepath.Join("testdata", "tahu")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	lines := bufio.NewScanner(out)
	if !lines.Scan() || lines.Text() != "born" {
		t.Fatalf("edge node did not start: %q", lines.Text())
	}

	post := func(body string) (int, map[string]any) {
		// The birth may not be normalised yet: a refusal for an unborn
		// node is retried, anything else is the answer.
		deadline := time.Now().Add(20 * time.Second)
		for {
			resp, err := http.Post(s.http+"/api/v1/commands?wait=10s", "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			var v map[string]any
			err = json.NewDecoder(resp.Body).Decode(&v)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode == http.StatusUnprocessableEntity && strings.Contains(fmt.Sprint(v["error"]), "not been born") && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return resp.StatusCode, v
		}
	}
	if code, v := post(`{"path":"acme/press8/Count","value":5,"requested_by":"op1"}`); code != http.StatusUnprocessableEntity || !strings.Contains(fmt.Sprint(v["error"]), "not allowed") {
		t.Errorf("disallowed command: %d %v", code, v)
	}
	if code, v := post(`{"id":"sp-1","path":"acme/press8/Setpoint","value":42,"requested_by":"op1"}`); code != http.StatusOK || v["status"] != "sent" {
		t.Fatalf("Setpoint command: %d %v", code, v)
	}
	if code, v := post(`{"id":"mode-1","path":"acme/press8/mold1/Mode","value":"MANUAL"}`); code != http.StatusOK || v["status"] != "sent" {
		t.Fatalf("Mode command: %d %v", code, v)
	}

	type received struct {
		Kind, Device, Name, Type string
		Value                    any
	}
	var got []received
	for lines.Scan() {
		var r received
		if err := json.Unmarshal(lines.Bytes(), &r); err != nil {
			t.Fatalf("edge node output %q: %v", lines.Text(), err)
		}
		got = append(got, r)
	}
	want := []received{
		{"NCMD", "", "Setpoint", "Double", 42.0},
		{"DCMD", "mold1", "Mode", "String", "MANUAL"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("edge node received %+v, want %+v", got, want)
	}

	// The audit trail: three requests, who asked, what happened.
	resp, err := http.Get(s.http + "/api/v1/topics/commands.audit/records?from=0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var page struct {
		Records []struct {
			Value string `json:"value"` // the audit record's JSON, as text
		} `json:"records"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		t.Fatal(err)
	}
	var statuses []string
	for _, r := range page.Records {
		var a struct{ Path, Status, Datatype string }
		if err := json.Unmarshal([]byte(r.Value), &a); err != nil {
			t.Fatalf("audit record %s: %v", r.Value, err)
		}
		statuses = append(statuses, a.Path+"="+a.Status+"/"+a.Datatype)
	}
	if !slices.Contains(statuses, "acme/press8/Setpoint=sent/Double") || !slices.Contains(statuses, "acme/press8/mold1/Mode=sent/String") || !slices.Contains(statuses, "acme/press8/Count=rejected/") {
		t.Errorf("audit records %v", statuses)
	}
}

// TestSparkplugRebirthAndState: the host application's state is retained on
// spBv1.0/STATE/millstream, and a DATA message from an edge node that never
// sent its birth makes Millstream publish a rebirth NCMD to that node.
func TestSparkplugRebirthAndState(t *testing.T) {
	s := startServer(t, writeConfig(t, t.TempDir(), ""))
	o := paho.NewClientOptions().AddBroker("tcp://127.0.0.1:" + s.port()).SetClientID("spb-observer").SetAutoReconnect(false)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(0)
	state := make(chan paho.Message, 4)
	ncmd := make(chan paho.Message, 4)
	for filter, ch := range map[string]chan paho.Message{"spBv1.0/STATE/#": state, "spBv1.0/+/NCMD/#": ncmd} {
		tok := c.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) { ch <- m })
		if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe %s: %v", filter, tok.Error())
		}
	}
	select {
	case m := <-state:
		var st struct {
			Online    bool  `json:"online"`
			Timestamp int64 `json:"timestamp"`
		}
		if m.Topic() != "spBv1.0/STATE/millstream" || !m.Retained() || json.Unmarshal(m.Payload(), &st) != nil || !st.Online || st.Timestamp == 0 {
			t.Errorf("state message %s retained=%v %s", m.Topic(), m.Retained(), m.Payload())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no retained STATE message")
	}

	data, err := sparkplug.Encode(&sparkplugb.Payload{Seq: proto.Uint64(5), Timestamp: proto.Uint64(uint64(time.Now().UnixMilli())),
		Metrics: []*sparkplugb.Payload_Metric{{Alias: proto.Uint64(1), Datatype: proto.Uint32(uint32(sparkplug.Double)), Value: &sparkplugb.Payload_Metric_DoubleValue{DoubleValue: 1.5}}}})
	if err != nil {
		t.Fatal(err)
	}
	if tok := c.Publish("spBv1.0/acme/NDATA/ghost", 1, false, data); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("publish NDATA: %v", tok.Error())
	}
	select {
	case m := <-ncmd:
		p, err := sparkplug.Decode(m.Payload())
		if err != nil || m.Topic() != "spBv1.0/acme/NCMD/ghost" || len(p.Metrics) != 1 || p.Metrics[0].GetName() != "Node Control/Rebirth" || !p.Metrics[0].GetBooleanValue() {
			t.Errorf("NCMD %s: %v %v", m.Topic(), err, p)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no rebirth NCMD for a node that sent data before its birth")
	}

	// A born node whose DATA skips a sequence number is asked to rebirth.
	msg := func(seq uint64, ms ...*sparkplugb.Payload_Metric) []byte {
		b, err := sparkplug.Encode(&sparkplugb.Payload{Seq: proto.Uint64(seq), Timestamp: proto.Uint64(uint64(time.Now().UnixMilli())), Metrics: ms})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	temp := func(name *string, v float64) *sparkplugb.Payload_Metric {
		return &sparkplugb.Payload_Metric{Name: name, Alias: proto.Uint64(1), Datatype: proto.Uint32(uint32(sparkplug.Double)), Value: &sparkplugb.Payload_Metric_DoubleValue{DoubleValue: v}}
	}
	bd := &sparkplugb.Payload_Metric{Name: proto.String("bdSeq"), Datatype: proto.Uint32(uint32(sparkplug.UInt64)), Value: &sparkplugb.Payload_Metric_LongValue{LongValue: 0}}
	for _, m := range []struct {
		topic string
		body  []byte
	}{
		{"spBv1.0/acme/NBIRTH/gappy", msg(0, bd, temp(proto.String("Temperature"), 20))},
		{"spBv1.0/acme/NDATA/gappy", msg(1, temp(nil, 21))},
		{"spBv1.0/acme/NDATA/gappy", msg(3, temp(nil, 22))}, // seq 2 never comes
	} {
		if tok := c.Publish(m.topic, 1, false, m.body); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", m.topic, tok.Error())
		}
	}
	select {
	case m := <-ncmd:
		p, err := sparkplug.Decode(m.Payload())
		if err != nil || m.Topic() != "spBv1.0/acme/NCMD/gappy" || len(p.Metrics) != 1 || p.Metrics[0].GetName() != "Node Control/Rebirth" {
			t.Errorf("NCMD after a sequence gap %s: %v %v", m.Topic(), err, p)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no rebirth NCMD after a sequence gap")
	}

	// Stopping (SIGTERM, as systemd and Kubernetes stop a service) flips
	// the retained state to offline before the broker closes: a connected
	// client sees it.
	s.stop(t, syscall.SIGTERM)
	select {
	case m := <-state:
		var st struct {
			Online    bool  `json:"online"`
			Timestamp int64 `json:"timestamp"`
		}
		if m.Topic() != "spBv1.0/STATE/millstream" || json.Unmarshal(m.Payload(), &st) != nil || st.Online || st.Timestamp == 0 {
			t.Errorf("state message on stop %s %s", m.Topic(), m.Payload())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no offline STATE message when millstream stopped")
	}
}

// TestSimulate runs `millstream simulate` against a server: Sparkplug edge
// nodes and devices birth, publish, drop their connections abruptly and
// birth again; the host application follows without sequence errors or
// rebirth requests, and nothing lands in the dead-letter topic.
func TestSimulate(t *testing.T) {
	s := startServer(t, writeConfig(t, t.TempDir(), ""))
	cmd := exec.Command(millstreamBin(t), "simulate", "--broker", "tcp://127.0.0.1:"+s.port(),
		"--nodes", "2", "--devices", "2", "--metrics", "6", "--rate", "20", "--duration", "3s", "--drop-every", "1s", "--json", "1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("simulate: %v\n%s", err, stderr.String())
	}
	var res struct {
		Births   int `json:"births"`
		Messages int `json:"data_messages"`
		Drops    int `json:"abrupt_disconnects"`
		Errors   int `json:"errors"`
	}
	if err := json.Unmarshal(out, &res); err != nil || res.Messages == 0 || res.Drops == 0 || res.Errors != 0 || res.Births < 2*3*2 {
		t.Fatalf("simulate result %s: %v", out, err)
	}
	// The host has seen every node and device, in order.
	var nodes struct {
		Nodes []struct {
			EdgeNode  string `json:"edge_node"`
			SeqErrors int    `json:"seq_errors"`
			Rebirths  int    `json:"rebirths_requested"`
			Devices   []any  `json:"devices"`
		} `json:"nodes"`
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(nodes.Nodes) < 2 && time.Now().Before(deadline) {
		resp, err := http.Get(s.http + "/api/v1/sparkplug/nodes")
		if err != nil {
			t.Fatal(err)
		}
		_ = json.NewDecoder(resp.Body).Decode(&nodes)
		resp.Body.Close()
		time.Sleep(20 * time.Millisecond)
	}
	if len(nodes.Nodes) != 2 {
		t.Fatalf("sparkplug nodes: %+v", nodes)
	}
	for _, n := range nodes.Nodes {
		if n.SeqErrors != 0 || n.Rebirths != 0 || len(n.Devices) != 2 {
			t.Errorf("node %+v", n)
		}
	}
	recs := points(t, s)
	fromJSON := 0
	for _, r := range recs {
		if string(r.Key) == "sim/json/line1/machine" {
			fromJSON++
		}
	}
	if len(recs) == 0 || fromJSON == 0 {
		t.Errorf("uns.points: %d points, %d from the JSON publisher", len(recs), fromJSON)
	}
	resp, err := http.Get(s.http + "/api/v1/topics/uns.deadletter/records")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var dl struct {
		Records []json.RawMessage `json:"records"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&dl); err != nil || len(dl.Records) != 0 {
		t.Errorf("dead letters: %v %s", err, dl.Records)
	}
}

// TestBenchUNS runs the end-to-end latency scenario briefly: every point
// the simulated devices publish arrives on /api/v1/uns/live, with a
// latency measured for those after the warm-up. (The latency itself is a
// benchmark result, docs/benchmarks.md, not checked here.)
func TestBenchUNS(t *testing.T) {
	s := startServer(t, writeConfig(t, t.TempDir(), ""))
	cmd := exec.Command(millstreamBin(t), "bench", "uns", "--server", s.http, "--broker", "tcp://127.0.0.1:"+s.port(),
		"--nodes", "2", "--devices", "2", "--metrics", "5", "--rate", "10", "--duration", "2s", "--warmup", "500ms")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bench uns: %v\n%s", err, stderr.String())
	}
	var res struct {
		Published  int64   `json:"points_published"`
		Received   int64   `json:"points_received"`
		Measured   int     `json:"latencies_measured"`
		P99        float64 `json:"latency_p99_ms"`
		Overflowed bool    `json:"live_stream_overflowed"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("bench uns output %s: %v", out, err)
	}
	// Births add each device's metrics once more, on top of the data.
	if res.Published == 0 || res.Received < res.Published || res.Measured == 0 || res.P99 <= 0 || res.Overflowed {
		t.Errorf("bench uns result %s", out)
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
