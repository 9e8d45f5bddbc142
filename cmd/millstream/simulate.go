package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/url"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"google.golang.org/protobuf/proto"

	"github.com/millstream/millstream/sparkplug"
	pb "github.com/millstream/millstream/sparkplug/sparkplugb"
)

type simParams struct {
	Broker   string
	Group    string
	Nodes    int
	Devices  int
	Metrics  int
	Rate     float64 // DDATA messages per second per device
	Duration time.Duration
	DropEach time.Duration // abrupt disconnect and reconnect of every node at this interval (0: never)
	JSON     int           // plain-JSON publishers (UNS topics) besides the Sparkplug nodes
	Seed     uint64
}

type simResult struct {
	Scenario   string  `json:"scenario"`
	Nodes      int     `json:"nodes"`
	Devices    int     `json:"devices_per_node"`
	Metrics    int     `json:"metrics_per_device"`
	Seconds    float64 `json:"seconds"`
	Births     int64   `json:"births"`
	Messages   int64   `json:"data_messages"`
	Points     int64   `json:"metric_values"`
	PointsPerS float64 `json:"metric_values_per_s"`
	Drops      int64   `json:"abrupt_disconnects"`
	Errors     int64   `json:"errors"`
}

// cmdSimulate runs Sparkplug B edge nodes with devices whose metrics follow
// plausible plant signals, for demos, tests and benchmarks.
func cmdSimulate(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("simulate", stderr)
	var p simParams
	fs.StringVar(&p.Broker, "broker", "tcp://127.0.0.1:1883", "MQTT broker URL")
	fs.StringVar(&p.Group, "group", "sim", "Sparkplug group id")
	fs.IntVar(&p.Nodes, "nodes", 2, "edge nodes (one MQTT connection each)")
	fs.IntVar(&p.Devices, "devices", 3, "devices per edge node")
	fs.IntVar(&p.Metrics, "metrics", 10, "metrics per device (temperatures, counters, states, flags)")
	fs.Float64Var(&p.Rate, "rate", 1, "DDATA messages per second per device")
	fs.DurationVar(&p.Duration, "duration", 10*time.Second, "how long to run (at most 24h)")
	fs.IntVar(&p.JSON, "json", 0, "plain-JSON publishers besides the Sparkplug nodes: each publishes {\"ts\",\"temperature\",\"count\",\"state\"} to GROUP/json/lineN/machine at --rate")
	fs.DurationVar(&p.DropEach, "drop-every", 0, "drop every node's connection abruptly at this interval and reconnect (exercises deaths and rebirths)")
	seed := fs.Uint64("seed", 1, "random seed, for reproducible signals")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	p.Seed = *seed
	if p.Nodes < 0 || p.JSON < 0 || p.Nodes+p.JSON == 0 || p.Devices < 0 || p.Metrics < 1 || p.Rate <= 0 || p.Duration <= 0 || p.Duration > 24*time.Hour {
		return fmt.Errorf("%w: --nodes or --json must be at least 1, --metrics at least 1, --rate and --duration positive (duration at most 24h)", errUsage)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return json.NewEncoder(stdout).Encode(runSimulation(ctx, p, stderr))
}

// runSimulation runs the simulated publishers for p.Duration (or until ctx
// ends), reporting progress on stderr every 2 s.
func runSimulation(ctx context.Context, p simParams, stderr io.Writer) simResult {
	ctx, cancel := context.WithTimeout(ctx, p.Duration)
	defer cancel()

	var births, msgs, points, drops, errs atomic.Int64
	began := time.Now()
	var wg sync.WaitGroup
	for i := range p.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := &simNode{p: p, name: fmt.Sprintf("node%d", i+1), rng: rand.New(rand.NewPCG(p.Seed, uint64(i))),
				births: &births, msgs: &msgs, points: &points, drops: &drops, errs: &errs, stderr: stderr}
			n.run(ctx)
		}()
	}
	for i := range p.JSON {
		wg.Add(1)
		go func() {
			defer wg.Done()
			simJSON(ctx, p, i+1, &msgs, &points, &errs, stderr)
		}()
	}
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case <-tick.C:
			fmt.Fprintf(stderr, "simulate: %s, %d data messages, %d metric values, %d births, %d drops, %d errors\n",
				time.Since(began).Round(time.Second), msgs.Load(), points.Load(), births.Load(), drops.Load(), errs.Load())
		}
	}
	res := simResult{Scenario: "simulate", Nodes: p.Nodes, Devices: p.Devices, Metrics: p.Metrics,
		Seconds: time.Since(began).Seconds(), Births: births.Load(), Messages: msgs.Load(), Points: points.Load(),
		Drops: drops.Load(), Errors: errs.Load()}
	res.PointsPerS = float64(res.Points) / res.Seconds
	return res
}

