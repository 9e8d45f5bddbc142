package sparkplug

import (
	"testing"
	"time"

	pb "github.com/millstream/millstream/sparkplug/sparkplugb"
	"google.golang.org/protobuf/proto"
)

// ddata builds a DDATA payload with n metrics of mixed types, addressed by alias
// as an edge node sends them after its birth.
func ddata(n int) *pb.Payload {
	p := &pb.Payload{Timestamp: proto.Uint64(1700000000000), Seq: proto.Uint64(7)}
	types := []DataType{Double, Float, Int32, UInt64, Boolean, String, Int16, DateTime, Int64, UInt8}
	for i := range n {
		dt := types[i%len(types)]
		m := &pb.Payload_Metric{Alias: proto.Uint64(uint64(i)), Timestamp: proto.Uint64(1700000000000 + uint64(i))}
		var v Value
		switch dt {
		case Double:
			v = FloatValue(21.37 + float64(i))
		case Float:
			v = FloatValue(3.5)
		case Int32, Int16, Int64:
			v = IntValue(-int64(i) * 100)
		case UInt64, UInt8:
			v = UintValue(uint64(i))
		case Boolean:
			v = BoolValue(i%2 == 0)
		case String:
			v = StringValue("RUNNING")
		case DateTime:
			v = TimeValue(time.UnixMilli(1700000000000).UTC())
		}
		if err := SetMetricValue(m, dt, v); err != nil {
			panic(err)
		}
		m.Datatype = proto.Uint32(uint32(dt))
		p.Metrics = append(p.Metrics, m)
	}
	return p
}

func FuzzDecode(f *testing.F) {
	seed := func(p *pb.Payload) {
		b, err := proto.Marshal(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed(ddata(10))
	for _, tc := range []struct {
		dt DataType
		v  Value
	}{
		{DataSet, sampleDataSet()},
		{Template, sampleTemplate()},
		{BooleanArray, Value{Kind: KindBoolArray, Bools: []bool{true, false, true}}},
		{StringArray, Value{Kind: KindStringArray, Strings: []string{"a", "b"}}},
		{Int32Array, Value{Kind: KindIntArray, Ints: []int64{1, -1}}},
	} {
		m := &pb.Payload_Metric{Name: proto.String("x"), Datatype: proto.Uint32(uint32(tc.dt))}
		if err := SetMetricValue(m, tc.dt, tc.v); err != nil {
			f.Fatal(err)
		}
		seed(&pb.Payload{Metrics: []*pb.Payload_Metric{m}})
	}
	ps, err := EncodeProperties([]Property{{Key: "engUnit", Type: String, Value: StringValue("m/s")}})
	if err != nil {
		f.Fatal(err)
	}
	seed(&pb.Payload{Metrics: []*pb.Payload_Metric{{Name: proto.String("p"), Properties: ps, IsNull: proto.Bool(true)}}})
	f.Add([]byte{})
	f.Add([]byte{0x12, 0x02, 0x50, 0x01})

	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Decode(b)
		if err != nil {
			return
		}
		for _, m := range p.GetMetrics() {
			// The metric's own datatype, as in a birth, then every datatype, as a
			// host with a stale or wrong birth would try.
			if v, err := MetricValue(m, DataType(m.GetDatatype())); err == nil {
				// Whatever decodes re-encodes as the same datatype.
				if err := SetMetricValue(&pb.Payload_Metric{}, DataType(m.GetDatatype()), v); err != nil {
					t.Fatalf("re-encoding %v as %s: %v", v, DataType(m.GetDatatype()), err)
				}
			}
			for dt := Unknown; dt <= DateTimeArray+1; dt++ {
				v, err := MetricValue(m, dt)
				if err == nil {
					_ = v.String()
				}
			}
			if m.Properties != nil {
				_, _ = Properties(m.Properties)
			}
		}
	})
}

func BenchmarkDecodeDDATA(b *testing.B) {
	const n = 10
	msg, err := proto.Marshal(ddata(n))
	if err != nil {
		b.Fatal(err)
	}
	// The datatypes a host knows from the birth, by alias.
	types := make([]DataType, n)
	for i, m := range ddata(n).Metrics {
		types[i] = DataType(m.GetDatatype())
	}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		p, err := Decode(msg)
		if err != nil {
			b.Fatal(err)
		}
		for _, m := range p.Metrics {
			if _, err := MetricValue(m, types[m.GetAlias()]); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "metrics/s")
}
