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
	"github.com/millstream/millstream/uns/unspb"
)

func protoTestPoints() []Point {
	t := time.Date(2026, 11, 23, 8, 0, 0, 123456789, time.UTC)
	return []Point{
		{Path: "acme/p1/press7/temp", Time: t, Value: FloatValue(21.5), Quality: Good, Unit: "°C", Source: "mqtt:acme/p1/press7/temp"},
		{Path: "a/b", Time: t, Value: FloatValue(math.NaN()), Quality: Uncertain},
		{Path: "a/b", Time: t, Value: FloatValue(0), Quality: Good},
		{Path: "a/c", Time: t, Value: IntValue(-1 << 62), Quality: Stale, Source: "spb:g/n"},
		{Path: "a/c", Time: t, Value: IntValue(0)},
		{Path: "a/d", Time: t, Value: UintValue(math.MaxUint64)},
		{Path: "a/e", Time: t, Value: BoolValue(false)},
		{Path: "a/f", Time: t, Value: StringValue("")},
		{Path: "a/g", Time: t, Value: BytesValue([]byte{0, 0xff})},
		{Path: "a/h", Time: t, Quality: Bad},
		{Path: "a/i", Time: time.Unix(0, 0).UTC(), Value: IntValue(1)},
	}
}

// TestPointProtoMatchesTheSchema: the hand-written encoding is the message
// docs/uns_points.proto defines, checked both ways against the code protoc
// generates from that file.
func TestPointProtoMatchesTheSchema(t *testing.T) {
	for _, p := range protoTestPoints() {
		b := AppendPointProto(nil, &p)
		var m unspb.Point
		if err := proto.Unmarshal(b, &m); err != nil {
			t.Fatalf("%+v: generated code cannot read it: %v", p, err)
		}
		if m.GetPath() != p.Path || m.GetTimeUnixNano() != p.Time.UnixNano() || m.GetUnit() != p.Unit || m.GetSource() != p.Source || int(m.GetQuality()) != int(p.Quality) {
			t.Errorf("%+v read by the generated code as %v", p, &m)
		}
		switch p.Value.Kind() {
		case Float:
			f, _ := p.Value.Float()
			if g, ok := m.Value.(*unspb.Point_FloatValue); !ok || math.Float64bits(g.FloatValue) != math.Float64bits(f) {
				t.Errorf("%v: float value %v", p.Value, m.Value)
			}
		case Int:
			i, _ := p.Value.Int()
			if g, ok := m.Value.(*unspb.Point_IntValue); !ok || g.IntValue != i {
				t.Errorf("%v: int value %v", p.Value, m.Value)
			}
		case Uint:
			u, _ := p.Value.Uint()
			if g, ok := m.Value.(*unspb.Point_UintValue); !ok || g.UintValue != u {
				t.Errorf("%v: uint value %v", p.Value, m.Value)
			}
		case Bool:
			bv, _ := p.Value.Bool()
			if g, ok := m.Value.(*unspb.Point_BoolValue); !ok || g.BoolValue != bv {
				t.Errorf("%v: bool value %v", p.Value, m.Value)
			}
		case String:
			s, _ := p.Value.Str()
			if g, ok := m.Value.(*unspb.Point_StringValue); !ok || g.StringValue != s {
				t.Errorf("%v: string value %v", p.Value, m.Value)
			}
		case Bytes:
			by, _ := p.Value.Bytes()
			if g, ok := m.Value.(*unspb.Point_BytesValue); !ok || string(g.BytesValue) != string(by) {
				t.Errorf("%v: bytes value %v", p.Value, m.Value)
			}
		case Null:
			if m.Value != nil {
				t.Errorf("null written as %v", m.Value)
			}
		}

		// What the generated code writes, we read.
		gb, err := proto.Marshal(&m)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParsePointProto(gb)
		if err != nil {
			t.Fatalf("%+v: %v", p, err)
		}
		if !samePoint(back, p) {
			t.Errorf("round trip through the generated code: %+v, want %+v", back, p)
		}
		rec := &log.Record{Value: b, Headers: []log.Header{{Key: HeaderContentType, Value: contentTypeProto}}}
		if viaRecord, err := ParsePointRecord(rec); err != nil || !samePoint(viaRecord, p) {
			t.Errorf("ParsePointRecord: %+v %v", viaRecord, err)
		}
	}
	if _, err := ParsePointProto([]byte{0x48, 9}); err == nil { // quality 9
		t.Error("quality out of range accepted")
	}
	if _, err := ParsePointProto([]byte{0x0d, 0, 0, 0, 0}); err == nil { // path as fixed32
		t.Error("wrong wire type accepted")
	}
}

