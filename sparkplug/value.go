package sparkplug

import (
	"fmt"
	"time"

	"github.com/millstream/millstream/sparkplug/sparkplugb"
)

// DataType is a Sparkplug B datatype (the Metric.datatype, PropertyValue.type,
// DataSet.types and Template.Parameter.type fields).
type DataType = sparkplugb.DataType

// Sparkplug B datatypes, re-exported from package sparkplugb for brevity.
const (
	Unknown         = sparkplugb.DataType_Unknown
	Int8            = sparkplugb.DataType_Int8
	Int16           = sparkplugb.DataType_Int16
	Int32           = sparkplugb.DataType_Int32
	Int64           = sparkplugb.DataType_Int64
	UInt8           = sparkplugb.DataType_UInt8
	UInt16          = sparkplugb.DataType_UInt16
	UInt32          = sparkplugb.DataType_UInt32
	UInt64          = sparkplugb.DataType_UInt64
	Float           = sparkplugb.DataType_Float
	Double          = sparkplugb.DataType_Double
	Boolean         = sparkplugb.DataType_Boolean
	String          = sparkplugb.DataType_String
	DateTime        = sparkplugb.DataType_DateTime
	Text            = sparkplugb.DataType_Text
	UUID            = sparkplugb.DataType_UUID
	DataSet         = sparkplugb.DataType_DataSet
	Bytes           = sparkplugb.DataType_Bytes
	File            = sparkplugb.DataType_File
	Template        = sparkplugb.DataType_Template
	PropertySet     = sparkplugb.DataType_PropertySet
	PropertySetList = sparkplugb.DataType_PropertySetList
	Int8Array       = sparkplugb.DataType_Int8Array
	Int16Array      = sparkplugb.DataType_Int16Array
	Int32Array      = sparkplugb.DataType_Int32Array
	Int64Array      = sparkplugb.DataType_Int64Array
	UInt8Array      = sparkplugb.DataType_UInt8Array
	UInt16Array     = sparkplugb.DataType_UInt16Array
	UInt32Array     = sparkplugb.DataType_UInt32Array
	UInt64Array     = sparkplugb.DataType_UInt64Array
	FloatArray      = sparkplugb.DataType_FloatArray
	DoubleArray     = sparkplugb.DataType_DoubleArray
	BooleanArray    = sparkplugb.DataType_BooleanArray
	StringArray     = sparkplugb.DataType_StringArray
	DateTimeArray   = sparkplugb.DataType_DateTimeArray
)

// Kind says which field of a Value holds the value.
type Kind uint8

// Value kinds. The comment names the Value field that holds the value and the
// Sparkplug datatypes that produce the kind.
const (
	KindNull            Kind = iota // no field; is_null set, or an empty DataSet cell
	KindInt                         // Int: Int8, Int16, Int32, Int64
	KindUint                        // Uint: UInt8, UInt16, UInt32, UInt64
	KindFloat                       // Float: Float (widened exactly), Double
	KindBool                        // Bool: Boolean
	KindString                      // Str: String, Text, UUID
	KindBytes                       // Bytes: Bytes, File
	KindTime                        // Time: DateTime (ms since the Unix epoch, UTC)
	KindDataSet                     // DataSet: DataSet
	KindTemplate                    // Template: Template
	KindPropertySet                 // Properties: PropertySet (property values only)
	KindPropertySetList             // PropertySets: PropertySetList (property values only)
	KindIntArray                    // Ints: Int8Array .. Int64Array
	KindUintArray                   // Uints: UInt8Array .. UInt64Array
	KindFloatArray                  // Floats: FloatArray, DoubleArray
	KindBoolArray                   // Bools: BooleanArray
	KindStringArray                 // Strings: StringArray
	KindTimeArray                   // Times: DateTimeArray
)

