// Package historian stores the history of Unified Namespace tags: per
// series (one UNS path, e.g. plant/site/area/line/cell/temperature), points
// of time, typed value and quality, compressed into immutable blocks
// (package block, encodings in package encoding) in one file per time
// partition.
//
// The log is the write-ahead log: Append only changes memory, and Flush
// makes everything appended so far durable together with a caller-supplied
// checkpoint (the uns.points offset it was consumed up to). After a crash,
// Open restores the last flushed state and Checkpoint says where to resume
// the log replay, so replayed points are stored exactly once.
//
//	db, err := historian.Open(historian.Options{Dir: "data/historian"})
//	id, err := db.Series("acme/plant1/press/line2/cell3/temperature")
//	err = db.Append(id, tMillis, uns.FloatValue(21.5), uns.Good)
//	err = db.Flush(offsetBytes)           // durable, atomically with the offset
//	pts, err := db.Range(nil, id, from, to) // raw points, time order
//	last, err := db.Last(nil, []uint64{id}, at)
//
// Series ids are stable: derived from the series name (FNV-1a), persisted
// in series.log, and so equal after a rebuild from the log.
//
// Out-of-order points are accepted at any age. Points no older than
// Options.OutOfOrderWindow behind the newest point of their series are
// inserted into its in-memory head in time order; older ones take the late
// path (a separate buffer per series, flushed as its own blocks) and land
// in the partition of their time. Queries merge blocks by time, and
// Compact rewrites a partition's files into one with one block per series
// and run of kind.
//
// Times are milliseconds since the Unix epoch. Points with equal times
// are all kept, in arrival order.
//
// Optional per-series deadband compression (Options.Deadband) drops
// numeric values within a maximum deviation of the last stored one; it is
// lossy and off by default.
//
// Ingester feeds a DB from the uns.points topic and checkpoints the
// consumer positions with each Flush, so a restart resumes exactly where
// the flushed state ends and an empty directory is rebuilt from the log.
// Select and Query pick series by UNS pattern; Aggregate computes
// aggregates and interpolations on a Grid (see Agg for the definitions and
// NaN handling). Rollups (1 minute and 1 hour) are computed at Flush and
// answer aligned aggregate queries without the raw points; Retention and
// the rollup retentions bound what is kept. Options.Tier moves old
// partitions to Parquet files in a directory or an S3-compatible bucket
// (tier.go), read transparently by every query. docs/historian.md is the
// user's view.
//
// A DB is safe for concurrent use. Append and Flush take an exclusive lock;
// queries share a read lock.
package historian

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/millstream/millstream/historian/block"
	"github.com/millstream/millstream/uns"
)

// Options configure a DB. Zero values take the defaults.
type Options struct {
	// Dir holds the historian's files; it is created if missing.
	Dir string
	// Partition is the time span of one partition file (default 2h).
	Partition time.Duration
	// OutOfOrderWindow is how far behind a series' newest point a point may
	// be and still go into the in-memory head (default 1m). Older points
	// take the late path; both are kept.
	OutOfOrderWindow time.Duration
	// HeadPoints is how many points a series head holds before it is
	// encoded into an in-memory block (default 1024): the bound on
	// uncompressed memory per series.
	HeadPoints int
	// Retention, when positive, is how long raw points are kept:
	// ApplyRetention (which the Ingester calls every minute) deletes the
	// partitions that ended longer ago than this. Zero keeps everything.
	Retention time.Duration
	// NoRollups turns the 1-minute and 1-hour rollups off (see rollups).
	NoRollups bool
	// RollupRetention1m and RollupRetention1h are how long the rollups
	// are kept (zero: forever); make them longer than Retention so that
	// the history outlives its raw points at a coarser resolution.
	RollupRetention1m, RollupRetention1h time.Duration
	// Deadband, when set, returns the maximum deviation for a series'
	// numeric values (0: store every point). See Deadband.
	Deadband func(series string) float64
	// Tier moves old partitions to Parquet files in a directory or an
	// S3-compatible bucket (off by default); see TierOptions. A
	// directory that has tiered needs the same store to read them.
	Tier TierOptions
}

