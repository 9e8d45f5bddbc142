package embedded

import (
	"context"
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	records        *prometheus.CounterVec
	bytes          *prometheus.CounterVec
	fsyncSeconds   prometheus.Histogram
	truncatedBytes prometheus.Counter
	truncations    prometheus.Counter
	// truncatedRecords is an estimate from batch headers; see RecoveryReport.
	truncatedRecords prometheus.Counter
	// directWrites counts batches written with O_DIRECT (see direct.go).
	directWrites atomic.Int64
}

func newMetrics() *metrics {
	return &metrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millstream_log_appended_records_total", Help: "Records appended (durable) per topic.",
		}, []string{"topic"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millstream_log_appended_bytes_total", Help: "Record bytes appended (durable) per topic.",
		}, []string{"topic"}),
		fsyncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "millstream_log_fsync_duration_seconds", Help: "Latency of segment fsyncs.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		truncatedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millstream_log_recovery_truncated_bytes_total", Help: "Bytes of torn or corrupt segment tails truncated by crash recovery at open.",
		}),
		truncatedRecords: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millstream_log_recovery_truncated_records_total", Help: "Records in torn or corrupt segment tails truncated by crash recovery at open (from batch headers; never acknowledged records).",
		}),
		truncations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millstream_log_recovery_truncations_total", Help: "Segment tails truncated by crash recovery at open.",
		}),
	}
}

func (m *metrics) appended(topic string, records, bytes int64) {
	m.records.WithLabelValues(topic).Add(float64(records))
	m.bytes.WithLabelValues(topic).Add(float64(bytes))
}

var (
	segmentsDesc = prometheus.NewDesc("millstream_log_segments", "Segment files per partition.", []string{"topic", "partition"}, nil)
	segBytesDesc = prometheus.NewDesc("millstream_log_segment_bytes", "Bytes in segment files per partition.", []string{"topic", "partition"}, nil)
	endDesc      = prometheus.NewDesc("millstream_log_end_offset", "Offset the next record of the partition gets.", []string{"topic", "partition"}, nil)
	startDesc    = prometheus.NewDesc("millstream_log_start_offset", "First readable offset of the partition.", []string{"topic", "partition"}, nil)
	lagDesc      = prometheus.NewDesc("millstream_log_consumer_lag", "End offset minus committed offset per consumer group and partition.", []string{"group", "topic", "partition"}, nil)
	bufferedDesc = prometheus.NewDesc("millstream_log_buffered_bytes", "Bytes produced but not yet durable (bounded by MaxBufferedBytes).", nil, nil)
	directDesc   = prometheus.NewDesc("millstream_log_direct_writes_total", "Direct I/O writes (of 1 MiB or more queued records, up to 4 MiB each), past the page cache.", nil, nil)
	failedDesc   = prometheus.NewDesc("millstream_log_partition_failed", "1 when the partition stopped accepting appends after a write or fsync error (a full disk, an I/O error) until restart, else 0.", []string{"topic", "partition"}, nil)
)

// collector reports per-partition state at scrape time.
type collector struct{ l *Log }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{segmentsDesc, segBytesDesc, endDesc, startDesc, lagDesc, bufferedDesc, directDesc, failedDesc} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	ctx := context.Background()
	ts, err := c.l.Topics(ctx)
	if err != nil {
		return
	}
	ends := map[string][]int64{}
	for _, t := range ts {
		for _, p := range t.Partitions {
			ps := strconv.Itoa(int(p.Partition))
			ch <- prometheus.MustNewConstMetric(segmentsDesc, prometheus.GaugeValue, float64(p.Segments), t.Name, ps)
			ch <- prometheus.MustNewConstMetric(segBytesDesc, prometheus.GaugeValue, float64(p.Bytes), t.Name, ps)
			ch <- prometheus.MustNewConstMetric(endDesc, prometheus.GaugeValue, float64(p.End), t.Name, ps)
			ch <- prometheus.MustNewConstMetric(startDesc, prometheus.GaugeValue, float64(p.Start), t.Name, ps)
			ends[t.Name] = append(ends[t.Name], p.End)
		}
	}
	gs, _ := c.l.Groups(ctx)
	for _, g := range gs {
		for _, o := range g.Offsets {
			e := ends[o.Topic]
			if int(o.Partition) >= len(e) {
				continue
			}
			ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, float64(max(e[o.Partition]-o.Offset, 0)), g.Group, o.Topic, strconv.Itoa(int(o.Partition)))
		}
	}
	for _, p := range c.l.partitions() {
		v := 0.0
		if p.failure.Load() != nil {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(failedDesc, prometheus.GaugeValue, v, p.topic, strconv.Itoa(int(p.id)))
	}
	ch <- prometheus.MustNewConstMetric(bufferedDesc, prometheus.GaugeValue, float64(c.l.bufferedBytes()))
	ch <- prometheus.MustNewConstMetric(directDesc, prometheus.CounterValue, float64(c.l.m.directWrites.Load()))
}

// Register registers the log's metrics: appended records and bytes per topic,
// fsync latency, segment count and bytes, start and end offsets per partition,
// consumer lag per group and partition, what crash recovery truncated, how
// many batches were written with direct I/O, and which partitions stopped
// accepting appends.
func (l *Log) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{l.m.records, l.m.bytes, l.m.fsyncSeconds, l.m.truncatedBytes, l.m.truncatedRecords, l.m.truncations, collector{l}} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
