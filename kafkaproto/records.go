package kafkaproto

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"

	mlog "github.com/millstream/millstream/log"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Record batch v2 layout (all big-endian): the CRC covers everything from
// attributes to the end of the batch.
const (
	batchHeaderLen = 61 // baseOffset(8) length(4) epoch(4) magic(1) crc(4) attrs(2) lastDelta(4) firstTs(8) maxTs(8) pid(8) pepoch(2) seq(4) count(4)
	batchCRCStart  = 21
	attrCodecMask  = 0x07
	attrTxn        = 0x10
	attrControl    = 0x20
)

// Compression codecs in the attributes' low bits.
const (
	codecNone = iota
	codecGzip
	codecSnappy
	codecLZ4
	codecZstd
)

// errCorrupt marks batches that fail framing or CRC checks (CORRUPT_MESSAGE);
// errUnsupportedFormat marks old message formats (magic 0/1).
var (
	errCorrupt           = errors.New("corrupt record batch")
	errUnsupportedFormat = errors.New("record batch magic is not 2 (message format v0/v1 is not supported)")
	errTransactional     = errors.New("transactional and control batches are not supported")
)

// batch is one decoded produce batch.
type batch struct {
	producerID    int64
	producerEpoch int16
	firstSeq      int32
	lastDelta     int32
	records       []*mlog.Record
}

// decodeBatches parses the concatenated v2 batches of one partition of a
// produce request. maxBytes bounds the decompressed size of each batch, so a
// small compressed request cannot expand without limit.
func decodeBatches(topic string, partition int32, raw []byte, maxBytes int) ([]batch, error) {
	var out []batch
	for len(raw) > 0 {
		if len(raw) < 12 {
			return nil, fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(raw))
		}
		length := int(int32(binary.BigEndian.Uint32(raw[8:12])))
		if length < batchHeaderLen-12 || length > len(raw)-12 {
			return nil, fmt.Errorf("%w: batch length %d with %d bytes left", errCorrupt, length, len(raw)-12)
		}
		b := raw[:12+length]
		raw = raw[12+length:]
		if b[16] != 2 {
			return nil, errUnsupportedFormat
		}
		var rb kmsg.RecordBatch
		if err := rb.ReadFrom(b); err != nil {
			return nil, fmt.Errorf("%w: %v", errCorrupt, err)
		}
		if crc32.Checksum(b[batchCRCStart:], castagnoli) != uint32(rb.CRC) {
			return nil, fmt.Errorf("%w: CRC mismatch", errCorrupt)
		}
		if rb.Attributes&(attrTxn|attrControl) != 0 {
			return nil, errTransactional
		}
		if rb.NumRecords < 0 || rb.NumRecords > int32(maxBytes) {
			return nil, fmt.Errorf("%w: %d records", errCorrupt, rb.NumRecords)
		}
		recs, err := decompress(int(rb.Attributes&attrCodecMask), rb.Records, maxBytes)
		if err != nil {
			return nil, err
		}
		bt := batch{producerID: rb.ProducerID, producerEpoch: rb.ProducerEpoch, firstSeq: rb.FirstSequence, lastDelta: rb.LastOffsetDelta}
		bt.records, err = decodeRecords(topic, partition, recs, int(rb.NumRecords), rb.FirstTimestamp)
		if err != nil {
			return nil, err
		}
		if len(bt.records) == 0 {
			continue
		}
		out = append(out, bt)
	}
	return out, nil
}

