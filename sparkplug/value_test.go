package sparkplug

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	pb "github.com/millstream/millstream/sparkplug/sparkplugb"
	"google.golang.org/protobuf/proto"
)

func ms(x int64) time.Time { return time.UnixMilli(x).UTC() }

// roundTrip encodes v as dt into a metric, marshals a payload, decodes it and
// converts the metric back.
func roundTrip(t *testing.T, dt DataType, v Value) Value {
	t.Helper()
	m := &pb.Payload_Metric{Name: proto.String("m"), Datatype: proto.Uint32(uint32(dt))}
	if err := SetMetricValue(m, dt, v); err != nil {
		t.Fatalf("SetMetricValue(%s, %v): %v", dt, v, err)
	}
	b, err := Encode(&pb.Payload{Seq: proto.Uint64(1), Metrics: []*pb.Payload_Metric{m}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := Decode(b)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	got, err := MetricValue(p.Metrics[0], DataType(p.Metrics[0].GetDatatype()))
	if err != nil {
		t.Fatalf("MetricValue(%s): %v", dt, err)
	}
	return got
}

func sampleDataSet() Value {
	return Value{Kind: KindDataSet, DataSet: &DataSetValue{
		Columns: []string{"i8", "u32", "u64", "f", "d", "b", "s", "t"},
		Types:   []DataType{Int8, UInt32, UInt64, Float, Double, Boolean, String, DateTime},
		Rows: [][]Value{
			{IntValue(-5), UintValue(math.MaxUint32), UintValue(math.MaxUint64), FloatValue(1.5), FloatValue(-2.25), BoolValue(true), StringValue("a"), TimeValue(ms(1700000000123))},
			{Null(), UintValue(0), UintValue(1), FloatValue(0), FloatValue(math.Inf(1)), BoolValue(false), StringValue(""), Null()},
		},
	}}
}

func sampleTemplate() Value {
	inner := Value{Kind: KindTemplate, Template: &TemplateValue{
		TemplateRef: "Motor",
		Metrics:     []TemplateMetric{{Name: "RPM", Type: Int32, Value: IntValue(-1200)}},
	}}
	return Value{Kind: KindTemplate, Template: &TemplateValue{
		Version:      "v1",
		TemplateRef:  "Pump",
		IsDefinition: false,
		Parameters: []Parameter{
			{Name: "max", Type: Double, Value: FloatValue(99.5)},
			{Name: "tag", Type: String, Value: StringValue("P-101")},
			{Name: "unset", Type: Int16, Value: Null()},
		},
		Metrics: []TemplateMetric{
			{Name: "Temperature", Type: Float, Timestamp: 1700000000000, Value: FloatValue(21.5),
				Properties: []Property{{Key: "engUnit", Type: String, Value: StringValue("°C")}}},
			{Name: "Running", Type: Boolean, Value: BoolValue(true)},
			{Name: "Faults", Type: StringArray, Value: Value{Kind: KindStringArray, Strings: []string{"E1", ""}}},
			{Name: "Spare", Type: Int64, Value: Null()},
			{Name: "Motor", Type: Template, Value: inner},
		},
	}}
}

func TestRoundTripEveryDatatype(t *testing.T) {
	tests := []struct {
		dt DataType
		v  Value
	}{
		{Int8, IntValue(math.MinInt8)}, {Int8, IntValue(math.MaxInt8)}, {Int8, IntValue(-1)},
		{Int16, IntValue(math.MinInt16)}, {Int16, IntValue(math.MaxInt16)},
		{Int32, IntValue(math.MinInt32)}, {Int32, IntValue(math.MaxInt32)},
		{Int64, IntValue(math.MinInt64)}, {Int64, IntValue(math.MaxInt64)},
		{UInt8, UintValue(math.MaxUint8)}, {UInt16, UintValue(math.MaxUint16)},
		{UInt32, UintValue(math.MaxUint32)}, {UInt64, UintValue(math.MaxUint64)}, {UInt64, UintValue(0)},
		{Float, FloatValue(21.375)}, {Float, FloatValue(float64(float32(0.1)))}, {Float, FloatValue(math.Inf(-1))},
		{Double, FloatValue(0.1)}, {Double, FloatValue(-math.MaxFloat64)},
		{Boolean, BoolValue(true)}, {Boolean, BoolValue(false)},
		{String, StringValue("héllo")}, {String, StringValue("")},
		{Text, StringValue("line 1\nline 2")},
		{UUID, StringValue("123e4567-e89b-12d3-a456-426614174000")},
		{DateTime, TimeValue(ms(1700000000123))}, {DateTime, TimeValue(ms(-1))},
		{Bytes, BytesValue([]byte{0, 1, 2, 0xff})},
		{File, BytesValue([]byte("file contents"))},
		{DataSet, sampleDataSet()},
		{Template, sampleTemplate()},
		{Int8Array, Value{Kind: KindIntArray, Ints: []int64{-23, 123, math.MinInt8, math.MaxInt8}}},
		{Int16Array, Value{Kind: KindIntArray, Ints: []int64{-30000, 30000}}},
		{Int32Array, Value{Kind: KindIntArray, Ints: []int64{123456789, -987654321}}},
		{Int64Array, Value{Kind: KindIntArray, Ints: []int64{math.MinInt64, 0, math.MaxInt64}}},
		{UInt8Array, Value{Kind: KindUintArray, Uints: []uint64{0, 255}}},
		{UInt16Array, Value{Kind: KindUintArray, Uints: []uint64{65535, 1}}},
		{UInt32Array, Value{Kind: KindUintArray, Uints: []uint64{math.MaxUint32}}},
		{UInt64Array, Value{Kind: KindUintArray, Uints: []uint64{math.MaxUint64, 42}}},
		{FloatArray, Value{Kind: KindFloatArray, Floats: []float64{1.5, -0.25}}},
		{DoubleArray, Value{Kind: KindFloatArray, Floats: []float64{0.1, 1e300}}},
		{BooleanArray, Value{Kind: KindBoolArray, Bools: []bool{false, false, true, true, false, true, false, false, true, true, false, true}}},
		{BooleanArray, Value{Kind: KindBoolArray, Bools: []bool{}}},
		{StringArray, Value{Kind: KindStringArray, Strings: []string{"ABC", "hello", ""}}},
		{StringArray, Value{Kind: KindStringArray, Strings: []string{}}},
		{DateTimeArray, Value{Kind: KindTimeArray, Times: []time.Time{ms(1256102875335), ms(1656107875000)}}},
	}
	seen := map[DataType]bool{}
	for _, tc := range tests {
		seen[tc.dt] = true
		got := roundTrip(t, tc.dt, tc.v)
		if !reflect.DeepEqual(got, tc.v) {
			t.Errorf("%s: round trip of %v gave %v (%#v)", tc.dt, tc.v, got, got)
		}
		if null := roundTrip(t, tc.dt, Null()); null.Kind != KindNull {
			t.Errorf("%s: null round trip gave %v", tc.dt, null)
		}
	}
	for dt := Int8; dt <= DateTimeArray; dt++ {
		if dt != PropertySet && dt != PropertySetList && !seen[dt] {
			t.Errorf("no round trip test for %s", dt)
		}
	}
}

// TestArrayWireFormat checks the byte layouts against the Sparkplug 3.0 examples.
func TestArrayWireFormat(t *testing.T) {
	tests := []struct {
		dt   DataType
		v    Value
		wire []byte
	}{
		{Int32Array, Value{Kind: KindIntArray, Ints: []int64{123456789, 987654321}}, []byte{0x15, 0xCD, 0x5B, 0x07, 0xB1, 0x68, 0xDE, 0x3A}},
		{Int8Array, Value{Kind: KindIntArray, Ints: []int64{-23, 123}}, []byte{0xE9, 0x7B}},
		{Int16Array, Value{Kind: KindIntArray, Ints: []int64{-30000, 30000}}, []byte{0xD0, 0x8A, 0x30, 0x75}},
		{UInt16Array, Value{Kind: KindUintArray, Uints: []uint64{30, 52360}}, []byte{0x1E, 0x00, 0x88, 0xCC}},
		{DoubleArray, Value{Kind: KindFloatArray, Floats: []float64{1}}, []byte{0, 0, 0, 0, 0, 0, 0xF0, 0x3F}},
		{FloatArray, Value{Kind: KindFloatArray, Floats: []float64{1}}, []byte{0, 0, 0x80, 0x3F}},
		{BooleanArray, Value{Kind: KindBoolArray, Bools: []bool{false, false, true, true, false, true, false, false, true, true, false, true}},
			[]byte{0x0C, 0x00, 0x00, 0x00, 0x34, 0xD0}},
		{StringArray, Value{Kind: KindStringArray, Strings: []string{"ABC", "hello"}}, []byte{0x41, 0x42, 0x43, 0x00, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x00}},
		{DateTimeArray, Value{Kind: KindTimeArray, Times: []time.Time{ms(1256102875335)}}, []byte{0xC7, 0xD0, 0x90, 0x75, 0x24, 0x01, 0x00, 0x00}},
	}
	for _, tc := range tests {
		m := &pb.Payload_Metric{}
		if err := SetMetricValue(m, tc.dt, tc.v); err != nil {
			t.Fatalf("%s: %v", tc.dt, err)
		}
		if got := m.GetBytesValue(); !reflect.DeepEqual(got, tc.wire) {
			t.Errorf("%s: encoded % X, want % X", tc.dt, got, tc.wire)
		}
	}
}

func TestMetricValueWireVariants(t *testing.T) {
	intv := func(x uint32) *pb.Payload_Metric {
		return &pb.Payload_Metric{Value: &pb.Payload_Metric_IntValue{IntValue: x}}
	}
	longv := func(x uint64) *pb.Payload_Metric {
		return &pb.Payload_Metric{Value: &pb.Payload_Metric_LongValue{LongValue: x}}
	}
	tests := []struct {
		m    *pb.Payload_Metric
		dt   DataType
		want Value
	}{
		{intv(0xFFFFFFFF), Int8, IntValue(-1)}, // sign-extended
		{intv(0xFF), Int8, IntValue(-1)},       // not sign-extended
		{intv(0x8000), Int16, IntValue(math.MinInt16)},
		{longv(0xFFFFFFFF), Int32, IntValue(-1)},
		{longv(4000000000), UInt32, UintValue(4000000000)}, // older Tahu: UInt32 in long_value
		{intv(7), UInt64, UintValue(7)},
		{intv(1000), DateTime, TimeValue(ms(1000))},
		{&pb.Payload_Metric{IsNull: proto.Bool(true), Value: &pb.Payload_Metric_IntValue{IntValue: 3}}, Int32, Null()},
	}
	for _, tc := range tests {
		got, err := MetricValue(tc.m, tc.dt)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("MetricValue(%v, %s) = %v, %v; want %v", tc.m, tc.dt, got, err, tc.want)
		}
	}
}

func TestMetricValueErrors(t *testing.T) {
	bytesv := func(b ...byte) *pb.Payload_Metric {
		return &pb.Payload_Metric{Value: &pb.Payload_Metric_BytesValue{BytesValue: b}}
	}
	tests := []struct {
		m    *pb.Payload_Metric
		dt   DataType
		want string
	}{
		{&pb.Payload_Metric{}, Int32, "no value and is_null not set"},
		{&pb.Payload_Metric{Value: &pb.Payload_Metric_StringValue{StringValue: "x"}}, Int32, "carried in string_value, want int_value"},
		{&pb.Payload_Metric{Value: &pb.Payload_Metric_IntValue{IntValue: 256}}, UInt8, "256 out of range (max 255)"},
		{&pb.Payload_Metric{Value: &pb.Payload_Metric_LongValue{LongValue: 1 << 32}}, UInt32, "out of range"},
		{&pb.Payload_Metric{Value: &pb.Payload_Metric_DoubleValue{DoubleValue: 1}}, Float, "carried in double_value, want float_value"},
		{&pb.Payload_Metric{Value: &pb.Payload_Metric_IntValue{IntValue: 1}}, DataType(99), "unknown or unsupported datatype"},
		{&pb.Payload_Metric{Value: &pb.Payload_Metric_IntValue{IntValue: 1}}, Unknown, "unknown or unsupported datatype"},
		{&pb.Payload_Metric{Value: &pb.Payload_Metric_ExtensionValue{}}, Int32, "carried in extension_value"},
		{bytesv(1, 2, 3), Int16Array, "3 bytes is not a multiple of the 2-byte element"},
		{bytesv(1, 0), BooleanArray, "want at least the 4-byte count"},
		{bytesv(9, 0, 0, 0, 0xff), BooleanArray, "count 9 needs 6 bytes, got 5"},
		{bytesv(0xff, 0xff, 0xff, 0xff), BooleanArray, "needs 536870916 bytes"},
		{bytesv('a', 0, 'b'), StringArray, "element 1 is not NUL-terminated"},
		{bytesv(0xff, 0), StringArray, "element 0 is not valid UTF-8"},
		{&pb.Payload_Metric{Value: &pb.Payload_Metric_DatasetValue{DatasetValue: &pb.Payload_DataSet{
			Columns: []string{"a"}, Types: []uint32{uint32(Int32)},
			Rows: []*pb.Payload_DataSet_Row{{}},
		}}}, DataSet, "row 0 has 0 elements, want 1"},
		{&pb.Payload_Metric{Value: &pb.Payload_Metric_DatasetValue{DatasetValue: &pb.Payload_DataSet{
			NumOfColumns: proto.Uint64(2), Columns: []string{"a"}, Types: []uint32{uint32(Int32)},
		}}}, DataSet, "num_of_columns is 2 but 1 columns"},
	}
	for _, tc := range tests {
		_, err := MetricValue(tc.m, tc.dt)
		var ve *ValueError
		if !errors.As(err, &ve) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("MetricValue(%v, %s) error = %v, want a *ValueError containing %q", tc.m, tc.dt, err, tc.want)
		}
	}
}

