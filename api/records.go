package api

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	mlog "github.com/millstream/millstream/log"
)

const (
	defaultLimit = 1000
	maxLimit     = 10000
	// fetchRecords and fetchBytes bound each read of one partition, so a
	// merge over many partitions holds at most one such batch per
	// partition in memory whatever the limit.
	fetchRecords = 256
	fetchBytes   = 256 << 10
	// A replay is written in chunks of about flushBytes; an ndjson stream
	// is also flushed after flushInterval so a slow read still shows
	// progress.
	flushBytes    = 32 << 10
	flushInterval = 100 * time.Millisecond
)

// positionKind says which form a from or to parameter took.
type positionKind int

const (
	posDefault    positionKind = iota // not given
	posOffset                         // one offset for every partition
	posTime                           // resolved per partition with OffsetForTime
	posPartitions                     // "0:120,1:98", as "next" reports
)

type position struct {
	kind    positionKind
	offset  int64
	time    time.Time
	offsets map[int32]int64
}

const positionHint = "an offset (integer >= 0), an RFC 3339 time such as 2026-11-22T08:00:00Z, or per-partition offsets such as 0:120,1:98"

func parsePosition(s string) (position, bool) {
	if s == "" {
		return position{}, true
	}
	if off, err := strconv.ParseInt(s, 10, 64); err == nil {
		return position{kind: posOffset, offset: off}, off >= 0
	}
	// An unescaped '+' in a URL query decodes as a space; a space is never
	// valid here, so read it as the '+' of a zone offset the user meant.
	if t, err := time.Parse(time.RFC3339Nano, strings.ReplaceAll(s, " ", "+")); err == nil {
		return position{kind: posTime, time: t}, true
	}
	offsets := map[int32]int64{}
	for pair := range strings.SplitSeq(s, ",") {
		ps, os, ok := strings.Cut(pair, ":")
		p, perr := strconv.ParseInt(ps, 10, 32)
		off, oerr := strconv.ParseInt(os, 10, 64)
		if !ok || perr != nil || oerr != nil || p < 0 || off < 0 {
			return position{}, false
		}
		offsets[int32(p)] = off
	}
	return position{kind: posPartitions, offsets: offsets}, true
}

// recordsRequest is a validated replay request.
type recordsRequest struct {
	parts    []mlog.PartitionInfo
	from, to position
	limit    int
	ndjson   bool
}

func parseRecordsRequest(r *http.Request, t mlog.TopicInfo) (recordsRequest, *apiError) {
	q := r.URL.Query()
	req := recordsRequest{parts: t.Partitions, limit: defaultLimit}
	n := len(t.Partitions)

	if ps := q.Get("partition"); ps != "" {
		p, err := strconv.ParseInt(ps, 10, 32)
		i := partitionIndex(t, int32(p))
		if err != nil || i < 0 {
			return req, &apiError{"invalid partition", fmt.Sprintf("partition %q: use an integer from 0 to %d (topic %s has %d partitions), or leave it out to read all", ps, n-1, t.Name, n)}
		}
		req.parts = t.Partitions[i : i+1]
	}
	for _, b := range []struct {
		name string
		pos  *position
	}{{"from", &req.from}, {"to", &req.to}} {
		s := q.Get(b.name)
		pos, ok := parsePosition(s)
		if !ok {
			return req, &apiError{"invalid " + b.name, fmt.Sprintf("%s %q: use %s", b.name, s, positionHint)}
		}
		for p := range pos.offsets {
			if partitionIndex(t, p) < 0 {
				return req, &apiError{"invalid " + b.name, fmt.Sprintf("%s %q names partition %d; topic %s has partitions 0 to %d", b.name, s, p, t.Name, n-1)}
			}
		}
		*b.pos = pos
	}
	if ls := q.Get("limit"); ls != "" {
		l, err := strconv.Atoi(ls)
		if err != nil || l < 1 || l > maxLimit {
			return req, &apiError{"invalid limit", fmt.Sprintf("limit %q: use an integer from 1 to %d (default %d); continue with the offsets in \"next\"", ls, maxLimit, defaultLimit)}
		}
		req.limit = l
	}
	switch f := q.Get("format"); f {
	case "json":
	case "ndjson":
		req.ndjson = true
	case "":
		req.ndjson = wantsNDJSON(r.Header.Get("Accept"))
	default:
		return req, &apiError{"invalid format", fmt.Sprintf("format %q: use json (default) or ndjson", f)}
	}
	return req, nil
}

