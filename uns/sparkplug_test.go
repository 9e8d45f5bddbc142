package uns

import (
	"context"
	"io"
	"log/slog"
	"math"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/millstream/millstream/log"
	"github.com/millstream/millstream/sparkplug"
	pb "github.com/millstream/millstream/sparkplug/sparkplugb"
)

func spbMetric(t *testing.T, name string, alias uint64, dt sparkplug.DataType, v sparkplug.Value) *pb.Payload_Metric {
	t.Helper()
	m := &pb.Payload_Metric{Alias: proto.Uint64(alias)}
	if name != "" {
		m.Name = proto.String(name)
		m.Datatype = proto.Uint32(uint32(dt))
	}
	if err := sparkplug.SetMetricValue(m, dt, v); err != nil {
		t.Fatal(err)
	}
	return m
}

func ingestSpb(t *testing.T, l log.Log, topic string, seq uint64, ms ...*pb.Payload_Metric) {
	t.Helper()
	b, err := sparkplug.Encode(&pb.Payload{Seq: proto.Uint64(seq), Timestamp: proto.Uint64(uint64(received.UnixMilli())), Metrics: ms})
	if err != nil {
		t.Fatal(err)
	}
	ingest(t, l, topic, string(b))
}

// TestNormalizerSparkplug: a birth, then data by alias, become named, typed
// points; after a restart the host resumes from its checkpoint, so the next
// data message resolves its aliases without a rebirth.
func TestNormalizerSparkplug(t *testing.T) {
	l := openLog(t)
	if err := l.CreateTopic(context.Background(), "mqtt.ingress", log.TopicConfig{}); err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ingestSpb(t, l, "spBv1.0/acme/NBIRTH/press7", 0,
		spbMetric(t, "bdSeq", 0, sparkplug.UInt64, sparkplug.UintValue(1)),
		spbMetric(t, "Motor/Temperature", 1, sparkplug.Double, sparkplug.FloatValue(20.5)),
		spbMetric(t, "Count", 2, sparkplug.Int32, sparkplug.IntValue(7)))
	ingestSpb(t, l, "spBv1.0/acme/NDATA/press7", 1,
		spbMetric(t, "", 1, sparkplug.Double, sparkplug.FloatValue(21.5)))

	tree := NewTree()
	n := NewNormalizer(l, NormalizerOptions{Logger: quiet, Tree: tree, TreeWindow: 100 * 365 * 24 * 3600e9})
	runUntil(t, l, n, 4) // the birth's three metrics (bdSeq included) and the data
	v, ok := tree.Browse("acme/press7/Motor/Temperature")
	if !ok || v.Point == nil {
		t.Fatalf("no point for the aliased metric: %+v", v)
	}
	if f, _ := v.Point.Value.Float(); f != 21.5 || v.Point.Source != "spb:acme/press7" || v.Point.Quality != Good {
		t.Errorf("Motor/Temperature = %+v", v.Point)
	}
	if n.m.rebirths.Load() != 0 {
		t.Errorf("%d rebirths requested", n.m.rebirths.Load())
	}
	if nodes := n.SparkplugNodes(); len(nodes) != 1 || !nodes[0].Online || nodes[0].EdgeNode != "press7" {
		t.Errorf("SparkplugNodes: %+v", nodes)
	}
	before := len(readAll(t, l, PointsTopic))

	// Restart: the next NDATA (seq 2) must resolve alias 2 from the
	// checkpointed birth.
	ingestSpb(t, l, "spBv1.0/acme/NDATA/press7", 2,
		spbMetric(t, "", 2, sparkplug.Int32, sparkplug.IntValue(8)))
	n2 := NewNormalizer(l, NormalizerOptions{Logger: quiet, Tree: NewTree(), TreeWindow: 100 * 365 * 24 * 3600e9})
	runUntil(t, l, n2, before+1)
	if n2.m.rebirths.Load() != 0 {
		t.Errorf("restart needed %d rebirths: the host state was not restored", n2.m.rebirths.Load())
	}
	recs := readAll(t, l, PointsTopic)
	if len(recs) != before+1 {
		t.Fatalf("uns.points has %d records, want %d (the restart re-wrote or lost points)", len(recs), before+1)
	}
	found := false
	for _, r := range recs {
		p, err := ParsePointJSON(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		if i, _ := p.Value.Int(); p.Path == "acme/press7/Count" && i == 8 {
			found = true
		}
	}
	if !found {
		t.Error("no point acme/press7/Count = 8 after the restart")
	}
}

// TestSparkplugComplexValues: arrays and DataSets become string points with
// their JSON, Template instances one point per member, definitions none.
func TestSparkplugComplexValues(t *testing.T) {
	ts := received
	up := func(name string, v sparkplug.Value) sparkplug.MetricUpdate {
		return sparkplug.MetricUpdate{Group: "g", EdgeNode: "n", Device: "d", Name: name, Value: v, Timestamp: ts}
	}
	nan := sparkplug.Value{Kind: sparkplug.KindFloatArray, Floats: []float64{1.5, math.NaN(), -2}}
	ds := sparkplug.Value{Kind: sparkplug.KindDataSet, DataSet: &sparkplug.DataSetValue{
		Columns: []string{"step", "ok"}, Types: []sparkplug.DataType{sparkplug.Int32, sparkplug.Boolean},
		Rows: [][]sparkplug.Value{{sparkplug.IntValue(1), sparkplug.BoolValue(true)}, {sparkplug.IntValue(2), sparkplug.Null()}}}}
	inner := &sparkplug.TemplateValue{TemplateRef: "Axis", Metrics: []sparkplug.TemplateMetric{{Name: "Pos", Type: sparkplug.Double, Value: sparkplug.FloatValue(3.25), Timestamp: 1000}}}
	tpl := sparkplug.Value{Kind: sparkplug.KindTemplate, Template: &sparkplug.TemplateValue{TemplateRef: "Motor", Metrics: []sparkplug.TemplateMetric{
		{Name: "Speed", Type: sparkplug.Float, Value: sparkplug.FloatValue(12.5),
			Properties: []sparkplug.Property{{Key: sparkplug.EngUnitProperty, Type: sparkplug.String, Value: sparkplug.StringValue("rpm")}}},
		{Name: "X", Type: sparkplug.Template, Value: sparkplug.Value{Kind: sparkplug.KindTemplate, Template: inner}},
	}}}
	def := sparkplug.Value{Kind: sparkplug.KindTemplate, Template: &sparkplug.TemplateValue{IsDefinition: true}}
	props := sparkplug.Value{Kind: sparkplug.KindPropertySet}

	pts, dropped := sparkplugPoints(nil, []sparkplug.MetricUpdate{
		up("Bits", sparkplug.Value{Kind: sparkplug.KindBoolArray, Bools: []bool{true, false}}),
		up("Spectrum", nan),
		up("Names", sparkplug.Value{Kind: sparkplug.KindStringArray, Strings: []string{"a\"b", "c"}}),
		up("Recipe", ds),
		up("Motor1", tpl),
		up("_types_/Motor", def),
		up("Props", props),
	})
	if dropped != 1 {
		t.Errorf("dropped %d, want 1 (the property set)", dropped)
	}
	got := map[string]string{}
	for _, p := range pts {
		got[p.Path] = p.Value.Kind().String() + " " + p.Value.String() + " " + p.Unit + " " + p.Time.Format(time.RFC3339)
	}
	at := ts.Format(time.RFC3339)
	want := map[string]string{
		"g/n/d/Bits":         `string [true,false]  ` + at,
		"g/n/d/Spectrum":     `string [1.5,null,-2]  ` + at,
		"g/n/d/Names":        `string ["a\"b","c"]  ` + at,
		"g/n/d/Recipe":       `string {"columns":["step","ok"],"types":["Int32","Boolean"],"rows":[[1,true],[2,null]]}  ` + at,
		"g/n/d/Motor1/Speed": `float 12.5 rpm ` + at,
		"g/n/d/Motor1/X/Pos": `float 3.25  ` + time.UnixMilli(1000).UTC().Format(time.RFC3339),
	}
	if len(got) != len(want) {
		t.Errorf("points %v", got)
	}
	for path, w := range want {
		if got[path] != w {
			t.Errorf("%s = %q, want %q", path, got[path], w)
		}
	}
}