func TestSetMetricValueErrors(t *testing.T) {
	tests := []struct {
		dt   DataType
		v    Value
		want string
	}{
		{Int8, IntValue(128), "out of range [-128, 127]"},
		{UInt16, IntValue(-1), "cannot encode a int value"},
		{UInt16, UintValue(65536), "out of range (max 65535)"},
		{Int64, UintValue(math.MaxUint64), "cannot encode a uint value"},
		{Boolean, IntValue(1), "cannot encode a int value"},
		{String, BytesValue(nil), "cannot encode a bytes value"},
		{DateTime, IntValue(5), "cannot encode a int value"},
		{PropertySet, Value{Kind: KindPropertySet}, "is not a metric datatype"},
		{UInt8Array, Value{Kind: KindUintArray, Uints: []uint64{256}}, "element 0 (256) out of range"},
		{StringArray, Value{Kind: KindStringArray, Strings: []string{"a\x00b"}}, "contains a NUL byte"},
		{DataSet, Value{Kind: KindDataSet, DataSet: &DataSetValue{Columns: []string{"a"}, Types: []DataType{Int8Array}, Rows: [][]Value{{{Kind: KindIntArray}}}}}, "not a DataSet column type"},
		{Unknown, IntValue(1), "unknown or unsupported datatype"},
	}
	for _, tc := range tests {
		err := SetMetricValue(&pb.Payload_Metric{}, tc.dt, tc.v)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("SetMetricValue(%s, %v) = %v, want error containing %q", tc.dt, tc.v, err, tc.want)
		}
	}
	// Integer kinds convert when in range; integers convert to floating point.
	m := &pb.Payload_Metric{}
	if err := SetMetricValue(m, UInt8, IntValue(200)); err != nil || m.GetIntValue() != 200 {
		t.Errorf("UInt8 from IntValue(200): %v, %v", m, err)
	}
	if err := SetMetricValue(m, Double, IntValue(3)); err != nil || m.GetDoubleValue() != 3 {
		t.Errorf("Double from IntValue(3): %v, %v", m, err)
	}
	if err := SetMetricValue(m, Int8, IntValue(-1)); err != nil || m.GetIntValue() != 0xFFFFFFFF {
		t.Errorf("Int8 -1 is sign-extended into int_value: %v, %v", m, err)
	}
	if err := SetMetricValue(m, Int8, Null()); err != nil || !m.GetIsNull() || m.Value != nil {
		t.Errorf("null: %v, %v", m, err)
	}
}

