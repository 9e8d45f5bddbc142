package encoding

import (
	"encoding/binary"
	"math/bits"
	"slices"
)

// Integer column layout:
//
//	mode byte          0 raw, 1 delta, 2 delta-of-delta
//	first value        zigzag varint      (modes 1 and 2, when n ≥ 1)
//	first delta        zigzag varint      (mode 2, when n ≥ 2)
//	residual groups    the remaining values' residuals in groups of 64:
//	                   width byte w (0..64), then ceil(w*count/8) bytes of
//	                   zigzagged residuals packed w bits each, LSB-first
//
// Arithmetic wraps modulo 2^64, so every int64 and uint64 sequence
// round-trips, including deltas that overflow.
const (
	modeRaw   = 0
	modeDelta = 1
	modeDoD   = 2

	groupSize = 64
)

// Integer is what AppendInts and DecodeInts accept.
type Integer interface{ ~int64 | ~uint64 }

// AppendInts appends the encoding of vals to dst, choosing the mode whose
// packed residuals take fewest bytes. It does not allocate beyond growing
// dst.
func AppendInts[T Integer](dst []byte, vals []T) []byte {
	best, bestCost := modeRaw, intsCost(vals, modeRaw)
	for m := modeDelta; m <= modeDoD; m++ {
		if c := intsCost(vals, m); c < bestCost {
			best, bestCost = m, c
		}
	}
	dst = append(dst, byte(best))
	n := len(vals)
	if best >= modeDelta && n >= 1 {
		dst = binary.AppendUvarint(dst, zigzag(int64(vals[0])))
	}
	if best == modeDoD && n >= 2 {
		dst = binary.AppendUvarint(dst, zigzag(int64(vals[1]-vals[0])))
	}
	var buf [groupSize]uint64
	for i := min(best, n); i < n; i += groupSize {
		g := buf[:min(groupSize, n-i)]
		w := residuals(g, vals, i, best)
		dst = append(dst, byte(w))
		dst = packBits(dst, g, w)
	}
	return dst
}

// residuals fills g with the zigzagged residuals of vals[i:i+len(g)] under
// mode m and returns the bit width that holds all of them.
func residuals[T Integer](g []uint64, vals []T, i, m int) uint {
	var or uint64
	v := vals[i : i+len(g)]
	switch m {
	case modeRaw:
		for k, x := range v {
			z := zigzag(int64(x))
			g[k] = z
			or |= z
		}
	case modeDelta:
		prev := vals[i-1]
		for k, x := range v {
			z := zigzag(int64(x - prev))
			prev = x
			g[k] = z
			or |= z
		}
	default:
		prev, d := vals[i-1], vals[i-1]-vals[i-2]
		for k, x := range v {
			nd := x - prev
			z := zigzag(int64(nd - d))
			prev, d = x, nd
			g[k] = z
			or |= z
		}
	}
	return uint(bits.Len64(or))
}

// intsCost is the encoded size of vals under mode m, computed without
// encoding.
func intsCost[T Integer](vals []T, m int) int {
	n := len(vals)
	cost := 1
	if m >= modeDelta && n >= 1 {
		cost += uvarintLen(zigzag(int64(vals[0])))
	}
	if m == modeDoD && n >= 2 {
		cost += uvarintLen(zigzag(int64(vals[1] - vals[0])))
	}
	var buf [groupSize]uint64
	for i := min(m, n); i < n; i += groupSize {
		g := buf[:min(groupSize, n-i)]
		w := residuals(g, vals, i, m)
		cost += 1 + (int(w)*len(g)+7)/8
	}
	return cost
}

func uvarintLen(x uint64) int { return (bits.Len64(x|1) + 6) / 7 }

// packBits appends the low w bits of each of g, LSB-first, padded to a
// byte boundary.
func packBits(dst []byte, g []uint64, w uint) []byte {
	if w == 0 {
		return dst
	}
	var acc uint64
	var n uint
	for _, v := range g {
		acc |= v << n
		n += w
		if n >= 64 {
			dst = binary.LittleEndian.AppendUint64(dst, acc)
			n -= 64
			acc = v >> (w - n)
		}
	}
	for ; n > 0; n -= min(n, 8) {
		dst = append(dst, byte(acc))
		acc >>= 8
	}
	return dst
}

// unpackBits fills g with len(g) values of w bits from src, which holds
// exactly ceil(w*len(g)/8) bytes.
func unpackBits(g []uint64, src []byte, w uint) {
	if w == 0 {
		clear(g)
		return
	}
	mask := uint64(1)<<w - 1 // all ones when w == 64
	if w <= 56 {
		// One unaligned load holds the value whatever its bit offset.
		var pos uint
		for k := range g {
			i := int(pos >> 3)
			g[k] = load64(src, i) >> (pos & 7) & mask
			pos += w
		}
		return
	}
	for k := range g {
		g[k] = bitsAt(src, uint64(k)*uint64(w), w)
	}
}

// DecodeInts decodes a column of n values from src (all of it) and appends
// them to dst.
func DecodeInts[T Integer](dst []T, src []byte, n int) ([]T, error) {
	if n < 0 {
		return dst, corrupt("negative count %d", n)
	}
	if len(src) == 0 {
		return dst, corrupt("empty integer column")
	}
	// Every group costs at least its width byte, so a count beyond this
	// bound cannot be honest; checking it first keeps a forged count from
	// making us allocate.
	if n > groupSize*len(src)+2 {
		return dst, corrupt("%d values cannot fit in %d bytes", n, len(src))
	}
	m := int(src[0])
	if m > modeDoD {
		return dst, corrupt("unknown integer mode %d", m)
	}
	pos := 1
	var first, delta uint64
	var ok bool
	if m >= modeDelta && n >= 1 {
		if first, ok = uvarint(src, &pos); !ok {
			return dst, corrupt("bad first value")
		}
		first = uint64(unzigzag(first))
		dst = append(dst, T(first))
	}
	if m == modeDoD && n >= 2 {
		if delta, ok = uvarint(src, &pos); !ok {
			return dst, corrupt("bad first delta")
		}
		delta = uint64(unzigzag(delta))
		first += delta
		dst = append(dst, T(first))
	}
	dst = slices.Grow(dst, n-min(m, n))
	prev := first
	var buf [groupSize]uint64
	for i := min(m, n); i < n; i += groupSize {
		g := buf[:min(groupSize, n-i)]
		if pos >= len(src) {
			return dst, corrupt("integer column truncated")
		}
		w := uint(src[pos])
		pos++
		if w > 64 {
			return dst, corrupt("bit width %d", w)
		}
		size := (int(w)*len(g) + 7) / 8
		if len(src)-pos < size {
			return dst, corrupt("integer column truncated")
		}
		unpackBits(g, src[pos:pos+size], w)
		pos += size
		switch m {
		case modeRaw:
			for _, z := range g {
				dst = append(dst, T(unzigzag(z)))
			}
		case modeDelta:
			for _, z := range g {
				prev += uint64(unzigzag(z))
				dst = append(dst, T(prev))
			}
		default:
			for _, z := range g {
				delta += uint64(unzigzag(z))
				prev += delta
				dst = append(dst, T(prev))
			}
		}
	}
	if pos != len(src) {
		return dst, corrupt("%d trailing bytes after integer column", len(src)-pos)
	}
	return dst, nil
}
