package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

const benchUsage = `Scenarios:
  ingest   P MQTT publishers x QoS 0/1 x small payloads into a broker, with a
           subscriber on the benchmark topics. Runs a peak phase (as fast as
           the broker acknowledges) and then a phase at half the peak rate,
           each after a warm-up (--warmup) that is not counted; prints one
           JSON line per phase: messages/s published and delivered,
           publish->PUBACK p50/p99/max (and, on Linux over plain TCP,
           publish->PUBACK in the client's socket, from the kernel's receive
           timestamps: without the load generator's own delay). With
           --metrics (a Millstream's /metrics URL) also the broker's own part
           of that wait, its hand-off after the flush, and the flushes, for
           the same window.
  uns      Simulated Sparkplug edge nodes (NODES x DEVICES x METRICS at RATE
           DDATA/s per device) publish through the broker while a client of
           /api/v1/uns/live measures each point's latency from its source
           timestamp to its arrival as an event; prints points/s and
           latency p50/p99/p99.9/max. Defaults: 50,000 points/s.

Any MQTT broker can be the target (--broker), so a peer such as mosquitto is
measured by the same client code. See docs/benchmarks.md and scripts/bench-ingest.sh.
`

func cmdBench(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(stderr, benchUsage)
		return fmt.Errorf("%w: name a scenario, e.g. millstream bench ingest", errUsage)
	}
	switch args[0] {
	case "ingest":
		return benchIngest(args[1:], stdout, stderr)
	case "uns":
		return benchUNS(args[1:], stdout, stderr)
	default:
		fmt.Fprint(stderr, benchUsage)
		return fmt.Errorf("%w: unknown scenario %q", errUsage, args[0])
	}
}

type ingestParams struct {
	Broker     string  `json:"-"`
	Target     string  `json:"target"`
	Publishers int     `json:"publishers"`
	QoS        byte    `json:"qos"`
	Size       int     `json:"payload_bytes"`
	Inflight   int     `json:"inflight_per_publisher"`
	Phase      string  `json:"phase"`
	Rate       float64 `json:"rate_target"`
	Duration   time.Duration
	Warmup     time.Duration `json:"-"`
	Metrics    string        `json:"-"`
	Username   string        `json:"-"`
	Password   string        `json:"-"`
	TopicBase  string        `json:"-"`
}

type ingestResult struct {
	Scenario string `json:"scenario"`
	ingestParams
	Seconds      float64 `json:"seconds"`
	Published    int64   `json:"published"`
	Sent         int64   `json:"sent"` // published plus the warm-up's messages
	Acked        int64   `json:"acked"`
	PublishedPS  float64 `json:"published_per_s"`
	Delivered    int64   `json:"delivered"`
	DeliveredPS  float64 `json:"delivered_per_s"`
	AckP50Millis float64 `json:"puback_p50_ms,omitempty"`
	AckP99Millis float64 `json:"puback_p99_ms,omitempty"`
	AckMaxMillis float64 `json:"puback_max_ms,omitempty"`
	// The same latencies up to the PUBACK's arrival in the client's socket
	// (the kernel's receive timestamp, Linux, plain TCP): without the time the
	// load generator's goroutine waited to read it.
	WireP50Millis float64 `json:"puback_socket_p50_ms,omitempty"`
	WireP99Millis float64 `json:"puback_socket_p99_ms,omitempty"`
	Errors        int64   `json:"errors"`
	// The whole machine's CPU use during the measured part of the phase
	// (Linux only): the generator shares the machine with the broker.
	MachineBusyPct  *float64 `json:"machine_busy_pct,omitempty"`
	MachineStealPct *float64 `json:"machine_steal_pct,omitempty"`
	// From the server's own histograms (--metrics), over the same window.
	serverResult
}

