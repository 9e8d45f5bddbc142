package kafka

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics share their names with log/embedded's where they mean the same,
// so dashboards work on either backend.
type metrics struct {
	records *prometheus.CounterVec
	bytes   *prometheus.CounterVec
	failed  *prometheus.CounterVec
	latency prometheus.Histogram
}

func newMetrics() *metrics {
	return &metrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millstream_log_appended_records_total", Help: "Records appended (acknowledged by Kafka with acks=all) per topic.",
		}, []string{"topic"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millstream_log_appended_bytes_total", Help: "Record bytes (key, value, headers) appended per topic.",
		}, []string{"topic"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millstream_log_kafka_produce_failed_total", Help: "Records whose produce failed, per topic.",
		}, []string{"topic"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "millstream_log_kafka_produce_duration_seconds", Help: "Time from Produce to Kafka's acknowledgement, buffering included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
	}
}

func (m *metrics) produced(topic string, bytes int, d time.Duration) {
	m.records.WithLabelValues(topic).Inc()
	m.bytes.WithLabelValues(topic).Add(float64(bytes))
	m.latency.Observe(d.Seconds())
}

// Register registers the log's metrics: appended records and bytes per
// topic, failed produces per topic and produce latency. Partition offsets
// and consumer lag are the cluster's to report (Kafka's own exporters).
func (l *Log) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{l.m.records, l.m.bytes, l.m.failed, l.m.latency} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
