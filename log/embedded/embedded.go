package embedded

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mlog "github.com/millstream/millstream/log"
)

const minTs = math.MinInt64

// Fsync policies.
const (
	FsyncGroup  = "group"
	FsyncAlways = "always"
)

// Options configures an embedded log. Zero values take the defaults noted.
type Options struct {
	// Fsync is FsyncGroup (default) or FsyncAlways.
	Fsync string
	// FsyncInterval bounds how long a group-commit writer keeps writing
	// newly arriving records before it fsyncs. The writer fsyncs as soon as
	// no more records are waiting, so a lone appender pays one fsync. Zero
	// means 1 ms.
	FsyncInterval time.Duration
	// FsyncMinInterval is the least time between the starts of two fsyncs
	// of a partition with FsyncGroup: records arriving meanwhile are
	// written and wait for the next fsync, so a partition fsyncs at most
	// 1/FsyncMinInterval times a second, at the cost of up to that much
	// more latency per append. For storage that fsyncs slowly or wears with
	// each flush (SD cards, eMMC). FsyncBytes unsynced still fsyncs at once.
	// Zero (the default) fsyncs as soon as nothing more is queued.
	FsyncMinInterval time.Duration
	// FsyncBytes makes the writer fsync once this many bytes are unsynced.
	// Zero means 4 MiB.
	FsyncBytes int64
	// SegmentBytes rolls the active segment at this size. Zero means 128 MiB;
	// at most 1 GiB (index positions are 32-bit).
	SegmentBytes int64
	// SegmentAge rolls a non-empty active segment this long after it was
	// created, so retention by age can free it. Zero means 24 h.
	SegmentAge time.Duration
	// Defaults fills in zero fields of a TopicConfig at CreateTopic. Zero
	// Partitions means 1, zero RetentionAge 7 days, zero RetentionBytes no
	// size limit.
	Defaults mlog.TopicConfig
	// RetentionCheckInterval is how often retention runs. Zero means 1 min.
	RetentionCheckInterval time.Duration
	// MaxBufferedBytes bounds the bytes of records produced but not yet
	// durable, across the log; Produce blocks beyond it. Zero means 64 MiB.
	MaxBufferedBytes int64
	// MaxRecordBytes rejects larger records with ErrRecordTooLarge. Zero
	// means 8 MiB; at most 32 MiB.
	MaxRecordBytes int
	// NoDirectIO writes every batch through the page cache. By default
	// appends are written with O_DIRECT when 1 MiB or more is queued, where the
	// filesystem supports it (see direct.go).
	NoDirectIO bool
	// Logger receives recovery and retention messages. Nil means slog.Default().
	Logger *slog.Logger
}

