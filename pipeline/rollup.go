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
	"bytes"
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
	// GroupConsumer, when set (several nodes on one Kafka cluster), makes
	// the step a consumer group member: the nodes split the source
	// partitions, and a partition's state moves with it.
	GroupConsumer uns.GroupConsumerFactory
	Logger        *slog.Logger
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

// checkpoint is the value of a state record: the state of one source
// partition (a tag's points are all in the partition of its asset).
type checkpoint struct {
	Partition int32           `json:"partition"`
	Position  int64           `json:"position"`   // next source offset
	OutputEnd map[int32]int64 `json:"output_end"` // output end offsets when written
	Windows   []*window       `json:"windows"`
	// Closed is the start of each tag's last closed window: a point for it
	// or an earlier one is late.
	Closed map[string]int64 `json:"closed"`
	// Written are windows in the output that the records after Position
	// will close again (written by an earlier run past its checkpoint):
	// not to be written twice.
	Written []string `json:"written,omitempty"`
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

// part is the state of one owned source partition.
type part struct {
	position int64 // next offset to read; records below it are in the state
	windows  map[string]*window
	closed   map[string]int64
	written  map[string]bool // windows in the output after the checkpoint
	dirty    bool
}

// source is what Run needs of log.Consumer or a group member.
type source interface {
	Poll(ctx context.Context) ([]log.Record, error)
	Close() error
}

// runState is one Run.
type runState struct {
	r        *Rollup
	nSource  int32
	parts    map[int32]*part
	b        *log.Batch
	interval int64

	// mu is held while a batch is processed and by the group callbacks,
	// which may run on the client's goroutine between two Polls: a
	// revocation waits for the batch, then checkpoints the partition.
	mu       sync.Mutex
	assigned []int32
}

// Run consumes until ctx is done (then it returns nil) or the log fails.
func (r *Rollup) Run(ctx context.Context) error {
	for _, t := range []string{r.opts.Source, r.opts.Output} {
		if err := r.l.CreateTopic(ctx, t, log.TopicConfig{}); err != nil && !errors.Is(err, log.ErrTopicExists) {
			return fmt.Errorf("rollup %s: create %s: %w", IntervalName(r.opts.Interval), t, err)
		}
	}
	info, err := r.l.Topic(ctx, r.opts.Source)
	if err != nil {
		return fmt.Errorf("rollup: %w", err)
	}
	n := int32(len(info.Partitions))
	// One state partition per source partition: a partition's state moves
	// with it between nodes.
	err = r.l.CreateTopic(ctx, r.stateTopic(), log.TopicConfig{Partitions: n, RetentionAge: -1, RetentionBytes: -1})
	if err != nil && !errors.Is(err, log.ErrTopicExists) {
		return fmt.Errorf("rollup: create %s: %w", r.stateTopic(), err)
	}
	if si, err := r.l.Topic(ctx, r.stateTopic()); err != nil {
		return fmt.Errorf("rollup: %w", err)
	} else if len(si.Partitions) != int(n) {
		return fmt.Errorf("rollup: %s has %d partitions and %s %d; delete %s (the rollups then start over from the source)",
			r.stateTopic(), len(si.Partitions), r.opts.Source, n, r.stateTopic())
	}
	st := &runState{r: r, nSource: n, parts: map[int32]*part{}, b: log.NewBatch(), interval: r.opts.Interval.Milliseconds()}

	var src source
	var commit func(context.Context) error
	if r.opts.GroupConsumer != nil {
		gc, err := r.opts.GroupConsumer(ctx, r.group, []string{r.opts.Source}, uns.GroupCallbacks{
			OnAssigned: func(_ context.Context, ps map[string][]int32) {
				st.mu.Lock()
				defer st.mu.Unlock()
				st.assigned = append(st.assigned, ps[r.opts.Source]...)
			},
			// Revoked partitions are checkpointed before the group commits
			// their positions and the next owner starts.
			OnRevoked: func(cctx context.Context, ps map[string][]int32) {
				st.mu.Lock()
				defer st.mu.Unlock()
				for _, p := range ps[r.opts.Source] {
					if err := st.checkpoint(cctx, p); err != nil {
						r.log.Error("rollup: checkpoint of a revoked partition failed; its next owner re-reads from the previous one", "partition", p, "error", err)
					}
					delete(st.parts, p)
				}
			},
			OnLost: func(_ context.Context, ps map[string][]int32) {
				st.mu.Lock()
				defer st.mu.Unlock()
				for _, p := range ps[r.opts.Source] {
					delete(st.parts, p)
				}
			},
		})
		if err != nil {
			return fmt.Errorf("rollup: %w", err)
		}
		src, commit = gc, gc.Commit
	} else {
		offsets := map[int32]int64{}
		for _, p := range info.Partitions {
			ps, err := st.load(ctx, p.Partition)
			if err != nil {
				return err
			}
			offsets[p.Partition] = max(ps.position, p.Start)
		}
		c, err := log.NewConsumer(r.l, r.group, r.opts.Source, log.ConsumerOptions{Offsets: offsets})
		if err != nil {
			return fmt.Errorf("rollup: %w", err)
		}
		src, commit = c, c.Commit
	}
	defer src.Close()

	lastCheckpoint := time.Now()
	for {
		// Wake up at least every second to close windows by the clock.
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		recs, err := src.Poll(pctx)
		cancel()
		if ctx.Err() != nil {
			fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// Poll may return records although ctx has ended, and the
			// commit below counts them as read: fold them in first, or
			// the next owner of a Kafka group starts after them.
			if err == nil && len(recs) > 0 {
				if err := st.batch(fctx, recs, false, commit); err != nil {
					return err
				}
			}
			st.mu.Lock()
			defer st.mu.Unlock()
			return st.checkpointAll(fctx, commit)
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("rollup: %w", err)
		}
		checkpoint := time.Since(lastCheckpoint) >= r.opts.CheckpointInterval
		if err := st.batch(ctx, recs, checkpoint, commit); err != nil {
			return err
		}
		if checkpoint {
			lastCheckpoint = time.Now()
		}
	}
}

// batch processes one Poll's records under mu.
func (st *runState) batch(ctx context.Context, recs []log.Record, checkpoint bool, commit func(context.Context) error) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	assigned := st.assigned
	st.assigned = nil
	for _, p := range assigned {
		if _, ok := st.parts[p]; ok {
			continue
		}
		if _, err := st.load(ctx, p); err != nil {
			return err
		}
	}
	wall := st.r.opts.Now()
	for i := range recs {
		st.point(ctx, &recs[i], wall)
	}
	st.closeByClock(ctx)
	if err := st.b.Wait(); err != nil {
		return fmt.Errorf("rollup: write %s: %w", st.r.opts.Output, err)
	}
	if checkpoint {
		return st.checkpointAll(ctx, commit)
	}
	return nil
}

