package embedded

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

// TestFsyncMinIntervalSpacesFsyncs checks that with FsyncMinInterval a
// partition's fsyncs start at least that far apart while appends go on,
// and that every append is still acknowledged and readable. The same load
// without it shows the bound is not met by chance.
func TestFsyncMinIntervalSpacesFsyncs(t *testing.T) {
	const gap, run, appenders = 100 * time.Millisecond, 500 * time.Millisecond, 4
	for _, spaced := range []bool{true, false} {
		t.Run(fmt.Sprintf("spaced=%v", spaced), func(t *testing.T) {
			opts := Options{}
			if spaced {
				opts.FsyncMinInterval = gap
			}
			l := openT(t, t.TempDir(), opts)
			createTopic(t, l, "s", log.TopicConfig{Partitions: 1})
			before := fsyncCount(t, l)
			start := time.Now()
			var acked atomic.Int64
			var wg sync.WaitGroup
			for range appenders {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for time.Since(start) < run {
						if err := l.ProduceSync(bg, &log.Record{Topic: "s", Value: []byte("v")}); err != nil {
							t.Error(err)
							return
						}
						acked.Add(1)
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			n := fsyncCount(t, l) - before
			bound := uint64(elapsed/gap) + 1 // fsync starts at least gap apart
			t.Logf("%d fsyncs for %d appends in %v (bound with spacing %d)", n, acked.Load(), elapsed, bound)
			if spaced && n > bound {
				t.Errorf("%d fsyncs in %v with FsyncMinInterval %v; want at most %d", n, elapsed, gap, bound)
			}
			if !spaced && n <= bound {
				t.Errorf("only %d fsyncs in %v without FsyncMinInterval: the disk is too slow for this test to tell spacing from its own speed", n, elapsed)
			}
			recs, err := l.Fetch(bg, "s", 0, 0, log.FetchOptions{MaxBytes: 1 << 30})
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(recs)) != acked.Load() {
				t.Errorf("read %d records, %d were acknowledged", len(recs), acked.Load())
			}
		})
	}
}

// TestFsyncMinIntervalYields checks what ends the wait early: FsyncBytes
// unsynced, and Close, which makes what was appended durable without
// waiting out the interval.
func TestFsyncMinIntervalYields(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{FsyncMinInterval: time.Hour, FsyncBytes: 1024, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	createTopic(t, l, "y", log.TopicConfig{Partitions: 1})
	// The first fsync has no earlier one to be spaced from.
	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	if err := l.ProduceSync(ctx, &log.Record{Topic: "y", Value: []byte("first")}); err != nil {
		t.Fatalf("first append: %v", err)
	}
	// FsyncBytes reached: fsynced at once, an hour early.
	if err := l.ProduceSync(ctx, &log.Record{Topic: "y", Value: make([]byte, 2048)}); err != nil {
		t.Fatalf("append over FsyncBytes: %v", err)
	}
	// A small append waits for the interval; Close ends the wait.
	done := make(chan error, 1)
	l.Produce(bg, &log.Record{Topic: "y", Value: []byte("last")}, func(_ *log.Record, err error) { done <- err })
	select {
	case err := <-done:
		t.Fatalf("a small append was acknowledged before the interval (err %v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	closed := make(chan error, 1)
	go func() { closed <- l.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for FsyncMinInterval")
	}
	if err := <-done; err != nil {
		t.Fatalf("append pending at Close: %v", err)
	}
	l = openT(t, dir, Options{})
	recs, err := l.Fetch(bg, "y", 0, 0, log.FetchOptions{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 || string(recs[2].Value) != "last" {
		t.Fatalf("after reopening: %d records, want 3 ending with %q", len(recs), "last")
	}
}

// TestPartitionFailureReported makes a partition's segment write fail and
// checks that appends to it fail from then on, that Failure and the
// millstream_log_partition_failed gauge name it, and that other partitions
// go on.
func TestPartitionFailureReported(t *testing.T) {
	l := openT(t, t.TempDir(), Options{})
	reg := prometheus.NewRegistry()
	if err := l.Register(reg); err != nil {
		t.Fatal(err)
	}
	createTopic(t, l, "f", log.TopicConfig{Partitions: 2})
	rec := func(p int32) *log.Record {
		return &log.Record{Topic: "f", Partition: p, PartitionSet: true, Value: []byte("v")}
	}
	for p := int32(0); p < 2; p++ {
		if err := l.ProduceSync(bg, rec(p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Failure(); err != nil {
		t.Fatalf("Failure before any error: %v", err)
	}
	p, err := l.partition("f", 1)
	if err != nil {
		t.Fatal(err)
	}
	p.active.f.Close() // the next write fails, as on a disk error
	if err := l.ProduceSync(bg, rec(1)); err == nil {
		t.Fatal("append to a partition whose write failed succeeded")
	}
	if err := l.ProduceSync(bg, rec(1)); err == nil {
		t.Fatal("a second append to the failed partition succeeded")
	}
	if err := l.ProduceSync(bg, rec(0)); err != nil {
		t.Fatalf("the other partition: %v", err)
	}
	ferr := l.Failure()
	if ferr == nil || !strings.Contains(ferr.Error(), "f/1 accepts no appends") || strings.Contains(ferr.Error(), "f/0") {
		t.Fatalf("Failure = %v, want f/1 only", ferr)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "millstream_log_partition_failed" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var part string
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "partition" {
					part = lp.GetValue()
				}
			}
			got[part] = m.GetGauge().GetValue()
		}
	}
	if got["0"] != 0 || got["1"] != 1 {
		t.Fatalf("millstream_log_partition_failed = %v, want partition 1 at 1 and 0 at 0", got)
	}
}