func (o *Options) setDefaults() error {
	switch o.Fsync {
	case "":
		o.Fsync = FsyncGroup
	case FsyncGroup, FsyncAlways:
	default:
		return fmt.Errorf("embedded log: fsync policy %q unknown (use %q or %q)", o.Fsync, FsyncGroup, FsyncAlways)
	}
	if o.FsyncInterval <= 0 {
		o.FsyncInterval = time.Millisecond
	}
	if o.FsyncMinInterval < 0 {
		return fmt.Errorf("embedded log: FsyncMinInterval %v is negative", o.FsyncMinInterval)
	}
	if o.FsyncBytes <= 0 {
		o.FsyncBytes = 4 << 20
	}
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = 128 << 20
	}
	if o.SegmentBytes > 1<<30 {
		return fmt.Errorf("embedded log: segment size %d too large (at most 1 GiB)", o.SegmentBytes)
	}
	if o.SegmentAge <= 0 {
		o.SegmentAge = 24 * time.Hour
	}
	if o.Defaults.Partitions <= 0 {
		o.Defaults.Partitions = 1
	}
	if o.Defaults.RetentionAge == 0 {
		o.Defaults.RetentionAge = 7 * 24 * time.Hour
	}
	if o.Defaults.RetentionBytes == 0 {
		o.Defaults.RetentionBytes = -1
	}
	if o.RetentionCheckInterval <= 0 {
		o.RetentionCheckInterval = time.Minute
	}
	if o.MaxBufferedBytes <= 0 {
		o.MaxBufferedBytes = 64 << 20
	}
	if o.MaxRecordBytes <= 0 {
		o.MaxRecordBytes = 8 << 20
	}
	if o.MaxRecordBytes > maxRecordBytesLimit {
		return fmt.Errorf("embedded log: max record size %d too large (at most %d)", o.MaxRecordBytes, maxRecordBytesLimit)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// RecoveryReport describes one truncation made by crash recovery at Open.
type RecoveryReport struct {
	Topic     string
	Partition int32
	// Segment is the segment file's path.
	Segment string
	// At is the file position where valid data ended.
	At             int64
	BytesTruncated int64
	// RecordsTruncated counts the records in the truncated tail as their
	// batch headers say; an estimate when a header itself is damaged. None
	// of them had been acknowledged: acknowledged records are fsynced.
	RecordsTruncated int64
	Reason           string
}

// Log is the embedded log. It implements log.Log.
type Log struct {
	dir    string
	opts   Options
	logger *slog.Logger
	lock   *os.File

	mu      sync.RWMutex
	topics  map[string]*topic
	closed  bool
	closeCh chan struct{}
	wg      sync.WaitGroup

	budgetMu   sync.Mutex
	buffered   int64
	budgetWake chan struct{}

	offs *offsetStore

	recovered []RecoveryReport
	m         *metrics
	// noDirect is set once direct I/O proved unavailable (see direct.go).
	noDirect atomic.Bool
}

var _ mlog.Log = (*Log)(nil)

// Open opens (creating if needed) the log in dir, recovering from a crash if
// the last run did not close it. Only one process may have a dir open.
func Open(dir string, opts Options) (*Log, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "topics"), 0o755); err != nil {
		return nil, fmt.Errorf("embedded log: create %s: %w", dir, err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	l := &Log{
		dir: dir, opts: opts, logger: opts.Logger, lock: lock,
		topics: map[string]*topic{}, closeCh: make(chan struct{}), budgetWake: make(chan struct{}),
		m: newMetrics(),
	}
	if err := l.load(); err != nil {
		l.closeFiles()
		lock.Close()
		return nil, err
	}
	for _, t := range l.topics {
		for _, p := range t.parts {
			l.startPartition(p)
		}
	}
	l.wg.Add(1)
	go l.retentionLoop()
	return l, nil
}

func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, "LOCK")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("embedded log: open lock file %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path)
		f.Close()
		owner := strings.TrimSpace(string(b))
		if owner == "" {
			owner = "unknown"
		}
		return nil, fmt.Errorf("embedded log: directory %s is in use by another process (pid %s); stop it or read through the running server (--server)", dir, owner)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// Recovered returns what crash recovery truncated at Open.
func (l *Log) Recovered() []RecoveryReport {
	return append([]RecoveryReport(nil), l.recovered...)
}

// Dir returns the log's directory.
func (l *Log) Dir() string { return l.dir }

type topicMeta struct {
	Name           string `json:"name"`
	Partitions     int32  `json:"partitions"`
	RetentionAgeMs int64  `json:"retention_age_ms"`
	RetentionBytes int64  `json:"retention_bytes"`
}

type topic struct {
	name  string
	cfg   mlog.TopicConfig
	parts []*partition
}

func (l *Log) topicDir(name string) string { return filepath.Join(l.dir, "topics", name) }

func (l *Log) load() error {
	ents, err := os.ReadDir(filepath.Join(l.dir, "topics"))
	if err != nil {
		return fmt.Errorf("embedded log: %w", err)
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		if strings.HasPrefix(e.Name(), ".staging-") {
			// A CreateTopic that crashed before its rename; it never existed.
			os.RemoveAll(filepath.Join(l.dir, "topics", e.Name()))
			continue
		}
		if err := l.loadTopic(e.Name()); err != nil {
			return err
		}
	}
	offs, err := openOffsets(l.dir, l.logger)
	if err != nil {
		return err
	}
	l.offs = offs
	return nil
}

func (l *Log) loadTopic(name string) error {
	dir := l.topicDir(name)
	b, err := os.ReadFile(filepath.Join(dir, "topic.json"))
	if err != nil {
		return fmt.Errorf("embedded log: topic %s: %w", name, err)
	}
	var m topicMeta
	if err := json.Unmarshal(b, &m); err != nil || m.Partitions <= 0 {
		return fmt.Errorf("embedded log: topic metadata %s is corrupt (%v)", filepath.Join(dir, "topic.json"), err)
	}
	age := time.Duration(m.RetentionAgeMs) * time.Millisecond
	if m.RetentionAgeMs < 0 {
		age = -1
	}
	t := &topic{name: name, cfg: mlog.TopicConfig{Partitions: m.Partitions, RetentionAge: age, RetentionBytes: m.RetentionBytes}}
	for i := int32(0); i < m.Partitions; i++ {
		p, reps, err := l.openPartition(t, i)
		if err != nil {
			return err
		}
		for _, r := range reps {
			l.recovered = append(l.recovered, r)
			l.m.truncatedBytes.Add(float64(r.BytesTruncated))
			l.m.truncations.Inc()
			l.m.truncatedRecords.Add(float64(r.RecordsTruncated))
			l.logger.Warn("log recovery truncated a corrupt or torn segment tail",
				"topic", r.Topic, "partition", r.Partition, "segment", r.Segment,
				"at", r.At, "bytes", r.BytesTruncated, "records", r.RecordsTruncated, "reason", r.Reason)
		}
		t.parts = append(t.parts, p)
	}
	l.topics[name] = t
	return nil
}

// CreateTopic implements log.Log.
func (l *Log) CreateTopic(ctx context.Context, name string, cfg mlog.TopicConfig) error {
	if err := mlog.ValidateTopicName(name); err != nil {
		return err
	}
	if cfg.Partitions < 0 || cfg.Partitions > 10000 {
		return fmt.Errorf("%w %d for topic %s: use 1-10000", mlog.ErrInvalidPartitions, cfg.Partitions, name)
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = l.opts.Defaults.Partitions
	}
	if cfg.RetentionAge == 0 {
		cfg.RetentionAge = l.opts.Defaults.RetentionAge
	}
	if cfg.RetentionBytes == 0 {
		cfg.RetentionBytes = l.opts.Defaults.RetentionBytes
	}
	// Any negative value means "no limit"; store one canonical value so the
	// config reads back the same after a reopen.
	if cfg.RetentionAge < 0 {
		cfg.RetentionAge = -1
	}
	if cfg.RetentionBytes < 0 {
		cfg.RetentionBytes = -1
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return mlog.ErrClosed
	}
	if _, ok := l.topics[name]; ok {
		return fmt.Errorf("%w: %s", mlog.ErrTopicExists, name)
	}
	// Build the topic in a staging directory and rename it into place so a
	// crash never leaves a half-created topic.
	staging := filepath.Join(l.dir, "topics", ".staging-"+name)
	os.RemoveAll(staging)
	if err := os.MkdirAll(staging, 0o755); err != nil {
		return fmt.Errorf("create topic %s: %w", name, err)
	}
	for i := int32(0); i < cfg.Partitions; i++ {
		pd := filepath.Join(staging, strconv.Itoa(int(i)))
		if err := os.Mkdir(pd, 0o755); err != nil {
			return fmt.Errorf("create topic %s: %w", name, err)
		}
	}
	ageMs := cfg.RetentionAge.Milliseconds()
	if cfg.RetentionAge < 0 {
		ageMs = -1
	}
	meta := topicMeta{Name: name, Partitions: cfg.Partitions, RetentionAgeMs: ageMs, RetentionBytes: cfg.RetentionBytes}
	b, _ := json.MarshalIndent(meta, "", "  ")
	if err := writeFileSync(filepath.Join(staging, "topic.json"), b); err != nil {
		os.RemoveAll(staging)
		return fmt.Errorf("create topic %s: %w", name, err)
	}
	if err := os.Rename(staging, l.topicDir(name)); err != nil {
		os.RemoveAll(staging)
		return fmt.Errorf("create topic %s: %w", name, err)
	}
	if err := syncDir(filepath.Join(l.dir, "topics")); err != nil {
		return err
	}
	t := &topic{name: name, cfg: cfg}
	for i := int32(0); i < cfg.Partitions; i++ {
		p, _, err := l.openPartition(t, i)
		if err != nil {
			return err
		}
		t.parts = append(t.parts, p)
	}
	for _, p := range t.parts {
		l.startPartition(p)
	}
	l.topics[name] = t
	return nil
}

// Topics implements log.Log.
func (l *Log) Topics(ctx context.Context) ([]mlog.TopicInfo, error) {
	ts, closed := l.sortedTopics()
	if closed {
		return nil, mlog.ErrClosed
	}
	out := make([]mlog.TopicInfo, len(ts))
	for i, t := range ts {
		out[i] = t.info()
	}
	return out, nil
}

// Failure reports the partitions that stopped accepting appends after a
// write or fsync error (a full disk, an I/O error), or nil. Such a
// partition stays stopped until the log is opened again; the node reports
// it as not ready.
func (l *Log) Failure() error {
	var errs []error
	for _, p := range l.partitions() {
		if e := p.failure.Load(); e != nil {
			errs = append(errs, fmt.Errorf("%s/%d accepts no appends: %w", p.topic, p.id, *e))
		}
	}
	return errors.Join(errs...)
}

// sortedTopics snapshots the topics, sorted by name, and whether the log
// is closed.
func (l *Log) sortedTopics() ([]*topic, bool) {
	l.mu.RLock()
	ts := make([]*topic, 0, len(l.topics))
	for _, t := range l.topics {
		ts = append(ts, t)
	}
	closed := l.closed
	l.mu.RUnlock()
	sort.Slice(ts, func(i, j int) bool { return ts[i].name < ts[j].name })
	return ts, closed
}

// partitions lists every partition, by topic name and partition number.
func (l *Log) partitions() []*partition {
	ts, _ := l.sortedTopics()
	var ps []*partition
	for _, t := range ts {
		ps = append(ps, t.parts...)
	}
	return ps
}

// Topic implements log.Log.
func (l *Log) Topic(ctx context.Context, name string) (mlog.TopicInfo, error) {
	t, err := l.topic(name)
	if err != nil {
		return mlog.TopicInfo{}, err
	}
	return t.info(), nil
}

func (t *topic) info() mlog.TopicInfo {
	ti := mlog.TopicInfo{Name: t.name, Config: t.cfg}
	for _, p := range t.parts {
		ti.Partitions = append(ti.Partitions, p.info())
	}
	return ti
}

func (l *Log) topic(name string) (*topic, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return nil, mlog.ErrClosed
	}
	t, ok := l.topics[name]
	if !ok {
		return nil, fmt.Errorf("%w: %s", mlog.ErrUnknownTopic, name)
	}
	return t, nil
}

