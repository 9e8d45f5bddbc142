package uns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millstream/millstream/log"
	"github.com/millstream/millstream/sparkplug"
)

// Header names on uns.points and uns.deadletter records.
const (
	// HeaderSource is "<partition>:<offset>:<index>": the source record a
	// point came from and its index among that record's points. A restart
	// uses it to skip points already written (see Normalizer).
	HeaderSource = "uns.src"
	// HeaderContentType is "application/json" or ContentTypeProto on
	// uns.points records (NormalizerOptions.Format).
	HeaderContentType = "content-type"
	// HeaderReason, on dead letters, says why the record was not understood.
	HeaderReason = "deadletter.reason"
	// HeaderOrigin, on dead letters, is "<topic>/<partition>/<offset>" of
	// the original record.
	HeaderOrigin = "deadletter.origin"
)

// contentTypeJSON is shared by every record: the log never modifies values.
var contentTypeJSON = []byte("application/json")

// NormalizerGroup is the consumer group name of the normaliser.
const NormalizerGroup = "uns-normaliser"

// sparkplugPrefix starts every Sparkplug B topic; those records are the
// Sparkplug host application's, not plain payloads.
const sparkplugPrefix = "spBv1.0/"

// NormalizerOptions configures a Normalizer. Zero values take the defaults.
type NormalizerOptions struct {
	// Source is the topic read: mqtt.ingress unless set.
	Source string
	Logger *slog.Logger
	// Partitions of uns.points and uns.deadletter when they are created;
	// 0 means the log's default.
	Partitions int32
	// Tree, when set, is kept up to date with every point written. At start
	// it is filled from the points of the last TreeWindow (default 24 h) in
	// uns.points, so that tags that rarely change show their last value.
	Tree       *Tree
	TreeWindow time.Duration
	// Live, when set, receives every point once it is durable.
	Live *Live
	// Publish, when set, sends MQTT messages on the host application's
	// behalf: Sparkplug rebirth requests (NCMD "Node Control/Rebirth").
	Publish func(topic string, payload []byte, retain bool, qos byte) error
	// ReorderWindow is the Sparkplug host's tolerance for messages arriving
	// out of sequence (sparkplug.HostOptions.ReorderWindow).
	ReorderWindow int
	// Format of uns.points record values: FormatJSON (default) or
	// FormatProtobuf (docs/uns_points.proto).
	Format string
	// Mapper, when set, maps brownfield topics into the namespace before
	// the plain payload rules apply (see MappingRule).
	Mapper *Mapper
	// CheckpointInterval bounds how often the Sparkplug host state is
	// written (with the offsets it belongs to); default 1 s.
	CheckpointInterval time.Duration
	// CommitInterval bounds how long read batches stay uncommitted;
	// default 100 ms, negative commits after every batch.
	CommitInterval time.Duration
	// BatchWait is the least time between two reads of the source while
	// records keep coming: under load each batch of points then costs one
	// fsync of uns.points for BatchWait's worth of messages instead of one
	// per group commit of the ingress topic. A record arriving after a
	// quiet spell is read at once, and a full read (a backlog) is followed
	// by the next without a pause. Zero means 5 ms; negative never waits.
	BatchWait time.Duration
	// GroupConsumer, when set, makes the normaliser a member of the
	// consumer group NormalizerGroup instead of the one consumer of every
	// ingress partition: several Millstream nodes then split the
	// partitions and take over each other's (see runGroup). Node sets it
	// on the Kafka backend to (*kafka.Log).GroupConsumer.
	GroupConsumer GroupConsumerFactory
}

