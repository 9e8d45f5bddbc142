package embedded

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync/atomic"
	"time"

	mlog "github.com/millstream/millstream/log"
)

// Batch framing (all integers big-endian):
//
//	off size field
//	0   4    length     bytes that follow this field (crc .. end of records)
//	4   4    crc        CRC32C (Castagnoli) of bytes [8, 4+length)
//	8   1    magic      batchMagic
//	9   8    baseOffset offset of the first record
//	17  4    count      number of records (>= 1)
//	21  8    firstTs    timestamp of the first record, ms since the epoch
//	29  8    maxTs      largest timestamp in the batch, ms
//	37  ...  records
//
// Each record (offset = baseOffset + its index in the batch):
//
//	varint  ts - firstTs
//	varint  key length (-1 = nil), key bytes
//	varint  value length (-1 = nil), value bytes
//	uvarint header count, then per header: uvarint key length, key, varint value length (-1 = nil), value
const (
	batchMagic      = 1
	batchHeaderSize = 37
	// maxBatchBody bounds a batch's length field so a corrupt length cannot
	// make the reader allocate gigabytes: a batch is at most one maximum-size
	// record plus a writer's target batch size.
	maxBatchBody = maxRecordBytesLimit + batchTarget + batchHeaderSize
	// maxRecordBytesLimit is the hard upper bound of Options.MaxRecordBytes.
	maxRecordBytesLimit = 32 << 20
	// batchTarget is the size at which the writer starts a new batch.
	batchTarget = 1 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errCorrupt marks bytes that are not a valid batch: a torn write, a bad
// length, a CRC mismatch or an undecodable record.
var errCorrupt = errors.New("corrupt batch")

// batchHeader is the fixed part of a batch.
type batchHeader struct {
	length     uint32
	crc        uint32
	baseOffset int64
	count      uint32
	firstTs    int64
	maxTs      int64
}

func (h batchHeader) size() int64       { return 4 + int64(h.length) }
func (h batchHeader) nextOffset() int64 { return h.baseOffset + int64(h.count) }

func parseHeader(b []byte) (batchHeader, error) {
	if len(b) < batchHeaderSize {
		return batchHeader{}, fmt.Errorf("%w: short header (%d bytes)", errCorrupt, len(b))
	}
	h := batchHeader{
		length:     binary.BigEndian.Uint32(b[0:]),
		crc:        binary.BigEndian.Uint32(b[4:]),
		baseOffset: int64(binary.BigEndian.Uint64(b[9:])),
		count:      binary.BigEndian.Uint32(b[17:]),
		firstTs:    int64(binary.BigEndian.Uint64(b[21:])),
		maxTs:      int64(binary.BigEndian.Uint64(b[29:])),
	}
	switch {
	case h.length < batchHeaderSize-4 || h.length > maxBatchBody:
		return h, fmt.Errorf("%w: bad length %d", errCorrupt, h.length)
	case b[8] != batchMagic:
		return h, fmt.Errorf("%w: bad magic %d", errCorrupt, b[8])
	case h.count == 0 || h.baseOffset < 0:
		return h, fmt.Errorf("%w: bad count %d or base offset %d", errCorrupt, h.count, h.baseOffset)
	}
	return h, nil
}

// checkCRC verifies a whole batch (header included).
func checkCRC(batch []byte) error {
	crc := binary.BigEndian.Uint32(batch[4:])
	if got := crc32.Checksum(batch[8:], castagnoli); got != crc {
		return fmt.Errorf("%w: crc mismatch (stored %08x, computed %08x)", errCorrupt, crc, got)
	}
	return nil
}

// recordSize is an upper bound of r's encoded size, used for buffer
// accounting and the record size limit.
func recordSize(r *mlog.Record) int {
	n := 3*binary.MaxVarintLen64 + len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += 2*binary.MaxVarintLen64 + len(h.Key) + len(h.Value)
	}
	return n
}

// batchEncoder builds one batch in a reused buffer.
type batchEncoder struct {
	buf     []byte
	count   uint32
	firstTs int64
	maxTs   int64
}

func (e *batchEncoder) reset(base int64) {
	if cap(e.buf) < batchHeaderSize {
		e.buf = make([]byte, batchHeaderSize, 64<<10)
	}
	e.buf = e.buf[:batchHeaderSize]
	binary.BigEndian.PutUint64(e.buf[9:], uint64(base))
	e.count = 0
}

func (e *batchEncoder) add(r *mlog.Record) {
	ts := r.Timestamp.UnixMilli()
	if e.count == 0 {
		e.firstTs, e.maxTs = ts, ts
	}
	if ts > e.maxTs {
		e.maxTs = ts
	}
	e.count++
	b := binary.AppendVarint(e.buf, ts-e.firstTs)
	b = appendBytes(b, r.Key)
	b = appendBytes(b, r.Value)
	b = binary.AppendUvarint(b, uint64(len(r.Headers)))
	for _, h := range r.Headers {
		b = binary.AppendUvarint(b, uint64(len(h.Key)))
		b = append(b, h.Key...)
		b = appendBytes(b, h.Value)
	}
	e.buf = b
}