func benchIngest(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench ingest", stderr)
	var p ingestParams
	fs.StringVar(&p.Broker, "broker", "tcp://127.0.0.1:1883", "MQTT broker URL: tcp://host:port or tls://host:port")
	fs.StringVar(&p.Target, "target", "millstream", "label for the broker under test, copied into the results")
	fs.IntVar(&p.Publishers, "publishers", 8, "concurrent publishing clients")
	qos := fs.Int("qos", 1, "publish and subscribe QoS (0 or 1)")
	fs.IntVar(&p.Size, "size", 64, "payload bytes")
	fs.IntVar(&p.Inflight, "inflight", 16, "unacknowledged QoS 1 messages per publisher")
	fs.DurationVar(&p.Duration, "duration", 10*time.Second, "length of each phase, after its warm-up")
	fs.DurationVar(&p.Warmup, "warmup", 2*time.Second, "load sent at the start of each phase and not counted (connections, new topics, first segments)")
	phases := fs.String("phases", "peak,half", "phases to run: peak (unthrottled), half (half the measured peak rate), or a rate in msgs/s")
	fs.StringVar(&p.Username, "username", "", "MQTT username")
	fs.StringVar(&p.Password, "password", "", "MQTT password")
	fs.StringVar(&p.TopicBase, "topic", "bench", "topic prefix; the subscriber listens on PREFIX/#")
	fs.StringVar(&p.Metrics, "metrics", "", "a Millstream's /metrics URL (e.g. http://127.0.0.1:8080/metrics): also report, per phase, its own PUBACK wait and hand-off quantiles and its flushes (server_* fields)")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if *qos != 0 && *qos != 1 {
		return fmt.Errorf("%w: --qos must be 0 or 1", errUsage)
	}
	p.QoS = byte(*qos)
	if p.Publishers < 1 || p.Size < 1 || p.Inflight < 1 || p.Duration <= 0 || p.Warmup < 0 {
		return fmt.Errorf("%w: --publishers, --size, --inflight and --duration must be positive, --warmup not negative", errUsage)
	}
	if p.Duration > 10*time.Minute {
		return fmt.Errorf("%w: --duration is capped at 10m so a benchmark always ends", errUsage)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	enc := json.NewEncoder(stdout)
	var peak float64
	for _, ph := range strings.Split(*phases, ",") {
		q := p
		q.Phase = strings.TrimSpace(ph)
		switch q.Phase {
		case "peak":
			q.Rate = 0
		case "half":
			if peak == 0 {
				return fmt.Errorf("%w: phase half needs a peak phase before it", errUsage)
			}
			q.Rate = math.Floor(peak / 2)
		default:
			var r float64
			if _, err := fmt.Sscanf(q.Phase, "%g", &r); err != nil || r <= 0 {
				return fmt.Errorf("%w: phase %q: use peak, half or a rate in msgs/s", errUsage, q.Phase)
			}
			q.Rate = r
		}
		res, err := runIngest(ctx, q, stderr)
		if err != nil {
			return err
		}
		if q.Phase == "peak" {
			peak = res.PublishedPS
		}
		if err := enc.Encode(res); err != nil {
			return err
		}
	}
	return nil
}

// warmupMark is the first payload byte of messages sent during the warm-up
// (the others start with 'a').
const warmupMark = 'w'

type pending struct {
	id      uint16
	sent    time.Time
	counted bool // sent after the warm-up
}

func runIngest(ctx context.Context, p ingestParams, stderr io.Writer) (ingestResult, error) {
	res := ingestResult{Scenario: "ingest", ingestParams: p}
	run := time.Now().UnixNano()
	base := fmt.Sprintf("%s/%x", p.TopicBase, run)
	kctx, stopPings := context.WithCancel(ctx)
	defer stopPings()

	var delivered atomic.Int64
	sub, err := dialBench(ctx, p.Broker, fmt.Sprintf("bench-sub-%x", run), p.Username, p.Password)
	if err != nil {
		return res, err
	}
	defer sub.close()
	if err := sub.subscribe(base+"/#", p.QoS); err != nil {
		return res, err
	}
	go sub.keepAlive(kctx)
	subErr := make(chan error, 1)
	// Warm-up messages start with warmupMark; only the others count as
	// delivered.
	var received atomic.Int64
	go func() {
		subErr <- sub.receive(func(payload []byte) {
			received.Add(1)
			if len(payload) > 0 && payload[0] != warmupMark {
				delivered.Add(1)
			}
		})
	}()

	pubs := make([]*benchConn, p.Publishers)
	for i := range pubs {
		if pubs[i], err = dialBench(ctx, p.Broker, fmt.Sprintf("bench-pub-%x-%d", run, i), p.Username, p.Password); err != nil {
			return res, err
		}
		defer pubs[i].close()
		go pubs[i].keepAlive(kctx)
	}

	payload := make([]byte, p.Size)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	warmPayload := slices.Clone(payload)
	warmPayload[0] = warmupMark
	// sent counts every PUBLISH, published only those after the warm-up.
	var sent, published, acked, errCount atomic.Int64
	lat := make([][]time.Duration, p.Publishers)
	wire := make([][]time.Duration, p.Publishers) // to the PUBACK's arrival in the socket
	start := time.Now()
	measureFrom := start.Add(p.Warmup)
	deadline := measureFrom.Add(p.Duration)
	perPub := p.Rate / float64(p.Publishers)

	// The machine's CPU counters (and the server's histograms) at the start
	// of the measured window.
	cpuFrom := make(chan machineCPU, 1)
	serverFrom := make(chan serverSnapshot, 1)
	cpuTimer := time.AfterFunc(p.Warmup, func() {
		if m, ok := readMachineCPU(); ok {
			cpuFrom <- m
		}
		close(cpuFrom)
		if p.Metrics != "" {
			if snap, err := fetchServerMetrics(ctx, p.Metrics); err != nil {
				fmt.Fprintf(stderr, "bench ingest: %v (no server_* fields for this phase)\n", err)
			} else {
				serverFrom <- snap
			}
		}
		close(serverFrom)
	})
	defer cpuTimer.Stop()

	var wg sync.WaitGroup
	for i, c := range pubs {
		window := make(chan pending, p.Inflight)
		wg.Add(2)
		go func() { // reader: PUBACKs come in the order of the PUBLISHes [MQTT-4.6.0-2]
			defer wg.Done()
			failed := false
			for pe := range window {
				if failed {
					errCount.Add(1)
					continue
				}
				pk, err := c.read()
				for err == nil && pk.FixedHeader.Type == packets.Pingresp {
					pk, err = c.read()
				}
				switch {
				case err != nil:
					fmt.Fprintf(stderr, "bench ingest: publisher %d: %v\n", i, err)
				case pk.FixedHeader.Type != packets.Puback || pk.PacketID != pe.id:
					err = fmt.Errorf("expected the PUBACK of packet %d, got packet type %d id %d", pe.id, pk.FixedHeader.Type, pk.PacketID)
					fmt.Fprintf(stderr, "bench ingest: publisher %d: %v\n", i, err)
				}
				if err != nil {
					failed = true
					errCount.Add(1)
					_ = c.conn.Close() // the writer stops at its next write
					continue
				}
				if pe.counted {
					acked.Add(1)
					lat[i] = append(lat[i], time.Since(pe.sent))
					if at := c.received(); !at.IsZero() {
						wire[i] = append(wire[i], max(0, at.Sub(pe.sent)))
					}
				}
			}
		}()
		go func() { // writer
			defer wg.Done()
			defer close(window)
			topic := fmt.Sprintf("%s/%d", base, i)
			pk := packets.Packet{
				FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: p.QoS},
				TopicName:   topic,
				Payload:     payload,
			}
			var id uint16
			for n := 0; ; n++ {
				now := time.Now()
				if now.After(deadline) || ctx.Err() != nil {
					break
				}
				if perPub > 0 {
					// Publisher i starts i/P of a period late, so the publishers
					// together send an even stream, as independent devices do,
					// instead of all P messages at the same instant.
					due := start.Add(time.Duration((float64(n) + float64(i)/float64(p.Publishers)) / perPub * float64(time.Second)))
					if d := due.Sub(now); d > 0 {
						time.Sleep(d)
					}
				}
				at := time.Now()
				counted := !at.Before(measureFrom)
				pk.Payload = payload
				if !counted {
					pk.Payload = warmPayload
				}
				if p.QoS > 0 {
					if id++; id == 0 {
						id = 1
					}
					pk.PacketID = id
					window <- pending{id: id, sent: at, counted: counted}
				}
				if err := c.write(&pk); err != nil {
					if p.QoS == 0 {
						errCount.Add(1)
					}
					break
				}
				sent.Add(1)
				if counted {
					published.Add(1)
					if p.QoS == 0 {
						acked.Add(1)
					}
				}
			}
			// Outstanding PUBACKs get a bounded wait.
			_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		}()
	}

	// Progress on stderr while the phase runs.
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				el := time.Since(start).Seconds()
				label := ""
				if time.Now().Before(measureFrom) {
					label = " (warm-up)"
				}
				fmt.Fprintf(stderr, "bench ingest %s/%s: %.0fs%s, %.0f published/s, %.0f delivered/s\n",
					p.Target, p.Phase, el, label, float64(sent.Load())/el, float64(delivered.Load())/el)
			}
		}
	}()
	wg.Wait()
	elapsed := time.Since(measureFrom)
	if to, ok := readMachineCPU(); ok && !time.Now().Before(measureFrom) {
		if from, ok := <-cpuFrom; ok {
			if busy, steal, ok := cpuUsage(from, to); ok {
				res.MachineBusyPct, res.MachineStealPct = &busy, &steal
			}
		}
	}
	if p.Metrics != "" && !time.Now().Before(measureFrom) {
		if from, ok := <-serverFrom; ok {
			if to, err := fetchServerMetrics(ctx, p.Metrics); err != nil {
				fmt.Fprintf(stderr, "bench ingest: %v (no server_* fields for this phase)\n", err)
			} else {
				res.serverResult = serverDelta(from, to)
			}
		}
	}
	// Let in-flight deliveries drain, bounded.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end) && received.Load() < sent.Load(); {
		time.Sleep(20 * time.Millisecond)
	}
	close(done)

	res.Seconds = elapsed.Seconds()
	res.Published = published.Load()
	res.Sent = sent.Load()
	res.Acked = acked.Load()
	res.Errors = errCount.Load()
	res.PublishedPS = float64(res.Acked) / elapsed.Seconds()
	res.Delivered = delivered.Load()
	res.DeliveredPS = float64(res.Delivered) / elapsed.Seconds()
	if p.QoS > 0 {
		all := slices.Concat(lat...)
		if len(all) == 0 {
			return res, errors.New("no PUBACK received: is the broker accepting QoS 1 publishes?")
		}
		slices.Sort(all)
		ms := func(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
		res.AckP50Millis = ms(all[len(all)*50/100])
		res.AckP99Millis = ms(all[len(all)*99/100])
		res.AckMaxMillis = ms(all[len(all)-1])
		// Only when every PUBACK has its receive time: a partial set
		// would be a biased sample.
		if w := slices.Concat(wire...); len(w) == len(all) {
			slices.Sort(w)
			res.WireP50Millis = ms(w[len(w)*50/100])
			res.WireP99Millis = ms(w[len(w)*99/100])
		}
	}
	if res.Errors > 0 {
		fmt.Fprintf(stderr, "bench ingest: %d publishes failed\n", res.Errors)
	}
	select {
	case err := <-subErr:
		if err != nil {
			return res, fmt.Errorf("bench ingest: subscriber: %w", err)
		}
	default:
	}
	return res, nil
}