type simNode struct {
	p                                 simParams
	name                              string
	rng                               *rand.Rand
	bdSeq                             uint64
	seq                               uint64
	births, msgs, points, drops, errs *atomic.Int64
	stderr                            io.Writer
	t0                                time.Time
}

// metricKind cycles through the signal shapes of a device's metrics.
func (n *simNode) metric(dev, k int, at time.Time) (string, sparkplug.DataType, sparkplug.Value) {
	s := at.Sub(n.t0).Seconds()
	switch k % 4 {
	case 0: // a noisy sine temperature, 0.01 resolution, now and then NaN
		v := 60 + 15*math.Sin(s/30+float64(dev)) + n.rng.NormFloat64()*0.2
		if n.rng.IntN(500) == 0 {
			v = math.NaN()
		}
		return fmt.Sprintf("Temperature%d", k/4+1), sparkplug.Double, sparkplug.FloatValue(math.Round(v*100) / 100)
	case 1: // a monotonically increasing counter
		return fmt.Sprintf("Count%d", k/4+1), sparkplug.UInt64, sparkplug.UintValue(uint64(s * 2.5))
	case 2: // a machine state that changes every half minute or so
		states := []string{"RUNNING", "RUNNING", "RUNNING", "IDLE", "SETUP", "FAULT"}
		return fmt.Sprintf("State%d", k/4+1), sparkplug.String, sparkplug.StringValue(states[int(s/30+float64(dev))%len(states)])
	default: // a flag, now and then null
		if n.rng.IntN(200) == 0 {
			return fmt.Sprintf("Running%d", k/4+1), sparkplug.Boolean, sparkplug.Null()
		}
		return fmt.Sprintf("Running%d", k/4+1), sparkplug.Boolean, sparkplug.BoolValue(int(s/10)%4 != 0)
	}
}

func (n *simNode) topic(typ, device string) string {
	t := "spBv1.0/" + n.p.Group + "/" + typ + "/" + n.name
	if device != "" {
		t += "/" + device
	}
	return t
}

func (n *simNode) encode(p *pb.Payload) []byte {
	b, err := sparkplug.Encode(p)
	if err != nil {
		panic(fmt.Sprintf("simulate: encode a payload it built: %v", err)) // a bug, not an input
	}
	return b
}

func (n *simNode) metrics(dev int, at time.Time, birth bool) []*pb.Payload_Metric {
	ms := make([]*pb.Payload_Metric, 0, n.p.Metrics)
	for k := range n.p.Metrics {
		name, dt, v := n.metric(dev, k, at)
		m := &pb.Payload_Metric{Alias: proto.Uint64(uint64(dev*1000 + k + 1)), Timestamp: proto.Uint64(uint64(at.UnixMilli()))}
		if birth {
			m.Name, m.Datatype = proto.String(name), proto.Uint32(uint32(dt))
		}
		if err := sparkplug.SetMetricValue(m, dt, v); err != nil {
			panic(fmt.Sprintf("simulate: metric %s: %v", name, err))
		}
		ms = append(ms, m)
	}
	return ms
}

func (n *simNode) payload(at time.Time, ms []*pb.Payload_Metric) *pb.Payload {
	p := &pb.Payload{Timestamp: proto.Uint64(uint64(at.UnixMilli())), Seq: proto.Uint64(n.seq), Metrics: ms}
	n.seq = (n.seq + 1) % 256
	return p
}

// run connects, births and publishes until ctx ends; with DropEach it drops
// the connection abruptly (no DISCONNECT, so the broker sends the NDEATH
// will) and starts over with the next bdSeq.
func (n *simNode) run(ctx context.Context) {
	n.t0 = time.Now()
	for ctx.Err() == nil {
		n.session(ctx)
		n.bdSeq++
	}
}

