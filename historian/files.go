package historian

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/millstream/millstream/historian/block"
	"github.com/millstream/millstream/uns"
)

// On-disk layout of a historian directory:
//
//	MANIFEST            the commit point: which partition files are live, how
//	                    much of series.log is valid, and the caller's
//	                    checkpoint. Replaced atomically (temp, fsync, rename,
//	                    fsync of the directory).
//	series.log          (uvarint name length, name, id uint64 LE, CRC-32C of
//	                    the three) records, one per series, append-only.
//	p<start>-<seq>.hdb  a partition file: immutable blocks of the partition
//	                    starting at <start> (ms), an index and a footer.
//	t<start>-<seq>.hti  the local index of a partition's Parquet tier object
//	                    (see tier.go).
//
// Partition file:
//
//	magic "MSHDB001"
//	blocks              block.Append format, each with its own CRC
//	index               uvarint number of blocks, then per block: uvarint
//	                    series id, uvarint offset, uvarint length, zigzag
//	                    varint min time, zigzag varint max time, uvarint
//	                    count; then uvarint number of series and per series
//	                    its newest point in the file (uvarint id, sample as
//	                    appendSample writes it), so that "current value"
//	                    queries after a restart read no block
//	footer              uint64 LE index offset, uint32 LE CRC-32C of the
//	                    index, magic "MSHDBIX2"
//
// Files of version 1 (footer magic "MSHDBIX1") have no counts and no
// newest points: the index is the block entries alone. They stay readable.
//
// A file that the manifest does not list is the leftover of a flush or a
// compaction that did not commit; Open deletes it.

