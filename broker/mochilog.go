package broker

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// quietHandler passes mochi's log records on, but at most one per message
// text and level every interval. mochi logs some conditions once per
// message (a slow subscriber whose queue is full logs "client store quota
// reached" for every message it misses): under load that is tens of
// thousands of lines a second, and formatting them took a twentieth of the
// broker's CPU. The first record of a burst goes out at once; the next one
// after the interval carries how many were suppressed in between. The
// metrics count every occurrence.
type quietHandler struct {
	next     slog.Handler
	interval time.Duration
	s        *quietState
}

type quietState struct {
	mu   sync.Mutex
	seen map[quietKey]*quietEntry
}

type quietKey struct {
	level slog.Level
	msg   string
}

type quietEntry struct {
	last       time.Time
	suppressed int
}

// maxQuietKeys bounds the table; mochi's messages are constant strings, so
// it only fills if something logs formatted text.
const maxQuietKeys = 1024

func newQuietHandler(next slog.Handler, interval time.Duration) *quietHandler {
	return &quietHandler{next: next, interval: interval, s: &quietState{seen: map[quietKey]*quietEntry{}}}
}

func (h *quietHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *quietHandler) Handle(ctx context.Context, r slog.Record) error {
	k := quietKey{r.Level, r.Message}
	h.s.mu.Lock()
	e := h.s.seen[k]
	if e == nil {
		if len(h.s.seen) >= maxQuietKeys {
			clear(h.s.seen)
		}
		e = &quietEntry{}
		h.s.seen[k] = e
	} else if r.Time.Sub(e.last) < h.interval {
		e.suppressed++
		h.s.mu.Unlock()
		return nil
	}
	n := e.suppressed
	e.last, e.suppressed = r.Time, 0
	h.s.mu.Unlock()
	if n > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed_since_last", n))
	}
	return h.next.Handle(ctx, r)
}

func (h *quietHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &quietHandler{next: h.next.WithAttrs(as), interval: h.interval, s: h.s}
}

func (h *quietHandler) WithGroup(name string) slog.Handler {
	return &quietHandler{next: h.next.WithGroup(name), interval: h.interval, s: h.s}
}
