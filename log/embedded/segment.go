package embedded

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"
	"time"
)

const (
	indexEntrySize = 8  // relOffset uint32, pos uint32
	timeEntrySize  = 16 // maxTsBefore int64, relOffset uint32, pos uint32
	// indexInterval is how many segment bytes may lie between two sparse
	// index entries; a fetch scans at most about this much before its target.
	indexInterval = 4096
)

type indexEntry struct {
	rel uint32
	pos uint32
}

// timeEntry says: every record before the batch at pos has a timestamp <=
// maxBefore. OffsetForTime starts scanning at the last entry whose maxBefore
// is below the target time.
type timeEntry struct {
	maxBefore int64
	rel       uint32
	pos       uint32
}

// segment is one file of a partition plus its in-memory indexes. The index
// files are written when a segment is sealed (rolled) or the log is closed;
// the active segment's indexes live in memory and are rebuilt by scanning on
// open after a crash.
type segment struct {
	base    int64
	path    string
	f       *os.File
	size    int64 // valid bytes written (writer-owned until published)
	alloc   int64 // file size when zero-filled past size (writer-owned; see preallocate)
	synced  int64 // bytes durable and visible to readers (under partition mu)
	next    int64 // offset after the last record
	maxTs   int64 // largest timestamp in the segment, ms (math.MinInt64 if empty)
	created time.Time
	index   []indexEntry
	tindex  []timeEntry
	// lastIndexed is the size at the last index entry.
	lastIndexed int64
	sealed      bool
	// readHint is where a read of the segment last stopped, at a batch
	// boundary: the batch's offset relative to base in the high 32 bits,
	// its position in the low. A consumer tailing the topic starts its next
	// read there instead of at the sparse index entry before it, which made
	// every fetch re-read (and CRC-check) up to indexInterval bytes it had
	// already consumed. Readers of any offset may set it; lookup uses it
	// only when it lies at or before the offset wanted.
	readHint atomic.Uint64

	// Writer-side state of the active segment, published to the fields
	// above (under the partition's mu) once the bytes are fsynced. The
	// writer appends index entries beyond the published length, which
	// readers never look at.
	wnext   int64
	wmaxTs  int64
	windex  []indexEntry
	wtindex []timeEntry
}

// publish makes everything written so far visible to readers. The caller
// holds the partition's mu (or is the only user, during Open).
func (s *segment) publish() {
	s.synced = s.size
	s.next = s.wnext
	s.maxTs = s.wmaxTs
	s.index = s.windex
	s.tindex = s.wtindex
}

func segmentName(base int64) string { return fmt.Sprintf("%020d.log", base) }

func (s *segment) indexPath() string { return s.path[:len(s.path)-4] + ".index" }
func (s *segment) timePath() string  { return s.path[:len(s.path)-4] + ".timeindex" }

// noteBatch updates the in-memory indexes for a batch written at pos.
func (s *segment) noteBatch(pos int64, base int64, count int, maxTs int64, size int64) {
	if len(s.windex) == 0 || pos-s.lastIndexed >= indexInterval {
		rel := uint32(base - s.base)
		s.windex = append(s.windex, indexEntry{rel: rel, pos: uint32(pos)})
		s.wtindex = append(s.wtindex, timeEntry{maxBefore: s.wmaxTs, rel: rel, pos: uint32(pos)})
		s.lastIndexed = pos
	}
	if maxTs > s.wmaxTs {
		s.wmaxTs = maxTs
	}
	s.wnext = base + int64(count)
	s.size = pos + size
}

// lookup returns the file position to start scanning for offset: the
// latest batch boundary known at or before it, from the sparse index or the
// read hint.
func (s segView) lookup(offset int64) int64 {
	rel := offset - s.s.base
	i := sort.Search(len(s.index), func(i int) bool { return int64(s.index[i].rel) > rel })
	var pos int64
	if i > 0 {
		pos = int64(s.index[i-1].pos)
	}
	if h := s.s.readHint.Load(); h != 0 {
		hrel, hpos := int64(h>>32), int64(uint32(h))
		if hrel <= rel && hpos > pos && hpos <= s.synced {
			pos = hpos
		}
	}
	return pos
}