// Normalizer is the log consumer that turns plain MQTT messages of the
// ingress topic into points on uns.points; what it cannot read goes to
// uns.deadletter with the reason, and never stops the stream.
//
// Each batch is written and waited for until durable; what was read is
// committed at most every CommitInterval, only ever after its points are
// durable. A crash before the commit would write those batches again on
// restart; to prevent that, every point carries its source position
// (HeaderSource), and with the source offsets the normaliser commits, under
// its group and in the same durable write, the end offsets uns.points had at
// that moment (a bookmark). On start it reads uns.points from the bookmark to
// the end and skips re-normalised points it finds there.
type Normalizer struct {
	l    log.Log
	opts NormalizerOptions
	log  *slog.Logger
	m    normalizerMetrics

	hostMu sync.Mutex // the host is used by Run and read by SparkplugNodes
	host   *sparkplug.Host
	spRes  sparkplug.HostResult // reused by every Sparkplug message (Run only)

	// beforeCommit, when set (tests), runs after a batch is durable and
	// before it is committed; an error stops Run as a crash would.
	beforeCommit func() error
}

type normalizerMetrics struct {
	records, points, deadletters, sparkplug, skipped atomic.Uint64
	rebirths, spbDropped, batches                    atomic.Uint64
	waits                                            atomic.Uint64 // BatchWait pauses, for tests
}

// NewNormalizer builds a normaliser over l; Run starts it.
func NewNormalizer(l log.Log, opts NormalizerOptions) *Normalizer {
	if opts.Source == "" {
		opts.Source = "mqtt.ingress"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.TreeWindow <= 0 {
		opts.TreeWindow = 24 * time.Hour
	}
	if opts.CheckpointInterval <= 0 {
		opts.CheckpointInterval = time.Second
	}
	if opts.CommitInterval == 0 {
		opts.CommitInterval = 100 * time.Millisecond
	}
	if opts.BatchWait == 0 {
		opts.BatchWait = 5 * time.Millisecond
	}
	return &Normalizer{l: l, opts: opts, log: opts.Logger, host: sparkplug.NewHost(sparkplug.HostOptions{ReorderWindow: opts.ReorderWindow})}
}

// Run consumes until ctx is done (then it returns nil) or the log fails.
func (n *Normalizer) Run(ctx context.Context) error {
	for _, t := range []string{PointsTopic, DeadLetterTopic} {
		err := n.l.CreateTopic(ctx, t, log.TopicConfig{Partitions: n.opts.Partitions})
		if err != nil && !errors.Is(err, log.ErrTopicExists) {
			return fmt.Errorf("uns normaliser: create %s: %w", t, err)
		}
	}
	if err := n.l.CreateTopic(ctx, n.opts.Source, log.TopicConfig{}); err != nil && !errors.Is(err, log.ErrTopicExists) {
		return fmt.Errorf("uns normaliser: create %s: %w", n.opts.Source, err)
	}
	// The Sparkplug host state: one partition for one consumer of every
	// ingress partition, one per ingress partition for a group member
	// (see runGroup).
	stateParts := int32(1)
	if n.opts.GroupConsumer != nil {
		info, err := n.l.Topic(ctx, n.opts.Source)
		if err != nil {
			return fmt.Errorf("uns normaliser: %w", err)
		}
		stateParts = int32(len(info.Partitions))
	}
	err := n.l.CreateTopic(ctx, HostStateTopic, log.TopicConfig{Partitions: stateParts, RetentionAge: -1, RetentionBytes: -1})
	if err != nil && !errors.Is(err, log.ErrTopicExists) {
		return fmt.Errorf("uns normaliser: create %s: %w", HostStateTopic, err)
	}
	if n.opts.Tree != nil {
		if err := n.fillTree(ctx); err != nil {
			return err
		}
	}
	if n.opts.GroupConsumer != nil {
		return n.runGroup(ctx, stateParts)
	}
	done, err := n.alreadyWritten(ctx)
	if err != nil {
		return err
	}
	if len(done) > 0 {
		n.log.Info("uns normaliser: resuming after an interrupted batch; skipping points already written", "points", len(done))
	}
	if err := n.loadHost(ctx); err != nil {
		return err
	}
	c, err := log.NewConsumer(n.l, NormalizerGroup, n.opts.Source, log.ConsumerOptions{MaxPollRecords: maxPollRecords})
	if err != nil {
		return fmt.Errorf("uns normaliser: %w", err)
	}
	defer c.Close()

	// The highest source offset per partition among the points to skip:
	// once the consumer is past all of them, none can come again.
	pending := map[int32]int64{}
	for src := range done {
		if p, o, ok := parseSource([]byte(src)); ok && o >= pending[p] {
			pending[p] = o
		}
	}
	w := n.newWriter()
	w.done = done
	st := &settler{n: n, c: c, w: w, done: done, pending: pending, lastCommit: time.Now(), lastCheckpoint: time.Now()}
	var lastPoll time.Time
	behind := false
	for {
		// With read batches not yet committed, Poll waits only until
		// they are due, so an idle stream is committed too.
		pctx, cancel := ctx, context.CancelFunc(nil)
		if st.uncommitted {
			pctx, cancel = context.WithDeadline(ctx, st.due())
		}
		if wait := time.Until(lastPoll.Add(n.opts.BatchWait)); wait > 0 && !behind {
			// Busy: let more records gather (see BatchWait). Not when
			// the last read was full: then the normaliser is catching up.
			n.m.waits.Add(1)
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-pctx.Done():
				t.Stop()
			}
		}
		recs, err := c.Poll(pctx)
		lastPoll = time.Now()
		behind = len(recs) >= maxPollRecords || (err == nil && n.opts.BatchWait > 0 && n.backlog(ctx, c))
		if err == nil {
			n.m.batches.Add(1)
		}
		if cancel != nil {
			cancel()
		}
		if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			if err := st.settle(ctx, true); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				// Stopping: settle what was read, so that a clean restart
				// re-reads nothing.
				fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := st.settle(fctx, true); err != nil {
					return fmt.Errorf("uns normaliser: final commit: %w", err)
				}
				return nil
			}
			return fmt.Errorf("uns normaliser: %w", err)
		}
		if err := n.normalize(ctx, w, recs); err != nil {
			return err
		}
		st.uncommitted = true
		if err := st.settle(ctx, false); err != nil {
			return err
		}
	}
}