// load reads partition p's last checkpoint (if any) and the windows the
// output holds after it for p's tags, and makes p owned.
func (st *runState) load(ctx context.Context, p int32) (*part, error) {
	r := st.r
	ps := &part{windows: map[string]*window{}, closed: map[string]int64{}}
	var carried []string
	info, err := r.l.Topic(ctx, r.stateTopic())
	if err != nil {
		return nil, fmt.Errorf("rollup: %w", err)
	}
	var sp log.PartitionInfo
	for _, pi := range info.Partitions {
		if pi.Partition == p {
			sp = pi
		}
	}
	ends := map[int32]int64{}
	if sp.End > sp.Start {
		recs, err := r.l.Fetch(ctx, r.stateTopic(), p, sp.End-1, log.FetchOptions{MaxRecords: 1})
		if err != nil || len(recs) == 0 {
			return nil, fmt.Errorf("rollup: read checkpoint %s/%d: %v", r.stateTopic(), p, err)
		}
		var cp checkpoint
		if err := json.Unmarshal(recs[0].Value, &cp); err != nil {
			return nil, fmt.Errorf("rollup: checkpoint %s/%d/%d is unreadable (%v); delete the topic %s to start over from the source", r.stateTopic(), p, sp.End-1, err, r.stateTopic())
		}
		ps.position, ends = cp.Position, cp.OutputEnd
		for _, w := range cp.Windows {
			w.seen = r.opts.Now()
			ps.windows[w.Path] = w
		}
		if cp.Closed != nil {
			ps.closed = cp.Closed
		}
		carried = cp.Written
	}
	// Without a checkpoint the partition is read from its start, and
	// anything in the output for its tags was written by a run that
	// stopped before its first checkpoint: all of it is known.
	if ps.written, err = r.windowsAfter(ctx, ends, func(path string) bool { return st.partitionOf(path) == p }); err != nil {
		return nil, err
	}
	for _, k := range carried {
		ps.written[k] = true
	}
	st.parts[p] = ps
	r.log.Debug("rollup: partition loaded", "partition", p, "position", ps.position, "windows", len(ps.windows), "written", len(ps.written))
	return ps, nil
}

