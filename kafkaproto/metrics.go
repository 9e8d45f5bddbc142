package kafkaproto

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests     *prometheus.CounterVec
	bytesIn      prometheus.Counter
	bytesOut     prometheus.Counter
	conns        prometheus.Gauge
	connsTotal   prometheus.Counter
	refused      prometheus.Counter
	malformed    prometheus.Counter
	authFailures prometheus.Counter
	recordsIn    prometheus.Counter
	recordsOut   prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millstream_kafka_requests_total",
			Help: "Kafka protocol requests answered, by API and error code (the top-level code, else the first partition's; NONE when all succeeded).",
		}, []string{"api", "code"}),
		bytesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millstream_kafka_received_bytes_total", Help: "Bytes of Kafka requests received, framing included.",
		}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millstream_kafka_sent_bytes_total", Help: "Bytes of Kafka responses sent, framing included.",
		}),
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "millstream_kafka_connections", Help: "Open Kafka client connections.",
		}),
		connsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millstream_kafka_connections_total", Help: "Kafka client connections accepted.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millstream_kafka_connections_refused_total", Help: "Kafka connections refused because MaxConnections were open.",
		}),
		malformed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millstream_kafka_malformed_requests_total", Help: "Kafka requests that could not be parsed; the connection was closed.",
		}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millstream_kafka_auth_failures_total", Help: "Failed SASL authentications and requests sent before authenticating.",
		}),
		recordsIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millstream_kafka_produced_records_total", Help: "Records appended to the log through Kafka produce requests (durable).",
		}),
		recordsOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "millstream_kafka_fetched_records_total", Help: "Records returned to Kafka fetch requests.",
		}),
	}
}

func (m *metrics) request(api string, code int16) {
	m.requests.WithLabelValues(api, codeLabel(code)).Inc()
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.bytesIn, m.bytesOut, m.conns, m.connsTotal, m.refused, m.malformed, m.authFailures, m.recordsIn, m.recordsOut}
}

// Register registers the server's metrics: requests by API and error code,
// bytes in and out, connections, auth failures and records in and out.
func (s *Server) Register(reg prometheus.Registerer) error {
	for _, c := range s.m.collectors() {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