// maxPollRecords bounds one read of the source by Run.
const maxPollRecords = 1000

// backlog reports whether a full read (maxPollRecords) of the source is
// already waiting past what Poll returned. A short read does not mean the
// normaliser has caught up: Poll returns what the partition readers have
// handed over so far, and a reader may still be fetching the next part of a
// backlog. Fewer waiting records than a full read are the normal state of a
// busy stream, which BatchWait is there to gather.
func (n *Normalizer) backlog(ctx context.Context, c *log.Consumer) bool {
	info, err := n.l.Topic(ctx, n.opts.Source)
	if err != nil {
		return false
	}
	pos := c.Positions()
	var waiting int64
	for _, p := range info.Partitions {
		waiting += max(p.End-pos[p.Partition], 0)
	}
	return waiting >= maxPollRecords
}

// settler commits what Run has read and written: the source offsets and,
// in the same durable write, the bookmark of uns.points; with them the
// Sparkplug host state when it changed. Commits are spaced by
// CommitInterval (each one costs an fdatasync on the embedded log, and a
// loop committing after every small batch spent a tenth of the server's
// CPU on them); the state, which can be large, by CheckpointInterval.
// Batches in between stay uncommitted: a crash re-reads them, and their
// points are not written twice (see Normalizer).
type settler struct {
	n                          *Normalizer
	c                          *log.Consumer
	w                          *writer
	done                       map[string]bool
	pending                    map[int32]int64
	uncommitted                bool
	lastCommit, lastCheckpoint time.Time
}