func (l *Log) partition(name string, p int32) (*partition, error) {
	t, err := l.topic(name)
	if err != nil {
		return nil, err
	}
	if p < 0 || int(p) >= len(t.parts) {
		return nil, fmt.Errorf("%w: %s/%d (topic has %d partitions)", mlog.ErrUnknownPartition, name, p, len(t.parts))
	}
	return t.parts[p], nil
}

// Produce implements log.Log.
func (l *Log) Produce(ctx context.Context, r *mlog.Record, promise func(*mlog.Record, error)) {
	if promise == nil {
		promise = func(*mlog.Record, error) {}
	}
	t, err := l.topic(r.Topic)
	if err != nil {
		promise(r, err)
		return
	}
	if !r.PartitionSet {
		r.Partition = mlog.PartitionForKey(r.Key, int32(len(t.parts)))
	} else if r.Partition < 0 || int(r.Partition) >= len(t.parts) {
		promise(r, fmt.Errorf("%w: %s/%d (topic has %d partitions)", mlog.ErrUnknownPartition, r.Topic, r.Partition, len(t.parts)))
		return
	}
	size := recordSize(r)
	if size > l.opts.MaxRecordBytes {
		promise(r, fmt.Errorf("%w: %d bytes in topic %s (limit %d)", mlog.ErrRecordTooLarge, size, r.Topic, l.opts.MaxRecordBytes))
		return
	}
	if r.Timestamp.IsZero() {
		r.Timestamp = time.Now()
	}
	r.Timestamp = time.UnixMilli(r.Timestamp.UnixMilli())
	if err := l.acquire(ctx, int64(size)); err != nil {
		promise(r, err)
		return
	}
	p := t.parts[r.Partition]
	if !p.enqueue(pending{rec: r, size: size, promise: promise}) {
		l.release(int64(size))
		promise(r, mlog.ErrClosed)
	}
}

