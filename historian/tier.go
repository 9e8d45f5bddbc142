package historian

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/fnv"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/zstd"

	"github.com/millstream/millstream/historian/block"
	"github.com/millstream/millstream/uns"
)

// Tiering: partitions that ended longer ago than TierOptions.After are
// exported to Parquet files in an ObjectStore (a local directory or an
// S3-compatible bucket), one object per exported set of partition files:
//
//	[prefix/]date=YYYY-MM-DD/p<partition start ms>-<seq>.parquet
//
// (the UTC day of the partition's start; Hive-style, so DuckDB, Spark and
// pandas/pyarrow read the day as a column). Rows are ordered by series and,
// within a series, by time (equal times in arrival order). Columns:
//
//	series        string (dictionary): the UNS path
//	time          int64 TIMESTAMP(MILLIS): the point's time
//	value_float   optional double
//	value_int     optional int64
//	value_uint    optional int64 UINT_64 (unsigned)
//	value_bool    optional boolean
//	value_string  optional string
//	value_bytes   optional binary
//	quality       string (dictionary): good, uncertain, bad or stale
//
// Exactly one value column is set, except for null values, where none is.
//
// Export of a partition: its local files are merged per series (as
// Compact does) and written to a temporary Parquet file, uploaded, read
// back from the store and compared (row count and a hash of every row),
// then a local index of the object (t<start>-<seq>.hti: the key, its size,
// per series and run of one value kind its rows, time span and count, and
// each series' newest point) is written, and the MANIFEST is replaced by
// one that lists the index instead of the partition files. Only then are
// the partition files deleted. A crash before the manifest commit leaves
// the partition files live (the object, if uploaded, is an orphan that the
// next export of the partition deletes); a crash after it leaves partition
// files that the manifest does not list, which Open deletes. At no point
// is a point lost or stored twice.
//
// Queries read the tier through the local index: the blocks of a tiered
// partition are runs of rows, read with ranged reads of the object.

// TierOptions configure the Parquet tier. With After zero (the default)
// nothing is tiered.
type TierOptions struct {
	// After is the age at which a partition is exported: once it ended
	// longer ago than this. It should exceed the out-of-order window and
	// the time late data may still arrive (which is still stored, in a
	// local file that a later export moves to a second object).
	After time.Duration
	// Dir is a local directory for the Parquet files (created if
	// missing). Exactly one of Dir, S3 and Store is set when After is.
	Dir string
	// S3 is an S3-compatible bucket for the Parquet files.
	S3 *S3Options
	// Store is any other ObjectStore (programmatic use).
	Store ObjectStore
	// Interval is how often the Ingester exports (default 1 minute).
	Interval time.Duration
	// RowGroupRows bounds the rows of one Parquet row group (default
	// 1,048,576).
	RowGroupRows int
}

func (o *TierOptions) enabled() bool { return o.After > 0 }

// openStore returns the store the options name (nil when tiering is off
// and no store is named).
func (o *TierOptions) openStore(ctx context.Context) (ObjectStore, error) {
	n := 0
	for _, set := range []bool{o.Dir != "", o.S3 != nil, o.Store != nil} {
		if set {
			n++
		}
	}
	switch {
	case n > 1:
		return nil, errors.New("historian: tier: set one of Dir, S3 and Store")
	case n == 0 && o.After > 0:
		return nil, errors.New("historian: tier: After is set but no Dir, S3 or Store")
	case o.Store != nil:
		return o.Store, nil
	case o.Dir != "":
		if err := os.MkdirAll(o.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("historian: tier: %w", err)
		}
		return DirStore{Root: o.Dir}, nil
	case o.S3 != nil:
		return NewS3Store(ctx, *o.S3)
	}
	return nil, nil
}

// tierRow is one Parquet row.
type tierRow struct {
	Series      string   `parquet:"series,dict"`
	Time        int64    `parquet:"time,timestamp(millisecond),delta"`
	ValueFloat  *float64 `parquet:"value_float,optional"`
	ValueInt    *int64   `parquet:"value_int,optional"`
	ValueUint   *uint64  `parquet:"value_uint,optional"`
	ValueBool   *bool    `parquet:"value_bool,optional"`
	ValueString *string  `parquet:"value_string,optional"`
	ValueBytes  *[]byte  `parquet:"value_bytes,optional"`
	Quality     string   `parquet:"quality,dict"`
}