func (n *simNode) session(ctx context.Context) {
	bd := &pb.Payload_Metric{Name: proto.String("bdSeq"), Datatype: proto.Uint32(uint32(sparkplug.UInt64))}
	_ = sparkplug.SetMetricValue(bd, sparkplug.UInt64, sparkplug.UintValue(n.bdSeq))
	death := n.encode(&pb.Payload{Timestamp: proto.Uint64(uint64(time.Now().UnixMilli())), Metrics: []*pb.Payload_Metric{bd}})
	var conn net.Conn // kept so that a drop can close it under the client
	o := paho.NewClientOptions().AddBroker(n.p.Broker).SetClientID(n.p.Group+"-"+n.name).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(10*time.Second).
		SetBinaryWill(n.topic("NDEATH", ""), death, 1, false).
		SetCustomOpenConnectionFn(func(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
			c, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
			conn = c
			return c, err
		})
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		n.errs.Add(1)
		fmt.Fprintf(n.stderr, "simulate: %s: connect to %s: %v\n", n.name, n.p.Broker, tok.Error())
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
		return
	}
	pub := func(topic string, p *pb.Payload) {
		if tok := c.Publish(topic, 0, false, n.encode(p)); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			n.errs.Add(1)
		}
	}
	now := time.Now()
	n.seq = 0
	pub(n.topic("NBIRTH", ""), n.payload(now, []*pb.Payload_Metric{bd}))
	n.births.Add(1)
	for d := range n.p.Devices {
		pub(n.topic("DBIRTH", fmt.Sprintf("dev%d", d+1)), n.payload(now, n.metrics(d, now, true)))
		n.births.Add(1)
	}

	interval := time.Duration(float64(time.Second) / n.p.Rate)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var drop <-chan time.Time
	if n.p.DropEach > 0 {
		drop = time.After(n.p.DropEach)
	}
	for {
		select {
		case <-ctx.Done():
			// A clean end: the NDEATH is sent by the node itself.
			pub(n.topic("NDEATH", ""), &pb.Payload{Timestamp: proto.Uint64(uint64(time.Now().UnixMilli())), Metrics: []*pb.Payload_Metric{bd}})
			c.Disconnect(250)
			return
		case <-drop:
			n.drops.Add(1)
			// Close the socket under the client, without DISCONNECT: the
			// broker sees a lost connection and publishes the will.
			if conn != nil {
				conn.Close()
			}
			return
		case at := <-tick.C:
			for d := range n.p.Devices {
				pub(n.topic("DDATA", fmt.Sprintf("dev%d", d+1)), n.payload(at, n.metrics(d, at, false)))
				n.msgs.Add(1)
				n.points.Add(int64(n.p.Metrics))
			}
		}
	}
}

// simJSON is a plain MQTT publisher of a UNS topic: a flat JSON object of
// tags with a shared millisecond timestamp, as brownfield gateways send.
func simJSON(ctx context.Context, p simParams, line int, msgs, points, errs *atomic.Int64, stderr io.Writer) {
	o := paho.NewClientOptions().AddBroker(p.Broker).SetClientID(fmt.Sprintf("%s-json-%d", p.Group, line)).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(10 * time.Second)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		errs.Add(1)
		fmt.Fprintf(stderr, "simulate: json publisher %d: connect to %s: %v\n", line, p.Broker, tok.Error())
		return
	}
	defer c.Disconnect(250)
	topic := fmt.Sprintf("%s/json/line%d/machine", p.Group, line)
	t0 := time.Now()
	tick := time.NewTicker(time.Duration(float64(time.Second) / p.Rate))
	defer tick.Stop()
	states := []string{"RUNNING", "RUNNING", "IDLE", "SETUP"}
	for {
		select {
		case <-ctx.Done():
			return
		case at := <-tick.C:
			s := at.Sub(t0).Seconds()
			body := fmt.Sprintf(`{"ts":%d,"temperature":%.2f,"count":%d,"state":%q}`, at.UnixMilli(),
				55+10*math.Sin(s/20+float64(line)), int64(s*3), states[int(s/15)%len(states)])
			if tok := c.Publish(topic, 1, false, body); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				errs.Add(1)
				continue
			}
			msgs.Add(1)
			points.Add(3)
		}
	}
}