// Sample is one stored point.
type Sample struct {
	Time    int64 // ms since the Unix epoch
	Value   uns.Value
	Quality uns.Quality
}

// DB is an open historian directory.
type DB struct {
	opts    Options
	partMs  int64
	windowM int64

	mu       sync.RWMutex
	byName   map[string]*series
	byID     map[uint64]*series
	newNames []*series // created since the last flush
	files    []*partFile
	tiers    []*tierObject // Parquet tier objects, in export order
	store    ObjectStore   // the tier's, or nil
	nextSeq  uint64
	seriesF  *os.File
	seriesSz int64
	ckpt     []byte
	closed   bool
	lock     *os.File // flock of LOCK: one process per directory
	rollups  *rollups // nil with NoRollups
	// latestMu guards series.latest for Last, which fills it under the
	// read lock; Append writes it under the write lock.
	latestMu sync.Mutex
	// maintMu serialises what replaces or deletes files: compaction,
	// retention and tiering (tiering reads files without db.mu).
	maintMu sync.Mutex
}

type series struct {
	id   uint64
	name string
	head block.Points // in time order
	late block.Points // points older than the window, in time order
	maxT int64        // newest time appended (head or late)
	has  bool         // maxT is set
	// Encoded blocks, in memory until Flush and on disk after.
	blocks []blockRef
	dband  deadband
	// latest is the series' newest point (of equal times, the last to
	// arrive), when known: it answers "current value" queries without
	// decoding a block.
	latest    Sample
	hasLatest bool
}

// ErrClosed is returned by calls on a closed DB.
var ErrClosed = errors.New("historian closed")

// ErrUnknownSeries is returned for an id that no series has.
var ErrUnknownSeries = errors.New("unknown series id")

// Open opens (creating if needed) the historian in opts.Dir and loads its
// committed state.
func Open(opts Options) (*DB, error) {
	if opts.Dir == "" {
		return nil, errors.New("historian: no directory")
	}
	if opts.Partition <= 0 {
		opts.Partition = 2 * time.Hour
	}
	if opts.Partition < time.Millisecond {
		return nil, fmt.Errorf("historian: partition %s is shorter than 1ms", opts.Partition)
	}
	if opts.OutOfOrderWindow <= 0 {
		opts.OutOfOrderWindow = time.Minute
	}
	if opts.HeadPoints <= 0 {
		opts.HeadPoints = 1024
	}
	opts.HeadPoints = min(opts.HeadPoints, block.MaxPoints)
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, err
	}
	lock, err := lockDir(opts.Dir)
	if err != nil {
		return nil, err
	}
	db := &DB{
		lock:    lock,
		opts:    opts,
		partMs:  opts.Partition.Milliseconds(),
		windowM: opts.OutOfOrderWindow.Milliseconds(),
		byName:  map[string]*series{},
		byID:    map[uint64]*series{},
		nextSeq: 1,
	}
	if db.store, err = opts.Tier.openStore(context.Background()); err != nil {
		db.closeFiles()
		return nil, err
	}
	if err := db.load(); err != nil {
		db.closeFiles()
		return nil, err
	}
	if !opts.NoRollups {
		if db.rollups, err = openRollups(opts); err != nil {
			db.closeFiles()
			return nil, err
		}
	}
	return db, nil
}