// partitionIndex returns the index of partition p in t.Partitions, or -1.
func partitionIndex(t mlog.TopicInfo, p int32) int {
	for i, pi := range t.Partitions {
		if pi.Partition == p {
			return i
		}
	}
	return -1
}

func (s *Server) records(w http.ResponseWriter, r *http.Request) {
	t, ok := s.topic(w, r)
	if !ok {
		return
	}
	req, bad := parseRecordsRequest(r, t)
	if bad != nil {
		writeJSON(w, http.StatusBadRequest, bad)
		return
	}
	ctx := r.Context()
	cursors := make([]*cursor, len(req.parts))
	for i, p := range req.parts {
		c, err := s.newCursor(ctx, t.Name, p, req)
		if err != nil {
			s.internalError(w, r, err)
			return
		}
		cursors[i] = c
	}

	out := newRecordWriter(w, req.ndjson)
	err := s.merge(ctx, t.Name, cursors, req.limit, out.record)
	if err == nil {
		err = out.finish(cursors)
	}
	switch {
	case err == nil, out.err != nil, ctx.Err() != nil:
		// Done, or the client is gone and there is nobody to tell.
	case !out.started:
		s.internalError(w, r, err)
	default:
		// The status line is sent; cutting the connection is the only way
		// to keep a client from taking a partial replay for a whole one.
		s.logger.Error("replay failed mid-response", "topic", t.Name, "err", err)
		panic(http.ErrAbortHandler)
	}
}

// cursor reads one partition of a replay.
type cursor struct {
	partition int32
	// next is the offset to continue from: the offset after the last
	// record returned, or where reading starts.
	next int64
	to   int64 // exclusive
	buf  []mlog.Record
}

func (s *Server) newCursor(ctx context.Context, topic string, p mlog.PartitionInfo, req recordsRequest) (*cursor, error) {
	from, err := s.resolve(ctx, topic, p, req.from, p.Start)
	if err != nil {
		return nil, err
	}
	to, err := s.resolve(ctx, topic, p, req.to, p.End)
	if err != nil {
		return nil, err
	}
	// Offsets below the start were deleted by retention: begin with what is
	// left. The end bounds the range because a replay never waits.
	return &cursor{partition: p.Partition, next: max(from, p.Start), to: min(to, p.End)}, nil
}

// resolve turns pos into an offset of partition p; def if pos was not given
// for p.
func (s *Server) resolve(ctx context.Context, topic string, p mlog.PartitionInfo, pos position, def int64) (int64, error) {
	switch pos.kind {
	case posOffset:
		return pos.offset, nil
	case posTime:
		return s.log.OffsetForTime(ctx, topic, p.Partition, pos.time)
	case posPartitions:
		if off, ok := pos.offsets[p.Partition]; ok {
			return off, nil
		}
	}
	return def, nil
}

// fill reads the cursor's next records into its empty buffer, at most max.
func (c *cursor) fill(ctx context.Context, l mlog.Log, topic string, max int) error {
	for len(c.buf) == 0 && c.next < c.to && max > 0 {
		n := int(min(int64(max), int64(fetchRecords), c.to-c.next))
		recs, err := l.Fetch(ctx, topic, c.partition, c.next, mlog.FetchOptions{MaxRecords: n, MaxBytes: fetchBytes})
		if errors.Is(err, mlog.ErrOffsetOutOfRange) {
			// Retention may have deleted c.next since the request began.
			t, terr := l.Topic(ctx, topic)
			if terr != nil {
				return terr
			}
			i := partitionIndex(t, c.partition)
			if i < 0 || t.Partitions[i].Start <= c.next {
				return err
			}
			c.next = t.Partitions[i].Start
			continue
		}
		if err != nil {
			return err
		}
		for i := range recs {
			if recs[i].Offset >= c.to {
				recs = recs[:i]
				break
			}
		}
		if len(recs) == 0 {
			// No record is left before to (offsets can have gaps where a
			// damaged segment was cut), so the range is done.
			c.next = c.to
			return nil
		}
		c.buf = recs
	}
	return nil
}

