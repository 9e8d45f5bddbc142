package api

import (
	"net/http"
	"time"

	"github.com/millstream/millstream/sparkplug"
)

// SparkplugNodes is what GET /api/v1/sparkplug/nodes reports.
type SparkplugNodes interface {
	SparkplugNodes() []sparkplug.NodeState
}

type spbDevice struct {
	Name      string  `json:"name"`
	Online    bool    `json:"online"`
	LastBirth *string `json:"last_birth"`
	LastDeath *string `json:"last_death"`
	Metrics   int     `json:"metrics"`
}

type spbNode struct {
	Group          string      `json:"group"`
	EdgeNode       string      `json:"edge_node"`
	Online         bool        `json:"online"`
	LastBirth      *string     `json:"last_birth"`
	LastDeath      *string     `json:"last_death"`
	BdSeq          *uint64     `json:"bd_seq"`
	LastSeq        uint8       `json:"last_seq"`
	SeqErrors      uint64      `json:"seq_errors"`
	Rebirths       uint64      `json:"rebirths_requested"`
	RebirthPending bool        `json:"rebirth_pending"`
	Metrics        int         `json:"metrics"`
	Devices        []spbDevice `json:"devices"`
}

func timeOrNull(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := t.UTC().Format(time.RFC3339Nano)
	return &s
}

// sparkplugNodes answers GET /api/v1/sparkplug/nodes: every edge node and
// device the host application knows, online or not, with sequence errors and
// rebirths requested.
func (s *Server) sparkplugNodes(w http.ResponseWriter, r *http.Request) {
	if s.spb == nil {
		writeError(w, http.StatusNotFound, "the Sparkplug host application is not enabled on this server", nil)
		return
	}
	out := []spbNode{}
	for _, n := range s.spb.SparkplugNodes() {
		sn := spbNode{Group: n.Group, EdgeNode: n.EdgeNode, Online: n.Online, LastBirth: timeOrNull(n.LastBirth),
			LastDeath: timeOrNull(n.LastDeath), LastSeq: n.LastSeq, SeqErrors: n.SeqErrors, Rebirths: n.Rebirths,
			RebirthPending: n.RebirthPending, Metrics: n.Metrics, Devices: []spbDevice{}}
		if n.HasBdSeq {
			bd := n.BdSeq
			sn.BdSeq = &bd
		}
		for _, d := range n.Devices {
			sn.Devices = append(sn.Devices, spbDevice{Name: d.Name, Online: d.Online, LastBirth: timeOrNull(d.LastBirth), LastDeath: timeOrNull(d.LastDeath), Metrics: d.Metrics})
		}
		out = append(out, sn)
	}
	writeJSON(w, http.StatusOK, map[string]any{"nodes": out})
}
