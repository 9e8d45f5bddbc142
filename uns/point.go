// Package uns is Millstream's Unified Namespace: ISA-95 paths
// (enterprise/site/area/line/cell/.../tag), the Point every source is
// normalised into, and the normalisation of plain MQTT payloads (bare
// values, {"value","timestamp"} objects, flat objects of tags).
//
// A Point is one timestamped, typed value of one tag:
//
//	path     enterprise/site/area/line/cell/.../tag (slash-separated segments)
//	time     the source timestamp (the device's, else when it was received)
//	value    float64 | int64 | uint64 | bool | string | bytes, or null
//	quality  good | uncertain | bad | stale
//	unit     engineering unit, when known
//	source   where it came from: "mqtt:<topic>" or "spb:<group>/<node>[/<device>]"
//
// The asset of a point is its path without the last segment; records of
// uns.points are keyed by it so that one asset's points stay in order.
package uns

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxPathBytes bounds a path: long enough for any real plant hierarchy, short
// enough that a bad payload cannot make keys of arbitrary size.
const MaxPathBytes = 1024

// Quality says how far a value can be trusted.
type Quality uint8

// Qualities, in the order OPC UA and Sparkplug consumers expect.
const (
	// Good: a current value the source vouches for.
	Good Quality = iota
	// Uncertain: a value the source flags as doubtful (e.g. sensor out of
	// calibration, substituted).
	Uncertain
	// Bad: the source reports no usable value (null, sensor failure).
	Bad
	// Stale: the last value known, but its source has gone away (Sparkplug
	// death, connection lost); it may no longer be true.
	Stale
)

var qualityNames = [...]string{"good", "uncertain", "bad", "stale"}

func (q Quality) String() string {
	if int(q) < len(qualityNames) {
		return qualityNames[q]
	}
	return "quality(" + strconv.Itoa(int(q)) + ")"
}

// ParseQuality reads a quality name (case-insensitive).
func ParseQuality(s string) (Quality, error) {
	for i, n := range qualityNames {
		if strings.EqualFold(s, n) {
			return Quality(i), nil
		}
	}
	return 0, fmt.Errorf("quality %q: use good, uncertain, bad or stale", s)
}

// Kind is the type of a Value.
type Kind uint8

// Value kinds.
const (
	Null Kind = iota
	Float
	Int
	Uint
	Bool
	String
	Bytes
)

var kindNames = [...]string{"null", "float", "int", "uint", "bool", "string", "bytes"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Value is a typed point value. The zero Value is null.
type Value struct {
	kind Kind
	bits uint64 // float64 bits, int64, uint64 or bool (0/1)
	str  string // String, and Bytes (immutable copy)
}

// FloatValue, IntValue, UintValue, BoolValue, StringValue and BytesValue
// build Values; BytesValue copies b.
func FloatValue(v float64) Value { return Value{kind: Float, bits: math.Float64bits(v)} }
func IntValue(v int64) Value     { return Value{kind: Int, bits: uint64(v)} }
func UintValue(v uint64) Value   { return Value{kind: Uint, bits: v} }
func StringValue(v string) Value { return Value{kind: String, str: v} }
func BytesValue(b []byte) Value  { return Value{kind: Bytes, str: string(b)} }
func BoolValue(v bool) Value {
	if v {
		return Value{kind: Bool, bits: 1}
	}
	return Value{kind: Bool}
}

// Kind is the value's type.
func (v Value) Kind() Kind { return v.kind }

// IsNull reports whether the value is null.
func (v Value) IsNull() bool { return v.kind == Null }

// Float returns a Float value, or the numeric value of an Int or Uint (which
// may round), and false for other kinds.
func (v Value) Float() (float64, bool) {
	switch v.kind {
	case Float:
		return math.Float64frombits(v.bits), true
	case Int:
		return float64(int64(v.bits)), true
	case Uint:
		return float64(v.bits), true
	}
	return 0, false
}

// Int returns an Int value, or a Uint that fits.
func (v Value) Int() (int64, bool) {
	switch v.kind {
	case Int:
		return int64(v.bits), true
	case Uint:
		return int64(v.bits), v.bits <= math.MaxInt64
	}
	return 0, false
}

// Uint returns a Uint value, or a non-negative Int.
func (v Value) Uint() (uint64, bool) {
	switch v.kind {
	case Uint:
		return v.bits, true
	case Int:
		return v.bits, int64(v.bits) >= 0
	}
	return 0, false
}

// Bool returns a Bool value.
func (v Value) Bool() (bool, bool) { return v.bits == 1, v.kind == Bool }

// Str returns a String value.
func (v Value) Str() (string, bool) { return v.str, v.kind == String }

// Bytes returns a Bytes value (a copy).
func (v Value) Bytes() ([]byte, bool) { return []byte(v.str), v.kind == Bytes }

// String formats the value for people: numbers in their shortest form,
// strings as they are, bytes as a length.
func (v Value) String() string {
	switch v.kind {
	case Float:
		return strconv.FormatFloat(math.Float64frombits(v.bits), 'g', -1, 64)
	case Int:
		return strconv.FormatInt(int64(v.bits), 10)
	case Uint:
		return strconv.FormatUint(v.bits, 10)
	case Bool:
		return strconv.FormatBool(v.bits == 1)
	case String:
		return v.str
	case Bytes:
		return fmt.Sprintf("<%d bytes>", len(v.str))
	}
	return "null"
}

// Equal reports whether two values have the same kind and value (NaN equals
// NaN, so a repeated NaN reading is not a change).
func (v Value) Equal(w Value) bool { return v == w }

// Point is one value of one tag at one time.
type Point struct {
	Path    string
	Time    time.Time
	Value   Value
	Quality Quality
	Unit    string
	Source  string
}

// Asset is the path of the point's asset: its path without the tag.
func (p *Point) Asset() string { return AssetOf(p.Path) }

// AssetOf returns path without its last segment ("" for a one-segment path).
func AssetOf(path string) string {
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		return path[:i]
	}
	return ""
}

// ErrPath is wrapped by every path validation error.
var ErrPath = errors.New("invalid namespace path")

// ValidatePath checks that p is a namespace path: slash-separated non-empty
// segments of valid UTF-8 without control characters or MQTT wildcards, at
// most MaxPathBytes long.
func ValidatePath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("%w: empty", ErrPath)
	case len(p) > MaxPathBytes:
		return fmt.Errorf("%w: %d bytes, at most %d allowed", ErrPath, len(p), MaxPathBytes)
	case !utf8.ValidString(p):
		return fmt.Errorf("%w: %q is not valid UTF-8", ErrPath, p)
	}
	seg := 0
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '/':
			if i == seg {
				return fmt.Errorf("%w: %q has an empty segment at byte %d", ErrPath, p, i)
			}
			seg = i + 1
		case c == '+' || c == '#':
			return fmt.Errorf("%w: %q contains the wildcard %q", ErrPath, p, c)
		case c < 0x20 || c == 0x7f:
			return fmt.Errorf("%w: %q contains control character %#x", ErrPath, p, c)
		}
	}
	if seg == len(p) {
		return fmt.Errorf("%w: %q ends with /", ErrPath, p)
	}
	return nil
}

// JoinPath joins path segments with "/".
func JoinPath(parts ...string) string { return strings.Join(parts, "/") }