func (db *DB) load() error {
	dir := db.opts.Dir
	m := &manifest{}
	switch b, err := os.ReadFile(filepath.Join(dir, manifestName)); {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return err
	default:
		if m, err = decodeManifest(b); err != nil {
			return err
		}
	}
	db.ckpt = m.checkpoint

	// Series: only the committed prefix counts; a torn or uncommitted tail
	// is cut off, and its series come back with the replay.
	sf, err := os.OpenFile(filepath.Join(dir, seriesLogName), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	db.seriesF = sf
	b := make([]byte, m.seriesLen)
	if _, err := io.ReadFull(sf, b); err != nil {
		return fmt.Errorf("%w: %s shorter than committed (%v)", ErrCorrupt, seriesLogName, err)
	}
	if err := readSeriesLog(b, func(name string, id uint64) {
		s := &series{id: id, name: name}
		db.byName[name] = s
		db.byID[id] = s
	}); err != nil {
		return err
	}
	if err := sf.Truncate(m.seriesLen); err != nil {
		return err
	}
	db.seriesSz = m.seriesLen

	live := map[string]bool{}
	for _, name := range m.files {
		live[name] = true
		pf, err := openPartFile(dir, name)
		if err != nil {
			return err
		}
		db.files = append(db.files, pf)
		db.nextSeq = max(db.nextSeq, pf.seq+1)
		for _, e := range pf.refs {
			s := db.byID[e.id]
			if s == nil {
				return fmt.Errorf("%w: %s refers to unknown series %d", ErrCorrupt, name, e.id)
			}
			s.blocks = append(s.blocks, e.ref)
		}
	}
	for _, name := range m.tiers {
		live[name] = true
		t, err := openTierIndex(dir, name, db.store)
		if err != nil {
			return err
		}
		db.tiers = append(db.tiers, t)
		db.nextSeq = max(db.nextSeq, t.seq+1)
		for _, e := range t.entries {
			s := db.byID[e.id]
			if s == nil {
				return fmt.Errorf("%w: %s refers to unknown series %d", ErrCorrupt, name, e.id)
			}
			s.blocks = append(s.blocks, t.ref(e))
		}
	}
	for _, s := range db.byID {
		sortRefs(s.blocks)
	}
	db.loadNewest()
	// Leftovers of uncommitted flushes and compactions.
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		n := e.Name()
		if n == lockName {
			continue
		}
		_, _, isPart := parsePartFileName(n)
		_, _, isTier := parseTierIndexName(n)
		if ((isPart || isTier) && !live[n]) || strings.Contains(n, ".tmp") {
			if err := os.Remove(filepath.Join(dir, n)); err != nil {
				return err
			}
		}
	}
	return nil
}

// loadNewest sets each series' newest point from the files' indexes, so
// that "current value" queries after a restart read no block. A series
// with a file that does not say (version 1) is left to Last to find.
func (db *DB) loadNewest() {
	type acc struct {
		s       Sample
		n       int // files that said
		unknown bool
	}
	best := map[uint64]*acc{}
	// Files in write order: of equal times, the later file's point
	// arrived later.
	type src struct {
		seq    uint64
		newest []newestEntry
		pf     *partFile // when it has no newest points (version 1)
	}
	var srcs []src
	for _, f := range db.files {
		srcs = append(srcs, src{f.seq, f.newest, f})
	}
	for _, t := range db.tiers {
		srcs = append(srcs, src{seq: t.seq, newest: t.newest})
	}
	slices.SortStableFunc(srcs, func(a, b src) int { return cmpSeq(a.seq, b.seq) })
	for _, f := range srcs {
		if len(f.newest) == 0 && f.pf != nil {
			for _, e := range f.pf.refs {
				if best[e.id] == nil {
					best[e.id] = &acc{}
				}
				best[e.id].unknown = true
			}
			continue
		}
		for _, e := range f.newest {
			a := best[e.id]
			if a == nil {
				a = &acc{}
				best[e.id] = a
			}
			if a.n == 0 || e.s.Time >= a.s.Time {
				a.s = e.s
			}
			a.n++
		}
	}
	for id, a := range best {
		s := db.byID[id]
		if s == nil || a.unknown || a.n == 0 || a.s.Time != s.maxStored() {
			continue
		}
		s.latest, s.hasLatest = a.s, true
	}
}

func cmpSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

const lockName = "LOCK"

