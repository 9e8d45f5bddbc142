package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"
)

// unsResult is one line of `millstream bench uns`: simulated Sparkplug
// devices publish through the broker, and a client of /api/v1/uns/live
// measures how long each point took from its source timestamp to arrival.
type unsResult struct {
	Scenario      string  `json:"scenario"`
	Nodes         int     `json:"nodes"`
	Devices       int     `json:"devices_per_node"`
	Metrics       int     `json:"metrics_per_device"`
	RateTarget    float64 `json:"points_per_s_target"`
	Seconds       float64 `json:"seconds"`
	Published     int64   `json:"points_published"`
	PublishedPS   float64 `json:"points_published_per_s"`
	Received      int64   `json:"points_received"`
	Measured      int     `json:"latencies_measured"`
	LatencyP50    float64 `json:"latency_p50_ms"`
	LatencyP99    float64 `json:"latency_p99_ms"`
	LatencyP999   float64 `json:"latency_p999_ms"`
	LatencyMax    float64 `json:"latency_max_ms"`
	Overflowed    bool    `json:"live_stream_overflowed"`
	PublishErrors int64   `json:"publish_errors"`
}

func benchUNS(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench uns", stderr)
	var p simParams
	server := fs.String("server", "http://127.0.0.1:8080", "Millstream HTTP API URL (for /api/v1/uns/live)")
	fs.StringVar(&p.Broker, "broker", "tcp://127.0.0.1:1883", "MQTT broker URL")
	fs.IntVar(&p.Nodes, "nodes", 10, "Sparkplug edge nodes (one MQTT connection each)")
	fs.IntVar(&p.Devices, "devices", 10, "devices per edge node")
	fs.IntVar(&p.Metrics, "metrics", 10, "metrics per device (one DDATA carries all of a device's metrics)")
	fs.Float64Var(&p.Rate, "rate", 50, "DDATA messages per second per device")
	fs.DurationVar(&p.Duration, "duration", 10*time.Second, "how long to publish")
	warmup := fs.Duration("warmup", 2*time.Second, "latencies of points timestamped in the first part of the run are not counted (connections, births)")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if p.Nodes < 1 || p.Devices < 1 || p.Metrics < 1 || p.Rate <= 0 || p.Duration <= *warmup || p.Duration > time.Hour {
		return fmt.Errorf("%w: --nodes, --devices, --metrics at least 1, --rate positive, --duration longer than --warmup and at most 1h", errUsage)
	}
	// A fresh group each run, so that the stream holds this run's points only.
	p.Group = fmt.Sprintf("bench%04x", rand.Uint32()&0xffff)
	p.Seed = 1

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	sseCtx, cancelSSE := context.WithCancel(ctx)
	defer cancelSSE()
	req, err := http.NewRequestWithContext(sseCtx, http.MethodGet, *server+"/api/v1/uns/live?pattern="+url.QueryEscape(p.Group+"/#"), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("bench uns: %w (is millstream running with its HTTP API on %s? set --server)", err, *server)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("bench uns: GET /api/v1/uns/live: %s: %s", resp.Status, b)
	}

	began := time.Now()
	countFrom := began.Add(*warmup)
	var (
		mu         sync.Mutex
		latencies  []time.Duration
		received   int64
		overflowed bool
	)
	readDone := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var pt struct {
			Time time.Time `json:"time"`
		}
		for sc.Scan() {
			line := sc.Bytes()
			now := time.Now()
			switch {
			case bytes.HasPrefix(line, []byte("event: overflow")):
				mu.Lock()
				overflowed = true
				mu.Unlock()
			case bytes.HasPrefix(line, []byte("data: ")):
				if err := json.Unmarshal(line[len("data: "):], &pt); err != nil {
					continue // the overflow event's data
				}
				mu.Lock()
				received++
				if !pt.Time.Before(countFrom) {
					latencies = append(latencies, now.Sub(pt.Time))
				}
				mu.Unlock()
			}
		}
		readDone <- sc.Err()
	}()

	sim := runSimulation(ctx, p, stderr)
	// Let the last points arrive: stop once nothing came for 500 ms.
	for last := int64(-1); ; {
		time.Sleep(500 * time.Millisecond)
		mu.Lock()
		n := received
		mu.Unlock()
		if n == last || ctx.Err() != nil {
			break
		}
		last = n
	}
	cancelSSE()
	<-readDone

	mu.Lock()
	defer mu.Unlock()
	res := unsResult{Scenario: "uns-live", Nodes: p.Nodes, Devices: p.Devices, Metrics: p.Metrics,
		RateTarget: float64(p.Nodes*p.Devices*p.Metrics) * p.Rate, Seconds: sim.Seconds,
		Published: sim.Points, PublishedPS: sim.PointsPerS, Received: received, Measured: len(latencies),
		Overflowed: overflowed, PublishErrors: sim.Errors}
	if len(latencies) > 0 {
		slices.Sort(latencies)
		q := func(f float64) float64 {
			return float64(latencies[min(len(latencies)-1, int(f*float64(len(latencies))))]) / 1e6
		}
		res.LatencyP50, res.LatencyP99, res.LatencyP999, res.LatencyMax = q(0.5), q(0.99), q(0.999), float64(latencies[len(latencies)-1])/1e6
	}
	return json.NewEncoder(stdout).Encode(res)
}
