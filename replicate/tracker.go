package replicate

import (
	"sort"
	"sync"
)

// srcPart identifies a source partition.
type srcPart struct {
	topic     string
	partition int32
}

// dstPart identifies a remote partition.
type dstPart struct {
	topic     string
	partition int32
}

// entry is one record read from a source partition and not yet covered by
// the checkpoint.
type entry struct {
	off  int64
	done bool
	// Where the remote has it (acknowledged, or found by the resume scan);
	// dst.topic is empty for records that were filtered out.
	dst  dstPart
	doff int64
}

// partTrack follows one source partition: entries in offset order, and the
// checkpoint: every offset below base is done (sent and acknowledged, or
// filtered out).
type partTrack struct {
	base    int64
	entries []entry
}

// tracker is the bookkeeping behind the checkpoint of one flow session.
type tracker struct {
	mu      sync.Mutex
	parts   map[srcPart]*partTrack
	pending int
	// lastLanded is the highest remote offset per remote partition known to
	// hold a record of this flow.
	lastLanded map[dstPart]int64
	// room is signalled when pending drops, for readers waiting on MaxPending.
	room chan struct{}
}

func newTracker(starts map[srcPart]int64) *tracker {
	t := &tracker{parts: map[srcPart]*partTrack{}, lastLanded: map[dstPart]int64{}, room: make(chan struct{}, 1)}
	for sp, off := range starts {
		t.parts[sp] = &partTrack{base: off}
	}
	return t
}

// add registers a record as read (not done yet). Records of one partition
// are added in offset order.
func (t *tracker) add(sp srcPart, off int64) {
	t.mu.Lock()
	pt := t.parts[sp]
	pt.entries = append(pt.entries, entry{off: off})
	t.pending++
	t.mu.Unlock()
}

// skipTo moves an empty partition's checkpoint forward (records deleted by
// retention before they were read).
func (t *tracker) skipTo(sp srcPart, off int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	pt := t.parts[sp]
	if len(pt.entries) == 0 && off > pt.base {
		pt.base = off
	}
}

// done marks a record done; dst is empty for a filtered record.
func (t *tracker) done(sp srcPart, off int64, dst dstPart, doff int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	pt := t.parts[sp]
	i := sort.Search(len(pt.entries), func(i int) bool { return pt.entries[i].off >= off })
	if i == len(pt.entries) || pt.entries[i].off != off || pt.entries[i].done {
		return
	}
	pt.entries[i].done, pt.entries[i].dst, pt.entries[i].doff = true, dst, doff
	if cur, ok := t.lastLanded[dst]; dst.topic != "" && (!ok || doff > cur) {
		t.lastLanded[dst] = doff
	}
	n := 0
	for n < len(pt.entries) && pt.entries[n].done {
		n++
	}
	if n > 0 {
		// Everything before the first record not done is checkpointable.
		if n == len(pt.entries) {
			pt.base = pt.entries[n-1].off + 1
		} else {
			pt.base = pt.entries[n].off
		}
		pt.entries = append(pt.entries[:0], pt.entries[n:]...)
		t.pending -= n
		select {
		case t.room <- struct{}{}:
		default:
		}
	}
}

// landed notes remote records of this flow found by the resume scan.
func (t *tracker) landed(dst dstPart, doff int64) {
	t.mu.Lock()
	if cur, ok := t.lastLanded[dst]; !ok || doff > cur {
		t.lastLanded[dst] = doff
	}
	t.mu.Unlock()
}

func (t *tracker) pendingCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pending
}

// checkpoint returns, taken together, the local checkpoint per source
// partition and the remote scan start per remote partition: the lowest
// remote offset that can hold a record of this flow at or after the local
// checkpoint. That is the lowest remote offset of a done record still
// waiting behind an unfinished one, or else the remote offset after the
// last record known to have landed (records in flight land after the ones
// already acknowledged in the same partition).
func (t *tracker) checkpoint() (map[srcPart]int64, map[dstPart]int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	local := make(map[srcPart]int64, len(t.parts))
	remote := map[dstPart]int64{}
	for dp, off := range t.lastLanded {
		remote[dp] = off + 1
	}
	for sp, pt := range t.parts {
		local[sp] = pt.base
		for _, e := range pt.entries {
			if e.done && e.dst.topic != "" && e.doff < remote[e.dst] {
				remote[e.dst] = e.doff
			}
		}
	}
	return local, remote
}