var tierSchema = parquet.SchemaOf(tierRow{})

func (r *tierRow) set(series string, s Sample) {
	*r = tierRow{Series: series, Time: s.Time, Quality: s.Quality.String()}
	switch s.Value.Kind() {
	case uns.Float:
		f, _ := s.Value.Float()
		r.ValueFloat = &f
	case uns.Int:
		i, _ := s.Value.Int()
		r.ValueInt = &i
	case uns.Uint:
		u, _ := s.Value.Uint()
		r.ValueUint = &u
	case uns.Bool:
		b, _ := s.Value.Bool()
		r.ValueBool = &b
	case uns.String:
		str, _ := s.Value.Str()
		r.ValueString = &str
	case uns.Bytes:
		b, _ := s.Value.Bytes()
		r.ValueBytes = &b
	}
}

// sample converts a row back; a row with several values or an unknown
// quality is corrupt.
func (r *tierRow) sample() (Sample, error) {
	s := Sample{Time: r.Time}
	n := 0
	if r.ValueFloat != nil {
		s.Value, n = uns.FloatValue(*r.ValueFloat), n+1
	}
	if r.ValueInt != nil {
		s.Value, n = uns.IntValue(*r.ValueInt), n+1
	}
	if r.ValueUint != nil {
		s.Value, n = uns.UintValue(*r.ValueUint), n+1
	}
	if r.ValueBool != nil {
		s.Value, n = uns.BoolValue(*r.ValueBool), n+1
	}
	if r.ValueString != nil {
		s.Value, n = uns.StringValue(*r.ValueString), n+1
	}
	if r.ValueBytes != nil {
		s.Value, n = uns.BytesValue(*r.ValueBytes), n+1
	}
	if n > 1 {
		return s, fmt.Errorf("%w: tier row of %s at %d has %d values", ErrCorrupt, r.Series, r.Time, n)
	}
	q, err := uns.ParseQuality(r.Quality)
	if err != nil {
		return s, fmt.Errorf("%w: tier row of %s at %d: %v", ErrCorrupt, r.Series, r.Time, err)
	}
	s.Quality = q
	return s, nil
}

// rowHash accumulates the hash that verifies an export: FNV-1a over each
// row's series name and sample encoding.
type rowHash struct {
	h   uint64
	buf []byte
}

func newRowHash() *rowHash { return &rowHash{h: fnv.New64a().Sum64()} }

func (rh *rowHash) add(series string, s Sample) {
	rh.buf = binary.AppendUvarint(rh.buf[:0], uint64(len(series)))
	rh.buf = append(rh.buf, series...)
	rh.buf = appendSample(rh.buf, s)
	h := rh.h
	for _, c := range rh.buf {
		h ^= uint64(c)
		h *= 1099511628211
	}
	rh.h = h
}

// tierObject is one exported Parquet object, known through its local
// index file.
type tierObject struct {
	name    string // local index file
	key     string
	size    int64
	start   int64 // partition start, ms
	seq     uint64
	rows    int64
	sum     uint64 // rowHash of every row
	entries []tierEntry
	newest  []newestEntry

	store ObjectStore // nil: tiering not configured in this process

	mu      sync.Mutex // guards the open object
	obj     Object
	pf      *parquet.File
	rgStart []int64 // first row of each row group
}

// tierEntry is one run of rows: points of one series and value kind.
type tierEntry struct {
	id               uint64
	row              int64
	count            int
	minTime, maxTime int64
}

const tierIndexMagic = "MSHTIX01"

func tierIndexName(start int64, seq uint64) string { return fmt.Sprintf("t%d-%d.hti", start, seq) }

func parseTierIndexName(name string) (start int64, seq uint64, ok bool) {
	s, found := strings.CutPrefix(name, "t")
	if !found {
		return 0, 0, false
	}
	if s, found = strings.CutSuffix(s, ".hti"); !found {
		return 0, 0, false
	}
	i := strings.LastIndexByte(s, '-')
	if i <= 0 {
		return 0, 0, false
	}
	start, err1 := strconv.ParseInt(s[:i], 10, 64)
	seq, err2 := strconv.ParseUint(s[i+1:], 10, 64)
	return start, seq, err1 == nil && err2 == nil
}

// tierKey is the object key of an export.
func tierKey(start int64, seq uint64) string {
	return fmt.Sprintf("%s/p%d-%d.parquet", tierDayDir(start), start, seq)
}

