package historian

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/millstream/millstream/log"
	"github.com/millstream/millstream/uns"
)

// IngestOptions configure an Ingester. Zero values take the defaults.
type IngestOptions struct {
	// Topic is the topic of points (default uns.points).
	Topic string
	// Group is the consumer name (default "historian"). Its committed
	// offsets only report lag: the DB's checkpoint says where to resume.
	Group string
	// FlushInterval bounds how long appended points stay in memory only
	// (default 10s): after a crash, at most this much is replayed.
	FlushInterval time.Duration
	// FlushPoints flushes after this many points even before FlushInterval
	// (default 1,000,000), bounding memory during a replay.
	FlushPoints int
	// ProgressInterval is how often a catch-up reports progress (default
	// 10s).
	ProgressInterval time.Duration
	// CompactInterval is how often partitions that ended more than the
	// out-of-order window ago are compacted into one file each (default
	// 10m): flushes write a file per partition each time.
	CompactInterval time.Duration
	// TopicWait is how often Run looks for the topic while it does not
	// exist yet (default 1s).
	TopicWait time.Duration
	// Logger receives progress and skipped records (default slog.Default()).
	Logger *slog.Logger
}

// Ingester feeds a DB from the points topic: a named consumer that appends
// every point to the series of its path and flushes the DB periodically
// with the consumer's positions as the checkpoint. On start it resumes at
// the DB's checkpoint (not the group's commits), so state and offsets are
// always consistent: a crash loses nothing and stores nothing twice, and an
// empty (deleted) historian directory is rebuilt by replaying the topic
// from its start.
type Ingester struct {
	l    log.Log
	db   *DB
	opts IngestOptions
	log  *slog.Logger

	caughtUp atomic.Bool
	records  atomic.Int64 // records read since Run started
	points   atomic.Int64 // points appended
	skipped  atomic.Int64 // records or points that could not be stored
	polls    atomic.Int64 // reads of the topic (Poll calls) since Run started

	mu       sync.Mutex
	target   int64 // records to replay to be caught up
	started  time.Time
	running  bool
	runError error
}

