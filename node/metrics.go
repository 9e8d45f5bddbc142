package node

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/millstream/millstream/historian"
)

// historianCollector exports the historian ingester's counters.
type historianCollector struct{ ing *historian.Ingester }

var historianDescs = [...]*prometheus.Desc{
	prometheus.NewDesc("millstream_historian_records_total", "uns.points records read by the historian.", nil, nil),
	prometheus.NewDesc("millstream_historian_points_total", "Points stored by the historian.", nil, nil),
	prometheus.NewDesc("millstream_historian_skipped_total", "uns.points records that were not points, or points the historian refused.", nil, nil),
	prometheus.NewDesc("millstream_historian_caught_up", "1 once the historian has read uns.points up to the end it saw at start (0 during a rebuild).", nil, nil),
}

func (c historianCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range historianDescs {
		ch <- d
	}
}

func (c historianCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.ing.Stats()
	caught := 0.0
	if s.CaughtUp {
		caught = 1
	}
	ch <- prometheus.MustNewConstMetric(historianDescs[0], prometheus.CounterValue, float64(s.Records))
	ch <- prometheus.MustNewConstMetric(historianDescs[1], prometheus.CounterValue, float64(s.Points))
	ch <- prometheus.MustNewConstMetric(historianDescs[2], prometheus.CounterValue, float64(s.Skipped))
	ch <- prometheus.MustNewConstMetric(historianDescs[3], prometheus.GaugeValue, caught)
}
