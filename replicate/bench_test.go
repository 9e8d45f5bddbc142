package replicate

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	mlog "github.com/millstream/millstream/log"
)

// value1K is a 1 KiB record value that compresses like telemetry JSON does
// (repeated field names, varying digits).
func value1K(rng *rand.Rand, i int) []byte {
	b := make([]byte, 0, 1024)
	for len(b) < 1024-64 {
		b = fmt.Appendf(b, `{"path":"acme/p1/line%d/cell%d/temp","value":%.4f,"q":"good"},`, i%10, rng.IntN(50), rng.Float64()*100)
	}
	for len(b) < 1024 {
		b = append(b, ' ')
	}
	return b
}

func fill(b *testing.B, l mlog.Log, topic string, from, n int, rng *rand.Rand) {
	const batch = 500
	for i := from; i < from+n; i += batch {
		var rs []*mlog.Record
		for j := i; j < min(i+batch, from+n); j++ {
			rs = append(rs, &mlog.Record{Topic: topic, Key: fmt.Appendf(nil, "acme/p1/asset%03d", j%200), Value: value1K(rng, j)})
		}
		if err := l.ProduceSync(context.Background(), rs...); err != nil {
			b.Fatal(err)
		}
	}
}

func waitSent(b *testing.B, r *Replicator, flow string, n int, within time.Duration) {
	deadline := time.Now().Add(within)
	for counterValue(b, r.m.sentRecords.WithLabelValues(flow)) < float64(n) {
		if time.Now().After(deadline) {
			b.Fatalf("sent %v of %d records within %s", counterValue(b, r.m.sentRecords.WithLabelValues(flow)), n, within)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// BenchmarkReplicate measures replication throughput over loopback (kfake
// as the remote, no proxy): b.N 1 KiB records are in the local log before
// the replicator starts; the time is from its start to the remote's
// acknowledgement of the last record.
func BenchmarkReplicate(b *testing.B) {
	for _, comp := range []string{"none", "lz4", "zstd"} {
		b.Run(comp, func(b *testing.B) {
			c, err := kfake.NewCluster(kfake.NumBrokers(1))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			l := openLocal(b, b.TempDir(), 4)
			defer l.Close()
			if err := l.CreateTopic(context.Background(), "bench", mlog.TopicConfig{Partitions: 4}); err != nil {
				b.Fatal(err)
			}
			fill(b, l, "bench", 0, b.N, rand.New(rand.NewPCG(1, 2)))
			opts := testOptions(c, Flow{Name: "bench", Topics: []string{"bench"}})
			opts.Remote.Compression = comp
			opts.Remote.MaxBufferedBytes = 64 << 20
			opts.Logger = quietLogger()
			b.SetBytes(1024)
			b.ResetTimer()
			t0 := time.Now()
			run := start(b, l, opts)
			waitSent(b, run.r, "bench", b.N, 5*time.Minute)
			el := time.Since(t0)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/el.Seconds(), "records/s")
			run.stop(b)
		})
	}
}

// BenchmarkCatchUp measures the catch-up after an outage as a multiple of
// the steady ingest rate: records arrive at a steady rate, the WAN link is
// cut for a while (the backlog builds up in the local log), then restored;
// the catch-up rate is the records replicated from the restore until the
// backlog is gone, per second, while ingest goes on. Run it with
// -benchtime=1x: it is one scenario, not a loop.
func BenchmarkCatchUp(b *testing.B) {
	// MILLSTREAM_BENCH_RATE (records/s, a multiple of 100) and
	// MILLSTREAM_BENCH_OUTAGE (a duration) change the scenario.
	rate, outage := 2000, 4*time.Second
	if v, err := strconv.Atoi(os.Getenv("MILLSTREAM_BENCH_RATE")); err == nil && v >= 100 {
		rate = v / 100 * 100
	}
	if v, err := time.ParseDuration(os.Getenv("MILLSTREAM_BENCH_OUTAGE")); err == nil && v > 0 {
		outage = v
	}
	const tick = 10 * time.Millisecond
	for i := 0; i < b.N; i++ {
		c, link := newRemote(b)
		l := openLocal(b, b.TempDir(), 4)
		if err := l.CreateTopic(context.Background(), "bench", mlog.TopicConfig{Partitions: 4}); err != nil {
			b.Fatal(err)
		}
		opts := testOptions(c, Flow{Name: "bench", Topics: []string{"bench"}})
		opts.Remote.Compression = "lz4"
		opts.Logger = quietLogger()
		run := start(b, l, opts)
		ctx, cancel := context.WithCancel(context.Background())
		produced := make(chan int, 1)
		go func() {
			// Steady ingest: rate/100 records every 10 ms.
			rng := rand.New(rand.NewPCG(3, 4))
			n := 0
			t := time.NewTicker(tick)
			defer t.Stop()
			for ctx.Err() == nil {
				<-t.C
				fill(b, l, "bench", n, rate/100, rng)
				n += rate / 100
			}
			produced <- n
		}()
		time.Sleep(time.Second) // steady state
		link.Cut()
		time.Sleep(outage)
		sentBefore := counterValue(b, run.r.m.sentRecords.WithLabelValues("bench"))
		info, _ := l.Topic(ctx, "bench")
		var end int64
		for _, p := range info.Partitions {
			end += p.End
		}
		backlog := float64(end) - sentBefore
		b.ResetTimer()
		t0 := time.Now()
		link.Restore()
		// Caught up when everything that existed at the restore is sent.
		waitSent(b, run.r, "bench", int(end), 2*time.Minute)
		el := time.Since(t0)
		b.StopTimer()
		sent := counterValue(b, run.r.m.sentRecords.WithLabelValues("bench")) - sentBefore
		cancel()
		<-produced
		run.stop(b)
		l.Close()
		b.ReportMetric(backlog, "backlog_records")
		b.ReportMetric(el.Seconds(), "catchup_s")
		b.ReportMetric(sent/el.Seconds(), "catchup_records/s")
		b.ReportMetric(sent/el.Seconds()/float64(rate), "x_ingest_rate")
	}
}

// BenchmarkBandwidthCap measures the rate the cap lets through: 3 MiB of
// 1 KiB records under a 1 MB/s cap with a 256 KiB burst should take about
// (3 MiB - 256 KiB) / 1 MB/s. Reported: measured bytes/s over the run
// (burst included) and the cap. Run with -benchtime=1x.
func BenchmarkBandwidthCap(b *testing.B) {
	const n, capBps, burst = 3072, 1_000_000, 256 << 10
	for i := 0; i < b.N; i++ {
		c, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			b.Fatal(err)
		}
		l := openLocal(b, b.TempDir(), 1)
		if err := l.CreateTopic(context.Background(), "bench", mlog.TopicConfig{Partitions: 1}); err != nil {
			b.Fatal(err)
		}
		fill(b, l, "bench", 0, n, rand.New(rand.NewPCG(5, 6)))
		opts := testOptions(c, Flow{Name: "bench", Topics: []string{"bench"}})
		opts.Remote.BandwidthBytesPerSec, opts.Remote.BandwidthBurstBytes = capBps, burst
		opts.Logger = quietLogger()
		t0 := time.Now()
		run := start(b, l, opts)
		waitSent(b, run.r, "bench", n, time.Minute)
		el := time.Since(t0)
		sentBytes := counterValue(b, run.r.m.sentBytes.WithLabelValues("bench"))
		run.stop(b)
		l.Close()
		c.Close()
		b.ReportMetric(sentBytes/el.Seconds(), "bytes/s")
		b.ReportMetric((sentBytes-burst)/el.Seconds(), "bytes/s_after_burst")
		b.ReportMetric(capBps, "cap_bytes/s")
	}
}