func tierDayDir(start int64) string {
	return "date=" + time.UnixMilli(start).UTC().Format(time.DateOnly)
}

// encode writes the local index:
//
//	magic "MSHTIX01", uvarint len(key), key, uvarint object size, uvarint
//	rows, uint64 LE row hash, uvarint n, n × (uvarint id, uvarint row,
//	uvarint count, zigzag varint min time, zigzag varint max time),
//	uvarint m, m × (uvarint id, sample), uint32 LE CRC-32C of all before.
func (t *tierObject) encode() []byte {
	b := []byte(tierIndexMagic)
	b = binary.AppendUvarint(b, uint64(len(t.key)))
	b = append(b, t.key...)
	b = binary.AppendUvarint(b, uint64(t.size))
	b = binary.AppendUvarint(b, uint64(t.rows))
	b = binary.LittleEndian.AppendUint64(b, t.sum)
	b = binary.AppendUvarint(b, uint64(len(t.entries)))
	for _, e := range t.entries {
		b = binary.AppendUvarint(b, e.id)
		b = binary.AppendUvarint(b, uint64(e.row))
		b = binary.AppendUvarint(b, uint64(e.count))
		b = binary.AppendVarint(b, e.minTime)
		b = binary.AppendVarint(b, e.maxTime)
	}
	b = binary.AppendUvarint(b, uint64(len(t.newest)))
	for _, e := range t.newest {
		b = binary.AppendUvarint(b, e.id)
		b = appendSample(b, e.s)
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// decodeTierIndex reads what encode wrote.
func decodeTierIndex(b []byte) (*tierObject, error) {
	bad := func(what string) (*tierObject, error) {
		return nil, fmt.Errorf("%w: tier index: %s", ErrCorrupt, what)
	}
	if len(b) < len(tierIndexMagic)+4 || string(b[:len(tierIndexMagic)]) != tierIndexMagic {
		return bad("bad magic")
	}
	if crc32.Checksum(b[:len(b)-4], castagnoli) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return bad("checksum mismatch")
	}
	b = b[len(tierIndexMagic) : len(b)-4]
	uv := func() (uint64, bool) {
		x, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return x, true
	}
	v := func() (int64, bool) {
		x, n := binary.Varint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return x, true
	}
	t := &tierObject{}
	kl, ok := uv()
	if !ok || kl > uint64(len(b)) {
		return bad("truncated key")
	}
	t.key, b = string(b[:kl]), b[kl:]
	size, ok1 := uv()
	rows, ok2 := uv()
	if !ok1 || !ok2 || size > math.MaxInt64 || rows > math.MaxInt64 || len(b) < 8 {
		return bad("truncated header")
	}
	t.size, t.rows = int64(size), int64(rows)
	t.sum, b = binary.LittleEndian.Uint64(b), b[8:]
	n, ok := uv()
	if !ok || n > uint64(len(b)) {
		return bad("truncated entries")
	}
	for range n {
		var e tierEntry
		var row, cnt uint64
		var ok [5]bool
		e.id, ok[0] = uv()
		row, ok[1] = uv()
		cnt, ok[2] = uv()
		e.minTime, ok[3] = v()
		e.maxTime, ok[4] = v()
		if ok != [5]bool{true, true, true, true, true} {
			return bad("truncated entry")
		}
		if cnt == 0 || cnt > block.MaxPoints || row > uint64(t.rows) || cnt > uint64(t.rows)-row || e.minTime > e.maxTime {
			return bad("entry out of range")
		}
		e.row, e.count = int64(row), int(cnt)
		t.entries = append(t.entries, e)
	}
	m, ok := uv()
	if !ok || m > uint64(len(b)) {
		return bad("truncated newest points")
	}
	for range m {
		id, ok := uv()
		if !ok {
			return bad("truncated newest point")
		}
		s, k, err := readSample(b)
		if err != nil {
			return nil, err
		}
		b = b[k:]
		t.newest = append(t.newest, newestEntry{id, s})
	}
	if len(b) != 0 {
		return bad("trailing bytes")
	}
	return t, nil
}

func openTierIndex(dir, name string, store ObjectStore) (*tierObject, error) {
	start, seq, ok := parseTierIndexName(name)
	if !ok {
		return nil, fmt.Errorf("%w: %s: not a tier index name", ErrCorrupt, name)
	}
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return nil, err
	}
	t, err := decodeTierIndex(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	t.name, t.start, t.seq, t.store = name, start, seq, store
	return t, nil
}

// open opens the object and its Parquet footer; called with t.mu held.
func (t *tierObject) open(ctx context.Context) (err error) {
	if t.pf != nil {
		return nil
	}
	if t.store == nil {
		return fmt.Errorf("historian: %s is in the Parquet tier, but no tier store is configured (historian tier options)", t.key)
	}
	obj, err := t.store.Open(ctx, t.key)
	if err != nil {
		return err
	}
	pf, err := openParquet(obj, obj.Size())
	if err == nil && (obj.Size() != t.size || pf.NumRows() != t.rows) {
		err = fmt.Errorf("%w: tier object %s: %d bytes and %d rows, the index says %d and %d",
			ErrCorrupt, t.key, obj.Size(), pf.NumRows(), t.size, t.rows)
	}
	if err != nil {
		obj.Close()
		return err
	}
	t.obj, t.pf = obj, pf
	t.rgStart = t.rgStart[:0]
	var row int64
	for _, rg := range pf.RowGroups() {
		t.rgStart = append(t.rgStart, row)
		row += rg.NumRows()
	}
	return nil
}

func (t *tierObject) close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.obj == nil {
		return nil
	}
	err := t.obj.Close()
	t.obj, t.pf = nil, nil
	return err
}

