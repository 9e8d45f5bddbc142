package main

import (
	"math"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// Two scrapes of a server whose append wait histogram gained 100
// observations in between: 50 at or under 1 ms, 40 more at or under 2 ms,
// 10 more at or under 4 ms. The fsync histogram has two series (two
// partitions), which are summed.
const (
	scrapeBefore = `# TYPE millstream_mqtt_append_wait_seconds histogram
millstream_mqtt_append_wait_seconds_bucket{le="0.001"} 10
millstream_mqtt_append_wait_seconds_bucket{le="0.002"} 10
millstream_mqtt_append_wait_seconds_bucket{le="0.004"} 10
millstream_mqtt_append_wait_seconds_bucket{le="+Inf"} 10
millstream_mqtt_append_wait_seconds_sum 0.005
millstream_mqtt_append_wait_seconds_count 10
# TYPE millstream_log_fsync_duration_seconds histogram
millstream_log_fsync_duration_seconds_bucket{topic="a",le="0.001"} 1
millstream_log_fsync_duration_seconds_bucket{topic="a",le="+Inf"} 1
millstream_log_fsync_duration_seconds_sum{topic="a"} 0.0005
millstream_log_fsync_duration_seconds_count{topic="a"} 1
millstream_log_fsync_duration_seconds_bucket{topic="b",le="0.001"} 0
millstream_log_fsync_duration_seconds_bucket{topic="b",le="+Inf"} 0
millstream_log_fsync_duration_seconds_sum{topic="b"} 0
millstream_log_fsync_duration_seconds_count{topic="b"} 0
`
	scrapeAfter = `# TYPE millstream_mqtt_append_wait_seconds histogram
millstream_mqtt_append_wait_seconds_bucket{le="0.001"} 60
millstream_mqtt_append_wait_seconds_bucket{le="0.002"} 100
millstream_mqtt_append_wait_seconds_bucket{le="0.004"} 110
millstream_mqtt_append_wait_seconds_bucket{le="+Inf"} 110
millstream_mqtt_append_wait_seconds_sum 0.15
millstream_mqtt_append_wait_seconds_count 110
# TYPE millstream_log_fsync_duration_seconds histogram
millstream_log_fsync_duration_seconds_bucket{topic="a",le="0.001"} 3
millstream_log_fsync_duration_seconds_bucket{topic="a",le="+Inf"} 4
millstream_log_fsync_duration_seconds_sum{topic="a"} 0.0035
millstream_log_fsync_duration_seconds_count{topic="a"} 4
millstream_log_fsync_duration_seconds_bucket{topic="b",le="0.001"} 1
millstream_log_fsync_duration_seconds_bucket{topic="b",le="+Inf"} 1
millstream_log_fsync_duration_seconds_sum{topic="b"} 0.001
millstream_log_fsync_duration_seconds_count{topic="b"} 1
`
)

func TestServerDeltaFromScrapes(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if n.Add(1) == 1 {
			w.Write([]byte(scrapeBefore))
		} else {
			w.Write([]byte(scrapeAfter))
		}
	}))
	defer srv.Close()
	from, err := fetchServerMetrics(t.Context(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	to, err := fetchServerMetrics(t.Context(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	// +Inf, listed as a bucket in the text format, is counted once.
	if h := to[metricAppendWait]; h.counts[len(h.counts)-1] != h.count {
		t.Errorf("append wait: +Inf bucket %v, count %v; want them equal", h.counts[len(h.counts)-1], h.count)
	}
	r := serverDelta(from, to)
	check := func(name string, got *float64, want float64) {
		t.Helper()
		if got == nil || math.Abs(*got-want) > 1e-9 {
			t.Errorf("%s = %v, want %v", name, deref(got), want)
		}
	}
	// p50: rank 50 of 100 is the last of the 50 in (0, 1 ms]: 1 ms. p99:
	// rank 99 is the 9th of 10 in (2, 4 ms]: 2 + 2*9/10 = 3.8 ms.
	check("append wait p50", r.AppendWaitP50, 1)
	check("append wait p99", r.AppendWaitP99, 3.8)
	if r.HandoffP50 != nil || r.HandoffP99 != nil {
		t.Errorf("hand-off quantiles %v %v from a server without the histogram, want none", deref(r.HandoffP50), deref(r.HandoffP99))
	}
	// 4 new flushes over both series, 4 ms in all.
	if r.Flushes == nil || *r.Flushes != 4 {
		t.Errorf("flushes = %v, want 4", r.Flushes)
	}
	check("flush mean", r.FlushMean, 1)
}

func TestHistogramQuantileEdges(t *testing.T) {
	inf := math.Inf(1)
	h := histSnapshot{bounds: []float64{0.001, inf}, counts: []float64{0, 5}, count: 5}
	if v, ok := h.quantile(0.99); !ok || v != 0.001 {
		t.Errorf("all in +Inf: %v %v, want the largest finite bound", v, ok)
	}
	if _, ok := (histSnapshot{bounds: []float64{inf}, counts: []float64{0}}).quantile(0.5); ok {
		t.Error("empty histogram gave a quantile")
	}
}

func TestServerMetricsErrors(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	if _, err := fetchServerMetrics(t.Context(), srv.URL); err == nil {
		t.Error("a 404 gave no error")
	}
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}