// ProduceSync implements log.Log.
func (l *Log) ProduceSync(ctx context.Context, rs ...*mlog.Record) error {
	return mlog.ProduceAll(ctx, l.Produce, rs...)
}

// acquire reserves n bytes of the produce buffer, blocking while it is full.
// A record larger than the whole buffer is admitted when the buffer is empty
// so it cannot block forever.
func (l *Log) acquire(ctx context.Context, n int64) error {
	for {
		l.budgetMu.Lock()
		if l.buffered == 0 || l.buffered+n <= l.opts.MaxBufferedBytes {
			l.buffered += n
			l.budgetMu.Unlock()
			return nil
		}
		wake := l.budgetWake
		l.budgetMu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return fmt.Errorf("produce: waiting for buffer space (log is behind by %d bytes, limit %d): %w", l.bufferedBytes(), l.opts.MaxBufferedBytes, ctx.Err())
		case <-l.closeCh:
			return mlog.ErrClosed
		}
	}
}

func (l *Log) bufferedBytes() int64 {
	l.budgetMu.Lock()
	defer l.budgetMu.Unlock()
	return l.buffered
}

func (l *Log) release(n int64) {
	l.budgetMu.Lock()
	l.buffered -= n
	close(l.budgetWake)
	l.budgetWake = make(chan struct{})
	l.budgetMu.Unlock()
}

