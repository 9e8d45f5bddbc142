package embedded

import (
	"strings"
	"sync"
	"testing"

	"github.com/millstream/millstream/log"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestMetrics(t *testing.T) {
	l := openT(t, t.TempDir(), Options{})
	reg := prometheus.NewRegistry()
	if err := l.Register(reg); err != nil {
		t.Fatal(err)
	}
	createTopic(t, l, "m", log.TopicConfig{Partitions: 2})
	for i := 0; i < 10; i++ {
		if err := l.ProduceSync(bg, &log.Record{Topic: "m", Partition: 1, PartitionSet: true, Value: []byte("0123456789")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.CommitOffset(bg, "hist", "m", 1, 4); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	get := func(name string, labels map[string]string) float64 {
		t.Helper()
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
		metric:
			for _, m := range mf.GetMetric() {
				for k, v := range labels {
					if !hasLabel(m, k, v) {
						continue metric
					}
				}
				switch {
				case m.Counter != nil:
					return m.Counter.GetValue()
				case m.Gauge != nil:
					return m.Gauge.GetValue()
				case m.Histogram != nil:
					return float64(m.Histogram.GetSampleCount())
				}
			}
		}
		var names []string
		for _, mf := range mfs {
			names = append(names, mf.GetName())
		}
		t.Fatalf("metric %s%v not found among %s", name, labels, strings.Join(names, ", "))
		return 0
	}
	if v := get("millstream_log_appended_records_total", map[string]string{"topic": "m"}); v != 10 {
		t.Errorf("appended records = %v, want 10", v)
	}
	if v := get("millstream_log_appended_bytes_total", map[string]string{"topic": "m"}); v < 100 {
		t.Errorf("appended bytes = %v, want >= 100", v)
	}
	if v := get("millstream_log_end_offset", map[string]string{"topic": "m", "partition": "1"}); v != 10 {
		t.Errorf("end offset = %v, want 10", v)
	}
	if v := get("millstream_log_segments", map[string]string{"topic": "m", "partition": "0"}); v != 1 {
		t.Errorf("segments = %v, want 1", v)
	}
	if v := get("millstream_log_segment_bytes", map[string]string{"topic": "m", "partition": "1"}); v < 100 {
		t.Errorf("segment bytes = %v", v)
	}
	if v := get("millstream_log_consumer_lag", map[string]string{"group": "hist", "topic": "m", "partition": "1"}); v != 6 {
		t.Errorf("consumer lag = %v, want 6", v)
	}
	if v := get("millstream_log_fsync_duration_seconds", nil); v < 1 {
		t.Errorf("fsync histogram has %v samples", v)
	}
	get("millstream_log_recovery_truncated_bytes_total", nil)
}

func hasLabel(m *dto.Metric, k, v string) bool {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == k && lp.GetValue() == v {
			return true
		}
	}
	return false
}

func fsyncCount(t *testing.T, l *Log) uint64 {
	t.Helper()
	var m dto.Metric
	if err := l.m.fsyncSeconds.(prometheus.Metric).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// TestGroupCommitSharesFsyncs checks that concurrent ProduceSync calls share
// fsyncs under group commit, and that "always" fsyncs each record.
func TestGroupCommitSharesFsyncs(t *testing.T) {
	for _, mode := range []string{FsyncGroup, FsyncAlways} {
		t.Run(mode, func(t *testing.T) {
			l := openT(t, t.TempDir(), Options{Fsync: mode})
			createTopic(t, l, "g", log.TopicConfig{Partitions: 1})
			const goroutines, per = 32, 20
			before := fsyncCount(t, l)
			var wg sync.WaitGroup
			for g := 0; g < goroutines; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < per; i++ {
						if err := l.ProduceSync(bg, &log.Record{Topic: "g", Value: []byte("v")}); err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			n := fsyncCount(t, l) - before
			t.Logf("%s: %d fsyncs for %d records", mode, n, goroutines*per)
			switch {
			case mode == FsyncAlways && n != goroutines*per:
				t.Fatalf("always: %d fsyncs for %d records, want one each", n, goroutines*per)
			case mode == FsyncGroup && n >= goroutines*per/2:
				t.Fatalf("group: %d fsyncs for %d concurrent records; appends are not sharing fsyncs", n, goroutines*per)
			}
		})
	}
}
