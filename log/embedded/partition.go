package embedded

import (
	"errors"
	"fmt"
	"io/fs"
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

type pending struct {
	rec     *mlog.Record
	size    int
	promise func(*mlog.Record, error)
}

// partition is one partition's files and state. One writer goroutine per
// partition owns the active segment's write position; readers see only
// bytes that are durable (fsynced), published under mu.
type partition struct {
	l     *Log
	topic string
	id    int32
	dir   string

	// Produce queue.
	qmu     sync.Mutex
	queue   []pending
	spare   []pending
	signal  chan struct{}
	stopped bool
	done    chan struct{}

	mu       sync.RWMutex
	segs     []*segment
	start    int64 // log start offset
	end      int64 // durable end offset (high watermark)
	wake     chan struct{}
	active   *segment              // the segment the writer appends to (writer-owned)
	failed   error                 // a write or fsync error: the partition refuses appends
	failure  atomic.Pointer[error] // failed, for other goroutines (Failure, metrics)
	enc      batchEncoder
	unsynced int64
	// lastGroup is how many bytes the last fsync covered (see preallocate).
	lastGroup int64
	dio       directFile // writer-owned (see direct.go)
}

func (l *Log) openPartition(t *topic, id int32) (*partition, []RecoveryReport, error) {
	dir := filepath.Join(l.topicDir(t.name), strconv.Itoa(int(id)))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("embedded log: %w", err)
	}
	p := &partition{l: l, topic: t.name, id: id, dir: dir, signal: make(chan struct{}, 1), done: make(chan struct{}), wake: make(chan struct{})}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("embedded log: %w", err)
	}
	var bases []int64
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp") {
			os.Remove(filepath.Join(dir, name)) // an interrupted atomic write
			continue
		}
		if !strings.HasSuffix(name, ".log") {
			continue
		}
		base, err := strconv.ParseInt(strings.TrimSuffix(name, ".log"), 10, 64)
		if err != nil || base < 0 {
			return nil, nil, fmt.Errorf("embedded log: unexpected file %s in partition directory (move it away)", filepath.Join(dir, name))
		}
		bases = append(bases, base)
	}
	sort.Slice(bases, func(i, j int) bool { return bases[i] < bases[j] })
	var reps []RecoveryReport
	for i, base := range bases {
		active := i == len(bases)-1
		s, tr, err := recoverSegment(filepath.Join(dir, segmentName(base)), base, active)
		if err != nil {
			for _, s := range p.segs {
				s.f.Close()
			}
			return nil, nil, fmt.Errorf("embedded log: topic %s partition %d: %w", t.name, id, err)
		}
		if tr != nil {
			reps = append(reps, RecoveryReport{Topic: t.name, Partition: id, Segment: s.path, At: tr.at, BytesTruncated: tr.bytes, RecordsTruncated: tr.records, Reason: tr.reason})
		}
		p.segs = append(p.segs, s)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "start-offset")); err == nil {
		if v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil {
			p.start = v
		}
	}
	if len(p.segs) == 0 {
		s, err := createSegment(dir, p.start)
		if err != nil {
			return nil, nil, err
		}
		p.segs = append(p.segs, s)
	}
	if first := p.segs[0].base; first > p.start {
		p.start = first
	}
	p.active = p.segs[len(p.segs)-1]
	p.end = p.active.next
	if p.start > p.end {
		p.start = p.end
	}
	return p, reps, nil
}

func createSegment(dir string, base int64) (*segment, error) {
	path := filepath.Join(dir, segmentName(base))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("embedded log: create segment: %w", err)
	}
	if err := syncDir(dir); err != nil {
		f.Close()
		return nil, err
	}
	return &segment{base: base, path: path, f: f, next: base, wnext: base, maxTs: minTs, wmaxTs: minTs, created: time.Now()}, nil
}

func (l *Log) startPartition(p *partition) {
	go p.writer()
}

func (p *partition) enqueue(pe pending) bool {
	p.qmu.Lock()
	if p.stopped {
		p.qmu.Unlock()
		return false
	}
	p.queue = append(p.queue, pe)
	p.qmu.Unlock()
	select {
	case p.signal <- struct{}{}:
	default:
	}
	return true
}