// merge emits up to limit records of the cursors in timestamp order, ties
// broken by partition. Each partition's records keep their offset order;
// the heap only decides which partition goes next.
func (s *Server) merge(ctx context.Context, topic string, cursors []*cursor, limit int, emit func(*mlog.Record) error) error {
	h := make(cursorHeap, 0, len(cursors))
	for _, c := range cursors {
		if err := c.fill(ctx, s.log, topic, limit); err != nil {
			return err
		}
		if len(c.buf) > 0 {
			h = append(h, c)
		}
	}
	heap.Init(&h)
	for n := 0; n < limit && len(h) > 0; n++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		c := h[0]
		rec := &c.buf[0]
		if err := emit(rec); err != nil {
			return err
		}
		c.next = rec.Offset + 1
		c.buf = c.buf[1:]
		if err := c.fill(ctx, s.log, topic, limit-n-1); err != nil {
			return err
		}
		if len(c.buf) > 0 {
			heap.Fix(&h, 0)
		} else {
			heap.Pop(&h)
		}
	}
	return nil
}

// cursorHeap orders cursors by their first buffered record.
type cursorHeap []*cursor

func (h cursorHeap) Len() int { return len(h) }
func (h cursorHeap) Less(i, j int) bool {
	a, b := &h[i].buf[0], &h[j].buf[0]
	if c := a.Timestamp.Compare(b.Timestamp); c != 0 {
		return c < 0
	}
	return a.Partition < b.Partition
}
func (h cursorHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *cursorHeap) Push(x any)   { *h = append(*h, x.(*cursor)) }
func (h *cursorHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	*h = old[:len(old)-1]
	return c
}

// recordWriter writes a replay response in chunks, so memory stays bounded
// whatever the limit and record sizes.
type recordWriter struct {
	w         http.ResponseWriter
	rc        *http.ResponseController
	ndjson    bool
	buf       []byte
	n         int
	lastFlush time.Time
	// started is set once the status line has been sent; after that an
	// error can no longer become an error response.
	started bool
	// err is the first write error: the client is gone.
	err error
}

func newRecordWriter(w http.ResponseWriter, ndjson bool) *recordWriter {
	rw := &recordWriter{w: w, rc: http.NewResponseController(w), ndjson: ndjson, lastFlush: time.Now()}
	rw.buf = make([]byte, 0, flushBytes+4<<10)
	if !ndjson {
		rw.buf = append(rw.buf, `{"records":[`...)
	}
	return rw
}

func (rw *recordWriter) record(r *mlog.Record) error {
	if !rw.ndjson && rw.n > 0 {
		rw.buf = append(rw.buf, ',')
	}
	rw.buf = mlog.AppendRecordJSON(rw.buf, r)
	if rw.ndjson {
		rw.buf = append(rw.buf, '\n')
	}
	rw.n++
	if len(rw.buf) >= flushBytes || rw.ndjson && time.Since(rw.lastFlush) >= flushInterval {
		return rw.flush()
	}
	return nil
}

// finish ends the response; for JSON with the offsets to continue from.
func (rw *recordWriter) finish(cursors []*cursor) error {
	if !rw.ndjson {
		rw.buf = append(rw.buf, `],"next":{`...)
		for i, c := range cursors {
			if i > 0 {
				rw.buf = append(rw.buf, ',')
			}
			rw.buf = append(rw.buf, '"')
			rw.buf = strconv.AppendInt(rw.buf, int64(c.partition), 10)
			rw.buf = append(rw.buf, `":`...)
			rw.buf = strconv.AppendInt(rw.buf, c.next, 10)
		}
		rw.buf = append(rw.buf, "}}\n"...)
	}
	return rw.flush()
}

func (rw *recordWriter) flush() error {
	if !rw.started {
		h := rw.w.Header()
		if rw.ndjson {
			h.Set("Content-Type", "application/x-ndjson")
		} else {
			h.Set("Content-Type", "application/json")
		}
		h.Set("X-Content-Type-Options", "nosniff")
		rw.w.WriteHeader(http.StatusOK)
		rw.started = true
	}
	// Each chunk gets its own deadline: a long replay to a reading client
	// is fine, a client that stops reading is not. Recorders and other
	// writers without deadlines report an error, which does not matter.
	_ = rw.rc.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := rw.w.Write(rw.buf); err != nil {
		rw.err = err
		return err
	}
	rw.buf = rw.buf[:0]
	if rw.ndjson {
		if err := rw.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
			rw.err = err
			return err
		}
	}
	rw.lastFlush = time.Now()
	return nil
}
