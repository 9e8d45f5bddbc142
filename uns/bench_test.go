package uns

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/millstream/millstream/log"
	"github.com/millstream/millstream/log/embedded"
	"github.com/millstream/millstream/sparkplug"
	pb "github.com/millstream/millstream/sparkplug/sparkplugb"
)

// BenchmarkNormalizerSparkplugDDATA measures the normaliser end to end
// through the embedded log: b.N DDATA messages of 10 aliased metrics are in
// mqtt.ingress (after one DBIRTH); the timer runs from the normaliser's start
// until all b.N*10 points are durable in uns.points, written in each record
// format. With -cpu 1 everything (normaliser and log writer) shares one core.
func BenchmarkNormalizerSparkplugDDATA(b *testing.B) {
	for _, format := range []string{FormatJSON, FormatProtobuf} {
		b.Run(format, func(b *testing.B) { benchNormalizer(b, format) })
	}
}

func benchNormalizer(b *testing.B, format string) {
	l, err := embedded.Open(b.TempDir(), embedded.Options{
		Defaults: log.TopicConfig{Partitions: 1, RetentionAge: -1, RetentionBytes: -1},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	if err := l.CreateTopic(ctx, "mqtt.ingress", log.TopicConfig{}); err != nil {
		b.Fatal(err)
	}
	at := time.Now()
	enc := func(seq uint64, birth bool) []byte {
		ms := make([]*pb.Payload_Metric, 10)
		for k := range ms {
			m := &pb.Payload_Metric{Alias: proto.Uint64(uint64(k + 1))}
			if birth {
				m.Name, m.Datatype = proto.String(fmt.Sprintf("Temperature%d", k)), proto.Uint32(uint32(sparkplug.Double))
			}
			_ = sparkplug.SetMetricValue(m, sparkplug.Double, sparkplug.FloatValue(20+float64(seq%100)/10))
			ms[k] = m
		}
		p, _ := sparkplug.Encode(&pb.Payload{Seq: proto.Uint64(seq % 256), Timestamp: proto.Uint64(uint64(at.UnixMilli())), Metrics: ms})
		return p
	}
	bd := &pb.Payload_Metric{Name: proto.String("bdSeq"), Datatype: proto.Uint32(uint32(sparkplug.UInt64))}
	_ = sparkplug.SetMetricValue(bd, sparkplug.UInt64, sparkplug.UintValue(0))
	nbirth, _ := sparkplug.Encode(&pb.Payload{Seq: proto.Uint64(0), Metrics: []*pb.Payload_Metric{bd}})
	produce := func(topic string, v []byte) {
		l.Produce(ctx, &log.Record{Topic: "mqtt.ingress", Key: []byte(topic), Value: v, Timestamp: at}, func(_ *log.Record, err error) {
			if err != nil {
				b.Error(err)
			}
		})
	}
	produce("spBv1.0/plant/NBIRTH/edge1", nbirth)
	produce("spBv1.0/plant/DBIRTH/edge1/press7", enc(1, true))
	for i := 0; i < b.N; i++ {
		produce("spBv1.0/plant/DDATA/edge1/press7", enc(uint64(i+2), false))
	}
	if err := l.ProduceSync(ctx, &log.Record{Topic: "mqtt.ingress", Key: []byte("bench/flush"), Value: []byte("1"), Timestamp: at}); err != nil {
		b.Fatal(err)
	}
	want := int64(1 + 10 + 10*b.N + 1) // bdSeq, the birth's metrics, the data, the flush marker

	n := NewNormalizer(l, NormalizerOptions{Format: format, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	b.ResetTimer()
	errc := make(chan error, 1)
	go func() { errc <- n.Run(runCtx) }()
	for {
		info, err := l.Topic(ctx, PointsTopic)
		if err == nil && info.Partitions[0].End >= want {
			break
		}
		select {
		case err := <-errc:
			b.Fatalf("normaliser stopped: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(10*b.N)/b.Elapsed().Seconds(), "points/s")
	cancel()
	<-errc
}
