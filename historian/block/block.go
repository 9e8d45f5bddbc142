// Package block is the historian's block format: an immutable, checksummed
// run of one series' points in time order, stored column by column with
// the encodings of package encoding.
//
// Layout:
//
//	version      byte (1)
//	kind         byte (uns.Kind of the values; Null when all are null)
//	series id    uvarint
//	count        uvarint (1..MaxPoints)
//	min time     zigzag varint, ms since the Unix epoch
//	max time     zigzag varint
//	column sizes uvarint × 3: times, values, qualities
//	times        encoding.AppendInts (non-decreasing)
//	values       by kind: AppendFloats; AppendInts (int and uint);
//	             AppendBools; AppendStrings (string and bytes); none for Null
//	qualities    encoding.AppendSymbols of uns.Quality | NullFlag
//	crc          CRC-32C (Castagnoli) of everything before it, little-endian
//
// The header can be read without decoding (ReadHeader) so that an index
// can skip blocks outside a query's time range. Decode checks the CRC and
// every column and never panics on arbitrary bytes.
//
// Points is the column-oriented batch the block format is written from and
// decoded into; the historian also uses it as its in-memory head, so a
// point is never converted between representations on its way to disk.
package block

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"slices"

	"github.com/millstream/millstream/historian/encoding"
	"github.com/millstream/millstream/uns"
)

const (
	version = 1

	// MaxPoints bounds a block: a day of a 1 Hz tag fits.
	MaxPoints = 1 << 17

	// NullFlag marks, in a quality byte, a point whose value is null. The
	// value column holds a placeholder there (the previous value) so that
	// nulls do not disturb its compression.
	NullFlag = 0x80
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt is wrapped by every error about bytes that are not a valid
// block (including encoding.ErrCorrupt from a column).
var ErrCorrupt = encoding.ErrCorrupt

// ErrKind is returned when a value's kind does not match a batch's kind.
var ErrKind = errors.New("value kind differs from the batch's")

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: block: "+format, append([]any{ErrCorrupt}, args...)...)
}

// Points is a batch of one series' points, column by column. For Kind
// Float, Int, Uint and Bool, Bits holds one value per point
// (math.Float64bits, int64 as uint64, uint64, 0/1); for String and Bytes,
// Strs does; for Null neither does. Quality holds uns.Quality, with
// NullFlag set for null values.
type Points struct {
	Kind    uns.Kind
	Times   []int64 // ms since the Unix epoch
	Bits    []uint64
	Strs    []string
	Quality []uint8
}

// Len is the number of points.
func (p *Points) Len() int { return len(p.Times) }

// Reset empties p, keeping its memory.
func (p *Points) Reset() {
	p.Kind = uns.Null
	p.Times = p.Times[:0]
	p.Bits = p.Bits[:0]
	clear(p.Strs) // do not pin strings through the spare capacity
	p.Strs = p.Strs[:0]
	p.Quality = p.Quality[:0]
}

// Accepts reports whether a value of kind k can join p.
func (p *Points) Accepts(k uns.Kind) bool {
	return k == uns.Null || p.Kind == uns.Null || p.Kind == k
}

// Append adds a point at the end; it does not check time order (see
// Insert). It returns ErrKind if v is neither null nor of p's kind.
func (p *Points) Append(t int64, v uns.Value, q uns.Quality) error {
	return p.Insert(len(p.Times), t, v, q)
}

// Insert adds a point before index i (0 ≤ i ≤ Len).
func (p *Points) Insert(i int, t int64, v uns.Value, q uns.Quality) error {
	k := v.Kind()
	if !p.Accepts(k) {
		return fmt.Errorf("%w: %s into %s", ErrKind, k, p.Kind)
	}
	if p.Kind == uns.Null && k != uns.Null {
		// The first non-null value fixes the kind; earlier nulls get
		// placeholders.
		p.Kind = k
		if isString(k) {
			p.Strs = append(p.Strs[:0], make([]string, len(p.Times))...)
		} else {
			p.Bits = append(p.Bits[:0], make([]uint64, len(p.Times))...)
		}
	}
	qb := uint8(q) &^ NullFlag
	if k == uns.Null {
		qb |= NullFlag
	}
	p.Times = slices.Insert(p.Times, i, t)
	p.Quality = slices.Insert(p.Quality, i, qb)
	switch {
	case p.Kind == uns.Null:
	case isString(p.Kind):
		var s string
		switch k {
		case uns.String:
			s, _ = v.Str()
		case uns.Bytes:
			b, _ := v.Bytes()
			s = string(b)
		case uns.Null:
			if i > 0 {
				s = p.Strs[i-1]
			}
		}
		p.Strs = slices.Insert(p.Strs, i, s)
	default:
		var b uint64
		switch k {
		case uns.Float:
			f, _ := v.Float()
			b = math.Float64bits(f)
		case uns.Int:
			x, _ := v.Int()
			b = uint64(x)
		case uns.Uint:
			b, _ = v.Uint()
		case uns.Bool:
			if x, _ := v.Bool(); x {
				b = 1
			}
		case uns.Null:
			if i > 0 {
				b = p.Bits[i-1]
			}
		}
		p.Bits = slices.Insert(p.Bits, i, b)
	}
	return nil
}

