package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	mlog "github.com/millstream/millstream/log"
	"github.com/millstream/millstream/uns"
)

// Commands accepts command requests and reports how they were handled
// (uns.Commander).
type Commands interface {
	Submit(ctx context.Context, req uns.CommandRequest) (*mlog.Record, error)
	Await(ctx context.Context, id, ref string) (uns.AuditRecord, bool)
}

// maxCommandBody bounds a command request body.
const maxCommandBody = 64 << 10

// defaultCommandWait is how long POST /api/v1/commands waits for the
// outcome unless ?wait= says otherwise; maxCommandWait bounds ?wait=.
const (
	defaultCommandWait = 5 * time.Second
	maxCommandWait     = time.Minute
)

type commandBody struct {
	ID          string          `json:"id"`
	Path        string          `json:"path"`
	Value       json.RawMessage `json:"value"`
	RequestedBy string          `json:"requested_by"`
}

type commandAccepted struct {
	ID        string           `json:"id"`
	Status    string           `json:"status"`
	Topic     string           `json:"topic"`
	Partition int32            `json:"partition"`
	Offset    int64            `json:"offset"`
	Audit     *uns.AuditRecord `json:"audit,omitempty"`
}

// postCommand answers POST /api/v1/commands: the request is appended
// durably to the commands topic, then the handler waits up to ?wait= (a
// duration, default 5s, 0 to return at once) for its audit record. 200: sent;
// 422: refused (the audit record says why); 202: accepted, not handled yet.
func (s *Server) postCommand(w http.ResponseWriter, r *http.Request) {
	if s.cmds == nil {
		writeError(w, http.StatusNotFound, "commands are not enabled on this server", nil)
		return
	}
	wait := defaultCommandWait
	if q := r.URL.Query().Get("wait"); q != "" {
		d, err := time.ParseDuration(q)
		if err != nil || d < 0 || d > maxCommandWait {
			writeError(w, http.StatusBadRequest, "bad wait parameter: use a duration from 0s to 1m, e.g. wait=5s", q)
			return
		}
		wait = d
	}
	var body commandBody
	dec := json.NewDecoder(io.LimitReader(r.Body, maxCommandBody+1))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, `body must be a JSON object {"path": "...", "value": ..., "id": "...", "requested_by": "..."}`, err.Error())
		return
	}
	if body.RequestedBy == "" {
		body.RequestedBy = "api " + r.RemoteAddr
	}
	req, err := uns.NewCommandRequest(body.ID, body.Path, body.Value, body.RequestedBy)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad command request", err.Error())
		return
	}
	rec, err := s.cmds.Submit(r.Context(), req)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	out := commandAccepted{ID: req.ID, Status: "pending", Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset}
	if wait > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		a, ok := s.cmds.Await(ctx, req.ID, uns.CommandRef(rec))
		cancel()
		if ok {
			out.Status, out.Audit = a.Status, &a
		} else if errors.Is(r.Context().Err(), context.Canceled) {
			return
		}
	}
	switch out.Status {
	case uns.CommandSent:
		writeJSON(w, http.StatusOK, out)
	case "pending":
		writeJSON(w, http.StatusAccepted, out)
	default:
		writeError(w, http.StatusUnprocessableEntity, "command "+out.Status+": "+out.Audit.Reason, out)
	}
}
