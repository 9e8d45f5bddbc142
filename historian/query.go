package historian

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"

	"github.com/millstream/millstream/historian/block"
)

// NoTime is the Time of a Sample that Last did not find.
const NoTime = math.MinInt64

// reader is the per-query scratch: decoded points and the bytes of one
// block, reused across blocks and queries.
type reader struct {
	dec  block.Decoder
	pts  block.Points
	buf  []byte
	rows []tierRow
}

var readers = sync.Pool{New: func() any { return new(reader) }}

// source is one ordered run of a series' points: a block or a buffer.
type source struct {
	ref *blockRef     // a block, or
	buf *block.Points // the head or the late buffer
}

func (s source) bounds() (int64, int64) {
	if s.ref != nil {
		return s.ref.minTime, s.ref.maxTime
	}
	return s.buf.Times[0], s.buf.Times[s.buf.Len()-1]
}

// sources lists a series' runs of points so that, among points of equal
// time, earlier runs hold earlier arrivals: blocks of earlier flushes
// first; within what one flush holds, the head's points before the late
// buffer's (a late point is older than the window, so any head point of
// the same time was appended before it: afterwards that time is late too);
// within a lane, in seal order, and the unsealed buffer last.
func (s *series) sources() []source {
	out := make([]source, 0, len(s.blocks)+2)
	headDone := false
	addHead := func() {
		if !headDone && s.head.Len() > 0 {
			out = append(out, source{buf: &s.head})
		}
		headDone = true
	}
	for i := range s.blocks {
		if s.blocks[i].mem != nil && s.blocks[i].lane == laneLate {
			addHead()
		}
		out = append(out, source{ref: &s.blocks[i]})
	}
	addHead()
	if s.late.Len() > 0 {
		out = append(out, source{buf: &s.late})
	}
	return out
}

// points returns the points of src, decoding a block into r.
func (r *reader) points(id uint64, src source) (*block.Points, error) {
	if src.buf != nil {
		return src.buf, nil
	}
	ref := src.ref
	if ref.tier != nil {
		return r.tierPoints(id, ref)
	}
	b := ref.mem
	if b == nil {
		r.buf = slices.Grow(r.buf[:0], int(ref.size))[:ref.size]
		if _, err := ref.file.f.ReadAt(r.buf, ref.off); err != nil {
			return nil, fmt.Errorf("historian: %s: %w", ref.file.name, err)
		}
		b = r.buf
	}
	h, err := r.dec.Decode(&r.pts, b)
	if err == nil && (h.SeriesID != id || h.MinTime != ref.minTime || h.MaxTime != ref.maxTime) {
		err = fmt.Errorf("%w: block header disagrees with the index", ErrCorrupt)
	}
	if err != nil {
		where := "in-memory block"
		if ref.file != nil {
			where = fmt.Sprintf("%s at %d", ref.file.name, ref.off)
		}
		if errors.Is(err, ErrCorrupt) {
			return nil, fmt.Errorf("historian: %s: %w", where, err)
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, where, err)
	}
	return &r.pts, nil
}

// Range appends to dst the points of series id with from ≤ time ≤ to, in
// time order (equal times in arrival order), and returns the extended
// slice. Reusing dst between calls avoids allocation.
func (db *DB) Range(dst []Sample, id uint64, from, to int64) ([]Sample, error) {
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.closed {
		return dst, ErrClosed
	}
	s := db.byID[id]
	if s == nil {
		return dst, fmt.Errorf("%w: %d", ErrUnknownSeries, id)
	}
	r := readers.Get().(*reader)
	defer readers.Put(r)
	start := len(dst)
	inOrder := true
	last := int64(math.MinInt64)
	for _, src := range s.sources() {
		lo, hi := src.bounds()
		if hi < from || lo > to {
			continue
		}
		p, err := r.points(id, src)
		if err != nil {
			return dst[:start], err
		}
		i := sort.Search(p.Len(), func(k int) bool { return p.Times[k] >= from })
		j := sort.Search(p.Len(), func(k int) bool { return p.Times[k] > to })
		if i < j && p.Times[i] < last {
			inOrder = false
		}
		for k := i; k < j; k++ {
			dst = append(dst, Sample{p.Times[k], p.Value(k), p.QualityAt(k)})
		}
		if i < j {
			last = max(last, p.Times[j-1])
		}
	}
	if !inOrder {
		// Overlapping sources (late data, out-of-order points across a
		// sealed head): a stable sort keeps equal times in arrival order.
		res := dst[start:]
		sort.SliceStable(res, func(a, b int) bool { return res[a].Time < res[b].Time })
	}
	return dst, nil
}

// Last appends to dst, for each of ids, the last point at or before time
// at (of equal times, the last to arrive), or a Sample with Time NoTime if
// the series has none.
func (db *DB) Last(dst []Sample, ids []uint64, at int64) ([]Sample, error) {
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.closed {
		return dst, ErrClosed
	}
	r := readers.Get().(*reader)
	defer readers.Put(r)
	for _, id := range ids {
		s := db.byID[id]
		if s == nil {
			return dst, fmt.Errorf("%w: %d", ErrUnknownSeries, id)
		}
		db.latestMu.Lock()
		latest, ok := s.latest, s.hasLatest
		db.latestMu.Unlock()
		if ok && at >= latest.Time {
			dst = append(dst, latest)
			continue
		}
		best := Sample{Time: NoTime}
		srcs := s.sources()
		// Later sources first: on equal times the one visited first wins.
		for k := len(srcs) - 1; k >= 0; k-- {
			lo, hi := srcs[k].bounds()
			if lo > at || (best.Time != NoTime && min(hi, at) <= best.Time) {
				continue
			}
			p, err := r.points(id, srcs[k])
			if err != nil {
				return dst, err
			}
			i := sort.Search(p.Len(), func(x int) bool { return p.Times[x] > at }) - 1
			if i >= 0 && (best.Time == NoTime || p.Times[i] > best.Time) {
				best = Sample{p.Times[i], p.Value(i), p.QualityAt(i)}
			}
		}
		if best.Time != NoTime && best.Time == s.maxStored() {
			// The series' newest point: remember it for the next "current
			// value" query (after a restart the cache starts empty).
			db.latestMu.Lock()
			s.latest, s.hasLatest = best, true
			db.latestMu.Unlock()
		}
		dst = append(dst, best)
	}
	return dst, nil
}

// maxStored is the newest time in the series' blocks and buffers.
func (s *series) maxStored() int64 {
	m := int64(math.MinInt64)
	for i := range s.blocks {
		m = max(m, s.blocks[i].maxTime)
	}
	if s.has {
		m = max(m, s.maxT)
	}
	return m
}