// NewIngester returns an Ingester of l's points into db; Run starts it.
func NewIngester(l log.Log, db *DB, opts IngestOptions) *Ingester {
	if opts.Topic == "" {
		opts.Topic = uns.PointsTopic
	}
	if opts.Group == "" {
		opts.Group = "historian"
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = 10 * time.Second
	}
	if opts.FlushPoints <= 0 {
		opts.FlushPoints = 1_000_000
	}
	if opts.ProgressInterval <= 0 {
		opts.ProgressInterval = 10 * time.Second
	}
	if opts.CompactInterval <= 0 {
		opts.CompactInterval = 10 * time.Minute
	}
	if opts.TopicWait <= 0 {
		opts.TopicWait = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Ingester{l: l, db: db, opts: opts, log: opts.Logger}
}

// CaughtUp reports whether the Ingester has read every record that was in
// the topic when Run started (or found the topic empty or absent). It stays
// true afterwards.
func (in *Ingester) CaughtUp() bool { return in.caughtUp.Load() }

// Ready is CaughtUp as a readiness check for /readyz: nil once caught up,
// else an error saying how far the replay is.
func (in *Ingester) Ready() error {
	if in.caughtUp.Load() {
		return nil
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.runError != nil {
		return fmt.Errorf("historian: ingest stopped: %v", in.runError)
	}
	if !in.running {
		return errors.New("historian: not started")
	}
	done := in.records.Load()
	if in.target > 0 {
		return fmt.Errorf("historian: replaying %s, %d of %d records (%.1f%%)",
			in.opts.Topic, done, in.target, 100*float64(done)/float64(in.target))
	}
	return fmt.Errorf("historian: starting")
}

// Stats are an Ingester's counters since Run started.
type Stats struct {
	Records  int64 // records read
	Points   int64 // points appended
	Skipped  int64 // records that are not points, or points the DB refused
	CaughtUp bool
}

// Stats returns the counters.
func (in *Ingester) Stats() Stats {
	return Stats{Records: in.records.Load(), Points: in.points.Load(), Skipped: in.skipped.Load(), CaughtUp: in.caughtUp.Load()}
}

// Run consumes until ctx is done, then flushes what it appended and returns
// nil; it returns an error if the log or the DB fails (restart it to
// resume from the last flush). Call it once.
func (in *Ingester) Run(ctx context.Context) (err error) {
	in.mu.Lock()
	in.running, in.started = true, time.Now()
	in.mu.Unlock()
	defer func() {
		if err != nil {
			in.mu.Lock()
			in.runError = err
			in.mu.Unlock()
		}
	}()
	info, err := in.waitTopic(ctx)
	if err != nil || ctx.Err() != nil {
		return err
	}
	ckpt, err := decodeCheckpoint(in.db.Checkpoint())
	if err != nil {
		return err
	}
	if ckpt.topic != "" && ckpt.topic != in.opts.Topic {
		return fmt.Errorf("historian: the historian was built from topic %s, not %s (delete its directory to rebuild it from %s)",
			ckpt.topic, in.opts.Topic, in.opts.Topic)
	}
	// Every partition starts at the checkpoint, or at its start when the
	// checkpoint does not know it (an empty historian: rebuild).
	start := map[int32]int64{}
	ends := map[int32]int64{}
	var target int64
	for _, p := range info.Partitions {
		off, ok := ckpt.offsets[p.Partition]
		if !ok {
			off = p.Start
		}
		if off < p.Start {
			in.log.Warn("historian: points removed by the topic's retention were never stored; resuming at the oldest kept",
				"topic", in.opts.Topic, "partition", p.Partition, "checkpoint", off, "start", p.Start)
			off = p.Start
		}
		start[p.Partition] = off
		ends[p.Partition] = p.End
		target += max(0, p.End-off)
	}
	in.mu.Lock()
	in.target = target
	in.mu.Unlock()
	c, err := log.NewConsumer(in.l, in.opts.Group, in.opts.Topic, log.ConsumerOptions{Offsets: start, MaxPollRecords: 10_000})
	if err != nil {
		return fmt.Errorf("historian: %w", err)
	}
	defer c.Close()
	if len(ckpt.offsets) == 0 && target > 0 {
		in.log.Info("historian: empty, rebuilding from the log", "topic", in.opts.Topic, "records", target)
	} else if target > 0 {
		in.log.Info("historian: catching up from its checkpoint", "topic", in.opts.Topic, "records", target)
	}
	in.checkCaughtUp(c.Positions(), ends)

	if in.db.opts.Tier.enabled() {
		tctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			in.tierLoop(tctx)
		}()
		defer wg.Wait()
		defer stop()
	}
	lastFlush := time.Now()
	var lastRetention time.Time
	lastCompact := time.Now()
	lastProgress, lastRecords := time.Now(), int64(0)
	pending := 0
	flushed := maps.Clone(start)
	// flush runs every FlushInterval (or FlushPoints); with nothing new it
	// only restarts the interval and applies retention, which is due by age
	// whether or not points arrive. (It once returned without restarting the
	// interval, and an idle ingester then polled every millisecond.)
	flush := func(fctx context.Context) error {
		pos := c.Positions()
		lastFlush = time.Now()
		idle := pending == 0 && maps.Equal(pos, flushed)
		if !idle {
			if err := in.db.Flush(encodeCheckpoint(in.opts.Topic, pos)); err != nil {
				return fmt.Errorf("historian: flush: %w", err)
			}
			pending, flushed = 0, pos
		}
		if !idle && time.Since(lastCompact) >= in.opts.CompactInterval {
			lastCompact = time.Now()
			// Skipped while a tiering export runs; the next round does it.
			if err := in.db.compactBefore(lastCompact.Add(-in.db.opts.OutOfOrderWindow).UnixMilli(), true); err != nil {
				return fmt.Errorf("historian: compact: %w", err)
			}
		}
		if time.Since(lastRetention) >= time.Minute {
			lastRetention = time.Now()
			if n, err := in.db.applyRetention(lastRetention, true); err != nil {
				in.log.Warn("historian: retention", "error", err)
			} else if n > 0 {
				in.log.Info("historian: retention deleted old partitions", "files", n)
			}
		}
		if idle {
			return nil
		}
		// For lag reporting only; a failed commit costs nothing on restart.
		if err := c.Commit(fctx); err != nil && fctx.Err() == nil {
			in.log.Warn("historian: commit consumer offsets", "error", err)
		}
		return nil
	}
	for {
		wait := time.Until(lastFlush.Add(in.opts.FlushInterval))
		if !in.caughtUp.Load() {
			wait = min(wait, time.Until(lastProgress.Add(in.opts.ProgressInterval)))
		}
		pctx, cancel := context.WithTimeout(ctx, max(wait, time.Millisecond))
		recs, err := c.Poll(pctx)
		cancel()
		in.polls.Add(1)
		// Records count in the consumer's positions once Poll returned
		// them, also when ctx ended meanwhile (Poll may still return
		// some): store them before any flush stamps its checkpoint with
		// those positions, or a restart resumes after samples never stored.
		for i := range recs {
			pending += in.appendRecord(&recs[i])
		}
		in.records.Add(int64(len(recs)))
		if ctx.Err() != nil {
			fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return flush(fctx)
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("historian: %w", err)
		}
		if !in.caughtUp.Load() {
			if in.checkCaughtUp(c.Positions(), ends) {
				n := in.records.Load()
				el := time.Since(in.started)
				in.log.Info("historian: caught up", "records", n, "points", in.points.Load(),
					"seconds", el.Seconds(), "records_per_s", float64(n)/max(el.Seconds(), 1e-9))
			} else if time.Since(lastProgress) >= in.opts.ProgressInterval {
				n := in.records.Load()
				rate := float64(n-lastRecords) / time.Since(lastProgress).Seconds()
				in.log.Info("historian: rebuilding from the log", "records", n, "of", target,
					"percent", fmt.Sprintf("%.1f", 100*float64(n)/float64(max(target, 1))), "records_per_s", int64(rate))
				lastProgress, lastRecords = time.Now(), n
			}
		}
		if pending >= in.opts.FlushPoints || time.Since(lastFlush) >= in.opts.FlushInterval {
			if err := flush(ctx); err != nil {
				return err
			}
		}
	}
}

// tierLoop exports old partitions to the Parquet tier every
// TierOptions.Interval, beside the ingest (an upload does not hold up
// appends or flushes).
func (in *Ingester) tierLoop(ctx context.Context) {
	every := in.db.opts.Tier.Interval
	if every <= 0 {
		every = time.Minute
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		n, err := in.db.ApplyTiering(ctx, time.Now())
		switch {
		case err != nil && ctx.Err() == nil:
			in.log.Warn("historian: tiering to Parquet", "error", err)
		case n > 0:
			in.log.Info("historian: partitions moved to the Parquet tier", "partitions", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// waitTopic returns the topic's description once it exists. A topic that
// does not exist has nothing to replay, so the Ingester is caught up while
// it waits.
func (in *Ingester) waitTopic(ctx context.Context) (log.TopicInfo, error) {
	for {
		info, err := in.l.Topic(ctx, in.opts.Topic)
		if err == nil {
			return info, nil
		}
		if !errors.Is(err, log.ErrUnknownTopic) {
			return info, fmt.Errorf("historian: %w", err)
		}
		in.caughtUp.Store(true)
		select {
		case <-ctx.Done():
			return info, nil
		case <-time.After(in.opts.TopicWait):
		}
	}
}

// checkCaughtUp marks the Ingester caught up once every partition has been
// read to the end it had when Run started.
func (in *Ingester) checkCaughtUp(pos, ends map[int32]int64) bool {
	for p, end := range ends {
		if pos[p] < end {
			return false
		}
	}
	return !in.caughtUp.Swap(true)
}

// appendRecord stores the point of r and returns 1, or counts it skipped
// and returns 0. The normaliser writes only valid points, so a skip means a
// foreign producer; it is logged, never fatal, as a bad record must not
// stop the history of every other tag.
func (in *Ingester) appendRecord(r *log.Record) int {
	p, err := uns.ParsePointRecord(r)
	if err == nil {
		err = in.db.AppendPoint(&p)
	}
	if err != nil {
		if n := in.skipped.Add(1); n <= 10 || n%10000 == 0 {
			in.log.Warn("historian: skipped a record that is not a storable point",
				"topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "skipped", n, "error", err)
		}
		return 0
	}
	in.points.Add(1)
	return 1
}

// The checkpoint is the topic name and, per partition, the offset of the
// next record to read:
//
//	"HCK1", uvarint len(topic), topic, uvarint n, n × (varint partition, varint offset)
const checkpointMagic = "HCK1"

type checkpoint struct {
	topic   string
	offsets map[int32]int64
}

func encodeCheckpoint(topic string, pos map[int32]int64) []byte {
	b := []byte(checkpointMagic)
	b = binary.AppendUvarint(b, uint64(len(topic)))
	b = append(b, topic...)
	b = binary.AppendUvarint(b, uint64(len(pos)))
	for _, p := range slices.Sorted(maps.Keys(pos)) {
		b = binary.AppendVarint(b, int64(p))
		b = binary.AppendVarint(b, pos[p])
	}
	return b
}

func decodeCheckpoint(b []byte) (checkpoint, error) {
	c := checkpoint{offsets: map[int32]int64{}}
	if len(b) == 0 {
		return c, nil
	}
	bad := func() (checkpoint, error) {
		return checkpoint{}, fmt.Errorf("%w: the checkpoint is not an ingest checkpoint (delete the historian directory to rebuild it)", ErrCorrupt)
	}
	if len(b) < len(checkpointMagic) || string(b[:len(checkpointMagic)]) != checkpointMagic {
		return bad()
	}
	b = b[len(checkpointMagic):]
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return bad()
	}
	c.topic, b = string(b[k:k+int(n)]), b[k+int(n):]
	cnt, k := binary.Uvarint(b)
	if k <= 0 || cnt > uint64(len(b)) {
		return bad()
	}
	b = b[k:]
	for range cnt {
		p, k1 := binary.Varint(b)
		if k1 <= 0 {
			return bad()
		}
		off, k2 := binary.Varint(b[k1:])
		if k2 <= 0 {
			return bad()
		}
		b = b[k1+k2:]
		c.offsets[int32(p)] = off
	}
	if len(b) != 0 {
		return bad()
	}
	return c, nil
}
