// Package encoding holds the historian's column encodings: compact,
// lossless byte formats for one column of a block (timestamps, values of one
// type, qualities), each as an Append function that extends a []byte and a
// Decode function that fills a caller-owned slice.
//
// Encodings:
//
//   - Integers (timestamps, int64 and uint64 values, decimal mantissas):
//     AppendInts picks, per column, the cheapest of raw, delta and
//     delta-of-delta residuals, zigzags them and bit-packs them in groups of
//     64 with one width byte per group. A regular 1 Hz timestamp column
//     costs one byte per 64 samples; a counter with a steady rate the same.
//   - Floats: AppendFloats stores a column as decimal mantissas with one
//     shared power-of-ten exponent when every value round-trips bit for bit
//     through that form (what sensors with a fixed resolution produce), and
//     otherwise as Gorilla XOR (Pelkonen et al., VLDB 2015). NaN, ±Inf and
//     -0 always take the Gorilla path, so the column stays lossless.
//   - Bools: run lengths.
//   - Strings (and bytes): a dictionary of distinct values plus run-length
//     encoded dictionary indexes.
//   - Small symbols (qualities): run-length encoded (symbol, run) pairs, a
//     few bytes per column when constant.
//
// Decoders never panic on any input: corrupt or truncated input returns an
// error wrapping ErrCorrupt. They append to a caller-provided slice, so a
// caller that reuses its slices decodes without allocating (the string
// decoder allocates once per distinct string per column, never per value).
// The number of values is not part of the column encodings: the block that
// holds them knows it and passes it in.
package encoding

import (
	"errors"
	"fmt"
)

// ErrCorrupt is wrapped by every decoding error.
var ErrCorrupt = errors.New("corrupt column")

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}

// zigzag maps signed integers to unsigned so that small magnitudes of
// either sign get small codes: 0,-1,1,-2 → 0,1,2,3.
func zigzag(v int64) uint64 { return uint64(v<<1) ^ uint64(v>>63) }

func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

// uvarint reads an unsigned varint from src at *pos.
func uvarint(src []byte, pos *int) (uint64, bool) {
	var x uint64
	var s uint
	for i := *pos; i < len(src); i++ {
		b := src[i]
		if b < 0x80 {
			if i-*pos == 9 && b > 1 {
				return 0, false // overflows 64 bits
			}
			*pos = i + 1
			return x | uint64(b)<<s, true
		}
		if i-*pos == 9 {
			return 0, false
		}
		x |= uint64(b&0x7f) << s
		s += 7
	}
	return 0, false
}