// partitionOf is the source partition of a tag: that of its asset, the
// key of uns.points.
func (st *runState) partitionOf(path string) int32 {
	key := uns.AssetOf(path)
	if key == "" {
		key = path
	}
	return log.PartitionForKey([]byte(key), st.nSource)
}

// point adds one source record.
func (st *runState) point(ctx context.Context, rec *log.Record, wall time.Time) {
	r := st.r
	ps := st.parts[rec.Partition]
	if ps != nil && rec.Offset > ps.position {
		// Records this member never saw: another member processed them
		// (a partition this member was given while its previous owner
		// still held it) and checkpointed its state; take that state.
		// A gap that remains is records deleted by retention.
		if fresh, err := st.load(ctx, rec.Partition); err == nil {
			ps = fresh
		}
		if rec.Offset > ps.position {
			ps.position = rec.Offset
		}
	}
	if ps == nil || rec.Offset < ps.position {
		return // not owned (anymore), or already in the checkpoint
	}
	ps.position, ps.dirty = rec.Offset+1, true
	p, err := uns.ParsePointRecord(rec)
	if err != nil {
		r.skipped.Add(1)
		return
	}
	v, ok := numeric(p)
	if !ok {
		r.skipped.Add(1)
		return
	}
	t := p.Time.UnixMilli()
	start := t - ((t%st.interval)+st.interval)%st.interval
	w := ps.windows[p.Path]
	if w != nil && start > w.Start {
		st.emit(ctx, ps, w)
		w = nil
	}
	if w != nil && start < w.Start {
		r.late.Add(1)
		return
	}
	if c, ok := ps.closed[p.Path]; w == nil && ok && start <= c {
		r.late.Add(1) // its window was closed by the clock already
		return
	}
	if w == nil {
		w = &window{Path: p.Path, Unit: p.Unit, Start: start, Min: v, Max: v, First: v, FirstTime: t, Last: v, LastTime: t}
		ps.windows[p.Path] = w
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

// closeByClock closes the windows whose end is Grace past and whose tag
// has been quiet for Grace. The second condition keeps a replay of old
// points (all far past their end) from closing windows between two polls.
func (st *runState) closeByClock(ctx context.Context) {
	now := st.r.opts.Now()
	open := 0
	for _, ps := range st.parts {
		for _, w := range ps.windows {
			if w.Start+st.interval+st.r.opts.Grace.Milliseconds() <= now.UnixMilli() && now.Sub(w.seen) >= st.r.opts.Grace {
				st.emit(ctx, ps, w)
				ps.dirty = true
			}
		}
		open += len(ps.windows)
	}
	st.r.open.Store(int64(open))
}

// emit writes a closed window, unless the output has it already.
func (st *runState) emit(ctx context.Context, ps *part, w *window) {
	r := st.r
	key := w.Path + "|" + strconv.FormatInt(w.Start, 10)
	delete(ps.windows, w.Path)
	ps.closed[w.Path] = w.Start
	if ps.written[key] {
		delete(ps.written, key)
		return
	}
	rec := Record{Path: w.Path, Start: time.UnixMilli(w.Start).UTC(), End: time.UnixMilli(w.Start + st.interval).UTC(),
		Interval: IntervalName(r.opts.Interval), Count: w.Count, Sum: w.Sum, Min: w.Min, Max: w.Max,
		Avg: w.Sum / float64(w.Count), First: w.First, Last: w.Last, Unit: w.Unit}
	v, err := json.Marshal(rec)
	if err != nil {
		st.b.Fail(err)
		return
	}
	assetKey := uns.AssetOf(w.Path)
	if assetKey == "" {
		assetKey = w.Path
	}
	st.b.Produce(ctx, r.l, &log.Record{Topic: r.opts.Output, Key: []byte(assetKey), Value: v, Timestamp: rec.End,
		Headers: []log.Header{{Key: headerWindow, Value: []byte(key)}, {Key: uns.HeaderContentType, Value: []byte("application/json")}}})
	r.emitted.Add(1)
}

// checkpointAll checkpoints every owned partition that changed, then
// commits the positions under the step's group (for lag reporting, and for
// a group member the point where the partition's next owner starts; it
// skips what the checkpoint holds).
func (st *runState) checkpointAll(ctx context.Context, commit func(context.Context) error) error {
	for p, ps := range st.parts {
		if !ps.dirty {
			continue
		}
		if err := st.checkpoint(ctx, p); err != nil {
			return err
		}
	}
	if err := commit(ctx); err != nil {
		return fmt.Errorf("rollup: commit: %w", err)
	}
	return nil
}

// checkpoint writes partition p's state to state partition p and deletes
// its older checkpoints.
func (st *runState) checkpoint(ctx context.Context, p int32) error {
	r := st.r
	ps := st.parts[p]
	if ps == nil {
		return nil
	}
	if r.beforeCheckpoint != nil {
		if err := r.beforeCheckpoint(); err != nil {
			return err
		}
	}
	info, err := r.l.Topic(ctx, r.opts.Output)
	if err != nil {
		return fmt.Errorf("rollup: checkpoint: %w", err)
	}
	cp := checkpoint{Partition: p, Position: ps.position, OutputEnd: map[int32]int64{}, Windows: make([]*window, 0, len(ps.windows)), Closed: ps.closed}
	for _, op := range info.Partitions {
		cp.OutputEnd[op.Partition] = op.End
	}
	for _, w := range ps.windows {
		cp.Windows = append(cp.Windows, w)
	}
	for k := range ps.written {
		cp.Written = append(cp.Written, k)
	}
	v, err := json.Marshal(cp)
	if err != nil {
		return fmt.Errorf("rollup: checkpoint: %w", err)
	}
	rec := &log.Record{Topic: r.stateTopic(), Partition: p, PartitionSet: true, Value: v}
	if err := r.l.ProduceSync(ctx, rec); err != nil {
		return fmt.Errorf("rollup: checkpoint: %w", err)
	}
	if rec.Offset > 0 {
		if err := r.l.DeleteRecordsBefore(ctx, r.stateTopic(), p, rec.Offset); err != nil {
			r.log.Warn("rollup: could not delete older checkpoints", "error", err)
		}
	}
	ps.dirty = false
	r.log.Debug("rollup: checkpoint", "partition", p, "position", ps.position, "windows", len(ps.windows), "offset", rec.Offset)
	return nil
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

// windowsAfter returns the windows of the tags keep selects that the
// output holds after the given end offsets: written by a run that stopped
// after its last checkpoint.
func (r *Rollup) windowsAfter(ctx context.Context, ends map[int32]int64, keep func(path string) bool) (map[string]bool, error) {
	done, err := log.HeaderValues(ctx, r.l, r.opts.Output, headerWindow, ends, func(v []byte) bool {
		i := bytes.LastIndexByte(v, '|')
		return i > 0 && keep(string(v[:i]))
	})
	if err != nil {
		return nil, fmt.Errorf("rollup: %w", err)
	}
	return done, nil
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