// take swaps out the queue. An empty queue keeps its buffer: swapped out,
// the writer dropped it (nothing to recycle), and the next appends regrew a
// queue from nothing, a sixteenth of a busy server's garbage.
func (p *partition) take() ([]pending, bool) {
	p.qmu.Lock()
	defer p.qmu.Unlock()
	q := p.queue
	if len(q) == 0 {
		return nil, p.stopped
	}
	p.queue = p.spare[:0]
	p.spare = nil
	return q, p.stopped
}

func (p *partition) stop() {
	p.qmu.Lock()
	p.stopped = true
	p.qmu.Unlock()
	select {
	case p.signal <- struct{}{}:
	default:
	}
	<-p.done
}

// writer is the partition's single appender. Group commit: it writes what is
// queued in one write, and keeps writing what arrives meanwhile until nothing
// is queued, FsyncBytes are unsynced or FsyncInterval has passed since the
// first unsynced write; then (after FsyncMinInterval, see spaceOut) it
// fsyncs once and releases every record the fsync covered. Records that
// arrive during an fsync form the next group.
func (p *partition) writer() {
	defer close(p.done)
	always := p.l.opts.Fsync == FsyncAlways
	var group []pending
	var lastSync time.Time // when the last fsync started
	var spacing *time.Timer
	for {
		q, stopped := p.take()
		if len(q) == 0 {
			if stopped {
				return
			}
			<-p.signal
			continue
		}
		if always {
			for i := range q {
				p.commit(q[i : i+1])
			}
			p.recycle(q)
			continue
		}
		first := time.Now()
		group = append(group[:0], q...)
		p.recycle(q)
		written := 0
		for {
			// Write what we have, then look for more before the fsync.
			p.write(group[written:])
			written = len(group)
			if p.unsynced >= p.l.opts.FsyncBytes || time.Since(first) >= p.l.opts.FsyncInterval {
				break
			}
			more, _ := p.take()
			if len(more) == 0 {
				break
			}
			group = append(group, more...)
			p.recycle(more)
		}
		if p.l.opts.FsyncMinInterval > 0 {
			group = p.spaceOut(group, lastSync, &spacing)
			lastSync = time.Now()
		}
		p.syncAndRelease(group)
		clear(group)
		group = group[:0]
	}
}

// spaceOut holds the group's fsync until FsyncMinInterval has passed since
// the previous one started (last), writing what arrives meanwhile so that
// the fsync covers it too. FsyncBytes unsynced, or the log closing, ends the
// wait at once: the spacing bounds how often the disk is flushed, never how
// much is held unsynced, and Close does not wait for it.
func (p *partition) spaceOut(group []pending, last time.Time, t **time.Timer) []pending {
	for p.unsynced < p.l.opts.FsyncBytes {
		d := p.l.opts.FsyncMinInterval - time.Since(last)
		if d <= 0 {
			return group
		}
		if *t == nil {
			*t = time.NewTimer(d)
		} else {
			(*t).Reset(d) // Go 1.23 timers: no stale tick after Stop or Reset
		}
		select {
		case <-(*t).C:
			return group
		case <-p.signal:
			(*t).Stop()
			more, stopped := p.take()
			if len(more) > 0 {
				p.write(more)
				group = append(group, more...)
				p.recycle(more)
			}
			if stopped {
				return group
			}
		}
	}
	return group
}

func (p *partition) recycle(q []pending) {
	clear(q)
	p.qmu.Lock()
	if p.spare == nil {
		p.spare = q[:0]
	}
	p.qmu.Unlock()
}

// commit writes and fsyncs records on their own (fsync "always").
func (p *partition) commit(q []pending) {
	p.write(q)
	p.syncAndRelease(q)
}

