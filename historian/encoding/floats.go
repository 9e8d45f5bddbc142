package encoding

import (
	"math"
	"math/bits"
	"slices"
	"sync"
)

// Float column layout:
//
//	kind byte   0 Gorilla XOR, 1 decimal
//	Gorilla:    a bit stream: the first value's 64 bits; then per value
//	            '0' (same as previous), or '1' '0' + the meaningful XOR bits
//	            in the previous window, or '1' '1' + 6 bits of leading zeros
//	            + 6 bits of (meaningful length - 1) + the meaningful bits
//	decimal:    exponent byte e (0..maxDecimalExp), then an integer column
//	            of mantissas m; each value is float64(m) / 10^e
//
// Decimal form is chosen only when every value in the column comes back
// bit for bit. float64(m) / 10^e is a correctly rounded IEEE division of
// two exactly representable numbers (|m| ≤ 2^53, e ≤ 22), which is exactly
// how a decimal reading like 23.47 became a float64 in the first place, so
// sensor values with a fixed resolution always qualify.
const (
	floatGorilla = 0
	floatDecimal = 1

	maxDecimalExp = 18
	maxMantissa   = 1 << 53
)

var pow10 [maxDecimalExp + 1]float64

func init() {
	p := 1.0
	for i := range pow10 {
		pow10[i] = p
		p *= 10
	}
}

// mantissaPool holds scratch slices for the decimal encoder so that
// encoding a column allocates nothing in steady state.
var mantissaPool = sync.Pool{New: func() any { return new([]int64) }}

// AppendFloats appends the encoding of a column of float64 values given as
// their IEEE 754 bits (math.Float64bits).
func AppendFloats(dst []byte, vals []uint64) []byte {
	if e, ok := decimalExp(vals); ok {
		sp := mantissaPool.Get().(*[]int64)
		ms := (*sp)[:0]
		p := pow10[e]
		ok := true
		for _, b := range vals {
			f := math.Float64frombits(b)
			m := math.Round(f * p)
			if !(m >= -maxMantissa && m <= maxMantissa) || math.Float64bits(m/p) != b {
				ok = false
				break
			}
			ms = append(ms, int64(m))
		}
		if ok {
			dst = append(dst, floatDecimal, byte(e))
			dst = AppendInts(dst, ms)
		}
		*sp = ms
		mantissaPool.Put(sp)
		if ok {
			return dst
		}
	}
	dst = append(dst, floatGorilla)
	return appendGorilla(dst, vals)
}

// decimalExp finds the smallest exponent e with which every value is
// m/10^e for an integer |m| ≤ 2^53, or reports that there is none.
func decimalExp(vals []uint64) (int, bool) {
	e := 0
	for _, b := range vals {
		f := math.Float64frombits(b)
		if b == 1<<63 { // -0 would come back as +0
			return 0, false
		}
		for {
			// NaN and ±Inf fail the range check.
			m := math.Round(f * pow10[e])
			if m >= -maxMantissa && m <= maxMantissa && m/pow10[e] == f {
				break
			}
			if e++; e > maxDecimalExp {
				return 0, false
			}
		}
	}
	return e, true
}

func appendGorilla(dst []byte, vals []uint64) []byte {
	if len(vals) == 0 {
		return dst
	}
	w := bitWriter{buf: dst}
	prev := vals[0]
	w.write(prev, 64)
	lead, trail := uint(65), uint(0) // no window yet
	for _, v := range vals[1:] {
		x := v ^ prev
		prev = v
		if x == 0 {
			w.write(0, 1)
			continue
		}
		l, t := uint(bits.LeadingZeros64(x)), uint(bits.TrailingZeros64(x))
		if lead <= 64 && l >= lead && t >= trail {
			w.write(0b01, 2) // '1' then '0'
			w.write(x>>trail, 64-lead-trail)
			continue
		}
		lead, trail = l, t
		sig := 64 - l - t
		w.write(0b11|uint64(l)<<2|uint64(sig-1)<<8, 14)
		w.write(x>>t, sig)
	}
	return w.flush()
}

// DecodeFloats decodes a column of n float64 values (as IEEE 754 bits) from
// src, all of it, appending them to dst.
func DecodeFloats(dst []uint64, src []byte, n int) ([]uint64, error) {
	if len(src) == 0 {
		return dst, corrupt("empty float column")
	}
	switch src[0] {
	case floatDecimal:
		if len(src) < 2 || src[1] > maxDecimalExp {
			return dst, corrupt("bad decimal exponent")
		}
		start := len(dst)
		dst, err := DecodeInts(dst, src[2:], n)
		if err != nil {
			return dst, err
		}
		p := pow10[src[1]]
		for i, m := range dst[start:] {
			dst[start+i] = math.Float64bits(float64(int64(m)) / p)
		}
		return dst, nil
	case floatGorilla:
		return decodeGorilla(dst, src[1:], n)
	}
	return dst, corrupt("unknown float kind %d", src[0])
}

func decodeGorilla(dst []uint64, src []byte, n int) ([]uint64, error) {
	if n < 0 || n > len(src)*8 {
		// Each value after the first costs at least one bit.
		return dst, corrupt("%d values cannot fit in %d bytes", n, len(src))
	}
	if n == 0 {
		if len(src) != 0 {
			return dst, corrupt("%d trailing bytes after float column", len(src))
		}
		return dst, nil
	}
	dst = slices.Grow(dst, n)
	r := newBitReader(src)
	prev := r.read(64)
	dst = append(dst, prev)
	lead, trail := uint(65), uint(0)
	for i := 1; i < n && !r.bad; i++ {
		if r.bit() {
			if r.bit() {
				h := r.read(12)
				lead, trail = uint(h&63), 0
				sig := uint(h>>6) + 1
				if lead+sig > 64 {
					return dst, corrupt("XOR window %d+%d bits", lead, sig)
				}
				trail = 64 - lead - sig
			} else if lead > 64 {
				return dst, corrupt("XOR window reused before one was set")
			}
			prev ^= r.read(64-lead-trail) << trail
		}
		dst = append(dst, prev)
	}
	return dst, r.done()
}
