package sparkplug

import (
	"math"
	"time"

	pb "github.com/millstream/millstream/sparkplug/sparkplugb"
	"google.golang.org/protobuf/proto"
)

// maxDepth bounds the nesting of templates and property sets during conversion.
const maxDepth = 32

// field names the oneof member that carries a value on the wire.
type field uint8

const (
	fNone field = iota
	fInt
	fLong
	fFloat
	fDouble
	fBool
	fString
	fBytes
	fDataSet
	fTemplate
	fPropertySet
	fPropertySetList
	fExtension
)

var fieldNames = [...]string{"no value", "int_value", "long_value", "float_value", "double_value",
	"boolean_value", "string_value", "bytes_value", "dataset_value", "template_value",
	"propertyset_value", "propertysets_value", "extension_value"}

// raw is the wire form of a value, shared by Metric, DataSetValue, Template.Parameter
// and PropertyValue, whose oneofs are subsets of the same fields.
type raw struct {
	f     field
	u64   uint64 // int_value (zero-extended) and long_value
	f32   float32
	f64   float64
	b     bool
	s     string
	bytes []byte
	ds    *pb.Payload_DataSet
	tpl   *pb.Payload_Template
	ps    *pb.Payload_PropertySet
	psl   *pb.Payload_PropertySetList
}

// MetricValue converts the value of m to a Value, interpreting it as datatype (the
// metric's datatype from its birth certificate; DATA messages usually omit it).
// A metric with is_null set converts to the null Value. A metric with no value and
// no is_null, or with a value field that does not fit the datatype, is an error.
func MetricValue(m *pb.Payload_Metric, datatype DataType) (Value, error) {
	return metricValue(m, datatype, 0)
}

func metricValue(m *pb.Payload_Metric, dt DataType, depth int) (Value, error) {
	if m.GetIsNull() {
		return Null(), nil
	}
	return fromRaw(dt, metricRaw(m), depth)
}

func metricRaw(m *pb.Payload_Metric) raw {
	switch v := m.GetValue().(type) {
	case *pb.Payload_Metric_IntValue:
		return raw{f: fInt, u64: uint64(v.IntValue)}
	case *pb.Payload_Metric_LongValue:
		return raw{f: fLong, u64: v.LongValue}
	case *pb.Payload_Metric_FloatValue:
		return raw{f: fFloat, f32: v.FloatValue}
	case *pb.Payload_Metric_DoubleValue:
		return raw{f: fDouble, f64: v.DoubleValue}
	case *pb.Payload_Metric_BooleanValue:
		return raw{f: fBool, b: v.BooleanValue}
	case *pb.Payload_Metric_StringValue:
		return raw{f: fString, s: v.StringValue}
	case *pb.Payload_Metric_BytesValue:
		return raw{f: fBytes, bytes: v.BytesValue}
	case *pb.Payload_Metric_DatasetValue:
		return raw{f: fDataSet, ds: v.DatasetValue}
	case *pb.Payload_Metric_TemplateValue:
		return raw{f: fTemplate, tpl: v.TemplateValue}
	case *pb.Payload_Metric_ExtensionValue:
		return raw{f: fExtension}
	}
	return raw{}
}

func dataSetRaw(d *pb.Payload_DataSet_DataSetValue) raw {
	switch v := d.GetValue().(type) {
	case *pb.Payload_DataSet_DataSetValue_IntValue:
		return raw{f: fInt, u64: uint64(v.IntValue)}
	case *pb.Payload_DataSet_DataSetValue_LongValue:
		return raw{f: fLong, u64: v.LongValue}
	case *pb.Payload_DataSet_DataSetValue_FloatValue:
		return raw{f: fFloat, f32: v.FloatValue}
	case *pb.Payload_DataSet_DataSetValue_DoubleValue:
		return raw{f: fDouble, f64: v.DoubleValue}
	case *pb.Payload_DataSet_DataSetValue_BooleanValue:
		return raw{f: fBool, b: v.BooleanValue}
	case *pb.Payload_DataSet_DataSetValue_StringValue:
		return raw{f: fString, s: v.StringValue}
	case *pb.Payload_DataSet_DataSetValue_ExtensionValue:
		return raw{f: fExtension}
	}
	return raw{}
}