func TestProperties(t *testing.T) {
	props := []Property{
		{Key: "engUnit", Type: String, Value: StringValue("kPa")},
		{Key: "Quality", Type: Int32, Value: IntValue(192)},
		{Key: "scale", Type: Double, Value: FloatValue(0.5)},
		{Key: "lo", Type: Int64, Value: Null()},
		{Key: "nested", Type: PropertySet, Value: Value{Kind: KindPropertySet, Properties: []Property{{Key: "a", Type: Boolean, Value: BoolValue(true)}}}},
		{Key: "list", Type: PropertySetList, Value: Value{Kind: KindPropertySetList, PropertySets: [][]Property{
			{{Key: "x", Type: UInt64, Value: UintValue(math.MaxUint64)}},
			{},
		}}},
	}
	ps, err := EncodeProperties(props)
	if err != nil {
		t.Fatal(err)
	}
	b, err := proto.Marshal(ps)
	if err != nil {
		t.Fatal(err)
	}
	var back pb.Payload_PropertySet
	if err := proto.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	got, err := Properties(&back)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, props) {
		t.Errorf("properties round trip:\n got %+v\nwant %+v", got, props)
	}
	if _, err := Properties(&pb.Payload_PropertySet{Keys: []string{"a", "b"}}); err == nil {
		t.Error("Properties with 2 keys and 0 values: no error")
	}
}

func TestDecodeLimits(t *testing.T) {
	if _, err := Decode(make([]byte, MaxPayloadSize+1)); !errors.Is(err, ErrPayloadTooLarge) {
		t.Errorf("oversized payload: %v, want ErrPayloadTooLarge", err)
	}
	if _, err := Decode([]byte{0x0a}); err == nil {
		t.Error("truncated payload: no error")
	}
	p, err := Decode(nil)
	if err != nil || len(p.Metrics) != 0 {
		t.Errorf("empty payload: %v, %v", p, err)
	}
}

func TestTemplateDepthLimit(t *testing.T) {
	tpl := &pb.Payload_Template{}
	for range maxDepth + 2 {
		tpl = &pb.Payload_Template{Metrics: []*pb.Payload_Metric{{
			Name: proto.String("m"), Datatype: proto.Uint32(uint32(Template)),
			Value: &pb.Payload_Metric_TemplateValue{TemplateValue: tpl},
		}}}
	}
	m := &pb.Payload_Metric{Value: &pb.Payload_Metric_TemplateValue{TemplateValue: tpl}}
	if _, err := MetricValue(m, Template); err == nil || !strings.Contains(err.Error(), "nested deeper") {
		t.Errorf("deep template: %v", err)
	}
}