var kindNames = [...]string{"null", "int", "uint", "float", "bool", "string", "bytes", "time",
	"dataset", "template", "propertyset", "propertysetlist",
	"int array", "uint array", "float array", "bool array", "string array", "time array"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Value is a typed Sparkplug value. Kind says which one field is meaningful; the
// Sparkplug datatype itself is not stored (it comes from the birth certificate).
type Value struct {
	Kind Kind

	Int   int64
	Uint  uint64
	Float float64
	Bool  bool
	Str   string
	Bytes []byte
	Time  time.Time

	Ints    []int64
	Uints   []uint64
	Floats  []float64
	Bools   []bool
	Strings []string
	Times   []time.Time

	DataSet      *DataSetValue
	Template     *TemplateValue
	Properties   []Property
	PropertySets [][]Property
}

// Null is the null value.
func Null() Value { return Value{Kind: KindNull} }

// IntValue returns a signed integer value.
func IntValue(v int64) Value { return Value{Kind: KindInt, Int: v} }

// UintValue returns an unsigned integer value.
func UintValue(v uint64) Value { return Value{Kind: KindUint, Uint: v} }

// FloatValue returns a floating-point value.
func FloatValue(v float64) Value { return Value{Kind: KindFloat, Float: v} }

// BoolValue returns a boolean value.
func BoolValue(v bool) Value { return Value{Kind: KindBool, Bool: v} }

// StringValue returns a string value (String, Text or UUID).
func StringValue(v string) Value { return Value{Kind: KindString, Str: v} }

// BytesValue returns a bytes value (Bytes or File).
func BytesValue(v []byte) Value { return Value{Kind: KindBytes, Bytes: v} }

// TimeValue returns a DateTime value; Sparkplug keeps millisecond precision.
func TimeValue(v time.Time) Value { return Value{Kind: KindTime, Time: v} }

// IsNull reports whether v is the null value.
func (v Value) IsNull() bool { return v.Kind == KindNull }

// String formats the value for logs and error messages.
func (v Value) String() string {
	switch v.Kind {
	case KindNull:
		return "null"
	case KindInt:
		return fmt.Sprint(v.Int)
	case KindUint:
		return fmt.Sprint(v.Uint)
	case KindFloat:
		return fmt.Sprint(v.Float)
	case KindBool:
		return fmt.Sprint(v.Bool)
	case KindString:
		return fmt.Sprintf("%q", v.Str)
	case KindBytes:
		return fmt.Sprintf("%d bytes", len(v.Bytes))
	case KindTime:
		return v.Time.UTC().Format(time.RFC3339Nano)
	case KindDataSet:
		return fmt.Sprintf("dataset %v (%d rows)", v.DataSet.Columns, len(v.DataSet.Rows))
	case KindTemplate:
		return fmt.Sprintf("template %q (%d metrics)", v.Template.TemplateRef, len(v.Template.Metrics))
	case KindPropertySet:
		return fmt.Sprintf("propertyset (%d properties)", len(v.Properties))
	case KindPropertySetList:
		return fmt.Sprintf("propertysetlist (%d sets)", len(v.PropertySets))
	case KindIntArray:
		return fmt.Sprint(v.Ints)
	case KindUintArray:
		return fmt.Sprint(v.Uints)
	case KindFloatArray:
		return fmt.Sprint(v.Floats)
	case KindBoolArray:
		return fmt.Sprint(v.Bools)
	case KindStringArray:
		return fmt.Sprintf("%q", v.Strings)
	case KindTimeArray:
		return fmt.Sprint(v.Times)
	}
	return v.Kind.String()
}

// DataSetValue is a decoded Sparkplug DataSet: a table with typed columns. A cell
// without a value is KindNull.
type DataSetValue struct {
	Columns []string
	Types   []DataType
	Rows    [][]Value
}

// TemplateValue is a decoded Sparkplug Template, either a definition
// (IsDefinition, TemplateRef empty) or an instance (TemplateRef names the definition).
type TemplateValue struct {
	Version      string
	TemplateRef  string
	IsDefinition bool
	Parameters   []Parameter
	Metrics      []TemplateMetric
}

// Parameter is a template parameter.
type Parameter struct {
	Name  string
	Type  DataType
	Value Value
}

// TemplateMetric is a member metric of a template.
type TemplateMetric struct {
	Name       string
	Type       DataType
	Timestamp  uint64 // ms since the Unix epoch; 0 when absent
	Value      Value
	Properties []Property // nil when absent
}

// Property is one entry of a Sparkplug PropertySet (for example "engUnit").
type Property struct {
	Key   string
	Type  DataType
	Value Value
}

// ValueError explains why a value could not be converted from or to a datatype.
type ValueError struct {
	Type   DataType
	Reason string
}

func (e *ValueError) Error() string {
	return fmt.Sprintf("sparkplug: %s value: %s", e.Type, e.Reason)
}

func valueErr(dt DataType, format string, args ...any) error {
	return &ValueError{Type: dt, Reason: fmt.Sprintf(format, args...)}
}
