// Package pipeline holds stream processing steps that read the log and write
// derived topics back to it, so that everything downstream (the historian,
// sinks, replication to the cloud) can use them like any other topic.
//
// Rollup turns the raw points of uns.points into one record per tag and
// fixed interval (count, sum, min, max, average, first, last): the
// transformation a plant applies before data leaves the site, when the cloud
// should get one-minute summaries instead of every sample (a replication
// flow of topic uns.rollups.1m).
//
// # Windows and time
//
// Windows are aligned to the interval in UTC, by the points' source
// timestamps. A tag's window closes when a point of that tag at or after the
// window's end arrives, or when the wall clock is Grace past its end and the
// tag has sent nothing for Grace (tags that stop publishing still get their
// last window; a replay of old points is not cut into pieces). A point for a
// window that has closed already (or an earlier one) is late: it is counted
// (millstream_pipeline_rollup_late_points_total) and left out. The
// historian's own rollups include late points; these are for streaming.
// Only numeric points (float, int, uint; booleans as 0 and 1) with good or
// uncertain quality count; NaN and infinities are left out.
//
// # Exactly once
//
// A window spans many source records, so the step checkpoints its open
// windows together with the source positions they reflect and the end
// offsets the output had at that moment, in a one-partition state topic
// (pipeline.rollup.<interval>.state), every CheckpointInterval and at stop.
// A restart loads the last checkpoint, reads the source from its positions,
// and does not write again the windows it finds in the output after the
// checkpoint's end offsets (header rollup.window = "path|start ms"): those
// were written before the stop, from the same records.
package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millstream/millstream/log"
	"github.com/millstream/millstream/uns"
)

// headerWindow on an output record is "path|start" (start in ms since the
// epoch): which window it summarises.
const headerWindow = "rollup.window"

// RollupOptions configures a Rollup.
type RollupOptions struct {
	// Interval is the window length, e.g. one minute. Required; whole
	// seconds from 1 s to 1 day.
	Interval time.Duration
	// Grace is how long after a window's end the wall clock waits before
	// closing it without a newer point (default 10 s).
	Grace time.Duration
	// Source is the topic of points (default uns.points); Output the topic
	// written (default "uns.rollups." + the interval, e.g. uns.rollups.1m).
	Source, Output string
	// CheckpointInterval bounds how often the open windows are checkpointed
	// (default 5 s); a restart re-reads at most this much of the source.
	CheckpointInterval time.Duration
	Logger             *slog.Logger
	// Now is the wall clock (tests); default time.Now.
	Now func() time.Time
}

// Rollup is the step; Run runs it.
type Rollup struct {
	l     log.Log
	opts  RollupOptions
	group string
	log   *slog.Logger

	emitted, late, skipped atomic.Uint64
	open                   atomic.Int64

	// beforeCheckpoint, when set (tests), runs before each checkpoint; an
	// error stops Run as a crash would.
	beforeCheckpoint func() error
}

// IntervalName is the short form of an interval used in topic and group
// names: 1m, 15m, 1h, 30s, 1d.
func IntervalName(d time.Duration) string {
	switch {
	case d%(24*time.Hour) == 0:
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	}
	return strconv.FormatInt(int64(d/time.Second), 10) + "s"
}

// NewRollup checks the options and builds the step.
func NewRollup(l log.Log, opts RollupOptions) (*Rollup, error) {
	if opts.Interval < time.Second || opts.Interval > 24*time.Hour || opts.Interval%time.Second != 0 {
		return nil, fmt.Errorf("rollup interval %s: use whole seconds from 1s to 1d, e.g. 1m", opts.Interval)
	}
	if opts.Grace <= 0 {
		opts.Grace = 10 * time.Second
	}
	if opts.CheckpointInterval <= 0 {
		opts.CheckpointInterval = 5 * time.Second
	}
	if opts.Source == "" {
		opts.Source = uns.PointsTopic
	}
	if opts.Output == "" {
		opts.Output = "uns.rollups." + IntervalName(opts.Interval)
	}
	if err := log.ValidateTopicName(opts.Output); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Rollup{l: l, opts: opts, group: "pipeline.rollup." + IntervalName(opts.Interval), log: opts.Logger}, nil
}

// Output is the topic the step writes.
func (r *Rollup) Output() string { return r.opts.Output }

// window is one tag's open window (JSON in checkpoints).
type window struct {
	Path      string  `json:"path"`
	Unit      string  `json:"unit,omitempty"`
	Start     int64   `json:"start"` // ms
	Count     int64   `json:"count"`
	Sum       float64 `json:"sum"`
	Min       float64 `json:"min"`
	Max       float64 `json:"max"`
	First     float64 `json:"first"`
	Last      float64 `json:"last"`
	FirstTime int64   `json:"first_time"`
	LastTime  int64   `json:"last_time"`

	seen time.Time // wall clock of the last point: not checkpointed
}