func samePoint(a, b Point) bool {
	af, aok := a.Value.Float()
	bf, bok := b.Value.Float()
	if a.Value.Kind() == Float && b.Value.Kind() == Float && aok && bok && math.IsNaN(af) && math.IsNaN(bf) {
		a.Value, b.Value = Value{}, Value{}
	}
	return a.Path == b.Path && a.Time.Equal(b.Time) && a.Value == b.Value && a.Quality == b.Quality && a.Unit == b.Unit && a.Source == b.Source
}

func FuzzPointProto(f *testing.F) {
	for _, p := range protoTestPoints() {
		f.Add(AppendPointProto(nil, &p))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePointProto(b)
		if err != nil {
			return
		}
		// What we read, we write back to the same point.
		again, err := ParsePointProto(AppendPointProto(nil, &p))
		if err != nil || !samePoint(again, p) {
			t.Fatalf("re-encoding %+v gave %+v, %v", p, again, err)
		}
	})
}

func BenchmarkAppendPointProto(b *testing.B) {
	p := protoTestPoints()[0]
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendPointProto(buf[:0], &p)
	}
}

// BenchmarkPointFormats reports the size of a typical Sparkplug point in
// each record format (bytes/point) and the cost of writing it.
func BenchmarkPointFormats(b *testing.B) {
	p := Point{Path: "Plant1/Edge3/Filler2/Line/Temperature", Time: time.Date(2026, 11, 23, 8, 0, 0, 123e6, time.UTC),
		Value: FloatValue(21.57), Quality: Good, Unit: "degC", Source: "spb:Plant1/Edge3/Filler2"}
	for _, f := range []struct {
		name string
		enc  func([]byte, *Point) []byte
	}{{FormatJSON, AppendPointJSON}, {FormatProtobuf, AppendPointProto}} {
		b.Run(f.name, func(b *testing.B) {
			var buf []byte
			b.ReportAllocs()
			for b.Loop() {
				buf = f.enc(buf[:0], &p)
			}
			b.ReportMetric(float64(len(buf)), "bytes/point")
		})
	}
}

// TestNormalizerProtobufFormat: with FormatProtobuf the points are written
// as protobuf with its content type, and a restart loads the namespace tree
// from them.
func TestNormalizerProtobufFormat(t *testing.T) {
	l := openLog(t)
	if err := l.CreateTopic(context.Background(), "mqtt.ingress", log.TopicConfig{}); err != nil {
		t.Fatal(err)
	}
	ingest(t, l, "acme/p1/press7", `{"temp":21.5,"count":7}`)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	runUntil(t, l, NewNormalizer(l, NormalizerOptions{Format: FormatProtobuf, Logger: quiet}), 2)
	for _, r := range readAll(t, l, PointsTopic) {
		if ct, _ := r.HeaderValue(HeaderContentType); string(ct) != ContentTypeProto {
			t.Errorf("content type %q", ct)
		}
		if _, err := ParsePointProto(r.Value); err != nil {
			t.Errorf("record %d: %v", r.Offset, err)
		}
	}
	tree := NewTree()
	ingest(t, l, "acme/p1/press8", `1`)
	runUntil(t, l, NewNormalizer(l, NormalizerOptions{Format: FormatProtobuf, Logger: quiet, Tree: tree, TreeWindow: 100 * 365 * 24 * time.Hour}), 3)
	v, ok := tree.Browse("acme/p1/press7/temp")
	if !ok || v.Point == nil {
		t.Fatal("the tree was not loaded from protobuf points")
	}
	if f, _ := v.Point.Value.Float(); f != 21.5 {
		t.Errorf("temp = %v", v.Point.Value)
	}
}