func parameterRaw(p *pb.Payload_Template_Parameter) raw {
	switch v := p.GetValue().(type) {
	case *pb.Payload_Template_Parameter_IntValue:
		return raw{f: fInt, u64: uint64(v.IntValue)}
	case *pb.Payload_Template_Parameter_LongValue:
		return raw{f: fLong, u64: v.LongValue}
	case *pb.Payload_Template_Parameter_FloatValue:
		return raw{f: fFloat, f32: v.FloatValue}
	case *pb.Payload_Template_Parameter_DoubleValue:
		return raw{f: fDouble, f64: v.DoubleValue}
	case *pb.Payload_Template_Parameter_BooleanValue:
		return raw{f: fBool, b: v.BooleanValue}
	case *pb.Payload_Template_Parameter_StringValue:
		return raw{f: fString, s: v.StringValue}
	case *pb.Payload_Template_Parameter_ExtensionValue:
		return raw{f: fExtension}
	}
	return raw{}
}

func propertyRaw(p *pb.Payload_PropertyValue) raw {
	switch v := p.GetValue().(type) {
	case *pb.Payload_PropertyValue_IntValue:
		return raw{f: fInt, u64: uint64(v.IntValue)}
	case *pb.Payload_PropertyValue_LongValue:
		return raw{f: fLong, u64: v.LongValue}
	case *pb.Payload_PropertyValue_FloatValue:
		return raw{f: fFloat, f32: v.FloatValue}
	case *pb.Payload_PropertyValue_DoubleValue:
		return raw{f: fDouble, f64: v.DoubleValue}
	case *pb.Payload_PropertyValue_BooleanValue:
		return raw{f: fBool, b: v.BooleanValue}
	case *pb.Payload_PropertyValue_StringValue:
		return raw{f: fString, s: v.StringValue}
	case *pb.Payload_PropertyValue_PropertysetValue:
		return raw{f: fPropertySet, ps: v.PropertysetValue}
	case *pb.Payload_PropertyValue_PropertysetsValue:
		return raw{f: fPropertySetList, psl: v.PropertysetsValue}
	case *pb.Payload_PropertyValue_ExtensionValue:
		return raw{f: fExtension}
	}
	return raw{}
}