// noteRead records that a read stopped at the batch boundary pos, whose
// batch starts at offset (see readHint).
func (s *segment) noteRead(offset, pos int64) {
	rel := offset - s.base
	if rel < 0 || rel > math.MaxUint32 || pos <= 0 || pos > math.MaxUint32 {
		return
	}
	s.readHint.Store(uint64(rel)<<32 | uint64(pos))
}

// lookupTime returns the file position to start scanning for timestamp ts.
func (s segView) lookupTime(ts int64) int64 {
	i := sort.Search(len(s.tindex), func(i int) bool { return s.tindex[i].maxBefore >= ts })
	if i == 0 {
		return 0
	}
	return int64(s.tindex[i-1].pos)
}

// writeIndexes writes both index files and fsyncs them.
func (s *segment) writeIndexes() error {
	ib := make([]byte, 0, len(s.windex)*indexEntrySize)
	for _, e := range s.windex {
		ib = binary.BigEndian.AppendUint32(ib, e.rel)
		ib = binary.BigEndian.AppendUint32(ib, e.pos)
	}
	tb := make([]byte, 0, len(s.wtindex)*timeEntrySize)
	for _, e := range s.wtindex {
		tb = binary.BigEndian.AppendUint64(tb, uint64(e.maxBefore))
		tb = binary.BigEndian.AppendUint32(tb, e.rel)
		tb = binary.BigEndian.AppendUint32(tb, e.pos)
	}
	if err := writeFileSync(s.indexPath(), ib); err != nil {
		return err
	}
	return writeFileSync(s.timePath(), tb)
}

// loadIndexes reads the index files and checks them against the segment;
// it returns false if they are missing or inconsistent.
func (s *segment) loadIndexes(size int64) bool {
	ib, err := os.ReadFile(s.indexPath())
	if err != nil || len(ib)%indexEntrySize != 0 || len(ib) == 0 {
		return false
	}
	tb, err := os.ReadFile(s.timePath())
	if err != nil || len(tb)%timeEntrySize != 0 || len(tb)/timeEntrySize != len(ib)/indexEntrySize {
		return false
	}
	n := len(ib) / indexEntrySize
	idx := make([]indexEntry, n)
	tidx := make([]timeEntry, n)
	for i := 0; i < n; i++ {
		idx[i] = indexEntry{rel: binary.BigEndian.Uint32(ib[i*8:]), pos: binary.BigEndian.Uint32(ib[i*8+4:])}
		t := tb[i*timeEntrySize:]
		tidx[i] = timeEntry{maxBefore: int64(binary.BigEndian.Uint64(t)), rel: binary.BigEndian.Uint32(t[8:]), pos: binary.BigEndian.Uint32(t[12:])}
		if idx[i].rel != tidx[i].rel || idx[i].pos != tidx[i].pos || int64(idx[i].pos) >= size {
			return false
		}
		if i == 0 && (idx[0].pos != 0 || idx[0].rel != 0) {
			return false
		}
		if i > 0 && (idx[i].rel <= idx[i-1].rel || idx[i].pos <= idx[i-1].pos || tidx[i].maxBefore < tidx[i-1].maxBefore) {
			return false
		}
	}
	s.windex, s.wtindex = idx, tidx
	return true
}

