package broker

import (
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
)

// TestIngressRecordReuseDoesNotAllocate checks that building the log record
// of a PUBLISH (the per-message work of OnPublish besides the append) does
// not allocate once the pool is warm.
func TestIngressRecordReuseDoesNotAllocate(t *testing.T) {
	h := &ingestHook{topic: "mqtt.ingress"}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "plant/line1/temp", Payload: []byte("21.5")}
	now := time.Now()
	n := testing.AllocsPerRun(1000, func() {
		ir := h.get()
		ir.fill(h.topic, "dev-1", &pk, now, false)
		h.put(ir)
	})
	if n > 0 {
		t.Errorf("building an ingress record allocates %v times", n)
	}
}

// BenchmarkPublishQoS1 measures acknowledged QoS 1 publishes per second
// through the broker into the embedded log (group commit), with parallel
// publishers each waiting for its PUBACK, as devices do.
func BenchmarkPublishQoS1(b *testing.B) {
	l := openLog(b, b.TempDir())
	br, err := New(testConfig(), l, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	if err := br.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	url := "tcp://" + br.Addrs()["tcp"].String()
	var id atomic.Int64
	payload := make([]byte, 64)
	b.SetBytes(int64(len(payload)))
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		o := paho.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprintf("bench-%d", id.Add(1))).SetAutoReconnect(false)
		c := paho.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
			b.Errorf("connect: %v", tok.Error())
			return
		}
		defer c.Disconnect(0)
		for pb.Next() {
			tok := c.Publish("bench/topic", 1, false, payload)
			if !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
				b.Errorf("publish: %v", tok.Error())
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