// write encodes records into batches and writes them to the active segment,
// rolling it when full or old. One write syscall per batch. Records get their
// offsets here; they stay invisible to readers until syncAndRelease.
func (p *partition) write(q []pending) (int64, error) {
	if p.failed != nil {
		return 0, p.failed
	}
	var total int64
	for len(q) > 0 {
		seg := p.active
		if seg.size > 0 && (seg.size >= p.l.opts.SegmentBytes || time.Since(seg.created) >= p.l.opts.SegmentAge) {
			if err := p.roll(); err != nil {
				// Stop here: the records left get the error from
				// syncAndRelease. (Retrying the roll spun forever.)
				p.fail(err)
				return total, p.failed
			}
			seg = p.active
		}
		if p.directOK(q) {
			n, size, err := p.writeDirect(seg, q)
			if err != nil {
				return total, p.writeFailed(seg, err)
			}
			if n > 0 {
				p.unsynced += size
				total += size
				q = q[n:]
				continue
			}
		}
		e := &p.enc
		e.reset(seg.wnext)
		n := 0
		for n < len(q) && (n == 0 || len(e.buf) < batchTarget) && (n == 0 || seg.size+int64(len(e.buf)) < p.l.opts.SegmentBytes) {
			r := q[n].rec
			r.Offset = seg.wnext + int64(n)
			e.add(r)
			n++
		}
		b := e.finish()
		err := p.preallocate(seg, int64(len(b)))
		if err == nil {
			_, err = seg.f.WriteAt(b, seg.size)
		}
		if err != nil {
			return total, p.writeFailed(seg, err)
		}
		seg.noteBatch(seg.size, seg.wnext, n, e.maxTs, int64(len(b)))
		seg.alloc = max(seg.alloc, seg.size)
		p.unsynced += int64(len(b))
		total += int64(len(b))
		q = q[n:]
	}
	return total, nil
}

// writeFailed stops the partition after a failed segment write and undoes
// the partial write, so the file ends at a batch boundary. Nothing more is
// written after a failure, so no later batch can reach the file that its
// producer was told had failed.
func (p *partition) writeFailed(seg *segment, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Path == seg.path {
		err = pe.Err // the path is said once
	}
	p.fail(fmt.Errorf("write segment %s: %w", seg.path, err))
	_ = seg.f.Truncate(seg.size)
	seg.alloc = seg.size
	return p.failed
}

// fail stops the partition for good: after a failed write or fsync the
// state of the file's tail in the page cache is not known, so only the
// recovery scan of a restart may write to it again.
func (p *partition) fail(err error) {
	if p.failed == nil {
		p.failed = err
		p.failure.Store(&err)
		hint := "restart Millstream to recover the partition (its recovery scan truncates what was not acknowledged)"
		if errors.Is(err, syscall.ENOSPC) {
			hint = "the disk is full: free space on the data_dir disk (or lower log.retention_bytes / retention_age), then restart Millstream"
		}
		p.l.logger.Error("log partition stopped accepting appends; appends to it fail until Millstream restarts", "topic", p.topic, "partition", p.id, "error", err, "what_to_do", hint)
	}
}

// Preallocation. An fdatasync after appending to a file must also commit
// the file's new size through the filesystem journal; after overwriting
// bytes that already exist it need not. On this project's disks that is
// 0.3 ms instead of 0.5 ms per fsync and a third less CPU, and an MQTT
// broker under load fsyncs small groups a thousand times a second. So
// while groups are small (the bytes between two fsyncs below
// preallocMaxGroup) the writer keeps the active segment zero-filled ahead
// of its end, in steps of a quarter of what the segment holds (64 KiB to
// 1 MiB), and the group's own fsync makes the zeros durable along with its
// data. Large groups, where the journal commit is a small share of the fsync
// and writing every byte twice would cost bandwidth, append as before. The
// zeros past the last batch are cut off when the segment is sealed or the
// log closed, and recovery drops an all-zero tail without reporting it (a
// batch cut short inside it is a torn write and reported as such).
const (
	preallocMaxGroup = 64 << 10
	preallocMin      = 64 << 10
	preallocMax      = 1 << 20
)

var zeros = make([]byte, preallocMax)