// openParquet opens a Parquet file of the tier's schema. Damaged input is
// an error (ErrCorrupt), never a panic.
func openParquet(r io.ReaderAt, size int64) (pf *parquet.File, err error) {
	defer func() {
		if p := recover(); p != nil {
			pf, err = nil, fmt.Errorf("%w: parquet: %v", ErrCorrupt, p)
		}
	}()
	// The frame first: magic at both ends and a footer that fits.
	var head, tail [8]byte
	if size < 12 {
		return nil, fmt.Errorf("%w: parquet: %d bytes", ErrCorrupt, size)
	}
	// ReadAt may say io.EOF with every byte read at the end.
	if n, err := r.ReadAt(head[:4], 0); n < 4 {
		return nil, fmt.Errorf("%w: parquet: %v", ErrCorrupt, err)
	}
	if n, err := r.ReadAt(tail[:], size-8); n < 8 {
		return nil, fmt.Errorf("%w: parquet: %v", ErrCorrupt, err)
	}
	if flen := int64(binary.LittleEndian.Uint32(tail[:4])); string(head[:4]) != "PAR1" || string(tail[4:]) != "PAR1" ||
		flen > size-12 || flen > 64<<20 {
		return nil, fmt.Errorf("%w: parquet: bad frame", ErrCorrupt)
	}
	pf, err = parquet.OpenFile(r, size, parquet.SkipBloomFilters(true))
	if err != nil {
		return nil, fmt.Errorf("%w: parquet: %w", ErrCorrupt, err)
	}
	if !parquet.EqualNodes(pf.Schema(), tierSchema) {
		return nil, fmt.Errorf("%w: parquet: not a historian tier file (schema %s)", ErrCorrupt, pf.Schema())
	}
	return pf, nil
}

// readRows reads count rows from row on into dst (reused).
func (t *tierObject) readRows(ctx context.Context, row int64, count int, dst []tierRow) ([]tierRow, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.open(ctx); err != nil {
		return dst, err
	}
	return readParquetRows(t.pf, t.rgStart, row, count, dst)
}

func readParquetRows(pf *parquet.File, rgStart []int64, row int64, count int, dst []tierRow) (out []tierRow, err error) {
	defer func() {
		if p := recover(); p != nil {
			out, err = dst, fmt.Errorf("%w: parquet: %v", ErrCorrupt, p)
		}
	}()
	dst = slices.Grow(dst[:0], count)[:count]
	rgs := pf.RowGroups()
	done := 0
	for done < count {
		at := row + int64(done)
		g := sort.Search(len(rgStart), func(i int) bool { return rgStart[i] > at }) - 1
		if g < 0 || at-rgStart[g] >= rgs[g].NumRows() {
			return dst[:0], fmt.Errorf("%w: parquet: row %d out of range", ErrCorrupt, at)
		}
		r := parquet.NewGenericRowGroupReader[tierRow](rgs[g])
		if err := r.SeekToRow(at - rgStart[g]); err != nil {
			r.Close()
			return dst[:0], fmt.Errorf("%w: parquet: %w", ErrCorrupt, err)
		}
		want := min(count-done, int(rgs[g].NumRows()-(at-rgStart[g])))
		got := 0
		for got < want {
			n, err := r.Read(dst[done+got : done+want])
			got += n
			if err != nil {
				if errors.Is(err, io.EOF) && got == want {
					break
				}
				r.Close()
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return dst[:0], fmt.Errorf("%w: parquet: %w", ErrCorrupt, err)
			}
		}
		r.Close()
		done += want
	}
	return dst, nil
}