// recoverSegment opens a segment file, verifies its tail (or all of it when
// its indexes are unusable), truncates anything invalid and returns a report
// if it truncated.
func recoverSegment(path string, base int64, active bool) (*segment, *truncation, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open segment: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	size := st.Size()
	s := &segment{base: base, path: path, f: f, wnext: base, wmaxTs: minTs, created: st.ModTime(), sealed: !active}
	scanFrom := int64(0)
	rebuilt := true
	// The active segment is always verified whole: its indexes are written
	// only when it is sealed, and a crash may have torn any part of the
	// unsynced tail.
	if !active && s.loadIndexes(size) {
		// Trust the indexes up to their last entry; verify from there on.
		last, lastT := s.windex[len(s.windex)-1], s.wtindex[len(s.wtindex)-1]
		s.windex, s.wtindex = s.windex[:len(s.windex)-1], s.wtindex[:len(s.wtindex)-1]
		if len(s.windex) > 0 {
			s.lastIndexed = int64(s.windex[len(s.windex)-1].pos)
		}
		s.wmaxTs = lastT.maxBefore
		s.wnext = base + int64(last.rel)
		scanFrom = int64(last.pos)
		rebuilt = false
	} else {
		s.windex, s.wtindex = nil, nil
	}
	s.size = scanFrom
	end, scanErr := ScanSegment(f, scanFrom, size, func(b ScannedBatch) error {
		if b.BaseOffset != s.wnext {
			return fmt.Errorf("%w: batch base offset %d at %d does not follow %d", errCorrupt, b.BaseOffset, b.Pos, s.wnext)
		}
		s.noteBatch(b.Pos, b.BaseOffset, b.Count, b.MaxTs, int64(len(b.Raw)))
		return nil
	})
	if scanErr != nil && !errors.Is(scanErr, errCorrupt) {
		f.Close()
		return nil, nil, fmt.Errorf("scan segment %s: %w", path, scanErr)
	}
	var tr *truncation
	if end < size && zeroTail(f, end, size) {
		// Space preallocated for appends that never came: not damage.
		if err := f.Truncate(end); err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("trim preallocated tail of %s at %d: %w (check disk space and permissions)", path, end, err)
		}
		size = end
	}
	if end < size {
		lost := countTailRecords(f, end, size)
		if err := f.Truncate(end); err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("truncate corrupt tail of %s at %d: %w (check disk space and permissions)", path, end, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, nil, err
		}
		reason := "trailing bytes"
		if scanErr != nil {
			reason = scanErr.Error()
		}
		tr = &truncation{bytes: size - end, at: end, reason: reason, records: lost}
		rebuilt = true
	}
	s.size = end
	s.publish()
	if s.sealed && (rebuilt || tr != nil) {
		if err := s.writeIndexes(); err != nil {
			f.Close()
			return nil, nil, err
		}
	}
	if active {
		// Stale index files (a crash between writing them at a roll and
		// creating the next segment) are rewritten when the segment is sealed.
		_ = os.Remove(s.indexPath())
		_ = os.Remove(s.timePath())
	}
	return s, tr, nil
}

// zeroTail reports whether the bytes [from, to) of f are all zero. A read
// error counts as not zero: the tail is then reported as damage.
func zeroTail(f *os.File, from, to int64) bool {
	buf := make([]byte, 64<<10)
	for pos := from; pos < to; {
		n, err := f.ReadAt(buf[:min(int64(len(buf)), to-pos)], pos)
		for _, c := range buf[:n] {
			if c != 0 {
				return false
			}
		}
		if err != nil && n == 0 {
			return false
		}
		pos += int64(n)
	}
	return true
}

type truncation struct {
	bytes   int64
	at      int64
	reason  string
	records int64
}

// countTailRecords estimates how many records a truncated tail held, from
// the count fields of the batch headers that still parse (a torn last batch
// usually keeps its header). Headers are not covered by a verified CRC
// here, so a damaged header can make this an estimate.
func countTailRecords(f *os.File, pos, size int64) int64 {
	var n int64
	var hb [batchHeaderSize]byte
	for pos+batchHeaderSize <= size {
		if _, err := f.ReadAt(hb[:], pos); err != nil {
			break
		}
		h, err := parseHeader(hb[:])
		if err != nil {
			break
		}
		n += int64(h.count)
		pos += h.size()
	}
	return n
}

func (s *segment) remove() error {
	s.f.Close()
	err := os.Remove(s.path)
	for _, p := range []string{s.indexPath(), s.timePath()} {
		if e := os.Remove(p); e != nil && !errors.Is(e, fs.ErrNotExist) && err == nil {
			err = e
		}
	}
	return err
}

// writeFileSync writes a file atomically: temp file, fsync, rename, fsync
// of the directory, so a crash leaves either the old or the new content.
func writeFileSync(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}