// preallocate zero-fills the active segment ahead of its end so that the
// next n bytes overwrite existing ones, when groups are small.
func (p *partition) preallocate(seg *segment, n int64) error {
	if seg.size+n <= seg.alloc || p.lastGroup >= preallocMaxGroup {
		return nil
	}
	step := min(max(seg.size/4, preallocMin), preallocMax)
	end := seg.size + n + step
	if limit := p.l.opts.SegmentBytes; end > limit {
		end = max(limit, seg.size+n)
	}
	for pos := max(seg.alloc, seg.size); pos < end; {
		k := min(end-pos, int64(len(zeros)))
		if _, err := seg.f.WriteAt(zeros[:k], pos); err != nil {
			return err
		}
		pos += k
	}
	seg.alloc = end
	return nil
}

// trimPrealloc cuts the zero-filled space past the segment's last batch.
func (s *segment) trimPrealloc() error {
	if s.alloc <= s.size {
		return nil
	}
	if err := s.f.Truncate(s.size); err != nil {
		return fmt.Errorf("trim preallocated space of %s: %w", s.path, err)
	}
	s.alloc = s.size
	return nil
}

// roll seals the active segment (fsync data and indexes) and starts a new one.
func (p *partition) roll() error {
	old := p.active
	if err := p.dio.close(); err != nil {
		return fmt.Errorf("close direct descriptor of %s: %w", old.path, err)
	}
	if err := old.trimPrealloc(); err != nil {
		return err
	}
	if err := p.fsync(old); err != nil {
		return err
	}
	if err := old.writeIndexes(); err != nil {
		return err
	}
	s, err := createSegment(p.dir, old.wnext)
	if err != nil {
		return err
	}
	p.mu.Lock()
	old.publish()
	old.sealed = true
	p.end = old.next
	p.segs = append(p.segs, s)
	p.active = s
	close(p.wake)
	p.wake = make(chan struct{})
	p.mu.Unlock()
	return nil
}

func (p *partition) fsync(s *segment) error {
	t0 := time.Now()
	err := datasync(s.f)
	p.l.m.fsyncSeconds.Observe(time.Since(t0).Seconds())
	p.lastGroup, p.unsynced = p.unsynced, 0
	if err != nil {
		return fmt.Errorf("fsync segment %s: %w", s.path, err)
	}
	return nil
}

// syncAndRelease fsyncs the active segment, publishes the new end offset to
// readers and calls the promises of q.
func (p *partition) syncAndRelease(q []pending) {
	seg := p.active
	if p.failed == nil {
		if err := p.fsync(seg); err != nil {
			p.fail(err)
		}
	}
	err := p.failed
	var bytes, records int64
	if err == nil {
		p.mu.Lock()
		seg.publish()
		p.end = seg.next
		close(p.wake)
		p.wake = make(chan struct{})
		p.mu.Unlock()
	}
	for i := range q {
		bytes += int64(q[i].size)
		records++
	}
	// Free the buffer space before calling promises, so a promise that
	// produces again (without waiting) cannot wait for space only its own
	// return would free.
	p.l.release(bytes)
	for i := range q {
		if err != nil {
			q[i].promise(q[i].rec, fmt.Errorf("append to %s/%d: %w", p.topic, p.id, err))
		} else {
			q[i].promise(q[i].rec, nil)
		}
	}
	if err == nil {
		p.l.m.appended(p.topic, records, bytes)
	}
}

// segView is a segment's published state, copied under the partition's mu
// so that readers do their file reads and decoding without holding it. A
// reader holding mu while it read (or while the scheduler preempted it) kept
// the writer from publishing the next group commit: at 13k msg/s the writer
// waited up to 40 ms for mu, and every publisher waited with it.
//
// Reading a file outside mu is safe because published bytes never change
// and os.File reference-counts its descriptor: a segment deleted by
// retention (or closed by Close) meanwhile fails the read with os.ErrClosed
// instead of reading another file.
type segView struct {
	s      *segment
	synced int64
	next   int64
	maxTs  int64
	index  []indexEntry
	tindex []timeEntry
}

func (s *segment) view() segView {
	return segView{s: s, synced: s.synced, next: s.next, maxTs: s.maxTs, index: s.index, tindex: s.tindex}
}

// viewsFrom copies the published state of segments i.. into buf. The
// caller holds mu.
func (p *partition) viewsFrom(i int, buf []segView) []segView {
	for _, s := range p.segs[i:] {
		buf = append(buf, s.view())
	}
	return buf
}

