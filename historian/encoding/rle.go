package encoding

import (
	"encoding/binary"
	"slices"
)

// Bool column layout: the first value as a byte (0 or 1), then the length
// of each run of equal values as a uvarint; runs alternate in value. An
// empty column is empty.
//
// Symbol column layout (qualities): (symbol byte, run length uvarint)
// pairs; consecutive runs may not share a symbol.

// AppendBools appends a bool column; vals holds 0 for false and 1 for true
// (the bits of a block's bool values).
func AppendBools(dst []byte, vals []uint64) []byte {
	if len(vals) == 0 {
		return dst
	}
	cur := vals[0] & 1
	dst = append(dst, byte(cur))
	run := uint64(0)
	for _, v := range vals {
		if v&1 != cur {
			dst = binary.AppendUvarint(dst, run)
			cur, run = v&1, 0
		}
		run++
	}
	return binary.AppendUvarint(dst, run)
}

// DecodeBools decodes a bool column of n values from src, appending 0 or 1
// per value to dst.
func DecodeBools(dst []uint64, src []byte, n int) ([]uint64, error) {
	if n <= 0 {
		if n < 0 || len(src) != 0 {
			return dst, corrupt("bool column of %d bytes for %d values", len(src), n)
		}
		return dst, nil
	}
	if len(src) < 2 || src[0] > 1 {
		return dst, corrupt("bad bool column header")
	}
	cur := uint64(src[0])
	pos := 1
	left := uint64(n)
	dst = slices.Grow(dst, n)
	for left > 0 {
		run, ok := uvarint(src, &pos)
		if !ok || run == 0 || run > left {
			return dst, corrupt("bad bool run")
		}
		left -= run
		for ; run > 0; run-- {
			dst = append(dst, cur)
		}
		cur ^= 1
	}
	if pos != len(src) {
		return dst, corrupt("%d trailing bytes after bool column", len(src)-pos)
	}
	return dst, nil
}

// AppendSymbols appends a run-length encoded column of byte symbols.
func AppendSymbols(dst []byte, vals []uint8) []byte {
	for i := 0; i < len(vals); {
		j := i + 1
		for j < len(vals) && vals[j] == vals[i] {
			j++
		}
		dst = append(dst, vals[i])
		dst = binary.AppendUvarint(dst, uint64(j-i))
		i = j
	}
	return dst
}

// DecodeSymbols decodes a symbol column of n values from src, appending
// them to dst.
func DecodeSymbols(dst []uint8, src []byte, n int) ([]uint8, error) {
	if n < 0 {
		return dst, corrupt("negative count %d", n)
	}
	pos := 0
	left := uint64(n)
	dst = slices.Grow(dst, n)
	prev := -1
	for left > 0 {
		if pos >= len(src) {
			return dst, corrupt("symbol column truncated")
		}
		sym := src[pos]
		pos++
		run, ok := uvarint(src, &pos)
		if !ok || run == 0 || run > left || int(sym) == prev {
			return dst, corrupt("bad symbol run")
		}
		prev = int(sym)
		left -= run
		for ; run > 0; run-- {
			dst = append(dst, sym)
		}
	}
	if pos != len(src) {
		return dst, corrupt("%d trailing bytes after symbol column", len(src)-pos)
	}
	return dst, nil
}
