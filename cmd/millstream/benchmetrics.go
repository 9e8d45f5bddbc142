package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"sort"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Server-side histograms that `bench ingest --metrics` reads from a
// Millstream's /metrics at the start and the end of a phase's measured
// window: they split the client's PUBACK latency into the broker's part and
// its flush and hand-off, for exactly the messages the phase counted.
const (
	metricAppendWait = "millstream_mqtt_append_wait_seconds"
	metricAckHandoff = "millstream_mqtt_ack_handoff_seconds"
	metricFsync      = "millstream_log_fsync_duration_seconds"
)

// histSnapshot is a histogram summed over its series: cumulative counts per
// upper bound (ascending, +Inf last), count and sum.
type histSnapshot struct {
	bounds []float64
	counts []float64
	count  float64
	sum    float64
}

// serverSnapshot holds the histograms above, by name; a missing name means
// the server did not export it (not Millstream, or an older version).
type serverSnapshot map[string]histSnapshot

// fetchServerMetrics reads url (a Prometheus text endpoint) within 5 s.
func fetchServerMetrics(ctx context.Context, url string) (serverSnapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	snap := serverSnapshot{}
	for _, name := range []string{metricAppendWait, metricAckHandoff, metricFsync} {
		if mf := families[name]; mf != nil && mf.GetType() == dto.MetricType_HISTOGRAM {
			snap[name] = sumHistograms(mf.GetMetric())
		}
	}
	return snap, nil
}

func sumHistograms(ms []*dto.Metric) histSnapshot {
	byBound := map[float64]float64{}
	var h histSnapshot
	for _, m := range ms {
		hg := m.GetHistogram()
		for _, b := range hg.GetBucket() {
			// The text format lists +Inf as a bucket, the protobuf one
			// leaves it implicit: take it from the count either way.
			if ub := b.GetUpperBound(); !math.IsInf(ub, 1) {
				byBound[ub] += float64(b.GetCumulativeCount())
			}
		}
		byBound[math.Inf(1)] += float64(hg.GetSampleCount())
		h.count += float64(hg.GetSampleCount())
		h.sum += hg.GetSampleSum()
	}
	for b := range byBound {
		h.bounds = append(h.bounds, b)
	}
	sort.Float64s(h.bounds)
	for _, b := range h.bounds {
		h.counts = append(h.counts, byBound[b])
	}
	return h
}

// minus is h's observations since earlier, a snapshot of the same histogram.
func (h histSnapshot) minus(earlier histSnapshot) histSnapshot {
	d := histSnapshot{bounds: h.bounds, count: h.count - earlier.count, sum: h.sum - earlier.sum}
	old := map[float64]float64{}
	for i, b := range earlier.bounds {
		old[b] = earlier.counts[i]
	}
	for i, b := range h.bounds {
		d.counts = append(d.counts, h.counts[i]-old[b])
	}
	return d
}

// quantile estimates the q-quantile as Prometheus's histogram_quantile does:
// linear within the bucket it falls in, the largest finite bound if it falls
// in +Inf. It reports false when there are no observations.
func (h histSnapshot) quantile(q float64) (float64, bool) {
	if h.count <= 0 || len(h.bounds) == 0 {
		return 0, false
	}
	rank := q * h.count
	lower, below := 0.0, 0.0
	for i, b := range h.bounds {
		if h.counts[i] >= rank {
			if math.IsInf(b, 1) {
				return lower, true
			}
			in := h.counts[i] - below
			if in <= 0 {
				return b, true
			}
			return lower + (b-lower)*(rank-below)/in, true
		}
		if !math.IsInf(b, 1) {
			lower = b
		}
		below = h.counts[i]
	}
	return lower, true
}

// serverResult is what a phase adds to its JSON line from the server's
// histograms. Quantiles are estimated from the buckets (see quantile).
type serverResult struct {
	AppendWaitP50 *float64 `json:"server_append_wait_p50_ms,omitempty"`
	AppendWaitP99 *float64 `json:"server_append_wait_p99_ms,omitempty"`
	HandoffP50    *float64 `json:"server_ack_handoff_p50_ms,omitempty"`
	HandoffP99    *float64 `json:"server_ack_handoff_p99_ms,omitempty"`
	Flushes       *int64   `json:"server_flushes,omitempty"`
	FlushMean     *float64 `json:"server_flush_mean_ms,omitempty"`
}

// serverDelta fills r from two snapshots taken around a measured window.
func serverDelta(from, to serverSnapshot) serverResult {
	var r serverResult
	ms := func(s float64) *float64 { v := math.Round(s*1e6) / 1e3; return &v }
	quantiles := func(name string, p50, p99 **float64) {
		a, okA := from[name]
		b, okB := to[name]
		if !okA || !okB {
			return
		}
		d := b.minus(a)
		if v, ok := d.quantile(0.5); ok {
			*p50 = ms(v)
		}
		if v, ok := d.quantile(0.99); ok {
			*p99 = ms(v)
		}
	}
	quantiles(metricAppendWait, &r.AppendWaitP50, &r.AppendWaitP99)
	quantiles(metricAckHandoff, &r.HandoffP50, &r.HandoffP99)
	if a, ok := from[metricFsync]; ok {
		if b, ok := to[metricFsync]; ok {
			d := b.minus(a)
			n := int64(d.count)
			r.Flushes = &n
			if n > 0 {
				r.FlushMean = ms(d.sum / d.count)
			}
		}
	}
	return r
}