// fromRaw converts a wire value to a Value according to dt.
func fromRaw(dt DataType, r raw, depth int) (Value, error) {
	want := func(fs ...field) error {
		for _, f := range fs {
			if r.f == f {
				return nil
			}
		}
		if r.f == fNone {
			return valueErr(dt, "no value and is_null not set")
		}
		return valueErr(dt, "carried in %s, want %s", fieldNames[r.f], fieldNames[fs[0]])
	}
	switch dt {
	case Int8, Int16, Int32, Int64:
		// Signed widths below 64 bits are two's complement in the low bits of
		// int_value; senders sign-extend or not, the low bits are the same.
		if err := want(fInt, fLong); err != nil {
			return Value{}, err
		}
		switch dt {
		case Int8:
			return IntValue(int64(int8(r.u64))), nil
		case Int16:
			return IntValue(int64(int16(r.u64))), nil
		case Int32:
			return IntValue(int64(int32(r.u64))), nil
		}
		return IntValue(int64(r.u64)), nil
	case UInt8, UInt16, UInt32, UInt64:
		if err := want(fInt, fLong); err != nil {
			return Value{}, err
		}
		if max := uintMax(dt); r.u64 > max {
			return Value{}, valueErr(dt, "%d out of range (max %d)", r.u64, max)
		}
		return UintValue(r.u64), nil
	case Float:
		if err := want(fFloat); err != nil {
			return Value{}, err
		}
		return FloatValue(float64(r.f32)), nil
	case Double:
		if err := want(fDouble); err != nil {
			return Value{}, err
		}
		return FloatValue(r.f64), nil
	case Boolean:
		if err := want(fBool); err != nil {
			return Value{}, err
		}
		return BoolValue(r.b), nil
	case String, Text, UUID:
		if err := want(fString); err != nil {
			return Value{}, err
		}
		return StringValue(r.s), nil
	case DateTime:
		if err := want(fLong, fInt); err != nil {
			return Value{}, err
		}
		return TimeValue(msTime(int64(r.u64))), nil
	case Bytes, File:
		if err := want(fBytes); err != nil {
			return Value{}, err
		}
		return BytesValue(r.bytes), nil
	case DataSet:
		if err := want(fDataSet); err != nil {
			return Value{}, err
		}
		return dataSetValue(r.ds)
	case Template:
		if err := want(fTemplate); err != nil {
			return Value{}, err
		}
		return templateValue(r.tpl, depth)
	case PropertySet:
		if err := want(fPropertySet); err != nil {
			return Value{}, err
		}
		props, err := properties(r.ps, depth+1)
		return Value{Kind: KindPropertySet, Properties: props}, err
	case PropertySetList:
		if err := want(fPropertySetList); err != nil {
			return Value{}, err
		}
		if depth >= maxDepth {
			return Value{}, valueErr(dt, "nested deeper than %d", maxDepth)
		}
		sets := make([][]Property, 0, len(r.psl.GetPropertyset()))
		for _, ps := range r.psl.GetPropertyset() {
			props, err := properties(ps, depth+1)
			if err != nil {
				return Value{}, err
			}
			sets = append(sets, props)
		}
		return Value{Kind: KindPropertySetList, PropertySets: sets}, nil
	}
	if isArray(dt) {
		if err := want(fBytes); err != nil {
			return Value{}, err
		}
		return decodeArray(dt, r.bytes)
	}
	return Value{}, valueErr(dt, "unknown or unsupported datatype")
}

func uintMax(dt DataType) uint64 {
	switch dt {
	case UInt8, UInt8Array:
		return math.MaxUint8
	case UInt16, UInt16Array:
		return math.MaxUint16
	case UInt32, UInt32Array:
		return math.MaxUint32
	}
	return math.MaxUint64
}

func intRange(dt DataType) (lo, hi int64) {
	switch dt {
	case Int8, Int8Array:
		return math.MinInt8, math.MaxInt8
	case Int16, Int16Array:
		return math.MinInt16, math.MaxInt16
	case Int32, Int32Array:
		return math.MinInt32, math.MaxInt32
	}
	return math.MinInt64, math.MaxInt64
}