const (
	fileMagic       = "MSHDB001"
	footerMagic     = "MSHDBIX2"
	footerMagicV1   = "MSHDBIX1"
	manifestMagic   = "MSHMAN01"
	manifestMagicV2 = "MSHMAN02"
	manifestName    = "MANIFEST"
	seriesLogName   = "series.log"
	footerSize      = 8 + 4 + 8
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt is wrapped by errors about damaged historian files.
var ErrCorrupt = errors.New("corrupt historian file")

// blockRef locates one block of a series.
type blockRef struct {
	file             *partFile // nil: in memory (mem holds the bytes)
	mem              []byte
	off, size        int64
	minTime, maxTime int64
	count            int
	seq              uint64 // flush that wrote it, to keep arrival order among equal times
	lane             uint8  // laneHead or laneLate, see series.sources
	// last is the block's last point (at maxTime; of equal times, the
	// last to arrive), known for blocks sealed or compacted in memory.
	last Sample
	// tier, when set, is the Parquet object holding the block's points:
	// rows [row, row+count) of it; file and mem are then nil.
	tier *tierObject
	row  int64
}

// partFile is an open partition file.
type partFile struct {
	name  string
	start int64 // partition start, ms
	seq   uint64
	f     *os.File
	refs  []indexEntry
	// newest is, per series, its newest point in the file (empty for
	// version 1 files).
	newest []newestEntry
}

type newestEntry struct {
	id uint64
	s  Sample
}

type indexEntry struct {
	id  uint64
	ref blockRef
}

func partFileName(start int64, seq uint64) string {
	return fmt.Sprintf("p%d-%d.hdb", start, seq)
}

func parsePartFileName(name string) (start int64, seq uint64, ok bool) {
	s, found := strings.CutPrefix(name, "p")
	if !found {
		return 0, 0, false
	}
	s, found = strings.CutSuffix(s, ".hdb")
	if !found {
		return 0, 0, false
	}
	// The start may be negative (before 1970), so split at the last '-'.
	i := strings.LastIndexByte(s, '-')
	if i <= 0 {
		return 0, 0, false
	}
	start, err1 := strconv.ParseInt(s[:i], 10, 64)
	seq, err2 := strconv.ParseUint(s[i+1:], 10, 64)
	return start, seq, err1 == nil && err2 == nil
}

// writeFileAtomic writes data to dir/name through a temporary file that is
// synced before the rename, then syncs the directory so the rename itself
// survives a crash.
func writeFileAtomic(dir, name string, write func(w io.Writer) error) error {
	tmp, err := os.CreateTemp(dir, name+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	bw := bufio.NewWriterSize(tmp, 1<<20)
	if err := write(bw); err != nil {
		tmp.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// newBlock is a block to be written to a partition file.
type newBlock struct {
	id   uint64
	hdr  block.Header
	b    []byte
	last Sample // the block's last point
}

// writePartFile writes blocks (in the order given) as a partition file and
// returns the index entries of the written blocks.
func writePartFile(dir, name string, blocks []newBlock) ([]indexEntry, error) {
	entries := make([]indexEntry, 0, len(blocks))
	err := writeFileAtomic(dir, name, func(w io.Writer) error {
		off := int64(len(fileMagic))
		if _, err := io.WriteString(w, fileMagic); err != nil {
			return err
		}
		idx := binary.AppendUvarint(nil, uint64(len(blocks)))
		var newest []newestEntry
		at := map[uint64]int{}
		for _, b := range blocks {
			// Of equal times, a later block holds the later arrival.
			if i, ok := at[b.id]; !ok {
				at[b.id] = len(newest)
				newest = append(newest, newestEntry{b.id, b.last})
			} else if b.last.Time >= newest[i].s.Time {
				newest[i].s = b.last
			}
			if _, err := w.Write(b.b); err != nil {
				return err
			}
			idx = binary.AppendUvarint(idx, b.id)
			idx = binary.AppendUvarint(idx, uint64(off))
			idx = binary.AppendUvarint(idx, uint64(len(b.b)))
			idx = binary.AppendVarint(idx, b.hdr.MinTime)
			idx = binary.AppendVarint(idx, b.hdr.MaxTime)
			idx = binary.AppendUvarint(idx, uint64(b.hdr.Count))
			entries = append(entries, indexEntry{id: b.id, ref: blockRef{
				off: off, size: int64(len(b.b)), minTime: b.hdr.MinTime, maxTime: b.hdr.MaxTime, count: b.hdr.Count, last: b.last}})
			off += int64(len(b.b))
		}
		idx = binary.AppendUvarint(idx, uint64(len(newest)))
		for _, e := range newest {
			idx = binary.AppendUvarint(idx, e.id)
			idx = appendSample(idx, e.s)
		}
		idx = binary.LittleEndian.AppendUint64(idx, uint64(off))
		idx = binary.LittleEndian.AppendUint32(idx, crc32.Checksum(idx[:len(idx)-8], castagnoli))
		idx = append(idx, footerMagic...)
		_, err := w.Write(idx)
		return err
	})
	return entries, err
}

// openPartFile opens a partition file and reads its index.
func openPartFile(dir, name string) (*partFile, error) {
	start, seq, ok := parsePartFileName(name)
	if !ok {
		return nil, fmt.Errorf("%w: %s: not a partition file name", ErrCorrupt, name)
	}
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return nil, err
	}
	pf := &partFile{name: name, start: start, seq: seq, f: f}
	if err := pf.readIndex(); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return pf, nil
}

func (pf *partFile) readIndex() error {
	st, err := pf.f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	if size < int64(len(fileMagic))+footerSize {
		return fmt.Errorf("%w: %d bytes", ErrCorrupt, size)
	}
	var foot [footerSize]byte
	if _, err := pf.f.ReadAt(foot[:], size-footerSize); err != nil {
		return err
	}
	idxOff := int64(binary.LittleEndian.Uint64(foot[:8]))
	v1 := string(foot[12:]) == footerMagicV1
	if (!v1 && string(foot[12:]) != footerMagic) || idxOff < int64(len(fileMagic)) || idxOff > size-footerSize {
		return fmt.Errorf("%w: bad footer", ErrCorrupt)
	}
	idx := make([]byte, size-footerSize-idxOff)
	if _, err := pf.f.ReadAt(idx, idxOff); err != nil {
		return err
	}
	if crc32.Checksum(idx, castagnoli) != binary.LittleEndian.Uint32(foot[8:12]) {
		return fmt.Errorf("%w: index checksum mismatch", ErrCorrupt)
	}
	return pf.parseIndex(idx, idxOff, v1)
}

// parseIndex decodes the index idx of a file whose blocks end at idxOff.
func (pf *partFile) parseIndex(idx []byte, idxOff int64, v1 bool) error {
	truncated := fmt.Errorf("%w: index truncated", ErrCorrupt)
	n := uint64(math.MaxUint64)
	if !v1 {
		var k int
		if n, k = binary.Uvarint(idx); k <= 0 || n > uint64(len(idx)) {
			return truncated
		}
		idx = idx[k:]
	}
	for ; n > 0 && (!v1 || len(idx) > 0); n-- {
		var v [6]uint64
		for i := range v {
			var n int
			if i == 3 || i == 4 {
				var s int64
				s, n = binary.Varint(idx)
				v[i] = uint64(s)
			} else {
				v[i], n = binary.Uvarint(idx)
			}
			if n <= 0 {
				return truncated
			}
			idx = idx[n:]
		}
		off, sz := int64(v[1]), int64(v[2])
		if v[1] > uint64(idxOff) || v[2] > uint64(idxOff) || off+sz > idxOff || v[5] == 0 || v[5] > block.MaxPoints {
			return fmt.Errorf("%w: index entry out of range", ErrCorrupt)
		}
		pf.refs = append(pf.refs, indexEntry{id: v[0], ref: blockRef{
			file: pf, off: off, size: sz, minTime: int64(v[3]), maxTime: int64(v[4]), count: int(v[5]), seq: pf.seq}})
	}
	if v1 {
		return nil
	}
	cnt, k := binary.Uvarint(idx)
	if k <= 0 || cnt > uint64(len(idx)) {
		return truncated
	}
	idx = idx[k:]
	for range cnt {
		id, k := binary.Uvarint(idx)
		if k <= 0 {
			return truncated
		}
		s, k2, err := readSample(idx[k:])
		if err != nil {
			return err
		}
		idx = idx[k+k2:]
		pf.newest = append(pf.newest, newestEntry{id, s})
	}
	if len(idx) != 0 {
		return fmt.Errorf("%w: %d bytes after the index", ErrCorrupt, len(idx))
	}
	return nil
}

// appendSample appends s: zigzag varint time, quality byte, kind byte,
// then for float, int, uint and bool the value's 64 bits as a uvarint
// (math.Float64bits, two's complement, 0/1), for string and bytes a
// uvarint length and the bytes, for null nothing.
func appendSample(dst []byte, s Sample) []byte {
	dst = binary.AppendVarint(dst, s.Time)
	k := s.Value.Kind()
	dst = append(dst, byte(s.Quality), byte(k))
	switch k {
	case uns.Float:
		f, _ := s.Value.Float()
		dst = binary.AppendUvarint(dst, math.Float64bits(f))
	case uns.Int:
		i, _ := s.Value.Int()
		dst = binary.AppendUvarint(dst, uint64(i))
	case uns.Uint:
		u, _ := s.Value.Uint()
		dst = binary.AppendUvarint(dst, u)
	case uns.Bool:
		b, _ := s.Value.Bool()
		x := uint64(0)
		if b {
			x = 1
		}
		dst = binary.AppendUvarint(dst, x)
	case uns.String, uns.Bytes:
		var str string
		if k == uns.String {
			str, _ = s.Value.Str()
		} else {
			b, _ := s.Value.Bytes()
			str = string(b)
		}
		dst = binary.AppendUvarint(dst, uint64(len(str)))
		dst = append(dst, str...)
	}
	return dst
}

// readSample decodes what appendSample wrote and returns the bytes used.
func readSample(b []byte) (Sample, int, error) {
	bad := fmt.Errorf("%w: bad sample in index", ErrCorrupt)
	t, n := binary.Varint(b)
	if n <= 0 || len(b) < n+2 {
		return Sample{}, 0, bad
	}
	q, k := uns.Quality(b[n]), uns.Kind(b[n+1])
	if q > uns.Stale {
		return Sample{}, 0, bad
	}
	n += 2
	s := Sample{Time: t, Quality: q}
	if k == uns.Null {
		return s, n, nil
	}
	x, m := binary.Uvarint(b[n:])
	if m <= 0 {
		return Sample{}, 0, bad
	}
	n += m
	switch k {
	case uns.Float:
		s.Value = uns.FloatValue(math.Float64frombits(x))
	case uns.Int:
		s.Value = uns.IntValue(int64(x))
	case uns.Uint:
		s.Value = uns.UintValue(x)
	case uns.Bool:
		if x > 1 {
			return Sample{}, 0, bad
		}
		s.Value = uns.BoolValue(x == 1)
	case uns.String, uns.Bytes:
		if x > uint64(len(b)-n) {
			return Sample{}, 0, bad
		}
		str := string(b[n : n+int(x)])
		n += int(x)
		if k == uns.String {
			s.Value = uns.StringValue(str)
		} else {
			s.Value = uns.BytesValue([]byte(str))
		}
	default:
		return Sample{}, 0, bad
	}
	return s, n, nil
}

// manifest is the committed state of the directory.
type manifest struct {
	seriesLen  int64
	checkpoint []byte
	files      []string
	tiers      []string // local indexes of Parquet tier objects
}

// encode writes version 1 without tier objects (so that a directory that
// never tiered stays readable by older versions) and version 2, which
// adds uvarint n and n names of tier indexes before the CRC, with them.
func (m *manifest) encode() []byte {
	magic := manifestMagic
	if len(m.tiers) > 0 {
		magic = manifestMagicV2
	}
	b := []byte(magic)
	b = binary.AppendUvarint(b, uint64(m.seriesLen))
	b = binary.AppendUvarint(b, uint64(len(m.checkpoint)))
	b = append(b, m.checkpoint...)
	b = binary.AppendUvarint(b, uint64(len(m.files)))
	for _, f := range m.files {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	if len(m.tiers) > 0 {
		b = binary.AppendUvarint(b, uint64(len(m.tiers)))
		for _, f := range m.tiers {
			b = binary.AppendUvarint(b, uint64(len(f)))
			b = append(b, f...)
		}
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func decodeManifest(b []byte) (*manifest, error) {
	bad := fmt.Errorf("%w: %s", ErrCorrupt, manifestName)
	if len(b) < len(manifestMagic)+4 || (string(b[:len(manifestMagic)]) != manifestMagic && string(b[:len(manifestMagic)]) != manifestMagicV2) ||
		crc32.Checksum(b[:len(b)-4], castagnoli) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return nil, bad
	}
	r := bytes.NewReader(b[len(manifestMagic) : len(b)-4])
	var m manifest
	str := func() ([]byte, error) {
		n, err := binary.ReadUvarint(r)
		if err != nil || n > uint64(r.Len()) {
			return nil, bad
		}
		s := make([]byte, n)
		_, err = io.ReadFull(r, s)
		return s, err
	}
	sl, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, bad
	}
	m.seriesLen = int64(sl)
	if m.checkpoint, err = str(); err != nil {
		return nil, bad
	}
	n, err := binary.ReadUvarint(r)
	if err != nil || n > uint64(r.Len()) {
		return nil, bad
	}
	for range n {
		f, err := str()
		if err != nil {
			return nil, bad
		}
		m.files = append(m.files, string(f))
	}
	if string(b[:len(manifestMagic)]) == manifestMagicV2 {
		n, err := binary.ReadUvarint(r)
		if err != nil || n == 0 || n > uint64(r.Len()) {
			return nil, bad
		}
		for range n {
			f, err := str()
			if err != nil {
				return nil, bad
			}
			m.tiers = append(m.tiers, string(f))
		}
	}
	if r.Len() != 0 {
		return nil, bad
	}
	return &m, nil
}

func appendSeriesRecord(dst []byte, name string, id uint64) []byte {
	start := len(dst)
	dst = binary.AppendUvarint(dst, uint64(len(name)))
	dst = append(dst, name...)
	dst = binary.LittleEndian.AppendUint64(dst, id)
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// readSeriesLog parses the committed prefix of series.log.
func readSeriesLog(b []byte, each func(name string, id uint64)) error {
	for len(b) > 0 {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) || uint64(len(b)-k)-n < 12 {
			return fmt.Errorf("%w: %s truncated", ErrCorrupt, seriesLogName)
		}
		end := k + int(n) + 8
		if crc32.Checksum(b[:end], castagnoli) != binary.LittleEndian.Uint32(b[end:]) {
			return fmt.Errorf("%w: %s checksum mismatch", ErrCorrupt, seriesLogName)
		}
		each(string(b[k:k+int(n)]), binary.LittleEndian.Uint64(b[k+int(n):]))
		b = b[end+4:]
	}
	return nil
}