// tierPoints decodes the run ref of series id into p.
func (r *reader) tierPoints(id uint64, ref *blockRef) (*block.Points, error) {
	var err error
	r.rows, err = ref.tier.readRows(context.Background(), ref.row, ref.count, r.rows)
	if err != nil {
		return nil, fmt.Errorf("historian: tier object %s: %w", ref.tier.key, err)
	}
	r.pts.Reset()
	for i := range r.rows {
		s, err := r.rows[i].sample()
		if err == nil {
			err = r.pts.Append(s.Time, s.Value, s.Quality)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: tier object %s: %v", ErrCorrupt, ref.tier.key, err)
		}
	}
	if r.pts.Len() != ref.count || r.pts.Times[0] != ref.minTime || r.pts.Times[r.pts.Len()-1] != ref.maxTime {
		return nil, fmt.Errorf("%w: tier object %s: rows %d+%d disagree with the index", ErrCorrupt, ref.tier.key, ref.row, ref.count)
	}
	clear(r.rows) // do not pin strings
	return &r.pts, nil
}

// tierCrash, in tests, simulates a crash at a named step of an export:
// when it returns true the export stops there as a killed process would,
// cleaning nothing up.
var tierCrash func(step string) bool

var errTierCrash = errors.New("historian: simulated crash")

func crashAt(step string) bool { return tierCrash != nil && tierCrash(step) }

