package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// benchLine is one JSON line of `millstream bench ingest`.
type benchLine struct {
	Phase        string   `json:"phase"`
	QoS          int      `json:"qos"`
	Published    int64    `json:"published"`
	Acked        int64    `json:"acked"`
	Delivered    int64    `json:"delivered"`
	Errors       int64    `json:"errors"`
	P50          float64  `json:"puback_p50_ms"`
	P99          float64  `json:"puback_p99_ms"`
	SocketP50    float64  `json:"puback_socket_p50_ms"`
	SocketP99    float64  `json:"puback_socket_p99_ms"`
	Busy         *float64 `json:"machine_busy_pct"`
	Steal        *float64 `json:"machine_steal_pct"`
	serverResult          // with --metrics only
}

func runBenchIngest(t *testing.T, broker string, args ...string) []benchLine {
	t.Helper()
	cmd := exec.Command(millstreamBin(t), append([]string{"bench", "ingest", "--broker", broker}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bench ingest %v: %v\n%s", args, err, stderr.String())
	}
	var lines []benchLine
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var l benchLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("bench ingest output %q: %v", sc.Text(), err)
		}
		lines = append(lines, l)
	}
	return lines
}

// checkBench checks that every message of a phase was acknowledged and
// delivered to the subscriber, in a run short and slow enough for any
// broker to keep up.
func checkBench(t *testing.T, name string, lines []benchLine, phases ...string) {
	t.Helper()
	if len(lines) != len(phases) {
		t.Fatalf("%s: %d result lines, want %d: %+v", name, len(lines), len(phases), lines)
	}
	for i, l := range lines {
		if l.Phase != phases[i] || l.Published == 0 || l.Acked != l.Published || l.Delivered != l.Published || l.Errors != 0 {
			t.Errorf("%s: phase %d: %+v (want every message acknowledged and delivered)", name, i, l)
		}
		if l.QoS == 1 && (l.P50 <= 0 || l.P99 < l.P50) {
			t.Errorf("%s: phase %d: PUBACK latencies p50 %v p99 %v", name, i, l.P50, l.P99)
		}
		// Each PUBACK is in the socket before the client reads it, so the
		// socket's quantiles are at most the client's.
		if l.QoS == 1 && runtime.GOOS == "linux" && (l.SocketP50 <= 0 || l.SocketP50 > l.P50 || l.SocketP99 < l.SocketP50 || l.SocketP99 > l.P99) {
			t.Errorf("%s: phase %d: PUBACK in the socket p50 %v p99 %v, read by the client p50 %v p99 %v", name, i, l.SocketP50, l.SocketP99, l.P50, l.P99)
		}
		// The machine was at least a little busy (the bench itself ran),
		// and never more than all of it.
		if runtime.GOOS == "linux" && (l.Busy == nil || l.Steal == nil || *l.Busy <= 0 || *l.Busy+*l.Steal > 100) {
			t.Errorf("%s: phase %d: machine_busy_pct %v, machine_steal_pct %v; want both, busy above 0", name, i, l.Busy, l.Steal)
		}
	}
}

// TestBenchIngest runs the ingest benchmark's own MQTT client against
// Millstream and against mosquitto, the peer it is compared with.
func TestBenchIngest(t *testing.T) {
	s := startServer(t, writeConfig(t, t.TempDir(), ""))
	ms := "tcp://127.0.0.1:" + s.port()
	qos1 := runBenchIngest(t, ms, "--publishers", "3", "--duration", "1s", "--warmup", "500ms", "--phases", "peak,half", "--metrics", s.http+"/metrics")
	checkBench(t, "millstream qos 1", qos1, "peak", "half")
	// --metrics adds the server's own split of the wait, for the same
	// messages: its part is within the client's round trip, and the
	// hand-off is part of it.
	for _, l := range qos1 {
		if l.AppendWaitP50 == nil || l.AppendWaitP99 == nil || l.HandoffP50 == nil || l.HandoffP99 == nil || l.Flushes == nil || l.FlushMean == nil {
			t.Errorf("phase %s: server_* fields missing: %+v", l.Phase, l)
			continue
		}
		if w50, w99, h50 := *l.AppendWaitP50, *l.AppendWaitP99, *l.HandoffP50; w50 <= 0 || w99 < w50 || h50 > w99 || *l.Flushes <= 0 || *l.FlushMean <= 0 {
			t.Errorf("phase %s: server append wait p50/p99 %v/%v ms, hand-off p50 %v ms, %d flushes of %v ms", l.Phase, w50, w99, h50, *l.Flushes, *l.FlushMean)
		}
	}
	checkBench(t, "millstream qos 0", runBenchIngest(t, ms, "--qos", "0", "--publishers", "2", "--duration", "1s", "--warmup", "0s", "--phases", "500"), "500")

	mq := startMosquitto(t)
	checkBench(t, "mosquitto qos 1", runBenchIngest(t, mq, "--publishers", "3", "--duration", "1s", "--warmup", "300ms", "--phases", "300"), "300")
}

func TestBenchIngestErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--broker", "ws://127.0.0.1:1"}, `scheme "ws" is not supported`},
		{[]string{"--broker", "tcp://127.0.0.1:1"}, "connect bench-sub-"},
		{[]string{"--qos", "2"}, "--qos must be 0 or 1"},
		{[]string{"--warmup", "-1s"}, "--warmup not negative"},
	} {
		cmd := exec.Command(millstreamBin(t), append([]string{"bench", "ingest", "--duration", "1s"}, tc.args...)...)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("bench ingest %v: %v\n%s\nwant an error containing %q", tc.args, err, out, tc.want)
		}
	}
}

// startMosquitto runs a mosquitto broker (Debian package mosquitto) on a
// free loopback port and returns its URL.
func startMosquitto(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/mosquitto"); serr == nil {
			bin = "/usr/sbin/mosquitto"
		} else if os.Getenv("CI") == "true" {
			t.Fatal("mosquitto is required under CI=true (apt-get install mosquitto)")
		} else {
			t.Skip("mosquitto not installed (apt-get install mosquitto)")
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir := t.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(conf, []byte("listener "+strconv.Itoa(port)+" 127.0.0.1\nallow_anonymous true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", conf)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := "127.0.0.1:" + strconv.Itoa(port)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return "tcp://" + addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto did not start listening on %s: %s", addr, stderr.String())
		}
	}
}
