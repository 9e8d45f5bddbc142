package encoding

import (
	"encoding/binary"
)

// Bit streams are little-endian and LSB-first: the first bit written is
// bit 0 of the first byte. That order lets the writer shift whole values
// into a 64-bit accumulator and the reader pull any width with one
// unaligned 64-bit load.

// bitWriter appends bits to buf.
type bitWriter struct {
	buf []byte
	acc uint64 // pending bits, the oldest at bit 0
	n   uint   // number of pending bits in acc, < 64
}

// write appends the low nb bits of v (nb ≤ 64; higher bits of v must be 0).
func (w *bitWriter) write(v uint64, nb uint) {
	w.acc |= v << w.n // shifts of 64 or more give 0 in Go
	w.n += nb
	if w.n >= 64 {
		w.buf = binary.LittleEndian.AppendUint64(w.buf, w.acc)
		w.n -= 64
		w.acc = v >> (nb - w.n)
	}
}

// flush appends the pending bits, zero-padded to a byte boundary.
func (w *bitWriter) flush() []byte {
	for w.n > 0 {
		w.buf = append(w.buf, byte(w.acc))
		w.acc >>= 8
		if w.n < 8 {
			w.n = 0
		} else {
			w.n -= 8
		}
	}
	w.acc = 0
	return w.buf
}

// load64 returns the 8 bytes of src at i as a little-endian word, reading
// zeros past the end.
func load64(src []byte, i int) uint64 {
	if i+8 <= len(src) {
		return binary.LittleEndian.Uint64(src[i:])
	}
	var v uint64
	for k := 0; i+k < len(src) && k < 8; k++ {
		if i+k >= 0 {
			v |= uint64(src[i+k]) << (8 * k)
		}
	}
	return v
}

// bitsAt returns nb bits (≤ 64) starting at bit position pos of src.
// Callers check that pos+nb is within src.
func bitsAt(src []byte, pos uint64, nb uint) uint64 {
	i := int(pos >> 3)
	sh := uint(pos & 7)
	v := load64(src, i) >> sh
	if nb+sh > 64 {
		v |= load64(src, i+8) << (64 - sh)
	}
	if nb < 64 {
		v &= 1<<nb - 1
	}
	return v
}

// bitReader reads a bit stream written by bitWriter.
type bitReader struct {
	src []byte
	pos uint64 // next bit
	end uint64 // len(src)*8
	bad bool   // a read went past the end
}

func newBitReader(src []byte) bitReader {
	return bitReader{src: src, end: uint64(len(src)) * 8}
}

func (r *bitReader) read(nb uint) uint64 {
	if r.pos+uint64(nb) > r.end {
		r.bad = true
		r.pos = r.end
		return 0
	}
	v := bitsAt(r.src, r.pos, nb)
	r.pos += uint64(nb)
	return v
}

func (r *bitReader) bit() bool {
	if r.pos >= r.end {
		r.bad = true
		return false
	}
	b := r.src[r.pos>>3]>>(r.pos&7)&1 == 1
	r.pos++
	return b
}

// done checks that the stream ended within its last byte with zero padding,
// so that every valid column has exactly one encoding and trailing garbage
// is caught.
func (r *bitReader) done() error {
	if r.bad {
		return corrupt("bit stream truncated")
	}
	if (r.pos+7)/8 != uint64(len(r.src)) {
		return corrupt("%d trailing bytes after bit stream", uint64(len(r.src))-(r.pos+7)/8)
	}
	if rem := r.end - r.pos; rem > 0 && bitsAt(r.src, r.pos, uint(rem)) != 0 {
		return corrupt("non-zero padding bits")
	}
	return nil
}