// TierBefore exports to the Parquet tier every partition that ends at or
// before t (ms) and still has local files, oldest first, and returns how
// many it exported. It needs a tier store (TierOptions); without one it
// does nothing.
func (db *DB) TierBefore(ctx context.Context, t int64) (int, error) {
	if db.store == nil {
		return 0, nil
	}
	db.maintMu.Lock()
	defer db.maintMu.Unlock()
	db.mu.RLock()
	if db.closed {
		db.mu.RUnlock()
		return 0, ErrClosed
	}
	seen := map[int64]bool{}
	var parts []int64
	for _, f := range db.files {
		if f.start <= t-db.partMs && !seen[f.start] {
			seen[f.start] = true
			parts = append(parts, f.start)
		}
	}
	db.mu.RUnlock()
	slices.Sort(parts)
	n := 0
	for _, p := range parts {
		if err := db.tierPartition(ctx, p); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// ApplyTiering exports what TierOptions.After says is old enough at time
// now; with tiering off it does nothing.
func (db *DB) ApplyTiering(ctx context.Context, now time.Time) (int, error) {
	if !db.opts.Tier.enabled() {
		return 0, nil
	}
	return db.TierBefore(ctx, now.Add(-db.opts.Tier.After).UnixMilli())
}

// tierPartition exports the local files of partition part; maintMu held.
func (db *DB) tierPartition(ctx context.Context, part int64) (err error) {
	// Snapshot: the partition's files and, per series, their blocks.
	db.mu.Lock()
	if db.closed {
		db.mu.Unlock()
		return ErrClosed
	}
	isOld := map[*partFile]bool{}
	var old []*partFile
	for _, f := range db.files {
		if f.start == part {
			isOld[f] = true
			old = append(old, f)
		}
	}
	type seriesBlocks struct {
		id   uint64
		name string
		refs []blockRef
	}
	var snap []seriesBlocks
	for id, s := range db.byID {
		var refs []blockRef
		for _, r := range s.blocks {
			if r.file != nil && isOld[r.file] {
				refs = append(refs, r)
			}
		}
		if len(refs) > 0 {
			snap = append(snap, seriesBlocks{id, s.name, refs})
		}
	}
	seq := db.nextSeq
	db.nextSeq++ // files flushed meanwhile are newer arrivals
	db.mu.Unlock()
	if len(old) == 0 {
		return nil
	}
	sort.Slice(snap, func(i, j int) bool { return snap[i].name < snap[j].name })

	// Parquet file, in a temporary file that Open deletes if we crash.
	tmp, err := os.CreateTemp(db.opts.Dir, "tier-*.parquet.tmp")
	if err != nil {
		return err
	}
	crashed := false
	defer func() {
		if !crashed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	obj := &tierObject{key: tierKey(part, seq), start: part, seq: seq, store: db.store,
		name: tierIndexName(part, seq)}
	rowGroup := db.opts.Tier.RowGroupRows
	if rowGroup <= 0 {
		rowGroup = 1 << 20
	}
	w := parquet.NewGenericWriter[tierRow](tmp, parquet.Compression(&zstd.Codec{}),
		parquet.MaxRowsPerRowGroup(int64(rowGroup)),
		parquet.KeyValueMetadata("millstream.partition_start", strconv.FormatInt(part, 10)),
		parquet.KeyValueMetadata("millstream.partition_ms", strconv.FormatInt(db.partMs, 10)))
	rh := newRowHash()
	r := new(reader)
	var merged []Sample
	rows := make([]tierRow, 0, 4096)
	var p block.Points // the current run, for its kind
	for _, sb := range snap {
		merged = merged[:0]
		for i := range sb.refs {
			pts, err := r.points(sb.id, source{ref: &sb.refs[i]})
			if err != nil {
				return err
			}
			for k := range pts.Len() {
				merged = append(merged, Sample{pts.Times[k], pts.Value(k), pts.QualityAt(k)})
			}
		}
		sort.SliceStable(merged, func(a, b int) bool { return merged[a].Time < merged[b].Time })
		p.Reset()
		runStart := obj.rows
		for i, x := range merged {
			if !p.Accepts(x.Value.Kind()) || p.Len() == block.MaxPoints {
				obj.entries = append(obj.entries, tierEntry{id: sb.id, row: runStart, count: p.Len(),
					minTime: p.Times[0], maxTime: p.Times[p.Len()-1]})
				runStart += int64(p.Len())
				p.Reset()
			}
			if err := p.Append(x.Time, x.Value, x.Quality); err != nil {
				return err
			}
			rows = rows[:len(rows)+1]
			rows[len(rows)-1].set(sb.name, x)
			rh.add(sb.name, x)
			if len(rows) == cap(rows) || i == len(merged)-1 {
				if _, err := w.Write(rows); err != nil {
					return fmt.Errorf("historian: tier: %w", err)
				}
				rows = rows[:0]
			}
		}
		obj.entries = append(obj.entries, tierEntry{id: sb.id, row: runStart, count: p.Len(),
			minTime: p.Times[0], maxTime: p.Times[p.Len()-1]})
		obj.rows += int64(len(merged))
		obj.newest = append(obj.newest, newestEntry{sb.id, merged[len(merged)-1]})
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("historian: tier: %w", err)
	}
	obj.sum = rh.h
	if obj.size, err = tmp.Seek(0, io.SeekEnd); err != nil {
		return err
	}
	if crashAt("written") {
		crashed = true
		return errTierCrash
	}

	// Orphans of exports of this partition that did not commit.
	if err := db.deleteOrphans(ctx, part); err != nil {
		return err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if err := db.store.Put(ctx, obj.key, tmp, obj.size); err != nil {
		return err
	}
	if crashAt("uploaded") {
		crashed = true
		return errTierCrash
	}
	if err := verifyTierObject(ctx, db.store, obj); err != nil {
		return err
	}
	if crashAt("verified") {
		crashed = true
		return errTierCrash
	}
	if err := writeFileAtomic(db.opts.Dir, obj.name, func(w io.Writer) error {
		_, err := w.Write(obj.encode())
		return err
	}); err != nil {
		return err
	}
	if crashAt("indexed") {
		crashed = true
		return errTierCrash
	}

	// Commit: the manifest lists the object instead of the files.
	db.mu.Lock()
	if db.closed {
		db.mu.Unlock()
		return ErrClosed
	}
	var files []*partFile
	for _, f := range db.files {
		if !isOld[f] {
			files = append(files, f)
		}
	}
	tiers := append(slices.Clip(db.tiers), obj)
	if err := db.commitState(files, tiers, db.ckpt); err != nil {
		db.mu.Unlock()
		os.Remove(filepath.Join(db.opts.Dir, obj.name))
		return err
	}
	db.files, db.tiers = files, tiers
	byID := map[uint64][]blockRef{}
	for _, e := range obj.entries {
		byID[e.id] = append(byID[e.id], obj.ref(e))
	}
	for _, sb := range snap {
		s := db.byID[sb.id]
		var kept []blockRef
		placed := false
		for _, r := range s.blocks {
			if r.file == nil || !isOld[r.file] {
				kept = append(kept, r)
				continue
			}
			if !placed {
				// In place of the first exported block: arrival order
				// relative to other blocks holds.
				for _, nr := range byID[sb.id] {
					nr.seq = r.seq
					kept = append(kept, nr)
				}
				placed = true
			}
		}
		s.blocks = kept
	}
	db.mu.Unlock()
	if crashAt("committed") {
		crashed = true
		return errTierCrash
	}
	for i, f := range old {
		f.f.Close()
		if err := os.Remove(filepath.Join(db.opts.Dir, f.name)); err != nil {
			return fmt.Errorf("historian: tiered %s but could not remove it: %w", f.name, err)
		}
		if i == 0 && crashAt("removed one") {
			crashed = true
			return errTierCrash
		}
	}
	return nil
}

func (t *tierObject) ref(e tierEntry) blockRef {
	return blockRef{tier: t, row: e.row, count: e.count, minTime: e.minTime, maxTime: e.maxTime, seq: t.seq}
}

// verifyTierObject reads the stored object back and checks it holds
// exactly the rows that were written.
func verifyTierObject(ctx context.Context, store ObjectStore, want *tierObject) error {
	o, err := store.Open(ctx, want.key)
	if err != nil {
		return fmt.Errorf("historian: tier: verify %s: %w", want.key, err)
	}
	defer o.Close()
	if o.Size() != want.size {
		return fmt.Errorf("historian: tier: verify %s: %d bytes stored, %d written", want.key, o.Size(), want.size)
	}
	pf, err := openParquet(o, o.Size())
	if err != nil {
		return fmt.Errorf("historian: tier: verify %s: %w", want.key, err)
	}
	var starts []int64
	var n int64
	for _, rg := range pf.RowGroups() {
		starts = append(starts, n)
		n += rg.NumRows()
	}
	if n != want.rows {
		return fmt.Errorf("historian: tier: verify %s: %d rows stored, %d written", want.key, n, want.rows)
	}
	rh := newRowHash()
	var rows []tierRow
	for at := int64(0); at < n; at += 65536 {
		k := int(min(65536, n-at))
		if rows, err = readParquetRows(pf, starts, at, k, rows); err != nil {
			return fmt.Errorf("historian: tier: verify %s: %w", want.key, err)
		}
		for i := range rows {
			s, err := rows[i].sample()
			if err != nil {
				return fmt.Errorf("historian: tier: verify %s: %w", want.key, err)
			}
			rh.add(rows[i].Series, s)
		}
	}
	if rh.h != want.sum {
		return fmt.Errorf("historian: tier: verify %s: the stored rows differ from those written", want.key)
	}
	return nil
}

// deleteOrphans deletes objects of partition part that no committed
// export lists: uploads of exports that crashed before their commit.
func (db *DB) deleteOrphans(ctx context.Context, part int64) error {
	keys, err := db.store.List(ctx, tierDayDir(part)+"/")
	if err != nil {
		return err
	}
	live := map[string]bool{}
	db.mu.RLock()
	for _, t := range db.tiers {
		live[t.key] = true
	}
	db.mu.RUnlock()
	prefix := fmt.Sprintf("%s/p%d-", tierDayDir(part), part)
	for _, k := range keys {
		if strings.HasPrefix(k, prefix) && strings.HasSuffix(k, ".parquet") && !live[k] {
			if err := db.store.Delete(ctx, k); err != nil {
				return err
			}
		}
	}
	return nil
}

// deleteTierObjects deletes the objects and local indexes of tiers that
// a committed manifest no longer lists (retention).
func (db *DB) deleteTierObjects(objs []*tierObject) error {
	var errs []error
	for _, t := range objs {
		t.close()
		os.Remove(filepath.Join(db.opts.Dir, t.name))
		if db.store != nil {
			errs = append(errs, db.store.Delete(context.Background(), t.key))
		}
	}
	return errors.Join(errs...)
}

// tierFileNames lists the index names of tiers, for the manifest.
func tierFileNames(tiers []*tierObject) []string {
	out := make([]string, len(tiers))
	for i, t := range tiers {
		out[i] = t.name
	}
	return out
}
