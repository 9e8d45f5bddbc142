package api

import (
	"encoding/json"
	"net/http"
	"strings"

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