func decodeRecords(topic string, partition int32, src []byte, n int, firstTs int64) ([]*mlog.Record, error) {
	recs := make([]*mlog.Record, 0, n)
	r := kbin.Reader{Src: src}
	for i := 0; i < n; i++ {
		length := r.Varint()
		if !r.Ok() || length < 0 || int(length) > len(r.Src) {
			return nil, fmt.Errorf("%w: record %d: length %d with %d bytes left", errCorrupt, i, length, len(r.Src))
		}
		rr := kbin.Reader{Src: r.Span(int(length))}
		rr.Int8() // attributes: unused in v2
		tsDelta := rr.Varlong()
		rr.Varint() // offset delta: offsets are assigned by the log
		key := rr.VarintBytes()
		value := rr.VarintBytes()
		nh := rr.VarintArrayLen()
		if !rr.Ok() || nh < 0 || int(nh) > len(rr.Src) {
			return nil, fmt.Errorf("%w: record %d", errCorrupt, i)
		}
		rec := &mlog.Record{Topic: topic, Partition: partition, PartitionSet: true, Key: key, Value: value}
		if nh > 0 {
			rec.Headers = make([]mlog.Header, nh)
			for j := range rec.Headers {
				rec.Headers[j].Key = rr.VarintString()
				rec.Headers[j].Value = rr.VarintBytes()
			}
		}
		if !rr.Ok() || len(rr.Src) != 0 {
			return nil, fmt.Errorf("%w: record %d: malformed fields", errCorrupt, i)
		}
		// A negative timestamp (-1: none given) means "now", as the log's
		// zero Timestamp does.
		if ts := firstTs + tsDelta; ts >= 0 {
			rec.Timestamp = time.UnixMilli(ts)
		}
		recs = append(recs, rec)
	}
	if len(r.Src) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the last record", errCorrupt, len(r.Src))
	}
	return recs, nil
}

var zstdDecoders = sync.Pool{New: func() any {
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
	if err != nil {
		return err
	}
	return d
}}

// decompress returns the records section of a batch uncompressed.
func decompress(codec int, src []byte, maxBytes int) ([]byte, error) {
	var r io.Reader
	switch codec {
	case codecNone:
		return src, nil
	case codecGzip:
		gz, err := gzip.NewReader(bytes.NewReader(src))
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %v", errCorrupt, err)
		}
		r = gz
	case codecSnappy:
		return unsnappy(src, maxBytes)
	case codecLZ4:
		r = lz4.NewReader(bytes.NewReader(src))
	case codecZstd:
		v := zstdDecoders.Get()
		d, ok := v.(*zstd.Decoder)
		if !ok {
			return nil, fmt.Errorf("zstd decoder: %v", v)
		}
		defer zstdDecoders.Put(d)
		if err := d.Reset(bytes.NewReader(src)); err != nil {
			return nil, fmt.Errorf("%w: zstd: %v", errCorrupt, err)
		}
		r = d
	default:
		return nil, fmt.Errorf("%w: unknown compression codec %d", errCorrupt, codec)
	}
	out, err := io.ReadAll(io.LimitReader(r, int64(maxBytes)+1))
	if err != nil {
		return nil, fmt.Errorf("%w: decompress: %v", errCorrupt, err)
	}
	if len(out) > maxBytes {
		return nil, fmt.Errorf("%w: decompresses to more than %d bytes", errCorrupt, maxBytes)
	}
	return out, nil
}

// xerialHeader starts snappy data framed the way the Java client (and
// franz-go, for compatibility) writes it: magic, version, compatible
// version, then blocks of int32 length + raw snappy.
var xerialHeader = []byte{0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0}

func unsnappy(src []byte, maxBytes int) ([]byte, error) {
	if !bytes.HasPrefix(src, xerialHeader) {
		return snappyBlock(nil, src, maxBytes)
	}
	if len(src) < 16 {
		return nil, fmt.Errorf("%w: short xerial snappy header", errCorrupt)
	}
	src = src[16:]
	var out []byte
	for len(src) > 0 {
		if len(src) < 4 {
			return nil, fmt.Errorf("%w: truncated xerial snappy block", errCorrupt)
		}
		n := int(binary.BigEndian.Uint32(src))
		src = src[4:]
		if n < 0 || n > len(src) {
			return nil, fmt.Errorf("%w: xerial snappy block of %d bytes with %d left", errCorrupt, n, len(src))
		}
		var err error
		if out, err = snappyBlock(out, src[:n], maxBytes-len(out)); err != nil {
			return nil, err
		}
		src = src[n:]
	}
	return out, nil
}