func isString(k uns.Kind) bool { return k == uns.String || k == uns.Bytes }

// Value returns the value of point i.
func (p *Points) Value(i int) uns.Value {
	if p.Quality[i]&NullFlag != 0 {
		return uns.Value{}
	}
	switch p.Kind {
	case uns.Float:
		return uns.FloatValue(math.Float64frombits(p.Bits[i]))
	case uns.Int:
		return uns.IntValue(int64(p.Bits[i]))
	case uns.Uint:
		return uns.UintValue(p.Bits[i])
	case uns.Bool:
		return uns.BoolValue(p.Bits[i] == 1)
	case uns.String:
		return uns.StringValue(p.Strs[i])
	case uns.Bytes:
		return uns.BytesValue([]byte(p.Strs[i]))
	}
	return uns.Value{}
}

// QualityAt returns the quality of point i.
func (p *Points) QualityAt(i int) uns.Quality { return uns.Quality(p.Quality[i] &^ NullFlag) }

// Header is what a block says about itself.
type Header struct {
	SeriesID uint64
	Kind     uns.Kind
	Count    int
	MinTime  int64 // ms, the first point's time
	MaxTime  int64 // ms, the last point's time
}

// Append encodes p as a block of series id and appends it to dst. p must
// hold 1..MaxPoints points in non-decreasing time order.
func Append(dst []byte, id uint64, p *Points) ([]byte, error) {
	n := p.Len()
	if n == 0 || n > MaxPoints {
		return dst, fmt.Errorf("block of %d points: want 1..%d", n, MaxPoints)
	}
	if len(p.Quality) != n || (isString(p.Kind) && len(p.Strs) != n) ||
		(!isString(p.Kind) && p.Kind != uns.Null && len(p.Bits) != n) || p.Kind > uns.Bytes {
		return dst, fmt.Errorf("inconsistent %s batch: %d times, %d values, %d strings, %d qualities",
			p.Kind, n, len(p.Bits), len(p.Strs), len(p.Quality))
	}
	for i := 1; i < n; i++ {
		if p.Times[i] < p.Times[i-1] {
			return dst, fmt.Errorf("block times out of order at point %d", i)
		}
	}
	start := len(dst)
	dst = append(dst, version, byte(p.Kind))
	dst = binary.AppendUvarint(dst, id)
	dst = binary.AppendUvarint(dst, uint64(n))
	dst = binary.AppendVarint(dst, p.Times[0])
	dst = binary.AppendVarint(dst, p.Times[n-1])
	// Column sizes precede the columns; reserve the longest varints and
	// close the gap afterwards so each column is encoded straight into dst.
	sizes := len(dst)
	dst = append(dst, make([]byte, 3*binary.MaxVarintLen64)...)
	c0 := len(dst)
	dst = encoding.AppendInts(dst, p.Times)
	c1 := len(dst)
	switch p.Kind {
	case uns.Float:
		dst = encoding.AppendFloats(dst, p.Bits)
	case uns.Int, uns.Uint:
		dst = encoding.AppendInts(dst, p.Bits)
	case uns.Bool:
		dst = encoding.AppendBools(dst, p.Bits)
	case uns.String, uns.Bytes:
		dst = encoding.AppendStrings(dst, p.Strs)
	}
	c2 := len(dst)
	dst = encoding.AppendSymbols(dst, p.Quality)
	c3 := len(dst)
	var hdr [3 * binary.MaxVarintLen64]byte
	h := binary.AppendUvarint(hdr[:0], uint64(c1-c0))
	h = binary.AppendUvarint(h, uint64(c2-c1))
	h = binary.AppendUvarint(h, uint64(c3-c2))
	copy(dst[sizes:], h)
	dst = append(dst[:sizes+len(h)], dst[c0:c3]...)
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli)), nil
}

