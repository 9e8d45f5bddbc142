package replicate

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics of a Replicator. Flow metrics carry a "flow" label.
type metrics struct {
	backlogRecords *prometheus.GaugeVec
	backlogBytes   *prometheus.GaugeVec
	lagSeconds     *prometheus.GaugeVec
	retentionRatio *prometheus.GaugeVec
	sentRecords    *prometheus.CounterVec
	sentBytes      *prometheus.CounterVec
	filtered       *prometheus.CounterVec
	denied         *prometheus.CounterVec
	resumed        *prometheus.CounterVec
	lost           *prometheus.CounterVec
	sessions       *prometheus.CounterVec
	wanUp          prometheus.Gauge
	wanError       *prometheus.GaugeVec
	reconnects     prometheus.Counter
	throttled      prometheus.Counter
	cmdRouted      prometheus.Counter
	cmdSkipped     *prometheus.CounterVec
	cmdResults     prometheus.Counter
}

func newMetrics() *metrics {
	flow := []string{"flow"}
	return &metrics{
		backlogRecords: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "millstream_replicate_backlog_records",
			Help: "Records of the flow's source topics not yet replicated (from the committed checkpoint to the end)."}, flow),
		backlogBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "millstream_replicate_backlog_bytes",
			Help: "Estimated bytes of the backlog (partition size times the backlog's share of its records; 0 on the kafka log backend, which does not report sizes)."}, flow),
		lagSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "millstream_replicate_lag_seconds",
			Help: "Age of the oldest record not yet replicated (0 when caught up)."}, flow),
		retentionRatio: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "millstream_replicate_backlog_retention_ratio",
			Help: "How close the backlog is to local retention: the larger of (age of the oldest unreplicated record / retention age) and (backlog bytes / retention bytes). At 1 unreplicated data is being deleted."}, flow),
		sentRecords: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millstream_replicate_sent_records_total",
			Help: "Records acknowledged by the remote cluster."}, flow),
		sentBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millstream_replicate_sent_bytes_total",
			Help: "Uncompressed bytes (key, value, headers) of records acknowledged by the remote cluster."}, flow),
		filtered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millstream_replicate_filtered_records_total",
			Help: "Records not selected by the flow's include patterns."}, flow),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millstream_replicate_denied_records_total",
			Help: "Records kept on site by deny rules (or unreadable while rules exist)."}, flow),
		resumed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millstream_replicate_resume_skipped_records_total",
			Help: "Records not sent again because the resume scan found them on the remote already."}, flow),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millstream_replicate_retention_lost_records_total",
			Help: "Records deleted by local retention before they were replicated."}, flow),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millstream_replicate_session_failures_total",
			Help: "Flow sessions that failed and were restarted (remote unreachable at start, records refused)."}, flow),
		wanUp: prometheus.NewGauge(prometheus.GaugeOpts{Name: "millstream_replicate_wan_up",
			Help: "1 when the remote cluster is reachable, 0 when the WAN link is down."}),
		wanError: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "millstream_replicate_wan_last_error_info",
			Help: "The last error seen on the WAN link (one series, value 1; the label holds the error)."}, []string{"error"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{Name: "millstream_replicate_reconnects_total",
			Help: "Times the WAN link came back after being down."}),
		throttled: prometheus.NewCounter(prometheus.CounterOpts{Name: "millstream_replicate_throttled_seconds_total",
			Help: "Time spent waiting for the bandwidth cap."}),
		cmdRouted: prometheus.NewCounter(prometheus.CounterOpts{Name: "millstream_replicate_commands_routed_total",
			Help: "Remote commands appended to the local commands topic."}),
		cmdSkipped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "millstream_replicate_commands_skipped_total",
			Help: "Remote commands not routed, by reason (duplicate, other_site, malformed)."}, []string{"reason"}),
		cmdResults: prometheus.NewCounter(prometheus.CounterOpts{Name: "millstream_replicate_commands_results_total",
			Help: "Audit records of remote commands published to the remote results topic."}),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.backlogRecords, m.backlogBytes, m.lagSeconds, m.retentionRatio, m.sentRecords, m.sentBytes,
		m.filtered, m.denied, m.resumed, m.lost, m.sessions, m.wanUp, m.wanError, m.reconnects, m.throttled,
		m.cmdRouted, m.cmdSkipped, m.cmdResults}
}
