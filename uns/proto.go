package uns

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/millstream/millstream/log"
)

// Record formats of uns.points, chosen with NormalizerOptions.Format
// (configuration uns.format). Readers need not know which one was written:
// ParsePointRecord reads the content-type header.
const (
	FormatJSON     = "json"
	FormatProtobuf = "protobuf"
)

// ContentTypeProto is the content-type header of protobuf uns.points
// records: the message docs/uns_points.proto defines.
const ContentTypeProto = "application/x-protobuf; proto=millstream.uns.v1.Point"

var contentTypeProto = []byte(ContentTypeProto)

// Field numbers of millstream.uns.v1.Point (docs/uns_points.proto).
const (
	fieldPath        = 1
	fieldTime        = 2
	fieldFloat       = 3
	fieldInt         = 4
	fieldUint        = 5
	fieldBool        = 6
	fieldString      = 7
	fieldBytes       = 8
	fieldQuality     = 9
	fieldUnit        = 10
	fieldSource      = 11
	maxQualityNumber = int(Stale)
)

// AppendPointProto appends the protobuf encoding of p (message
// millstream.uns.v1.Point) to dst. Fields at their zero value are omitted,
// as proto3 does, except the value of the oneof, which is always written so
// that a zero is not taken for null.
func AppendPointProto(dst []byte, p *Point) []byte {
	if p.Path != "" {
		dst = protowire.AppendTag(dst, fieldPath, protowire.BytesType)
		dst = protowire.AppendString(dst, p.Path)
	}
	if ns := p.Time.UnixNano(); ns != 0 {
		dst = protowire.AppendTag(dst, fieldTime, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(ns))
	}
	v := p.Value
	switch v.kind {
	case Float:
		dst = protowire.AppendTag(dst, fieldFloat, protowire.Fixed64Type)
		dst = protowire.AppendFixed64(dst, v.bits)
	case Int:
		dst = protowire.AppendTag(dst, fieldInt, protowire.VarintType)
		dst = protowire.AppendVarint(dst, protowire.EncodeZigZag(int64(v.bits)))
	case Uint:
		dst = protowire.AppendTag(dst, fieldUint, protowire.VarintType)
		dst = protowire.AppendVarint(dst, v.bits)
	case Bool:
		dst = protowire.AppendTag(dst, fieldBool, protowire.VarintType)
		dst = protowire.AppendVarint(dst, v.bits)
	case String:
		dst = protowire.AppendTag(dst, fieldString, protowire.BytesType)
		dst = protowire.AppendString(dst, v.str)
	case Bytes:
		dst = protowire.AppendTag(dst, fieldBytes, protowire.BytesType)
		dst = protowire.AppendString(dst, v.str)
	}
	if p.Quality != Good {
		dst = protowire.AppendTag(dst, fieldQuality, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(p.Quality))
	}
	if p.Unit != "" {
		dst = protowire.AppendTag(dst, fieldUnit, protowire.BytesType)
		dst = protowire.AppendString(dst, p.Unit)
	}
	if p.Source != "" {
		dst = protowire.AppendTag(dst, fieldSource, protowire.BytesType)
		dst = protowire.AppendString(dst, p.Source)
	}
	return dst
}

var errProtoPoint = errors.New("point protobuf")

// ParsePointProto reads a millstream.uns.v1.Point. Unknown fields are
// skipped (a newer writer may add some); wrong wire types, invalid UTF-8 in
// strings and out-of-range qualities are errors.
func ParsePointProto(b []byte) (Point, error) {
	var p Point
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return Point{}, fmt.Errorf("%w: %v", errProtoPoint, protowire.ParseError(n))
		}
		b = b[n:]
		want := protowire.Type(-1)
		switch num {
		case fieldPath, fieldString, fieldBytes, fieldUnit, fieldSource:
			want = protowire.BytesType
		case fieldTime, fieldInt, fieldUint, fieldBool, fieldQuality:
			want = protowire.VarintType
		case fieldFloat:
			want = protowire.Fixed64Type
		}
		if want >= 0 && typ != want {
			return Point{}, fmt.Errorf("%w: field %d has wire type %d, want %d", errProtoPoint, num, typ, want)
		}
		switch typ {
		case protowire.VarintType:
			x, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return Point{}, fmt.Errorf("%w: field %d: %v", errProtoPoint, num, protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case fieldTime:
				p.Time = time.Unix(0, int64(x)).UTC()
			case fieldInt:
				p.Value = IntValue(protowire.DecodeZigZag(x))
			case fieldUint:
				p.Value = UintValue(x)
			case fieldBool:
				p.Value = BoolValue(x != 0)
			case fieldQuality:
				if x > uint64(maxQualityNumber) {
					return Point{}, fmt.Errorf("%w: quality %d out of range", errProtoPoint, x)
				}
				p.Quality = Quality(x)
			}
		case protowire.Fixed64Type:
			x, n := protowire.ConsumeFixed64(b)
			if n < 0 {
				return Point{}, fmt.Errorf("%w: field %d: %v", errProtoPoint, num, protowire.ParseError(n))
			}
			b = b[n:]
			if num == fieldFloat {
				p.Value = FloatValue(math.Float64frombits(x))
			}
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return Point{}, fmt.Errorf("%w: field %d: %v", errProtoPoint, num, protowire.ParseError(n))
			}
			b = b[n:]
			if num != fieldBytes && num <= fieldSource && !utf8.Valid(v) {
				return Point{}, fmt.Errorf("%w: field %d is not valid UTF-8", errProtoPoint, num)
			}
			switch num {
			case fieldPath:
				p.Path = string(v)
			case fieldString:
				p.Value = StringValue(string(v))
			case fieldBytes:
				p.Value = BytesValue(v)
			case fieldUnit:
				p.Unit = string(v)
			case fieldSource:
				p.Source = string(v)
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return Point{}, fmt.Errorf("%w: field %d: %v", errProtoPoint, num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	if p.Time.IsZero() {
		p.Time = time.Unix(0, 0).UTC()
	}
	return p, nil
}

// ParsePointRecord reads a uns.points record in either format, by its
// content-type header (JSON when there is none).
func ParsePointRecord(r *log.Record) (Point, error) {
	if ct, ok := r.HeaderValue(HeaderContentType); ok && bytes.HasPrefix(ct, []byte("application/x-protobuf")) {
		return ParsePointProto(r.Value)
	}
	return ParsePointJSON(r.Value)
}