func appendBytes(b, v []byte) []byte {
	if v == nil {
		return binary.AppendVarint(b, -1)
	}
	b = binary.AppendVarint(b, int64(len(v)))
	return append(b, v...)
}

// finish fills in the header and returns the framed batch.
func (e *batchEncoder) finish() []byte {
	b := e.buf
	binary.BigEndian.PutUint32(b[0:], uint32(len(b)-4))
	b[8] = batchMagic
	binary.BigEndian.PutUint32(b[17:], e.count)
	binary.BigEndian.PutUint64(b[21:], uint64(e.firstTs))
	binary.BigEndian.PutUint64(b[29:], uint64(e.maxTs))
	binary.BigEndian.PutUint32(b[4:], crc32.Checksum(b[8:], castagnoli))
	return b
}

// decodeRecords decodes the records of a CRC-checked batch. Key, value and
// header values alias batch, which the caller must not reuse.
func decodeRecords(batch []byte, h batchHeader, topic string, partition int32, from int64, out []mlog.Record) ([]mlog.Record, error) {
	b := batch[batchHeaderSize:]
	// Headers of all records share one slab (each record's slice is capped,
	// so appending to one cannot overwrite the next), and header keys, a
	// handful of names repeated on every record, are interned: decoding
	// allocated five times per record and fed a tenth of the broker's
	// garbage under load.
	var slab []mlog.Header
	for i := uint32(0); i < h.count; i++ {
		var rec mlog.Record
		var err error
		var tsDelta int64
		if tsDelta, b, err = readVarint(b); err != nil {
			return out, err
		}
		if rec.Key, b, err = readBytes(b); err != nil {
			return out, err
		}
		if rec.Value, b, err = readBytes(b); err != nil {
			return out, err
		}
		nh, n := binary.Uvarint(b)
		if n <= 0 || nh > uint64(len(b)) {
			return out, fmt.Errorf("%w: bad header count", errCorrupt)
		}
		b = b[n:]
		if nh > 0 {
			if uint64(cap(slab)-len(slab)) < nh {
				slab = make([]mlog.Header, 0, max(int(nh), int(h.count-i)*int(nh)))
			}
			start := len(slab)
			for j := uint64(0); j < nh; j++ {
				kl, n := binary.Uvarint(b)
				if n <= 0 || kl > uint64(len(b)-n) {
					return out, fmt.Errorf("%w: bad header key length", errCorrupt)
				}
				key := internKey(b[n : n+int(kl)])
				b = b[n+int(kl):]
				var v []byte
				if v, b, err = readBytes(b); err != nil {
					return out, err
				}
				slab = append(slab, mlog.Header{Key: key, Value: v})
			}
			rec.Headers = slab[start:len(slab):len(slab)]
		}
		off := h.baseOffset + int64(i)
		if off < from {
			continue
		}
		rec.Topic, rec.Partition, rec.Offset = topic, partition, off
		rec.Timestamp = time.UnixMilli(h.firstTs + tsDelta)
		out = append(out, rec)
	}
	if len(b) != 0 {
		return out, fmt.Errorf("%w: %d trailing bytes after %d records", errCorrupt, len(b), h.count)
	}
	return out, nil
}

// keyCache interns header keys: a slot per hash of the key, holding the
// last key seen there. Lock-free and bounded; a collision only costs an
// allocation.
var keyCache [512]atomic.Pointer[string]

func internKey(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if len(b) > 64 {
		return string(b)
	}
	h := uint32(2166136261) // FNV-1a
	for _, c := range b {
		h = (h ^ uint32(c)) * 16777619
	}
	slot := &keyCache[h%uint32(len(keyCache))]
	if p := slot.Load(); p != nil && *p == string(b) {
		return *p
	}
	k := string(b)
	slot.Store(&k)
	return k
}

func readVarint(b []byte) (int64, []byte, error) {
	v, n := binary.Varint(b)
	if n <= 0 {
		return 0, b, fmt.Errorf("%w: bad varint", errCorrupt)
	}
	return v, b[n:], nil
}

func readBytes(b []byte) ([]byte, []byte, error) {
	l, b, err := readVarint(b)
	if err != nil {
		return nil, b, err
	}
	if l == -1 {
		return nil, b, nil
	}
	if l < 0 || l > int64(len(b)) {
		return nil, b, fmt.Errorf("%w: bad length %d", errCorrupt, l)
	}
	return b[:l:l], b[l:], nil
}

