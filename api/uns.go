package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/millstream/millstream/uns"
)

// Namespace is the live namespace the /api/v1/uns route browses.
type Namespace interface {
	Browse(path string) (uns.View, bool)
}

type unsChild struct {
	Name        string          `json:"name"`
	Path        string          `json:"path"`
	HasChildren bool            `json:"has_children"`
	Point       json.RawMessage `json:"point"`
}

type unsView struct {
	Path     string          `json:"path"`
	Point    json.RawMessage `json:"point"`
	Children []unsChild      `json:"children"`
}

// pointJSON is the point as uns.points records hold it, or null.
func pointJSON(p *uns.Point) json.RawMessage {
	if p == nil {
		return json.RawMessage("null")
	}
	return uns.AppendPointJSON(nil, p)
}

// browseUNS answers GET /api/v1/uns?path=: the latest point at path (if it
// is a tag) and its children, each with its latest point (if it is a tag).
func (s *Server) browseUNS(w http.ResponseWriter, r *http.Request) {
	if s.ns == nil {
		writeError(w, http.StatusNotFound, "the namespace is not enabled on this server", nil)
		return
	}
	path := strings.Trim(r.URL.Query().Get("path"), "/")
	if path != "" {
		if err := uns.ValidatePath(path); err != nil {
			writeError(w, http.StatusBadRequest, "bad path", err.Error())
			return
		}
	}
	v, ok := s.ns.Browse(path)
	if !ok {
		writeError(w, http.StatusNotFound, "nothing in the namespace under "+path,
			"browse from the root with GET /api/v1/uns")
		return
	}
	out := unsView{Path: v.Path, Point: pointJSON(v.Point), Children: make([]unsChild, 0, len(v.Children))}
	for _, c := range v.Children {
		out.Children = append(out.Children, unsChild{Name: c.Name, Path: c.Path, HasChildren: c.HasChildren, Point: pointJSON(c.Point)})
	}
	writeJSON(w, http.StatusOK, out)
}

// LiveNamespace is the fan-out the /api/v1/uns/live route subscribes to.
type LiveNamespace interface {
	Subscribe(pattern string, buffer int) (*uns.Subscription, error)
}

// liveBuffer is how many points a live client may fall behind before it is
// told it overflowed and disconnected.
const liveBuffer = 4096

// liveUNS answers GET /api/v1/uns/live?pattern= with server-sent events: one
// "data:" line per new point (the uns.points JSON), a comment every 15 s to
// keep proxies from closing the stream, and, if the client falls too far
// behind, an "overflow" event before the stream ends (reconnect and re-read
// the gap from uns.points).
func (s *Server) liveUNS(w http.ResponseWriter, r *http.Request) {
	if s.live == nil {
		writeError(w, http.StatusNotFound, "the namespace is not enabled on this server", nil)
		return
	}
	pattern := r.URL.Query().Get("pattern")
	if pattern == "" {
		pattern = "#"
	}
	sub, err := s.live.Subscribe(pattern, liveBuffer)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad pattern", err.Error())
		return
	}
	defer sub.Close()
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(b []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write([]byte(": subscribed to " + pattern + "\n\n")) {
		return
	}
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	var buf []byte
	for {
		select {
		case p, ok := <-sub.C:
			if !ok {
				if sub.Overflowed() {
					write([]byte("event: overflow\ndata: {\"error\":\"client too slow; points were skipped, re-read them from uns.points\"}\n\n"))
				}
				return
			}
			buf = append(buf[:0], "data: "...)
			buf = uns.AppendPointJSON(buf, &p)
			// Batch what is already waiting into one write.
			for more := true; more && len(buf) < 64<<10; {
				select {
				case q, ok := <-sub.C:
					if !ok {
						more = false
						break
					}
					buf = append(buf, "\n\ndata: "...)
					buf = uns.AppendPointJSON(buf, &q)
				default:
					more = false
				}
			}
			buf = append(buf, "\n\n"...)
			if !write(buf) {
				return
			}
		case <-keepalive.C:
			if !write([]byte(": keepalive\n\n")) {
				return
			}
		case <-r.Context().Done():
			return
		case <-s.stopping:
			return
		}
	}
}
