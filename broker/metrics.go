package broker

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// listenerStats are the counters of one listener. They are plain atomics
// updated on the hot path (every read and write of a connection, every
// PUBLISH) and turned into Prometheus metrics only when scraped.
type listenerStats struct {
	name     string
	typ      string
	msgsIn   atomic.Uint64
	msgsOut  atomic.Uint64
	bytesIn  atomic.Uint64
	bytesOut atomic.Uint64
	conns    atomic.Int64
	// writeStalls counts acknowledgement writes a client's full socket
	// refused (see corkConn.tryWrite).
	writeStalls atomic.Uint64
}

// Auth failure and ACL denial reasons, the values of the "reason" and
// "action" labels.
const (
	authBadCredentials = iota // unknown user, wrong password, CN/username mismatch
	authNotAuthorized         // anonymous not allowed, will topic denied
	numAuthReasons
)

var authReasonNames = [numAuthReasons]string{"bad_credentials", "not_authorized"}

const (
	aclPublish = iota
	aclSubscribe
	numACLActions
)

var aclActionNames = [numACLActions]string{"publish", "subscribe"}

// metrics is the broker's Prometheus collector.
type metrics struct {
	listeners []*listenerStats
	byName    map[string]*listenerStats // read-only after New: no lock needed

	appended        atomic.Uint64
	appendErrors    atomic.Uint64
	qos0Dropped     atomic.Uint64
	deliveryDropped atomic.Uint64
	// queueDropped counts QoS 1/2 deliveries refused because the
	// subscriber already had max_queued_messages unacknowledged.
	queueDropped       func() uint64
	authFailures       [numAuthReasons]atomic.Uint64
	aclDenials         [numACLActions]atomic.Uint64
	connRejected       atomic.Uint64
	stateWrites        atomic.Uint64
	stateErrors        atomic.Uint64
	compactions        atomic.Uint64
	appendBackpressure atomic.Uint64

	inflight   func() float64
	stateLive  func() (sessions, retained float64)
	appendWait prometheus.Histogram
	ackWait    prometheus.Histogram

	dMsgsIn, dMsgsOut, dBytesIn, dBytesOut, dConns, dWriteStalls *prometheus.Desc
	dAppended, dAppendErrors, dQoS0Dropped                       *prometheus.Desc
	dDeliveryDropped, dAuthFailures, dACLDenials                 *prometheus.Desc
	dConnRejected, dInflight, dStateWrites                       *prometheus.Desc
	dStateErrors, dCompactions, dSessions, dRetained             *prometheus.Desc
	dBackpressure                                                *prometheus.Desc
}

// Metric names. They are listed in doc.go too.
const (
	metricNamespace = "millstream"
	metricSubsystem = "mqtt"
)

// waitHistogram is a histogram of PUBLISH-to-acknowledgement times: 50 µs
// to 1.6 s.
func waitHistogram(name, help string) prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: metricNamespace,
		Subsystem: metricSubsystem,
		Name:      name,
		Help:      help,
		Buckets:   prometheus.ExponentialBuckets(50e-6, 2, 16),
	})
}