// readBatchAt reads and verifies the batch at pos of a segment whose valid
// bytes end at limit. It returns the batch bytes (freshly allocated).
func readBatchAt(r io.ReaderAt, pos, limit int64) (batchHeader, []byte, error) {
	if limit-pos < batchHeaderSize {
		return batchHeader{}, nil, fmt.Errorf("%w: short batch header at %d (%d bytes left)", errCorrupt, pos, limit-pos)
	}
	var hb [batchHeaderSize]byte
	if _, err := r.ReadAt(hb[:], pos); err != nil {
		return batchHeader{}, nil, fmt.Errorf("read batch header at %d: %w", pos, err)
	}
	h, err := parseHeader(hb[:])
	if err != nil {
		return h, nil, err
	}
	if pos+h.size() > limit {
		return h, nil, fmt.Errorf("%w: short batch at %d (length %d, %d bytes left)", errCorrupt, pos, h.size(), limit-pos)
	}
	buf := make([]byte, h.size())
	if _, err := r.ReadAt(buf, pos); err != nil {
		return h, nil, fmt.Errorf("read batch at %d: %w", pos, err)
	}
	if err := checkCRC(buf); err != nil {
		return h, nil, err
	}
	return h, buf, nil
}

// readAhead is how much of a segment a fetch reads with one pread: a
// consumer tailing a busy topic finds many small batches (one per group
// commit) and read each with two preads and an allocation of its own.
const readAhead = 64 << 10

// chunkReader reads the batches of one segment, many per pread. Records
// decoded from a chunk point into it, so a chunk is never reused.
type chunkReader struct {
	r     io.ReaderAt
	start int64  // file position of buf[0]
	buf   []byte // bytes [start, start+len(buf)) of the file
}

// batch returns the CRC-checked batch at pos of a segment whose valid bytes
// end at limit. A batch the chunk does not hold whole (cut off by its end,
// or larger than a chunk, as a normaliser's batch of points often is) starts
// the next chunk, which keeps the bytes already read: no byte is read twice.
// A torn batch goes to readBatchAt, which says what is wrong with it.
func (c *chunkReader) batch(pos, limit int64) (batchHeader, []byte, error) {
	if pos < c.start || pos+batchHeaderSize > c.start+int64(len(c.buf)) {
		if limit-pos < batchHeaderSize {
			return readBatchAt(c.r, pos, limit)
		}
		if err := c.next(pos, limit, 0); err != nil {
			return batchHeader{}, nil, err
		}
	}
	b := c.buf[pos-c.start:]
	h, err := parseHeader(b)
	if err != nil {
		return h, nil, err
	}
	if h.size() > int64(len(b)) {
		if pos+h.size() > limit {
			return readBatchAt(c.r, pos, limit)
		}
		if err := c.next(pos, limit, h.size()); err != nil {
			return batchHeader{}, nil, err
		}
		b = c.buf
	}
	raw := b[:h.size():h.size()]
	if err := checkCRC(raw); err != nil {
		return h, nil, err
	}
	return h, raw, nil
}

// next makes the chunk start at pos and hold at least need bytes (and
// readAhead more, as far as limit). What the current chunk holds from pos
// on is copied, not read again; the current chunk itself is left as it is,
// since records decoded from it point into it.
func (c *chunkReader) next(pos, limit, need int64) error {
	var have []byte
	if pos >= c.start && pos < c.start+int64(len(c.buf)) {
		have = c.buf[pos-c.start:]
	}
	buf := make([]byte, min(limit-pos, need+readAhead))
	n := copy(buf, have)
	if _, err := c.r.ReadAt(buf[n:], pos+int64(n)); err != nil {
		return fmt.Errorf("read batch at %d: %w", pos, err)
	}
	c.start, c.buf = pos, buf
	return nil
}

// ScannedBatch is one valid batch found by ScanSegment.
type ScannedBatch struct {
	Pos        int64
	BaseOffset int64
	Count      int
	MaxTs      int64
	Raw        []byte
}

// ScanSegment walks the batches of a segment from pos and returns the valid
// ones, the position where valid data ends and the reason it stopped early
// (nil at a clean end). It never panics on arbitrary bytes; every returned
// batch passed its CRC check and decodes fully. Exported for tools and the
// fuzz test.
func ScanSegment(r io.ReaderAt, pos, size int64, fn func(ScannedBatch) error) (int64, error) {
	expect := int64(-1)
	for pos < size {
		h, raw, err := readBatchAt(r, pos, size)
		if err != nil {
			return pos, err
		}
		if expect >= 0 && h.baseOffset < expect {
			return pos, fmt.Errorf("%w: base offset %d goes backwards (expected >= %d)", errCorrupt, h.baseOffset, expect)
		}
		if _, err := decodeRecords(raw, h, "", 0, h.nextOffset(), nil); err != nil {
			return pos, err
		}
		if fn != nil {
			if err := fn(ScannedBatch{Pos: pos, BaseOffset: h.baseOffset, Count: int(h.count), MaxTs: h.maxTs, Raw: raw}); err != nil {
				return pos, err
			}
		}
		expect = h.nextOffset()
		pos += h.size()
	}
	return pos, nil
}
