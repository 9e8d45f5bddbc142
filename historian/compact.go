package historian

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/millstream/millstream/historian/block"
)

// Compact rewrites every partition that has more than one file into a
// single file holding, per series, its points merged in time order (equal
// times in arrival order) in as few blocks as its kinds and
// block.MaxPoints allow. Small blocks from frequent flushes and late data
// thus end up as one block per series and partition, which compresses
// better and reads faster. Each partition commits through the manifest on
// its own, so a crash leaves either the old files or the new one.
func (db *DB) Compact() error { return db.CompactBefore(math.MaxInt64) }

// CompactBefore compacts, as Compact, the partitions that end at or before
// t (ms): those that no longer receive points in order, so the current
// partition is not rewritten over and over. It locks the DB one partition
// at a time, so appends and queries wait for one partition's rewrite at
// most.
func (db *DB) CompactBefore(t int64) error { return db.compactBefore(t, false) }

// compactBefore is CompactBefore; with try it skips the raw partitions
// (and returns nil) while a tiering export or retention is under way.
func (db *DB) compactBefore(t int64, try bool) error {
	if db.rollups != nil {
		for _, tier := range db.rollups.tiers {
			if err := tier.db.CompactBefore(t); err != nil {
				return err
			}
		}
	}
	if try {
		if !db.maintMu.TryLock() {
			return nil
		}
	} else {
		db.maintMu.Lock()
	}
	defer db.maintMu.Unlock()
	db.mu.RLock()
	if db.closed {
		db.mu.RUnlock()
		return ErrClosed
	}
	count := map[int64]int{}
	for _, f := range db.files {
		if f.start <= t-db.partMs {
			count[f.start]++
		}
	}
	db.mu.RUnlock()
	parts := make([]int64, 0, len(count))
	for p, n := range count {
		if n > 1 {
			parts = append(parts, p)
		}
	}
	slices.Sort(parts)
	for _, p := range parts {
		if err := db.compactOne(p); err != nil {
			return err
		}
	}
	return nil
}

func (db *DB) compactOne(part int64) error {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed {
		return ErrClosed
	}
	var files []*partFile
	for _, f := range db.files {
		if f.start == part {
			files = append(files, f)
		}
	}
	if len(files) < 2 {
		return nil
	}
	return db.compactPartition(part, files)
}

func (db *DB) compactPartition(part int64, old []*partFile) error {
	isOld := map[*partFile]bool{}
	for _, f := range old {
		isOld[f] = true
	}
	ids := make([]uint64, 0)
	for id, s := range db.byID {
		for _, r := range s.blocks {
			if isOld[r.file] {
				ids = append(ids, id)
				break
			}
		}
	}
	slices.Sort(ids)
	seq := db.nextSeq
	r := new(reader)
	var blocks []newBlock
	var merged []Sample
	var p block.Points
	for _, id := range ids {
		s := db.byID[id]
		merged = merged[:0]
		for i := range s.blocks { // in arrival order
			if !isOld[s.blocks[i].file] {
				continue
			}
			pts, err := r.points(id, source{ref: &s.blocks[i]})
			if err != nil {
				return err
			}
			for k := range pts.Len() {
				merged = append(merged, Sample{pts.Times[k], pts.Value(k), pts.QualityAt(k)})
			}
		}
		sort.SliceStable(merged, func(a, b int) bool { return merged[a].Time < merged[b].Time })
		p.Reset()
		emit := func() error {
			if p.Len() == 0 {
				return nil
			}
			b, err := block.Append(nil, id, &p)
			if err != nil {
				return err
			}
			n := p.Len() - 1
			blocks = append(blocks, newBlock{id: id, b: b, last: Sample{p.Times[n], p.Value(n), p.QualityAt(n)}, hdr: block.Header{
				SeriesID: id, Count: p.Len(), MinTime: p.Times[0], MaxTime: p.Times[p.Len()-1]}})
			p.Reset()
			return nil
		}
		for _, x := range merged {
			if !p.Accepts(x.Value.Kind()) || p.Len() == block.MaxPoints {
				if err := emit(); err != nil {
					return err
				}
			}
			if err := p.Append(x.Time, x.Value, x.Quality); err != nil {
				return err
			}
		}
		if err := emit(); err != nil {
			return err
		}
	}
	name := partFileName(part, seq)
	if _, err := writePartFile(db.opts.Dir, name, blocks); err != nil {
		return err
	}
	pf, err := openPartFile(db.opts.Dir, name)
	if err != nil {
		return err
	}
	files := []*partFile{pf}
	for _, f := range db.files {
		if !isOld[f] {
			files = append(files, f)
		}
	}
	slices.SortStableFunc(files, func(a, b *partFile) int { return cmpSeq(a.seq, b.seq) })
	if err := db.commit(files, db.ckpt); err != nil {
		pf.f.Close()
		os.Remove(filepath.Join(db.opts.Dir, name))
		return err
	}
	db.files = files
	db.nextSeq = seq + 1
	// The merged blocks take the place of the first old block of each
	// series, so they keep their position in arrival order relative to
	// blocks of other partitions.
	byID := map[uint64][]blockRef{}
	for _, e := range pf.refs {
		byID[e.id] = append(byID[e.id], e.ref)
	}
	for _, id := range ids {
		s := db.byID[id]
		var kept []blockRef
		placed := false
		for _, r := range s.blocks {
			if !isOld[r.file] {
				kept = append(kept, r)
				continue
			}
			if !placed {
				for _, nr := range byID[id] {
					nr.seq = r.seq
					kept = append(kept, nr)
				}
				placed = true
			}
		}
		s.blocks = kept
	}
	for _, f := range old {
		f.f.Close()
		if err := os.Remove(filepath.Join(db.opts.Dir, f.name)); err != nil {
			return fmt.Errorf("historian: compacted %s but could not remove it: %w", f.name, err)
		}
	}
	return nil
}