// due is when the read batches must be committed at the latest.
func (st *settler) due() time.Time {
	t := st.lastCommit.Add(st.n.opts.CommitInterval)
	if st.w.hostDirty {
		t = later(t, st.lastCheckpoint.Add(st.n.opts.CheckpointInterval))
	}
	return t
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// settle commits when a commit is due, or always with force (idle or
// stopping).
func (st *settler) settle(ctx context.Context, force bool) error {
	n, w := st.n, st.w
	if !st.uncommitted || (!force && time.Now().Before(st.due())) {
		return nil
	}
	if n.beforeCommit != nil {
		if err := n.beforeCommit(); err != nil {
			return err
		}
	}
	if w.hostDirty {
		if err := n.checkpointHost(ctx, st.c); err != nil {
			return err
		}
		w.hostDirty, st.lastCheckpoint = false, time.Now()
	}
	// While points of the interrupted batch are still ahead, the
	// bookmark stays before them, so that another stop finds them.
	if len(st.done) > 0 && passed(w.seen, st.pending) {
		clear(st.done) // not produced again (e.g. deleted by retention)
	}
	var bookmark []log.TopicPartitionOffset
	if len(st.done) == 0 {
		var err error
		if bookmark, err = bookmarkOffsets(ctx, n.l, PointsTopic); err != nil {
			return fmt.Errorf("uns normaliser: bookmark: %w", err)
		}
	}
	if err := st.c.CommitWith(ctx, bookmark...); err != nil {
		return fmt.Errorf("uns normaliser: %w", err)
	}
	st.uncommitted, st.lastCommit = false, time.Now()
	return nil
}

// writer is the state of Run's batches: the buffers reused batch after
// batch and the source positions to skip.
type writer struct {
	pts, written []Point
	// Reused by every batch once it is durable; see normalize.
	arena []byte
	hdrs  []log.Header
	// recs holds the batch's records in chunks that never grow: the log
	// fills in the partition and offset of a record while later ones are
	// added, so a record must not be copied by a growing slice.
	recs    [][]log.Record
	recsLen int
	b       *log.Batch
	proto   bool
	ct      []byte

	// done holds the HeaderSource values of points written before the
	// last stop but not committed: they are not written again.
	done map[string]bool
	// seen is, per partition, the offset of the last record read.
	seen map[int32]int64
	// skipBelow (group path): records below it are reflected in the
	// Sparkplug checkpoint loaded for their partition and their points
	// are durable, so they are skipped whole.
	skipBelow map[int32]int64
	// hostDirty: Sparkplug records were handled since the last
	// checkpoint; dirty (group path) says of which partitions.
	hostDirty bool
	dirty     map[int32]bool
}

func (n *Normalizer) newWriter() *writer {
	w := &writer{b: log.NewBatch(), ct: contentTypeJSON, seen: map[int32]int64{}}
	if n.opts.Format == FormatProtobuf {
		w.proto, w.ct = true, contentTypeProto
	}
	return w
}

// record returns the next free record of the batch.
func (w *writer) record() *log.Record {
	const chunk = 256
	i, j := w.recsLen/chunk, w.recsLen%chunk
	if i == len(w.recs) {
		w.recs = append(w.recs, make([]log.Record, chunk))
	}
	w.recsLen++
	return &w.recs[i][j]
}

// normalize writes the points and dead letters of recs and waits until
// they are durable.
func (n *Normalizer) normalize(ctx context.Context, w *writer, recs []log.Record) error {
	var err error
	b, proto, ct, done := w.b, w.proto, w.ct, w.done
	pts, written := w.pts, w.written[:0]
	arena, hdrs := w.arena[:0], w.hdrs[:0]
	w.recsLen = 0
	for i := range recs {
		r := &recs[i]
		n.m.records.Add(1)
		w.seen[r.Partition] = r.Offset
		if w.skipBelow != nil {
			if below, ok := w.skipBelow[r.Partition]; ok && r.Offset < below {
				continue
			}
		}
		topic := string(r.Key)
		if strings.HasPrefix(topic, sparkplugPrefix) {
			n.m.sparkplug.Add(1)
			pts, err = n.sparkplug(pts[:0], r)
			w.hostDirty = true
			if w.dirty != nil {
				w.dirty[r.Partition] = true
			}
		} else {
			var mapped bool
			pts, mapped, err = n.opts.Mapper.Normalize(pts[:0], topic, r.Value, r.Timestamp)
			if !mapped {
				pts, err = NormalizePlain(pts[:0], topic, r.Value, r.Timestamp)
			}
		}
		if err != nil {
			n.deadLetter(ctx, b, r, err)
			continue
		}
		for j := range pts {
			p := &pts[j]
			if n.opts.Tree != nil || n.opts.Live != nil {
				written = append(written, *p)
			}
			// The record's value, key and source header are written
			// into the batch's arena, and the record and its headers
			// into slabs: the log needs them only until the append is
			// durable, so all three are reused by the next batch.
			start := len(arena)
			if proto {
				arena = AppendPointProto(arena, p)
			} else {
				arena = AppendPointJSON(arena, p)
			}
			vend := len(arena)
			key := p.Asset()
			if key == "" {
				key = p.Path
			}
			arena = append(arena, key...)
			kend := len(arena)
			arena = strconv.AppendInt(arena, int64(r.Partition), 10)
			arena = append(arena, ':')
			arena = strconv.AppendInt(arena, r.Offset, 10)
			arena = append(arena, ':')
			arena = strconv.AppendInt(arena, int64(j), 10)
			if len(done) > 0 && done[string(arena[kend:])] {
				delete(done, string(arena[kend:]))
				arena = arena[:start]
				n.m.skipped.Add(1)
				continue
			}
			mem := arena[start:len(arena):len(arena)]
			hdrs = append(hdrs, log.Header{Key: HeaderSource, Value: mem[kend-start:]}, log.Header{Key: HeaderContentType, Value: ct})
			rec := w.record()
			*rec = log.Record{
				Topic:     PointsTopic,
				Timestamp: p.Time,
				Key:       mem[vend-start : kend-start : kend-start],
				Value:     mem[: vend-start : vend-start],
				Headers:   hdrs[len(hdrs)-2 : len(hdrs) : len(hdrs)],
			}
			b.Produce(ctx, n.l, rec)
			n.m.points.Add(1)
		}
	}
	w.pts, w.written, w.arena, w.hdrs = pts, written, arena, hdrs
	if err := b.Wait(); err != nil {
		return fmt.Errorf("uns normaliser: write: %w", err)
	}
	if n.opts.Tree != nil {
		for _, p := range written {
			n.opts.Tree.Update(p)
		}
	}
	if n.opts.Live != nil && len(written) > 0 {
		n.opts.Live.Publish(written)
	}
	return nil
}

// fillTree loads the recent points of uns.points into the tree, reporting
// progress when it takes a while.
func (n *Normalizer) fillTree(ctx context.Context) error {
	info, err := n.l.Topic(ctx, PointsTopic)
	if err != nil {
		return fmt.Errorf("uns normaliser: %w", err)
	}
	began := time.Now()
	last := began
	loaded := 0
	for _, p := range info.Partitions {
		off, err := n.l.OffsetForTime(ctx, PointsTopic, p.Partition, began.Add(-n.opts.TreeWindow))
		if err != nil {
			return fmt.Errorf("uns normaliser: namespace tree: %w", err)
		}
		for off < p.End {
			recs, err := n.l.Fetch(ctx, PointsTopic, p.Partition, max(off, p.Start), log.FetchOptions{})
			if err != nil {
				return fmt.Errorf("uns normaliser: namespace tree: read %s/%d: %w", PointsTopic, p.Partition, err)
			}
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				if pt, err := ParsePointRecord(&r); err == nil {
					n.opts.Tree.Update(pt)
					loaded++
				}
				off = r.Offset + 1
			}
			if time.Since(last) > 2*time.Second {
				last = time.Now()
				n.log.Info("loading the namespace tree from uns.points", "partition", p.Partition, "offset", off, "end", p.End, "points", loaded)
			}
		}
	}
	if loaded > 0 {
		n.log.Info("namespace tree loaded", "points", loaded, "tags", n.opts.Tree.Len(), "window", n.opts.TreeWindow, "took", time.Since(began).Round(time.Millisecond))
	}
	return nil
}

