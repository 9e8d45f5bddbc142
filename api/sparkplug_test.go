package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/millstream/millstream/sparkplug"
	pb "github.com/millstream/millstream/sparkplug/sparkplugb"
)

type hostNodes struct{ h *sparkplug.Host }

func (h hostNodes) SparkplugNodes() []sparkplug.NodeState { return h.h.Nodes() }

func TestSparkplugNodes(t *testing.T) {
	h := sparkplug.NewHost(sparkplug.HostOptions{})
	bd := &pb.Payload_Metric{Name: proto.String("bdSeq"), Datatype: proto.Uint32(uint32(sparkplug.UInt64))}
	temp := &pb.Payload_Metric{Name: proto.String("Temperature"), Alias: proto.Uint64(1), Datatype: proto.Uint32(uint32(sparkplug.Double))}
	if err := sparkplug.SetMetricValue(bd, sparkplug.UInt64, sparkplug.UintValue(4)); err != nil {
		t.Fatal(err)
	}
	if err := sparkplug.SetMetricValue(temp, sparkplug.Double, sparkplug.FloatValue(20)); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	birth := sparkplug.Topic{Type: sparkplug.NBIRTH, Group: "acme", EdgeNode: "press7"}
	if _, err := h.Handle(birth, &pb.Payload{Seq: proto.Uint64(0), Metrics: []*pb.Payload_Metric{bd, temp}}, at); err != nil {
		t.Fatal(err)
	}
	srv := New(Options{Log: openLog(t), Sparkplug: hostNodes{h}}).Handler()
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/sparkplug/nodes", nil))
	var body struct {
		Nodes []map[string]any `json:"nodes"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != 200 {
		t.Fatalf("%d %v: %s", rec.Code, err, rec.Body)
	}
	if len(body.Nodes) != 1 {
		t.Fatalf("nodes: %v", body.Nodes)
	}
	n := body.Nodes[0]
	if n["group"] != "acme" || n["edge_node"] != "press7" || n["online"] != true || n["bd_seq"] != 4.0 || n["last_birth"] != "2026-11-23T09:00:00Z" || n["last_death"] != nil {
		t.Errorf("node %v", n)
	}

	rec = httptest.NewRecorder()
	New(Options{Log: openLog(t)}).Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/sparkplug/nodes", nil))
	if rec.Code != 404 {
		t.Errorf("without a host: %d", rec.Code)
	}
}
