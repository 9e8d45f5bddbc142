package sparkplug

import (
	"bytes"
	"encoding/binary"
	"math"
	"strings"
	"time"
	"unicode/utf8"
)

// Array datatypes (Sparkplug 3.0, "Array Types") travel in bytes_value:
//   - numeric arrays are packed little-endian elements of the element width;
//   - DateTimeArray is packed little-endian int64 milliseconds since the epoch;
//   - BooleanArray is a little-endian uint32 element count followed by the values
//     packed eight to a byte, most significant bit first, the last byte padded
//     with zero bits;
//   - StringArray is the UTF-8 strings, each terminated by a NUL byte.

func isArray(dt DataType) bool { return dt >= Int8Array && dt <= DateTimeArray }

// elemSize is the packed element width of a fixed-width array type.
func elemSize(dt DataType) int {
	switch dt {
	case Int8Array, UInt8Array:
		return 1
	case Int16Array, UInt16Array:
		return 2
	case Int32Array, UInt32Array, FloatArray:
		return 4
	}
	return 8
}

func decodeArray(dt DataType, b []byte) (Value, error) {
	le := binary.LittleEndian
	switch dt {
	case BooleanArray:
		if len(b) < 4 {
			return Value{}, valueErr(dt, "%d bytes, want at least the 4-byte count", len(b))
		}
		n := uint64(le.Uint32(b))
		if want := 4 + (n+7)/8; uint64(len(b)) != want {
			return Value{}, valueErr(dt, "count %d needs %d bytes, got %d", n, want, len(b))
		}
		out := make([]bool, n)
		for i := range out {
			out[i] = b[4+i/8]&(0x80>>(i%8)) != 0
		}
		return Value{Kind: KindBoolArray, Bools: out}, nil
	case StringArray:
		out := []string{}
		for len(b) > 0 {
			i := bytes.IndexByte(b, 0)
			if i < 0 {
				return Value{}, valueErr(dt, "element %d is not NUL-terminated", len(out))
			}
			if !utf8.Valid(b[:i]) {
				return Value{}, valueErr(dt, "element %d is not valid UTF-8", len(out))
			}
			out = append(out, string(b[:i]))
			b = b[i+1:]
		}
		return Value{Kind: KindStringArray, Strings: out}, nil
	}
	size := elemSize(dt)
	if len(b)%size != 0 {
		return Value{}, valueErr(dt, "%d bytes is not a multiple of the %d-byte element", len(b), size)
	}
	n := len(b) / size
	switch dt {
	case Int8Array, Int16Array, Int32Array, Int64Array:
		out := make([]int64, n)
		for i := range out {
			e := b[i*size:]
			switch size {
			case 1:
				out[i] = int64(int8(e[0]))
			case 2:
				out[i] = int64(int16(le.Uint16(e)))
			case 4:
				out[i] = int64(int32(le.Uint32(e)))
			default:
				out[i] = int64(le.Uint64(e))
			}
		}
		return Value{Kind: KindIntArray, Ints: out}, nil
	case UInt8Array, UInt16Array, UInt32Array, UInt64Array:
		out := make([]uint64, n)
		for i := range out {
			out[i] = readUint(b[i*size:], size)
		}
		return Value{Kind: KindUintArray, Uints: out}, nil
	case FloatArray, DoubleArray:
		out := make([]float64, n)
		for i := range out {
			if size == 4 {
				out[i] = float64(math.Float32frombits(le.Uint32(b[i*4:])))
			} else {
				out[i] = math.Float64frombits(le.Uint64(b[i*8:]))
			}
		}
		return Value{Kind: KindFloatArray, Floats: out}, nil
	case DateTimeArray:
		out := make([]time.Time, n)
		for i := range out {
			out[i] = msTime(int64(le.Uint64(b[i*8:])))
		}
		return Value{Kind: KindTimeArray, Times: out}, nil
	}
	return Value{}, valueErr(dt, "not an array datatype")
}

func readUint(e []byte, size int) uint64 {
	le := binary.LittleEndian
	switch size {
	case 1:
		return uint64(e[0])
	case 2:
		return uint64(le.Uint16(e))
	case 4:
		return uint64(le.Uint32(e))
	}
	return le.Uint64(e)
}

func appendUint(b []byte, x uint64, size int) []byte {
	le := binary.LittleEndian
	switch size {
	case 1:
		return append(b, byte(x))
	case 2:
		return le.AppendUint16(b, uint16(x))
	case 4:
		return le.AppendUint32(b, uint32(x))
	}
	return le.AppendUint64(b, x)
}

func encodeArray(dt DataType, v Value) ([]byte, error) {
	kindErr := func() error { return valueErr(dt, "cannot encode a %s value", v.Kind) }
	size := elemSize(dt)
	switch dt {
	case Int8Array, Int16Array, Int32Array, Int64Array:
		if v.Kind != KindIntArray {
			return nil, kindErr()
		}
		lo, hi := intRange(dt)
		b := make([]byte, 0, len(v.Ints)*size)
		for i, x := range v.Ints {
			if x < lo || x > hi {
				return nil, valueErr(dt, "element %d (%d) out of range [%d, %d]", i, x, lo, hi)
			}
			b = appendUint(b, uint64(x), size)
		}
		return b, nil
	case UInt8Array, UInt16Array, UInt32Array, UInt64Array:
		if v.Kind != KindUintArray {
			return nil, kindErr()
		}
		max := uintMax(dt)
		b := make([]byte, 0, len(v.Uints)*size)
		for i, x := range v.Uints {
			if x > max {
				return nil, valueErr(dt, "element %d (%d) out of range (max %d)", i, x, max)
			}
			b = appendUint(b, x, size)
		}
		return b, nil
	case FloatArray, DoubleArray:
		if v.Kind != KindFloatArray {
			return nil, kindErr()
		}
		b := make([]byte, 0, len(v.Floats)*size)
		for _, f := range v.Floats {
			if size == 4 {
				b = appendUint(b, uint64(math.Float32bits(float32(f))), 4)
			} else {
				b = appendUint(b, math.Float64bits(f), 8)
			}
		}
		return b, nil
	case DateTimeArray:
		if v.Kind != KindTimeArray {
			return nil, kindErr()
		}
		b := make([]byte, 0, len(v.Times)*8)
		for _, t := range v.Times {
			b = appendUint(b, uint64(t.UnixMilli()), 8)
		}
		return b, nil
	case BooleanArray:
		if v.Kind != KindBoolArray {
			return nil, kindErr()
		}
		if uint64(len(v.Bools)) > math.MaxUint32 {
			return nil, valueErr(dt, "%d elements, more than a uint32 count", len(v.Bools))
		}
		b := make([]byte, 4+(len(v.Bools)+7)/8)
		binary.LittleEndian.PutUint32(b, uint32(len(v.Bools)))
		for i, x := range v.Bools {
			if x {
				b[4+i/8] |= 0x80 >> (i % 8)
			}
		}
		return b, nil
	case StringArray:
		if v.Kind != KindStringArray {
			return nil, kindErr()
		}
		var b []byte
		for i, s := range v.Strings {
			if strings.IndexByte(s, 0) >= 0 {
				return nil, valueErr(dt, "element %d contains a NUL byte", i)
			}
			b = append(append(b, s...), 0)
		}
		return b, nil
	}
	return nil, valueErr(dt, "not an array datatype")
}