// checkpoint is the value of a state record.
type checkpoint struct {
	Positions map[int32]int64 `json:"positions"`  // source: next offset per partition
	OutputEnd map[int32]int64 `json:"output_end"` // output end offsets when written
	Windows   []*window       `json:"windows"`
	// Closed is the start of each tag's last closed window: a point for it
	// or an earlier one is late.
	Closed map[string]int64 `json:"closed"`
}

// Record is the JSON value of an output record.
type Record struct {
	Path     string    `json:"path"`
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`
	Interval string    `json:"interval"`
	Count    int64     `json:"count"`
	Sum      float64   `json:"sum"`
	Min      float64   `json:"min"`
	Max      float64   `json:"max"`
	Avg      float64   `json:"avg"`
	First    float64   `json:"first"`
	Last     float64   `json:"last"`
	Unit     string    `json:"unit,omitempty"`
}

func (r *Rollup) stateTopic() string {
	return "pipeline.rollup." + IntervalName(r.opts.Interval) + ".state"
}

// Run consumes until ctx is done (then it returns nil) or the log fails.
func (r *Rollup) Run(ctx context.Context) error {
	for _, t := range []string{r.opts.Source, r.opts.Output} {
		if err := r.l.CreateTopic(ctx, t, log.TopicConfig{}); err != nil && !errors.Is(err, log.ErrTopicExists) {
			return fmt.Errorf("rollup %s: create %s: %w", IntervalName(r.opts.Interval), t, err)
		}
	}
	if err := r.l.CreateTopic(ctx, r.stateTopic(), log.TopicConfig{Partitions: 1, RetentionAge: -1, RetentionBytes: -1}); err != nil && !errors.Is(err, log.ErrTopicExists) {
		return fmt.Errorf("rollup: create %s: %w", r.stateTopic(), err)
	}
	cp, err := r.loadCheckpoint(ctx)
	if err != nil {
		return err
	}
	open := map[string]*window{}
	closed := map[string]int64{}
	copts := log.ConsumerOptions{StartAt: log.StartEarliest}
	// Without a checkpoint the source is read from its start, and anything
	// in the output was written by a run that stopped before its first
	// checkpoint: all of it is known.
	ends := map[int32]int64{}
	if cp != nil {
		for _, w := range cp.Windows {
			w.seen = r.opts.Now()
			open[w.Path] = w
		}
		if cp.Closed != nil {
			closed = cp.Closed
		}
		copts.Offsets, ends = cp.Positions, cp.OutputEnd
	} else {
		copts.Offsets = map[int32]int64{}
		info, err := r.l.Topic(ctx, r.opts.Source)
		if err != nil {
			return fmt.Errorf("rollup: %w", err)
		}
		for _, p := range info.Partitions {
			copts.Offsets[p.Partition] = p.Start
		}
	}
	written, err := r.windowsAfter(ctx, ends)
	if err != nil {
		return err
	}
	c, err := log.NewConsumer(r.l, r.group, r.opts.Source, copts)
	if err != nil {
		return fmt.Errorf("rollup: %w", err)
	}
	defer c.Close()

	interval := r.opts.Interval.Milliseconds()
	b := &batch{}
	emit := func(w *window) {
		key := w.Path + "|" + strconv.FormatInt(w.Start, 10)
		delete(open, w.Path)
		closed[w.Path] = w.Start
		if written[key] {
			delete(written, key)
			return
		}
		rec := Record{Path: w.Path, Start: time.UnixMilli(w.Start).UTC(), End: time.UnixMilli(w.Start + interval).UTC(),
			Interval: IntervalName(r.opts.Interval), Count: w.Count, Sum: w.Sum, Min: w.Min, Max: w.Max,
			Avg: w.Sum / float64(w.Count), First: w.First, Last: w.Last, Unit: w.Unit}
		v, err := json.Marshal(rec)
		if err != nil {
			b.fail(err)
			return
		}
		assetKey := uns.AssetOf(w.Path)
		if assetKey == "" {
			assetKey = w.Path
		}
		b.produce(ctx, r.l, &log.Record{Topic: r.opts.Output, Key: []byte(assetKey), Value: v, Timestamp: rec.End,
			Headers: []log.Header{{Key: headerWindow, Value: []byte(key)}, {Key: uns.HeaderContentType, Value: []byte("application/json")}}})
		r.emitted.Add(1)
	}

	lastCheckpoint, dirty := time.Now(), false
	for {
		// Wake up at least every second to close windows by the clock.
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		recs, err := c.Poll(pctx)
		cancel()
		if ctx.Err() != nil {
			fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if !dirty {
				return nil
			}
			return r.checkpoint(fctx, c, open, closed)
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("rollup: %w", err)
		}
		wall := r.opts.Now()
		for i := range recs {
			rec := &recs[i]
			dirty = true
			p, perr := uns.ParsePointRecord(rec)
			if perr != nil {
				r.skipped.Add(1)
				continue
			}
			v, ok := numeric(p)
			if !ok {
				r.skipped.Add(1)
				continue
			}
			t := p.Time.UnixMilli()
			start := t - ((t%interval)+interval)%interval
			w := open[p.Path]
			if w != nil && start > w.Start {
				emit(w)
				w = nil
			}
			if w != nil && start < w.Start {
				r.late.Add(1)
				continue
			}
			if c, ok := closed[p.Path]; w == nil && ok && start <= c {
				r.late.Add(1) // its window was closed by the clock already
				continue
			}
			if w == nil {
				w = &window{Path: p.Path, Unit: p.Unit, Start: start, Min: v, Max: v, First: v, FirstTime: t, Last: v, LastTime: t}
				open[p.Path] = w
			}
			w.seen = wall
			w.Count++
			w.Sum += v
			w.Min, w.Max = math.Min(w.Min, v), math.Max(w.Max, v)
			if t < w.FirstTime {
				w.First, w.FirstTime = v, t
			}
			if t >= w.LastTime {
				w.Last, w.LastTime = v, t
			}
		}
		// By the clock: a window whose end is Grace past and whose tag has
		// been quiet for Grace. The second condition keeps a replay of old
		// points (all far past their end) from closing windows between
		// two polls.
		now := r.opts.Now()
		for _, w := range open {
			if w.Start+interval+r.opts.Grace.Milliseconds() <= now.UnixMilli() && now.Sub(w.seen) >= r.opts.Grace {
				emit(w)
				dirty = true
			}
		}
		r.open.Store(int64(len(open)))
		if err := b.wait(); err != nil {
			return fmt.Errorf("rollup: write %s: %w", r.opts.Output, err)
		}
		if dirty && time.Since(lastCheckpoint) >= r.opts.CheckpointInterval {
			if err := r.checkpoint(ctx, c, open, closed); err != nil {
				return err
			}
			lastCheckpoint, dirty = time.Now(), false
		}
	}
}

// checkpoint writes the open windows with the consumer's positions and the
// output's end offsets, deletes older checkpoints, and commits the
// positions under the step's group (for lag reporting; the checkpoint is
// what a restart resumes from).
func (r *Rollup) checkpoint(ctx context.Context, c *log.Consumer, open map[string]*window, closed map[string]int64) error {
	if r.beforeCheckpoint != nil {
		if err := r.beforeCheckpoint(); err != nil {
			return err
		}
	}
	info, err := r.l.Topic(ctx, r.opts.Output)
	if err != nil {
		return fmt.Errorf("rollup: checkpoint: %w", err)
	}
	cp := checkpoint{Positions: c.Positions(), OutputEnd: map[int32]int64{}, Windows: make([]*window, 0, len(open)), Closed: closed}
	for _, p := range info.Partitions {
		cp.OutputEnd[p.Partition] = p.End
	}
	for _, w := range open {
		cp.Windows = append(cp.Windows, w)
	}
	v, err := json.Marshal(cp)
	if err != nil {
		return fmt.Errorf("rollup: checkpoint: %w", err)
	}
	rec := &log.Record{Topic: r.stateTopic(), Value: v}
	if err := r.l.ProduceSync(ctx, rec); err != nil {
		return fmt.Errorf("rollup: checkpoint: %w", err)
	}
	if rec.Offset > 0 {
		if err := r.l.DeleteRecordsBefore(ctx, r.stateTopic(), 0, rec.Offset); err != nil {
			r.log.Warn("rollup: could not delete older checkpoints", "error", err)
		}
	}
	for p, off := range cp.Positions {
		if err := r.l.CommitOffset(ctx, r.group, r.opts.Source, p, off); err != nil {
			return fmt.Errorf("rollup: commit: %w", err)
		}
	}
	return nil
}

// loadCheckpoint returns the last checkpoint, or nil if there is none.
func (r *Rollup) loadCheckpoint(ctx context.Context) (*checkpoint, error) {
	info, err := r.l.Topic(ctx, r.stateTopic())
	if err != nil {
		return nil, fmt.Errorf("rollup: %w", err)
	}
	p := info.Partitions[0]
	if p.End == p.Start {
		return nil, nil
	}
	recs, err := r.l.Fetch(ctx, r.stateTopic(), 0, p.End-1, log.FetchOptions{MaxRecords: 1})
	if err != nil || len(recs) == 0 {
		return nil, fmt.Errorf("rollup: read checkpoint: %v", err)
	}
	var cp checkpoint
	if err := json.Unmarshal(recs[0].Value, &cp); err != nil {
		return nil, fmt.Errorf("rollup: checkpoint %s/0/%d is unreadable (%v); delete the topic %s to start over from the source", r.stateTopic(), p.End-1, err, r.stateTopic())
	}
	return &cp, nil
}

// numeric is the value of a point that counts towards a rollup.
func numeric(p uns.Point) (float64, bool) {
	if p.Quality != uns.Good && p.Quality != uns.Uncertain {
		return 0, false
	}
	if b, ok := p.Value.Bool(); ok {
		if b {
			return 1, true
		}
		return 0, true
	}
	f, ok := p.Value.Float()
	if !ok || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false
	}
	return f, true
}

// windowsAfter returns the windows written to the output after the given
// end offsets: by the run that stopped after its last checkpoint.
func (r *Rollup) windowsAfter(ctx context.Context, ends map[int32]int64) (map[string]bool, error) {
	info, err := r.l.Topic(ctx, r.opts.Output)
	if err != nil {
		return nil, fmt.Errorf("rollup: %w", err)
	}
	done := map[string]bool{}
	for _, p := range info.Partitions {
		off, ok := ends[p.Partition]
		if !ok {
			off = p.Start
		}
		for off < p.End {
			recs, err := r.l.Fetch(ctx, r.opts.Output, p.Partition, max(off, p.Start), log.FetchOptions{})
			if err != nil {
				return nil, fmt.Errorf("rollup: read %s/%d: %w", r.opts.Output, p.Partition, err)
			}
			if len(recs) == 0 {
				break
			}
			for _, rec := range recs {
				if v, ok := rec.HeaderValue(headerWindow); ok {
					done[string(v)] = true
				}
				off = rec.Offset + 1
			}
		}
	}
	return done, nil
}

// batch collects the appends of one poll and waits for all of them.
type batch struct {
	wg   sync.WaitGroup
	mu   sync.Mutex
	errs []error
}

func (b *batch) produce(ctx context.Context, l log.Log, rec *log.Record) {
	b.wg.Add(1)
	l.Produce(ctx, rec, func(_ *log.Record, err error) {
		if err != nil {
			b.fail(err)
		}
		b.wg.Done()
	})
}

func (b *batch) fail(err error) {
	b.mu.Lock()
	b.errs = append(b.errs, err)
	b.mu.Unlock()
}

func (b *batch) wait() error {
	b.wg.Wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	err := errors.Join(b.errs...)
	b.errs = nil
	return err
}

var rollupDescs = [...]*prometheus.Desc{
	prometheus.NewDesc("millstream_pipeline_rollup_records_total", "Rollup records written (one per tag and closed window).", []string{"interval"}, nil),
	prometheus.NewDesc("millstream_pipeline_rollup_late_points_total", "Points that arrived after their window had closed, left out of the rollups.", []string{"interval"}, nil),
	prometheus.NewDesc("millstream_pipeline_rollup_skipped_points_total", "Points without a numeric value of good or uncertain quality, left out of the rollups.", []string{"interval"}, nil),
	prometheus.NewDesc("millstream_pipeline_rollup_open_windows", "Windows open (tags with points in the current interval).", []string{"interval"}, nil),
}

// Rollups is a set of rollup steps, one per interval; it is the
// prometheus.Collector of all of them (their metrics differ by the
// interval label).
type Rollups []*Rollup

// Describe implements prometheus.Collector.
func (rs Rollups) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range rollupDescs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (rs Rollups) Collect(ch chan<- prometheus.Metric) {
	for _, r := range rs {
		r.collect(ch)
	}
}

func (r *Rollup) collect(ch chan<- prometheus.Metric) {
	name := IntervalName(r.opts.Interval)
	ch <- prometheus.MustNewConstMetric(rollupDescs[0], prometheus.CounterValue, float64(r.emitted.Load()), name)
	ch <- prometheus.MustNewConstMetric(rollupDescs[1], prometheus.CounterValue, float64(r.late.Load()), name)
	ch <- prometheus.MustNewConstMetric(rollupDescs[2], prometheus.CounterValue, float64(r.skipped.Load()), name)
	ch <- prometheus.MustNewConstMetric(rollupDescs[3], prometheus.GaugeValue, float64(r.open.Load()), name)
}