// passed reports whether the consumer has read past every pending offset.
func passed(seen, pending map[int32]int64) bool {
	for p, o := range pending {
		if s, ok := seen[p]; !ok || s < o {
			return false
		}
	}
	return true
}

func (n *Normalizer) deadLetter(ctx context.Context, b *log.Batch, r *log.Record, reason error) {
	n.m.deadletters.Add(1)
	hs := append([]log.Header{
		{Key: HeaderReason, Value: []byte(reason.Error())},
		{Key: HeaderOrigin, Value: []byte(r.Topic + "/" + strconv.Itoa(int(r.Partition)) + "/" + strconv.FormatInt(r.Offset, 10))},
	}, r.Headers...)
	b.Produce(ctx, n.l, &log.Record{Topic: DeadLetterTopic, Timestamp: r.Timestamp, Key: r.Key, Value: r.Value, Headers: hs})
}

// alreadyWritten reads uns.points after the bookmark: the points of a batch
// that was written but not committed before the last stop.
func (n *Normalizer) alreadyWritten(ctx context.Context) (map[string]bool, error) {
	done, err := sourcesAfterBookmark(ctx, n.l, NormalizerGroup, PointsTopic, HeaderSource)
	if err != nil {
		return nil, fmt.Errorf("uns normaliser: %w", err)
	}
	return done, nil
}