// Fetch implements log.Log.
func (l *Log) Fetch(ctx context.Context, topic string, partition int32, offset int64, opts mlog.FetchOptions) ([]mlog.Record, error) {
	p, err := l.partition(topic, partition)
	if err != nil {
		return nil, err
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 1 << 20
	}
	for {
		recs, wait, err := p.read(offset, opts)
		if err != nil || len(recs) > 0 || !opts.Wait {
			return recs, err
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-l.closeCh:
			return nil, mlog.ErrClosed
		}
	}
}

// OffsetForTime implements log.Log.
func (l *Log) OffsetForTime(ctx context.Context, topic string, partition int32, t time.Time) (int64, error) {
	p, err := l.partition(topic, partition)
	if err != nil {
		return 0, err
	}
	return p.offsetForTime(t.UnixMilli())
}

// DeleteRecordsBefore implements log.Log.
func (l *Log) DeleteRecordsBefore(ctx context.Context, topic string, partition int32, offset int64) error {
	p, err := l.partition(topic, partition)
	if err != nil {
		return err
	}
	return p.deleteBefore(offset)
}

// CommitOffset implements log.Log.
func (l *Log) CommitOffset(ctx context.Context, group, topic string, partition int32, offset int64) error {
	return l.CommitOffsets(ctx, group, []mlog.TopicPartitionOffset{{Topic: topic, Partition: partition, Offset: offset}})
}

// CommitOffsets implements log.OffsetsCommitter: the offsets are made
// durable together, with one write and one fdatasync shared with any
// commits that arrive meanwhile.
func (l *Log) CommitOffsets(ctx context.Context, group string, offsets []mlog.TopicPartitionOffset) error {
	if group == "" {
		return errors.New("commit offset: empty consumer group name")
	}
	for _, o := range offsets {
		if _, err := l.partition(o.Topic, o.Partition); err != nil {
			return err
		}
		if o.Offset < 0 {
			return fmt.Errorf("commit offset %d for %s/%s/%d: %w", o.Offset, group, o.Topic, o.Partition, mlog.ErrOffsetOutOfRange)
		}
	}
	if len(offsets) == 0 {
		return nil
	}
	// ctx is not consulted: a commit takes a millisecond, and consumers
	// make their final commit while shutting down.
	return l.offs.commit(group, offsets)
}

// CommittedOffset implements log.Log.
func (l *Log) CommittedOffset(ctx context.Context, group, topic string, partition int32) (int64, bool, error) {
	if _, err := l.partition(topic, partition); err != nil {
		return 0, false, err
	}
	o, ok := l.offs.get(group, topic, partition)
	return o, ok, nil
}

// Groups implements log.Log.
func (l *Log) Groups(ctx context.Context) ([]mlog.GroupOffsets, error) {
	return l.offs.groups(), nil
}

// Close implements log.Log: it stops accepting records, lets every writer
// write and fsync what it has, seals the active segments' indexes and
// releases the directory lock.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	var parts []*partition
	for _, t := range l.topics {
		parts = append(parts, t.parts...)
	}
	l.mu.Unlock()
	for _, p := range parts {
		p.stop()
	}
	close(l.closeCh)
	l.wg.Wait()
	var errs []error
	for _, p := range parts {
		if err := p.closeFiles(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := l.offs.close(); err != nil {
		errs = append(errs, err)
	}
	l.lock.Close()
	return errors.Join(errs...)
}

func (l *Log) closeFiles() {
	if l.offs != nil {
		l.offs.f.Close()
	}
	for _, t := range l.topics {
		for _, p := range t.parts {
			for _, s := range p.segs {
				s.f.Close()
			}
		}
	}
}

func (l *Log) retentionLoop() {
	defer l.wg.Done()
	tick := time.NewTicker(l.opts.RetentionCheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-l.closeCh:
			return
		case <-tick.C:
			l.EnforceRetention()
		}
	}
}

// EnforceRetention deletes the segments that retention allows to delete, now.
// It runs every RetentionCheckInterval on its own.
func (l *Log) EnforceRetention() {
	ts, _ := l.sortedTopics()
	now := time.Now()
	for _, t := range ts {
		for _, p := range t.parts {
			if err := p.enforceRetention(now, t.cfg); err != nil {
				l.logger.Error("log retention failed", "topic", t.name, "partition", p.id, "err", err)
			}
		}
	}
}
