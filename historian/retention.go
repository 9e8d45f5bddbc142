package historian

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// DropBefore deletes the partition files, and the Parquet tier objects,
// whose whole time span lies before t (ms): raw-data retention. It returns
// how many files and objects it deleted. Points still in memory are not
// touched (they are few: at most a flush interval's worth); they go with a
// later call after they are flushed.
func (db *DB) DropBefore(t int64) (int, error) { return db.dropBefore(t, false) }

// dropBefore is DropBefore; with try it does nothing while a tiering
// export or a compaction is under way.
func (db *DB) dropBefore(t int64, try bool) (int, error) {
	if try {
		if !db.maintMu.TryLock() {
			return 0, nil
		}
	} else {
		db.maintMu.Lock()
	}
	defer db.maintMu.Unlock()
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed {
		return 0, ErrClosed
	}
	drop := map[*partFile]bool{}
	var keep []*partFile
	for _, f := range db.files {
		if f.start <= t-db.partMs {
			drop[f] = true
		} else {
			keep = append(keep, f)
		}
	}
	dropTier := map[*tierObject]bool{}
	var keepTiers, gone []*tierObject
	for _, o := range db.tiers {
		if o.start <= t-db.partMs {
			dropTier[o] = true
			gone = append(gone, o)
		} else {
			keepTiers = append(keepTiers, o)
		}
	}
	if len(drop) == 0 && len(gone) == 0 {
		return 0, nil
	}
	// Commit first: a crash after it leaves unlisted files, which Open
	// deletes; a crash before it leaves everything as it was.
	if err := db.commitState(keep, keepTiers, db.ckpt); err != nil {
		return 0, err
	}
	db.files, db.tiers = keep, keepTiers
	db.latestMu.Lock()
	for _, s := range db.byID {
		kept := s.blocks[:0]
		for _, r := range s.blocks {
			if (r.file == nil || !drop[r.file]) && (r.tier == nil || !dropTier[r.tier]) {
				kept = append(kept, r)
			}
		}
		clear(s.blocks[len(kept):])
		s.blocks = kept
		if s.hasLatest && s.latest.Time < t {
			s.hasLatest = false // it may have been in a dropped file
		}
	}
	db.latestMu.Unlock()
	for f := range drop {
		f.f.Close()
		if err := os.Remove(filepath.Join(db.opts.Dir, f.name)); err != nil {
			return len(drop), fmt.Errorf("historian: retention: %w", err)
		}
	}
	// An object whose delete fails stays in the bucket, listed nowhere.
	if err := db.deleteTierObjects(gone); err != nil {
		return len(drop) + len(gone), fmt.Errorf("historian: retention: %w", err)
	}
	return len(drop) + len(gone), nil
}

// ApplyRetention drops what Options.Retention no longer keeps at time
// now; without a retention it does nothing.
// The rollups apply their own retentions.
func (db *DB) ApplyRetention(now time.Time) (int, error) { return db.applyRetention(now, false) }

func (db *DB) applyRetention(now time.Time, try bool) (int, error) {
	n := 0
	if db.rollups != nil {
		for _, t := range db.rollups.tiers {
			k, err := t.db.ApplyRetention(now)
			if err != nil {
				return n, err
			}
			n += k
		}
	}
	if db.opts.Retention <= 0 {
		return n, nil
	}
	k, err := db.dropBefore(now.Add(-db.opts.Retention).UnixMilli(), try)
	return n + k, err
}