// snappyBlock appends the decoding of one raw snappy block to dst.
func snappyBlock(dst, src []byte, maxBytes int) ([]byte, error) {
	n, err := s2.DecodedLen(src)
	if err != nil {
		return nil, fmt.Errorf("%w: snappy: %v", errCorrupt, err)
	}
	if n > maxBytes {
		return nil, fmt.Errorf("%w: decompresses to more than %d bytes", errCorrupt, maxBytes)
	}
	dec, err := s2.Decode(make([]byte, n), src)
	if err != nil {
		return nil, fmt.Errorf("%w: snappy: %v", errCorrupt, err)
	}
	return append(dst, dec...), nil
}

// appendBatches encodes recs as uncompressed v2 record batches, starting a
// new batch wherever offsets are not contiguous (a gap left by crash
// recovery), so every record's offset is base + delta.
func appendBatches(dst []byte, recs []mlog.Record) []byte {
	for len(recs) > 0 {
		n := 1
		for n < len(recs) && recs[n].Offset == recs[n-1].Offset+1 {
			n++
		}
		dst = appendBatch(dst, recs[:n])
		recs = recs[n:]
	}
	return dst
}

func appendBatch(dst []byte, recs []mlog.Record) []byte {
	start := len(dst)
	base := recs[0].Offset
	firstTs := recs[0].Timestamp.UnixMilli()
	maxTs := firstTs
	for i := range recs {
		maxTs = max(maxTs, recs[i].Timestamp.UnixMilli())
	}
	dst = binary.BigEndian.AppendUint64(dst, uint64(base))
	dst = append(dst, 0, 0, 0, 0)               // length, below
	dst = binary.BigEndian.AppendUint32(dst, 0) // partition leader epoch
	dst = append(dst, 2)                        // magic
	dst = append(dst, 0, 0, 0, 0)               // crc, below
	dst = binary.BigEndian.AppendUint16(dst, 0) // attributes: no compression, create time
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(recs)-1))
	dst = binary.BigEndian.AppendUint64(dst, uint64(firstTs))
	dst = binary.BigEndian.AppendUint64(dst, uint64(maxTs))
	dst = binary.BigEndian.AppendUint64(dst, ^uint64(0)) // producer id -1
	dst = binary.BigEndian.AppendUint16(dst, ^uint16(0)) // producer epoch -1
	dst = binary.BigEndian.AppendUint32(dst, ^uint32(0)) // first sequence -1
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(recs)))
	var body []byte
	for i := range recs {
		r := &recs[i]
		body = body[:0]
		body = append(body, 0) // attributes
		body = binary.AppendVarint(body, r.Timestamp.UnixMilli()-firstTs)
		body = binary.AppendVarint(body, r.Offset-base)
		body = appendVarintBytes(body, r.Key)
		body = appendVarintBytes(body, r.Value)
		body = binary.AppendVarint(body, int64(len(r.Headers)))
		for _, h := range r.Headers {
			body = binary.AppendVarint(body, int64(len(h.Key)))
			body = append(body, h.Key...)
			body = appendVarintBytes(body, h.Value)
		}
		dst = binary.AppendVarint(dst, int64(len(body)))
		dst = append(dst, body...)
	}
	binary.BigEndian.PutUint32(dst[start+8:], uint32(len(dst)-start-12))
	binary.BigEndian.PutUint32(dst[start+17:], crc32.Checksum(dst[start+batchCRCStart:], castagnoli))
	return dst
}

func appendVarintBytes(dst, b []byte) []byte {
	if b == nil {
		return binary.AppendVarint(dst, -1)
	}
	dst = binary.AppendVarint(dst, int64(len(b)))
	return append(dst, b...)
}