func msTime(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

func dataSetValue(ds *pb.Payload_DataSet) (Value, error) {
	cols, types := ds.GetColumns(), ds.GetTypes()
	if len(cols) != len(types) {
		return Value{}, valueErr(DataSet, "%d columns but %d types", len(cols), len(types))
	}
	if ds.NumOfColumns != nil && ds.GetNumOfColumns() != uint64(len(cols)) {
		return Value{}, valueErr(DataSet, "num_of_columns is %d but %d columns are named", ds.GetNumOfColumns(), len(cols))
	}
	out := &DataSetValue{Columns: cols, Types: make([]DataType, len(types)), Rows: make([][]Value, 0, len(ds.GetRows()))}
	for i, t := range types {
		out.Types[i] = DataType(t)
	}
	for ri, row := range ds.GetRows() {
		elems := row.GetElements()
		if len(elems) != len(cols) {
			return Value{}, valueErr(DataSet, "row %d has %d elements, want %d", ri, len(elems), len(cols))
		}
		vals := make([]Value, len(elems))
		for ci, e := range elems {
			r := dataSetRaw(e)
			if r.f == fNone {
				vals[ci] = Null()
				continue
			}
			v, err := fromRaw(out.Types[ci], r, maxDepth)
			if err != nil {
				return Value{}, valueErr(DataSet, "row %d column %q: %v", ri, cols[ci], err)
			}
			vals[ci] = v
		}
		out.Rows = append(out.Rows, vals)
	}
	return Value{Kind: KindDataSet, DataSet: out}, nil
}

func templateValue(t *pb.Payload_Template, depth int) (Value, error) {
	if depth >= maxDepth {
		return Value{}, valueErr(Template, "nested deeper than %d", maxDepth)
	}
	out := &TemplateValue{
		Version:      t.GetVersion(),
		TemplateRef:  t.GetTemplateRef(),
		IsDefinition: t.GetIsDefinition(),
	}
	for _, p := range t.GetParameters() {
		dt := DataType(p.GetType())
		par := Parameter{Name: p.GetName(), Type: dt, Value: Null()}
		// A parameter has no is_null flag; one without a value is null.
		if r := parameterRaw(p); r.f != fNone {
			v, err := fromRaw(dt, r, maxDepth)
			if err != nil {
				return Value{}, valueErr(Template, "parameter %q: %v", p.GetName(), err)
			}
			par.Value = v
		}
		out.Parameters = append(out.Parameters, par)
	}
	for _, m := range t.GetMetrics() {
		dt := DataType(m.GetDatatype())
		v, err := metricValue(m, dt, depth+1)
		if err != nil {
			return Value{}, valueErr(Template, "metric %q: %v", m.GetName(), err)
		}
		tm := TemplateMetric{Name: m.GetName(), Type: dt, Timestamp: m.GetTimestamp(), Value: v}
		if m.Properties != nil {
			if tm.Properties, err = properties(m.Properties, depth+1); err != nil {
				return Value{}, valueErr(Template, "metric %q: %v", m.GetName(), err)
			}
		}
		out.Metrics = append(out.Metrics, tm)
	}
	return Value{Kind: KindTemplate, Template: out}, nil
}

// Properties converts a metric's property set (for example engineering units,
// "engUnit", or "Quality") to a list of typed properties, in wire order.
func Properties(ps *pb.Payload_PropertySet) ([]Property, error) {
	return properties(ps, 0)
}

func properties(ps *pb.Payload_PropertySet, depth int) ([]Property, error) {
	if depth >= maxDepth {
		return nil, valueErr(PropertySet, "nested deeper than %d", maxDepth)
	}
	keys, vals := ps.GetKeys(), ps.GetValues()
	if len(keys) != len(vals) {
		return nil, valueErr(PropertySet, "%d keys but %d values", len(keys), len(vals))
	}
	out := make([]Property, len(keys))
	for i, k := range keys {
		pv := vals[i]
		dt := DataType(pv.GetType())
		out[i] = Property{Key: k, Type: dt, Value: Null()}
		if pv.GetIsNull() {
			continue
		}
		v, err := fromRaw(dt, propertyRaw(pv), depth)
		if err != nil {
			return nil, valueErr(PropertySet, "property %q: %v", k, err)
		}
		out[i].Value = v
	}
	return out, nil
}

// SetMetricValue stores v in m as the given datatype, the inverse of MetricValue.
// The null Value sets is_null and clears the value. Integer values convert between
// Int and Uint kinds when in range, and integers convert to Float and Double;
// Float rounds to float32 and DateTime keeps millisecond precision. It does not
// set m.Datatype; set it when the message needs it (births, commands).
func SetMetricValue(m *pb.Payload_Metric, datatype DataType, v Value) error {
	if v.Kind == KindNull {
		m.IsNull = proto.Bool(true)
		m.Value = nil
		return nil
	}
	r, err := toRaw(datatype, v, 0)
	if err != nil {
		return err
	}
	return setMetricRaw(m, datatype, r)
}

// setMetricRaw stores a wire value in the metric's value oneof.
func setMetricRaw(m *pb.Payload_Metric, datatype DataType, r raw) error {
	switch r.f {
	case fInt:
		m.Value = &pb.Payload_Metric_IntValue{IntValue: uint32(r.u64)}
	case fLong:
		m.Value = &pb.Payload_Metric_LongValue{LongValue: r.u64}
	case fFloat:
		m.Value = &pb.Payload_Metric_FloatValue{FloatValue: r.f32}
	case fDouble:
		m.Value = &pb.Payload_Metric_DoubleValue{DoubleValue: r.f64}
	case fBool:
		m.Value = &pb.Payload_Metric_BooleanValue{BooleanValue: r.b}
	case fString:
		m.Value = &pb.Payload_Metric_StringValue{StringValue: r.s}
	case fBytes:
		m.Value = &pb.Payload_Metric_BytesValue{BytesValue: r.bytes}
	case fDataSet:
		m.Value = &pb.Payload_Metric_DatasetValue{DatasetValue: r.ds}
	case fTemplate:
		m.Value = &pb.Payload_Metric_TemplateValue{TemplateValue: r.tpl}
	default:
		return valueErr(datatype, "is not a metric datatype")
	}
	m.IsNull = nil
	return nil
}

// toRaw converts v to the wire form of datatype dt.
func toRaw(dt DataType, v Value, depth int) (raw, error) {
	kindErr := func() error { return valueErr(dt, "cannot encode a %s value", v.Kind) }
	switch dt {
	case Int8, Int16, Int32, Int64:
		x, ok := v.asInt64()
		if !ok {
			return raw{}, kindErr()
		}
		if lo, hi := intRange(dt); x < lo || x > hi {
			return raw{}, valueErr(dt, "%s out of range [%d, %d]", v, lo, hi)
		}
		if dt == Int64 {
			return raw{f: fLong, u64: uint64(x)}, nil
		}
		// Sign-extended into the 32-bit int_value, as Eclipse Tahu does.
		return raw{f: fInt, u64: uint64(uint32(int32(x)))}, nil
	case UInt8, UInt16, UInt32, UInt64:
		x, ok := v.asUint64()
		if !ok {
			return raw{}, kindErr()
		}
		if max := uintMax(dt); x > max {
			return raw{}, valueErr(dt, "%s out of range (max %d)", v, max)
		}
		if dt == UInt64 {
			return raw{f: fLong, u64: x}, nil
		}
		return raw{f: fInt, u64: x}, nil
	case Float, Double:
		var f float64
		switch v.Kind {
		case KindFloat:
			f = v.Float
		case KindInt:
			f = float64(v.Int)
		case KindUint:
			f = float64(v.Uint)
		default:
			return raw{}, kindErr()
		}
		if dt == Float {
			return raw{f: fFloat, f32: float32(f)}, nil
		}
		return raw{f: fDouble, f64: f}, nil
	case Boolean:
		if v.Kind != KindBool {
			return raw{}, kindErr()
		}
		return raw{f: fBool, b: v.Bool}, nil
	case String, Text, UUID:
		if v.Kind != KindString {
			return raw{}, kindErr()
		}
		return raw{f: fString, s: v.Str}, nil
	case DateTime:
		if v.Kind != KindTime {
			return raw{}, kindErr()
		}
		return raw{f: fLong, u64: uint64(v.Time.UnixMilli())}, nil
	case Bytes, File:
		if v.Kind != KindBytes {
			return raw{}, kindErr()
		}
		return raw{f: fBytes, bytes: v.Bytes}, nil
	case DataSet:
		if v.Kind != KindDataSet || v.DataSet == nil {
			return raw{}, kindErr()
		}
		ds, err := encodeDataSet(v.DataSet)
		return raw{f: fDataSet, ds: ds}, err
	case Template:
		if v.Kind != KindTemplate || v.Template == nil {
			return raw{}, kindErr()
		}
		t, err := encodeTemplate(v.Template, depth)
		return raw{f: fTemplate, tpl: t}, err
	case PropertySet:
		if v.Kind != KindPropertySet {
			return raw{}, kindErr()
		}
		ps, err := encodeProperties(v.Properties, depth+1)
		return raw{f: fPropertySet, ps: ps}, err
	case PropertySetList:
		if v.Kind != KindPropertySetList {
			return raw{}, kindErr()
		}
		psl := &pb.Payload_PropertySetList{}
		for _, props := range v.PropertySets {
			ps, err := encodeProperties(props, depth+1)
			if err != nil {
				return raw{}, err
			}
			psl.Propertyset = append(psl.Propertyset, ps)
		}
		return raw{f: fPropertySetList, psl: psl}, nil
	}
	if isArray(dt) {
		b, err := encodeArray(dt, v)
		return raw{f: fBytes, bytes: b}, err
	}
	return raw{}, valueErr(dt, "unknown or unsupported datatype")
}

func (v Value) asInt64() (int64, bool) {
	switch v.Kind {
	case KindInt:
		return v.Int, true
	case KindUint:
		if v.Uint > math.MaxInt64 {
			return 0, false
		}
		return int64(v.Uint), true
	}
	return 0, false
}

func (v Value) asUint64() (uint64, bool) {
	switch v.Kind {
	case KindUint:
		return v.Uint, true
	case KindInt:
		if v.Int < 0 {
			return 0, false
		}
		return uint64(v.Int), true
	}
	return 0, false
}

func encodeDataSet(d *DataSetValue) (*pb.Payload_DataSet, error) {
	if len(d.Columns) != len(d.Types) {
		return nil, valueErr(DataSet, "%d columns but %d types", len(d.Columns), len(d.Types))
	}
	ds := &pb.Payload_DataSet{NumOfColumns: proto.Uint64(uint64(len(d.Columns))), Columns: d.Columns}
	for _, t := range d.Types {
		ds.Types = append(ds.Types, uint32(t))
	}
	for ri, row := range d.Rows {
		if len(row) != len(d.Columns) {
			return nil, valueErr(DataSet, "row %d has %d values, want %d", ri, len(row), len(d.Columns))
		}
		pr := &pb.Payload_DataSet_Row{Elements: make([]*pb.Payload_DataSet_DataSetValue, len(row))}
		for ci, v := range row {
			e := &pb.Payload_DataSet_DataSetValue{}
			pr.Elements[ci] = e
			if v.Kind == KindNull {
				continue
			}
			r, err := toRaw(d.Types[ci], v, maxDepth)
			if err != nil {
				return nil, valueErr(DataSet, "row %d column %q: %v", ri, d.Columns[ci], err)
			}
			switch r.f {
			case fInt:
				e.Value = &pb.Payload_DataSet_DataSetValue_IntValue{IntValue: uint32(r.u64)}
			case fLong:
				e.Value = &pb.Payload_DataSet_DataSetValue_LongValue{LongValue: r.u64}
			case fFloat:
				e.Value = &pb.Payload_DataSet_DataSetValue_FloatValue{FloatValue: r.f32}
			case fDouble:
				e.Value = &pb.Payload_DataSet_DataSetValue_DoubleValue{DoubleValue: r.f64}
			case fBool:
				e.Value = &pb.Payload_DataSet_DataSetValue_BooleanValue{BooleanValue: r.b}
			case fString:
				e.Value = &pb.Payload_DataSet_DataSetValue_StringValue{StringValue: r.s}
			default:
				return nil, valueErr(DataSet, "column %q: %s is not a DataSet column type", d.Columns[ci], d.Types[ci])
			}
		}
		ds.Rows = append(ds.Rows, pr)
	}
	return ds, nil
}

func encodeTemplate(t *TemplateValue, depth int) (*pb.Payload_Template, error) {
	if depth >= maxDepth {
		return nil, valueErr(Template, "nested deeper than %d", maxDepth)
	}
	out := &pb.Payload_Template{}
	if t.Version != "" {
		out.Version = proto.String(t.Version)
	}
	if t.TemplateRef != "" {
		out.TemplateRef = proto.String(t.TemplateRef)
	}
	out.IsDefinition = proto.Bool(t.IsDefinition)
	for _, p := range t.Parameters {
		pp := &pb.Payload_Template_Parameter{Name: proto.String(p.Name), Type: proto.Uint32(uint32(p.Type))}
		if p.Value.Kind != KindNull {
			r, err := toRaw(p.Type, p.Value, maxDepth)
			if err != nil {
				return nil, valueErr(Template, "parameter %q: %v", p.Name, err)
			}
			switch r.f {
			case fInt:
				pp.Value = &pb.Payload_Template_Parameter_IntValue{IntValue: uint32(r.u64)}
			case fLong:
				pp.Value = &pb.Payload_Template_Parameter_LongValue{LongValue: r.u64}
			case fFloat:
				pp.Value = &pb.Payload_Template_Parameter_FloatValue{FloatValue: r.f32}
			case fDouble:
				pp.Value = &pb.Payload_Template_Parameter_DoubleValue{DoubleValue: r.f64}
			case fBool:
				pp.Value = &pb.Payload_Template_Parameter_BooleanValue{BooleanValue: r.b}
			case fString:
				pp.Value = &pb.Payload_Template_Parameter_StringValue{StringValue: r.s}
			default:
				return nil, valueErr(Template, "parameter %q: %s is not a parameter type", p.Name, p.Type)
			}
		}
		out.Parameters = append(out.Parameters, pp)
	}
	for _, tm := range t.Metrics {
		m := &pb.Payload_Metric{Name: proto.String(tm.Name), Datatype: proto.Uint32(uint32(tm.Type))}
		if tm.Timestamp != 0 {
			m.Timestamp = proto.Uint64(tm.Timestamp)
		}
		if tm.Value.Kind == KindNull {
			m.IsNull = proto.Bool(true)
		} else {
			r, err := toRaw(tm.Type, tm.Value, depth+1)
			if err != nil {
				return nil, valueErr(Template, "metric %q: %v", tm.Name, err)
			}
			if err := setMetricRaw(m, tm.Type, r); err != nil {
				return nil, valueErr(Template, "metric %q: %v", tm.Name, err)
			}
		}
		if tm.Properties != nil {
			ps, err := encodeProperties(tm.Properties, depth+1)
			if err != nil {
				return nil, valueErr(Template, "metric %q: %v", tm.Name, err)
			}
			m.Properties = ps
		}
		out.Metrics = append(out.Metrics, m)
	}
	return out, nil
}

// EncodeProperties is the inverse of Properties: it builds a property set from
// typed properties. A null Value sets is_null.
func EncodeProperties(props []Property) (*pb.Payload_PropertySet, error) {
	return encodeProperties(props, 0)
}

func encodeProperties(props []Property, depth int) (*pb.Payload_PropertySet, error) {
	if depth >= maxDepth {
		return nil, valueErr(PropertySet, "nested deeper than %d", maxDepth)
	}
	ps := &pb.Payload_PropertySet{
		Keys:   make([]string, len(props)),
		Values: make([]*pb.Payload_PropertyValue, len(props)),
	}
	for i, p := range props {
		ps.Keys[i] = p.Key
		pv := &pb.Payload_PropertyValue{Type: proto.Uint32(uint32(p.Type))}
		ps.Values[i] = pv
		if p.Value.Kind == KindNull {
			pv.IsNull = proto.Bool(true)
			continue
		}
		r, err := toRaw(p.Type, p.Value, depth)
		if err != nil {
			return nil, valueErr(PropertySet, "property %q: %v", p.Key, err)
		}
		switch r.f {
		case fInt:
			pv.Value = &pb.Payload_PropertyValue_IntValue{IntValue: uint32(r.u64)}
		case fLong:
			pv.Value = &pb.Payload_PropertyValue_LongValue{LongValue: r.u64}
		case fFloat:
			pv.Value = &pb.Payload_PropertyValue_FloatValue{FloatValue: r.f32}
		case fDouble:
			pv.Value = &pb.Payload_PropertyValue_DoubleValue{DoubleValue: r.f64}
		case fBool:
			pv.Value = &pb.Payload_PropertyValue_BooleanValue{BooleanValue: r.b}
		case fString:
			pv.Value = &pb.Payload_PropertyValue_StringValue{StringValue: r.s}
		case fPropertySet:
			pv.Value = &pb.Payload_PropertyValue_PropertysetValue{PropertysetValue: r.ps}
		case fPropertySetList:
			pv.Value = &pb.Payload_PropertyValue_PropertysetsValue{PropertysetsValue: r.psl}
		default:
			return nil, valueErr(PropertySet, "property %q: %s is not a property type", p.Key, p.Type)
		}
	}
	return ps, nil
}