func newMetrics() *metrics {
	name := func(n string) string { return prometheus.BuildFQName(metricNamespace, metricSubsystem, n) }
	lbl := []string{"listener", "type"}
	return &metrics{
		byName:           map[string]*listenerStats{},
		appendWait:       waitHistogram("append_wait_seconds", "Time a QoS 1/2 PUBLISH waited for its durable append to the log before being acknowledged."),
		ackWait:          waitHistogram("ack_handoff_seconds", "Part of append_wait_seconds after the append was durable: until its PUBACK was written (waiting for earlier messages of the client and for a goroutine to write it)."),
		dMsgsIn:          prometheus.NewDesc(name("messages_received_total"), "PUBLISH packets received from clients.", lbl, nil),
		dMsgsOut:         prometheus.NewDesc(name("messages_sent_total"), "PUBLISH packets sent to clients.", lbl, nil),
		dBytesIn:         prometheus.NewDesc(name("received_bytes_total"), "Bytes read from client connections (wire bytes, TLS and WebSocket framing included).", lbl, nil),
		dBytesOut:        prometheus.NewDesc(name("sent_bytes_total"), "Bytes written to client connections (wire bytes, TLS and WebSocket framing included).", lbl, nil),
		dConns:           prometheus.NewDesc(name("connections"), "Open network connections.", lbl, nil),
		dWriteStalls:     prometheus.NewDesc(name("ack_write_stalls_total"), "Acknowledgement writes a client's socket did not take at once because the client was not reading them: the rest is written when it reads again, and while more than 64 KiB wait the broker stops reading from it.", lbl, nil),
		dAppended:        prometheus.NewDesc(name("publishes_appended_total"), "PUBLISH packets (and will messages) appended to the ingress topic.", nil, nil),
		dAppendErrors:    prometheus.NewDesc(name("append_errors_total"), "QoS 1/2 PUBLISH packets whose append failed; they were not acknowledged.", nil, nil),
		dQoS0Dropped:     prometheus.NewDesc(name("qos0_dropped_total"), "QoS 0 PUBLISH packets (and will messages) whose asynchronous append failed.", nil, nil),
		dDeliveryDropped: prometheus.NewDesc(name("delivery_dropped_total"), "Messages not delivered to a subscriber because its outbound queue was full or it had mqtt.limits.max_queued_messages unacknowledged (they are in the log).", nil, nil),
		dAuthFailures:    prometheus.NewDesc(name("auth_failures_total"), "Rejected CONNECTs by reason.", []string{"reason"}, nil),
		dACLDenials:      prometheus.NewDesc(name("acl_denials_total"), "Publishes and subscriptions/deliveries denied by the ACL.", []string{"action"}, nil),
		dConnRejected:    prometheus.NewDesc(name("connections_rejected_total"), "CONNECTs rejected because mqtt.limits.max_connections was reached.", nil, nil),
		dInflight:        prometheus.NewDesc(name("inflight_messages"), "QoS 1/2 messages in flight or queued for clients.", nil, nil),
		dStateWrites:     prometheus.NewDesc(name("state_records_written_total"), "Records written to the session state topic.", nil, nil),
		dStateErrors:     prometheus.NewDesc(name("state_write_errors_total"), "Failed writes to the session state topic (a snapshot follows to repair it).", nil, nil),
		dCompactions:     prometheus.NewDesc(name("state_compactions_total"), "Snapshots written to compact the session state topic.", nil, nil),
		dSessions:        prometheus.NewDesc(name("persistent_sessions"), "Persistent sessions kept in the session state topic.", nil, nil),
		dRetained:        prometheus.NewDesc(name("retained_messages"), "Retained messages kept in the session state topic.", nil, nil),
		dBackpressure:    prometheus.NewDesc(name("backpressure_waits_total"), "Times a client's read loop waited because it had mqtt.limits.max_inflight appends in flight.", nil, nil),
	}
}

func (m *metrics) addListener(name, typ string) *listenerStats {
	ls := &listenerStats{name: name, typ: typ}
	m.listeners = append(m.listeners, ls)
	m.byName[name] = ls
	return ls
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.dMsgsIn, m.dMsgsOut, m.dBytesIn, m.dBytesOut, m.dConns, m.dWriteStalls,
		m.dAppended, m.dAppendErrors, m.dQoS0Dropped, m.dDeliveryDropped, m.dAuthFailures, m.dACLDenials,
		m.dConnRejected, m.dInflight, m.dStateWrites, m.dStateErrors, m.dCompactions, m.dSessions, m.dRetained, m.dBackpressure} {
		ch <- d
	}
	m.appendWait.Describe(ch)
	m.ackWait.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), lv...)
	}
	gauge := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}
	for _, l := range m.listeners {
		counter(m.dMsgsIn, l.msgsIn.Load(), l.name, l.typ)
		counter(m.dMsgsOut, l.msgsOut.Load(), l.name, l.typ)
		counter(m.dBytesIn, l.bytesIn.Load(), l.name, l.typ)
		counter(m.dBytesOut, l.bytesOut.Load(), l.name, l.typ)
		gauge(m.dConns, float64(l.conns.Load()), l.name, l.typ)
		counter(m.dWriteStalls, l.writeStalls.Load(), l.name, l.typ)
	}
	counter(m.dAppended, m.appended.Load())
	counter(m.dAppendErrors, m.appendErrors.Load())
	counter(m.dQoS0Dropped, m.qos0Dropped.Load())
	dropped := m.deliveryDropped.Load()
	if m.queueDropped != nil {
		dropped += m.queueDropped()
	}
	counter(m.dDeliveryDropped, dropped)
	for i := range m.authFailures {
		counter(m.dAuthFailures, m.authFailures[i].Load(), authReasonNames[i])
	}
	for i := range m.aclDenials {
		counter(m.dACLDenials, m.aclDenials[i].Load(), aclActionNames[i])
	}
	counter(m.dConnRejected, m.connRejected.Load())
	var inflight float64
	if m.inflight != nil {
		inflight = m.inflight()
	}
	gauge(m.dInflight, inflight)
	counter(m.dStateWrites, m.stateWrites.Load())
	counter(m.dStateErrors, m.stateErrors.Load())
	counter(m.dCompactions, m.compactions.Load())
	counter(m.dBackpressure, m.appendBackpressure.Load())
	var sessions, retained float64
	if m.stateLive != nil {
		sessions, retained = m.stateLive()
	}
	gauge(m.dSessions, sessions)
	gauge(m.dRetained, retained)
	m.appendWait.Collect(ch)
	m.ackWait.Collect(ch)
}