// closing reports whether Close has begun.
func (l *Log) closing() bool {
	select {
	case <-l.closeCh:
		return true
	default:
		return false
	}
}

// readFailed turns a read that lost its segment to retention into the error
// a fetch below the log start gets, and one that lost it to Close into
// ErrClosed.
func (p *partition) readFailed(offset int64, err error) error {
	if errors.Is(err, os.ErrClosed) {
		if p.l.closing() {
			return fmt.Errorf("read %s/%d: %w", p.topic, p.id, mlog.ErrClosed)
		}
		p.mu.RLock()
		start, end := p.start, p.end
		p.mu.RUnlock()
		if offset < start {
			return fmt.Errorf("%w: offset %d of %s/%d was deleted while being read (readable range is [%d, %d])", mlog.ErrOffsetOutOfRange, offset, p.topic, p.id, start, end)
		}
	}
	return err
}

// read returns records from offset on, or the channel that closes when more
// become durable.
func (p *partition) read(offset int64, opts mlog.FetchOptions) ([]mlog.Record, <-chan struct{}, error) {
	p.mu.RLock()
	if offset < p.start || offset > p.end {
		err := fmt.Errorf("%w: offset %d of %s/%d (readable range is [%d, %d])", mlog.ErrOffsetOutOfRange, offset, p.topic, p.id, p.start, p.end)
		p.mu.RUnlock()
		return nil, nil, err
	}
	if offset == p.end {
		wake := p.wake
		p.mu.RUnlock()
		return nil, wake, nil
	}
	i := sort.Search(len(p.segs), func(i int) bool { return p.segs[i].base > offset }) - 1
	if i < 0 {
		i = 0
	}
	// Sized for what there is to read, up to the limit: growing it by
	// appending was a fifth of the bytes a busy broker allocated.
	n := min(p.end-offset, 1024)
	var buf [4]segView
	views := p.viewsFrom(i, buf[:0])
	p.mu.RUnlock()
	recs, err := p.readViews(views, offset, n, opts)
	return recs, nil, err
}

// readViews reads records from offset on out of segments copied under mu,
// without it; n is what there is to read, for sizing.
func (p *partition) readViews(views []segView, offset, n int64, opts mlog.FetchOptions) ([]mlog.Record, error) {
	if opts.MaxRecords > 0 {
		n = min(n, int64(opts.MaxRecords))
	}
	out := make([]mlog.Record, 0, n)
	bytes := 0
	for _, v := range views {
		s := v.s
		if v.next <= offset {
			continue // offset lies in a gap left by a truncated sealed segment
		}
		pos := v.lookup(offset)
		cr := chunkReader{r: s.f}
		for pos < v.synced {
			h, raw, err := cr.batch(pos, v.synced)
			if err != nil {
				return out, p.readFailed(offset, fmt.Errorf("read %s/%d at offset %d: %s at position %d: %w", p.topic, p.id, offset, s.path, pos, err))
			}
			at := pos
			pos += h.size()
			if h.nextOffset() <= offset {
				continue
			}
			n0 := len(out)
			out, err = decodeRecords(raw, h, p.topic, p.id, offset, out)
			if err != nil {
				return out[:n0], fmt.Errorf("read %s/%d: %s: %w", p.topic, p.id, s.path, err)
			}
			// Trim to the limits, always keeping at least one record.
			for j := n0; j < len(out); j++ {
				sz := len(out[j].Key) + len(out[j].Value)
				if j > 0 && (bytes+sz > opts.MaxBytes || (opts.MaxRecords > 0 && j >= opts.MaxRecords)) {
					s.noteRead(h.baseOffset, at) // the next read resumes in this batch
					return out[:j], nil
				}
				bytes += sz
			}
			offset = h.nextOffset()
			s.noteRead(offset, pos)
			if bytes >= opts.MaxBytes || (opts.MaxRecords > 0 && len(out) >= opts.MaxRecords) {
				return out, nil
			}
		}
	}
	return out, nil
}

func (p *partition) offsetForTime(ts int64) (int64, error) {
	p.mu.RLock()
	start, end := p.start, p.end
	views := p.viewsFrom(0, nil)
	p.mu.RUnlock()
	return p.offsetForTimeIn(views, start, end, ts)
}