// lockDir takes the directory's lock. Open deletes files of uncommitted
// flushes, which in another process may be a flush under way: a second
// process on the same directory (say, millstream query --data-dir on a
// running server's) must be refused, not corrupt it.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("historian: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("historian: directory %s is in use by another process (stop it, or query through the running server with --server): %w", dir, err)
	}
	return f, nil
}

// sortRefs orders blocks by write order, the order queries merge them in.
func sortRefs(r []blockRef) {
	sort.SliceStable(r, func(i, j int) bool { return r[i].seq < r[j].seq })
}

// Checkpoint returns the checkpoint given to the last committed Flush (nil
// if none): where to resume consuming the log.
func (db *DB) Checkpoint() []byte {
	db.mu.RLock()
	defer db.mu.RUnlock()
	return slices.Clone(db.ckpt)
}

// Series returns the id of the named series, creating it if needed. The
// name must be a valid UNS path (uns.ValidatePath).
func (db *DB) Series(name string) (uint64, error) {
	db.mu.RLock()
	s := db.byName[name]
	db.mu.RUnlock()
	if s != nil {
		return s.id, nil
	}
	if err := uns.ValidatePath(name); err != nil {
		return 0, err
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed {
		return 0, ErrClosed
	}
	if s := db.byName[name]; s != nil {
		return s.id, nil
	}
	h := fnv.New64a()
	h.Write([]byte(name))
	id := h.Sum64()
	// A collision of 64-bit hashes is vanishingly rare; probing keeps ids
	// unique if one happens (the persisted mapping keeps them stable).
	for db.byID[id] != nil {
		id++
	}
	s = &series{id: id, name: name}
	db.byName[name] = s
	db.byID[id] = s
	db.newNames = append(db.newNames, s)
	return id, nil
}

// Lookup returns the id of an existing series.
func (db *DB) Lookup(name string) (uint64, bool) {
	db.mu.RLock()
	defer db.mu.RUnlock()
	s := db.byName[name]
	if s == nil {
		return 0, false
	}
	return s.id, true
}

// Name returns the name of series id.
func (db *DB) Name(id uint64) (string, bool) {
	db.mu.RLock()
	defer db.mu.RUnlock()
	s := db.byID[id]
	if s == nil {
		return "", false
	}
	return s.name, true
}

// SeriesNames returns the names of all series, sorted.
func (db *DB) SeriesNames() []string {
	db.mu.RLock()
	names := make([]string, 0, len(db.byName))
	for n := range db.byName {
		names = append(names, n)
	}
	db.mu.RUnlock()
	slices.Sort(names)
	return names
}

// AppendPoint appends a uns.Point to the series of its path.
func (db *DB) AppendPoint(p *uns.Point) error {
	id, err := db.Series(p.Path)
	if err != nil {
		return err
	}
	return db.Append(id, p.Time.UnixMilli(), p.Value, p.Quality)
}

// Append adds a point to series id. It only changes memory; Flush makes it
// durable.
func (db *DB) Append(id uint64, t int64, v uns.Value, q uns.Quality) error {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed {
		return ErrClosed
	}
	s := db.byID[id]
	if s == nil {
		return fmt.Errorf("%w: %d", ErrUnknownSeries, id)
	}
	if q > uns.Stale {
		return fmt.Errorf("historian: quality %d out of range", q)
	}
	inOrder := !s.has || t >= s.maxT
	if inOrder && db.opts.Deadband != nil {
		if !s.dband.init {
			s.dband = deadband{init: true, dev: db.opts.Deadband(s.name)}
		}
		if !s.dband.keep(t, v, q, func(t int64, v uns.Value, q uns.Quality) error {
			return db.appendTo(s, &s.head, t, v, q)
		}) {
			return s.dband.err
		}
	}
	buf := &s.head
	if s.has && t < s.maxT-db.windowM {
		buf = &s.late
	}
	return db.appendTo(s, buf, t, v, q)
}

// appendTo inserts a point into buf (the head or the late buffer) in time
// order, after points of equal time.
func (db *DB) appendTo(s *series, buf *block.Points, t int64, v uns.Value, q uns.Quality) error {
	if !buf.Accepts(v.Kind()) || buf.Len() >= db.opts.HeadPoints {
		// A batch holds one kind; a change of kind (rare: a tag
		// reconfigured) or a full head seals the batch into blocks.
		if err := db.seal(s, buf); err != nil {
			return err
		}
	}
	i := buf.Len()
	if i > 0 && t < buf.Times[i-1] {
		i = sort.Search(i, func(k int) bool { return buf.Times[k] > t })
	}
	if err := buf.Insert(i, t, v, q); err != nil {
		return err
	}
	if !s.has || t > s.maxT {
		s.maxT, s.has = t, true
	}
	if db.rollups != nil {
		db.rollups.noteAppend(s.id, t)
	}
	if s.hasLatest && t >= s.latest.Time || !s.hasLatest && t >= s.maxStored() {
		s.latest, s.hasLatest = Sample{t, v, q}, true
	}
	return nil
}

// Lanes of in-memory blocks: what the head sealed and what the late buffer
// sealed.
const (
	laneHead = 0
	laneLate = 1
)

// seal encodes buf into in-memory blocks, one per partition it spans, and
// empties it.
func (db *DB) seal(s *series, buf *block.Points) error {
	lane := uint8(laneHead)
	if buf == &s.late {
		lane = laneLate
	}
	n := buf.Len()
	for i := 0; i < n; {
		part := db.partitionOf(buf.Times[i])
		j := i + 1
		for j < n && j-i < block.MaxPoints && db.partitionOf(buf.Times[j]) == part {
			j++
		}
		sub := slice(buf, i, j)
		b, err := block.Append(nil, s.id, &sub)
		if err != nil {
			return err
		}
		ref := blockRef{mem: b, size: int64(len(b)), minTime: buf.Times[i], maxTime: buf.Times[j-1],
			count: j - i, seq: db.nextSeq, lane: lane, last: Sample{buf.Times[j-1], buf.Value(j - 1), buf.QualityAt(j - 1)}}
		// Keep blocks ordered by (flush, lane, seal order): see sources.
		at := len(s.blocks)
		for at > 0 && s.blocks[at-1].seq == ref.seq && s.blocks[at-1].lane > lane {
			at--
		}
		s.blocks = slices.Insert(s.blocks, at, ref)
		i = j
	}
	buf.Reset()
	return nil
}

func slice(p *block.Points, i, j int) block.Points {
	s := block.Points{Kind: p.Kind, Times: p.Times[i:j], Quality: p.Quality[i:j]}
	if len(p.Bits) > 0 {
		s.Bits = p.Bits[i:j]
	}
	if len(p.Strs) > 0 {
		s.Strs = p.Strs[i:j]
	}
	return s
}

// partitionOf returns the start (ms) of the partition holding time t.
func (db *DB) partitionOf(t int64) int64 {
	p := t - t%db.partMs
	if t < 0 && t%db.partMs != 0 {
		p -= db.partMs
	}
	return p
}

// Flush seals every head and writes all in-memory blocks to new partition
// files, then commits them with checkpoint in the manifest. When Flush
// returns nil, everything appended before it survives a crash, and
// Checkpoint returns checkpoint.
func (db *DB) Flush(checkpoint []byte) error {
	if db.rollups != nil {
		// Before the raw commit: a checkpoint past points whose rollups
		// are not yet durable would lose their dirty marks in a crash.
		if err := db.rollUp(); err != nil {
			return err
		}
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed {
		return ErrClosed
	}
	byPart := map[int64][]newBlock{}
	type pending struct {
		s *series
		i int
	}
	var written []pending
	ids := make([]uint64, 0, len(db.byID))
	for id := range db.byID {
		ids = append(ids, id)
	}
	slices.Sort(ids) // deterministic files
	for _, id := range ids {
		s := db.byID[id]
		for _, buf := range []*block.Points{&s.late, &s.head} {
			if err := db.seal(s, buf); err != nil {
				return err
			}
		}
		for i, r := range s.blocks {
			if r.mem == nil {
				continue
			}
			p := db.partitionOf(r.minTime)
			byPart[p] = append(byPart[p], newBlock{id: s.id, b: r.mem, last: r.last,
				hdr: block.Header{SeriesID: s.id, Count: r.count, MinTime: r.minTime, MaxTime: r.maxTime}})
			written = append(written, pending{s, i})
		}
	}
	// Series first: a committed block must never name an unknown series.
	if len(db.newNames) > 0 {
		var rec []byte
		for _, s := range db.newNames {
			rec = appendSeriesRecord(rec, s.name, s.id)
		}
		if _, err := db.seriesF.WriteAt(rec, db.seriesSz); err != nil {
			return err
		}
		if err := db.seriesF.Sync(); err != nil {
			return err
		}
		db.seriesSz += int64(len(rec))
		db.newNames = db.newNames[:0]
	}
	parts := make([]int64, 0, len(byPart))
	for p := range byPart {
		parts = append(parts, p)
	}
	slices.Sort(parts)
	seq := db.nextSeq
	var newFiles []*partFile
	fail := func(err error) error {
		for _, pf := range newFiles {
			pf.f.Close()
			os.Remove(filepath.Join(db.opts.Dir, pf.name))
		}
		return err
	}
	for _, p := range parts {
		name := partFileName(p, seq)
		if _, err := writePartFile(db.opts.Dir, name, byPart[p]); err != nil {
			return fail(err)
		}
		pf, err := openPartFile(db.opts.Dir, name)
		if err != nil {
			return fail(err)
		}
		newFiles = append(newFiles, pf)
	}
	if err := db.commit(append(slices.Clip(db.files), newFiles...), checkpoint); err != nil {
		return fail(err)
	}
	db.files = append(db.files, newFiles...)
	db.nextSeq = seq + 1
	db.ckpt = slices.Clone(checkpoint)
	// The in-memory blocks now live in the files, in the same order: swap
	// each reference for its file's.
	filesByPart := map[int64]*partFile{}
	for _, f := range newFiles {
		filesByPart[f.start] = f
	}
	next := map[*partFile]int{}
	for _, w := range written {
		r := &w.s.blocks[w.i]
		pf := filesByPart[db.partitionOf(r.minTime)]
		e := pf.refs[next[pf]]
		next[pf]++
		e.ref.seq = r.seq
		*r = e.ref
	}
	return nil
}

// commit writes the manifest naming files (and the current tier objects).
func (db *DB) commit(files []*partFile, checkpoint []byte) error {
	return db.commitState(files, db.tiers, checkpoint)
}

// commitState writes the manifest naming files and tier objects.
func (db *DB) commitState(files []*partFile, tiers []*tierObject, checkpoint []byte) error {
	m := manifest{seriesLen: db.seriesSz, checkpoint: checkpoint, tiers: tierFileNames(tiers)}
	for _, f := range files {
		m.files = append(m.files, f.name)
	}
	b := m.encode()
	return writeFileAtomic(db.opts.Dir, manifestName, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

// Close releases the DB's files. It does not flush: what was appended
// since the last Flush is recovered by replaying the log from Checkpoint.
func (db *DB) Close() error {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed {
		return nil
	}
	db.closed = true
	err := db.closeFiles()
	if db.rollups != nil {
		err = errors.Join(err, db.rollups.close())
	}
	return err
}

func (db *DB) closeFiles() error {
	var errs []error
	for _, f := range db.files {
		errs = append(errs, f.f.Close())
	}
	for _, t := range db.tiers {
		errs = append(errs, t.close())
	}
	if db.seriesF != nil {
		errs = append(errs, db.seriesF.Close())
	}
	errs = append(errs, db.lock.Close())
	return errors.Join(errs...)
}