// ReadHeader reads the header of the block at the start of b and returns
// it with the offsets of the three columns. It checks neither the CRC nor
// the columns.
func ReadHeader(b []byte) (h Header, cols [4]int, err error) {
	if len(b) < 2 || b[0] != version {
		return h, cols, corrupt("unknown version")
	}
	if b[1] > byte(uns.Bytes) {
		return h, cols, corrupt("unknown kind %d", b[1])
	}
	h.Kind = uns.Kind(b[1])
	pos := 2
	var ok bool
	read := func() uint64 {
		v, n := binary.Uvarint(b[pos:])
		if n <= 0 {
			ok = false
			return 0
		}
		pos += n
		return v
	}
	ok = true
	h.SeriesID = read()
	count := read()
	h.MinTime = unzig(read())
	h.MaxTime = unzig(read())
	var size [3]uint64
	for i := range size {
		size[i] = read()
	}
	if !ok {
		return h, cols, corrupt("header truncated")
	}
	if count == 0 || count > MaxPoints {
		return h, cols, corrupt("%d points", count)
	}
	if h.MaxTime < h.MinTime {
		return h, cols, corrupt("max time before min time")
	}
	h.Count = int(count)
	cols[0] = pos
	for i, s := range size {
		if s > uint64(len(b)-cols[i]) {
			return h, cols, corrupt("column %d truncated", i)
		}
		cols[i+1] = cols[i] + int(s)
	}
	return h, cols, nil
}

func unzig(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

// Size returns the length of the block at the start of b, from its header.
func Size(b []byte) (int, error) {
	_, cols, err := ReadHeader(b)
	if err != nil {
		return 0, err
	}
	if len(b)-cols[3] < 4 {
		return 0, corrupt("checksum truncated")
	}
	return cols[3] + 4, nil
}

// Decoder decodes blocks into a Points, reusing its memory between blocks.
type Decoder struct {
	dict []string
}

// Decode decodes the block b (exactly one block) into p, replacing p's
// contents, and returns its header.
func (d *Decoder) Decode(p *Points, b []byte) (Header, error) {
	p.Reset()
	h, cols, err := ReadHeader(b)
	if err != nil {
		return h, err
	}
	if len(b) != cols[3]+4 {
		return h, corrupt("%d bytes, header says %d", len(b), cols[3]+4)
	}
	if crc32.Checksum(b[:cols[3]], castagnoli) != binary.LittleEndian.Uint32(b[cols[3]:]) {
		return h, corrupt("checksum mismatch")
	}
	n := h.Count
	col := func(i int) []byte { return b[cols[i]:cols[i+1]] }
	if p.Times, err = encoding.DecodeInts(p.Times, col(0), n); err != nil {
		return h, err
	}
	if p.Times[0] != h.MinTime || p.Times[n-1] != h.MaxTime {
		return h, corrupt("times disagree with the header")
	}
	for i := 1; i < n; i++ {
		if p.Times[i] < p.Times[i-1] {
			return h, corrupt("times out of order")
		}
	}
	p.Kind = h.Kind
	switch h.Kind {
	case uns.Float:
		p.Bits, err = encoding.DecodeFloats(p.Bits, col(1), n)
	case uns.Int, uns.Uint:
		p.Bits, err = encoding.DecodeInts(p.Bits, col(1), n)
	case uns.Bool:
		p.Bits, err = encoding.DecodeBools(p.Bits, col(1), n)
	case uns.String, uns.Bytes:
		p.Strs, d.dict, err = encoding.DecodeStrings(p.Strs, d.dict, col(1), n)
	case uns.Null:
		if len(col(1)) != 0 {
			err = corrupt("value column in a null block")
		}
	}
	if err != nil {
		return h, err
	}
	if p.Quality, err = encoding.DecodeSymbols(p.Quality, col(2), n); err != nil {
		return h, err
	}
	for _, q := range p.Quality {
		if q&^NullFlag > byte(uns.Stale) || (h.Kind == uns.Null && q&NullFlag == 0) {
			return h, corrupt("quality byte %#x", q)
		}
	}
	return h, nil
}