// Describe and Collect make the normaliser a prometheus.Collector.
func (n *Normalizer) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range normalizerDescs {
		ch <- d
	}
}

var normalizerDescs = [...]*prometheus.Desc{
	prometheus.NewDesc("millstream_uns_source_records_total", "Records of the ingress topic read by the normaliser.", nil, nil),
	prometheus.NewDesc("millstream_uns_points_total", "Points written to uns.points.", nil, nil),
	prometheus.NewDesc("millstream_uns_deadletters_total", "Source records written to uns.deadletter because they could not be normalised.", nil, nil),
	prometheus.NewDesc("millstream_uns_sparkplug_records_total", "Sparkplug B records left to the Sparkplug host application.", nil, nil),
	prometheus.NewDesc("millstream_uns_skipped_points_total", "Points not written again after a restart because the interrupted batch had written them.", nil, nil),
	prometheus.NewDesc("millstream_sparkplug_rebirths_requested_total", "Rebirth requests the Sparkplug host application decided on (sequence gaps, data before birth, unknown aliases).", nil, nil),
	prometheus.NewDesc("millstream_sparkplug_metrics_dropped_total", "Sparkplug metric updates not turned into points (unresolvable, or a type without a point form yet).", nil, nil),
	prometheus.NewDesc("millstream_uns_batches_total", "Batches of ingress records the normaliser read (source records / batches is the batch size; see uns.batch_wait).", nil, nil),
}

// Collect implements prometheus.Collector.
func (n *Normalizer) Collect(ch chan<- prometheus.Metric) {
	for i, v := range []uint64{n.m.records.Load(), n.m.points.Load(), n.m.deadletters.Load(), n.m.sparkplug.Load(), n.m.skipped.Load(), n.m.rebirths.Load(), n.m.spbDropped.Load(), n.m.batches.Load()} {
		ch <- prometheus.MustNewConstMetric(normalizerDescs[i], prometheus.CounterValue, float64(v))
	}
}