// offsetForTimeIn scans segments copied under mu, without it, for the first
// offset at or after start whose timestamp is at least ts (end if none).
func (p *partition) offsetForTimeIn(views []segView, start, end, ts int64) (int64, error) {
	for _, v := range views {
		s := v.s
		if v.synced == 0 || v.maxTs < ts || v.next <= start {
			continue
		}
		pos := v.lookupTime(ts)
	scan:
		for pos < v.synced {
			h, raw, err := readBatchAt(s.f, pos, v.synced)
			if err != nil {
				if errors.Is(err, os.ErrClosed) && !p.l.closing() {
					// Retention deleted the segment meanwhile: its records
					// are below the log start now; the answer is in a
					// later segment.
					break scan
				}
				return 0, p.readFailed(start, fmt.Errorf("offset for time in %s/%d: %s: %w", p.topic, p.id, s.path, err))
			}
			pos += h.size()
			if h.maxTs < ts || h.nextOffset() <= start {
				continue
			}
			recs, err := decodeRecords(raw, h, p.topic, p.id, max(h.baseOffset, start), nil)
			if err != nil {
				return 0, err
			}
			for _, r := range recs {
				if r.Timestamp.UnixMilli() >= ts {
					return r.Offset, nil
				}
			}
		}
	}
	return end, nil
}

func (p *partition) info() mlog.PartitionInfo {
	p.mu.RLock()
	defer p.mu.RUnlock()
	pi := mlog.PartitionInfo{Partition: p.id, Start: p.start, End: p.end, Segments: len(p.segs)}
	for _, s := range p.segs {
		pi.Bytes += s.synced
	}
	return pi
}

// deleteBefore moves the log start offset up to offset (persisted) and
// deletes the segments below it.
func (p *partition) deleteBefore(offset int64) error {
	p.mu.Lock()
	if offset > p.end {
		p.mu.Unlock()
		return fmt.Errorf("delete records before %d of %s/%d: %w (end offset is %d)", offset, p.topic, p.id, mlog.ErrOffsetOutOfRange, p.end)
	}
	if offset <= p.start {
		p.mu.Unlock()
		return nil
	}
	p.start = offset
	p.mu.Unlock()
	if err := writeFileSync(filepath.Join(p.dir, "start-offset"), []byte(strconv.FormatInt(offset, 10)+"\n")); err != nil {
		return err
	}
	return p.deleteSegments(func(s *segment, _ int64) bool { return s.next <= offset })
}

// deleteSegments deletes sealed segments from the oldest while drop says so.
// drop gets each segment and the partition's bytes at that point.
func (p *partition) deleteSegments(drop func(s *segment, total int64) bool) error {
	p.mu.Lock()
	var total int64
	for _, s := range p.segs {
		total += s.synced
	}
	var victims []*segment
	for len(p.segs) > 1 && p.segs[0].sealed && drop(p.segs[0], total) {
		s := p.segs[0]
		total -= s.synced
		victims = append(victims, s)
		p.segs = p.segs[1:]
		if p.segs[0].base > p.start {
			p.start = p.segs[0].base
		}
	}
	p.mu.Unlock()
	var errs []error
	for _, s := range victims {
		if err := s.remove(); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (p *partition) enforceRetention(now time.Time, cfg mlog.TopicConfig) error {
	// An old active segment is sealed by the writer at its next append (age
	// roll); retention only ever deletes sealed segments.
	return p.deleteSegments(func(s *segment, total int64) bool {
		if cfg.RetentionAge > 0 && s.maxTs != minTs && now.Sub(time.UnixMilli(s.maxTs)) > cfg.RetentionAge {
			return true
		}
		if cfg.RetentionBytes > 0 && total > cfg.RetentionBytes {
			return true
		}
		return false
	})
}

func (p *partition) closeFiles() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	if err := p.dio.close(); err != nil {
		errs = append(errs, err)
	}
	if a := p.active; a != nil && a.alloc > a.size && p.failed == nil {
		err := a.trimPrealloc()
		if err == nil {
			err = datasync(a.f)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	for _, s := range p.segs {
		if err := s.f.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
