package embedded

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"

	mlog "github.com/millstream/millstream/log"
)

// Committed offsets live in two files: a snapshot (consumer-offsets.json,
// replaced atomically) and a journal (consumer-offsets.journal) that every
// commit appends to. A commit costs one small write and one fdatasync, and
// commits that arrive while another is being synced share the next one:
// consumers that commit after every batch (the normaliser, the historian,
// the rollups, replication) used to rewrite the whole table with two fsyncs
// and a rename each time, a fifth of the server's CPU under MQTT load.
//
// When the journal outgrows journalCompactBytes the table is written to the
// snapshot and the journal is emptied. Replaying a journal on top of a
// snapshot is harmless: the journal's last value for each partition is the
// one the snapshot holds, so a crash between the two steps loses nothing.
//
// Journal entry (integers big-endian, varints as in encoding/binary):
//
//	4  length  bytes after the crc field
//	4  crc     CRC32C of those bytes
//	   uvarint group length, group
//	   uvarint count, then count times:
//	           uvarint topic length, topic, uvarint partition, varint offset
//
// One entry is one commit call, so the offsets of a multi-partition commit
// are applied together or not at all. Replay stops at the first entry that
// is cut short or fails its CRC (a commit that was never acknowledged) and
// truncates the journal there.
const (
	offsetsSnapshotFile = "consumer-offsets.json"
	offsetsJournalFile  = "consumer-offsets.journal"
	maxJournalEntry     = 16 << 20
)

// journalCompactBytes is a variable so that tests can compact often.
var journalCompactBytes int64 = 1 << 20

type groupOffset struct {
	Group string `json:"group"`
	mlog.TopicPartitionOffset
}

type offsetStore struct {
	dir    string
	logger *slog.Logger

	mu    sync.Mutex
	table map[string]map[string]map[int32]int64 // group -> topic -> partition
	buf   []byte                                // entries not yet written
	seq   uint64                                // commits appended to buf
	err   error                                 // a failed write or sync: later commits fail too

	// flushMu makes one committer at a time the flusher: it writes
	// everything buffered, syncs once and so completes every commit
	// buffered before it. Fields below are the flusher's.
	flushMu sync.Mutex
	synced  uint64
	flushes int // write+sync rounds, for tests
	f       *os.File
	size    int64
	spare   []byte
}

// openOffsets loads the snapshot and replays the journal.
func openOffsets(dir string, logger *slog.Logger) (*offsetStore, error) {
	s := &offsetStore{dir: dir, logger: logger, table: map[string]map[string]map[int32]int64{}}
	snap := filepath.Join(dir, offsetsSnapshotFile)
	b, err := os.ReadFile(snap)
	if err == nil {
		var f struct {
			Offsets []groupOffset `json:"offsets"`
		}
		if err := json.Unmarshal(b, &f); err != nil {
			return nil, fmt.Errorf("embedded log: consumer offsets file %s is corrupt: %w (move it away to start consumers from their StartAt position)", snap, err)
		}
		for _, o := range f.Offsets {
			s.set(o.Group, o.Topic, o.Partition, o.Offset)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("embedded log: %w", err)
	}

	path := filepath.Join(dir, offsetsJournalFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("embedded log: open consumer offsets journal: %w", err)
	}
	j, err := os.ReadFile(path)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("embedded log: read %s: %w", path, err)
	}
	valid := s.replay(j)
	if valid < int64(len(j)) {
		logger.Warn("embedded log: consumer offsets journal has a torn or corrupt tail (a commit that was never acknowledged); truncated",
			"file", path, "at", valid, "bytes_truncated", int64(len(j))-valid)
		err := f.Truncate(valid)
		if err == nil {
			err = f.Sync()
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("embedded log: truncate %s: %w", path, err)
		}
	}
	s.f, s.size = f, valid
	if valid == 0 && len(j) == 0 {
		// A new journal: make its directory entry durable before the
		// first commit relies on it.
		if err := syncDir(dir); err != nil {
			f.Close()
			return nil, err
		}
	}
	return s, nil
}

// replay applies the journal's complete entries and returns where the valid
// part ends.
func (s *offsetStore) replay(j []byte) int64 {
	var pos int64
	for int64(len(j))-pos >= 8 {
		n := int64(binary.BigEndian.Uint32(j[pos:]))
		if n > maxJournalEntry || int64(len(j))-pos-8 < n {
			break
		}
		body := j[pos+8 : pos+8+n]
		if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(j[pos+4:]) {
			break
		}
		group, offs, ok := decodeJournalEntry(body)
		if !ok {
			break
		}
		for _, o := range offs {
			s.set(group, o.Topic, o.Partition, o.Offset)
		}
		pos += 8 + n
	}
	return pos
}

func appendJournalEntry(b []byte, group string, offs []mlog.TopicPartitionOffset) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0, 0, 0, 0, 0)
	b = binary.AppendUvarint(b, uint64(len(group)))
	b = append(b, group...)
	b = binary.AppendUvarint(b, uint64(len(offs)))
	for _, o := range offs {
		b = binary.AppendUvarint(b, uint64(len(o.Topic)))
		b = append(b, o.Topic...)
		b = binary.AppendUvarint(b, uint64(uint32(o.Partition)))
		b = binary.AppendVarint(b, o.Offset)
	}
	body := b[start+8:]
	binary.BigEndian.PutUint32(b[start:], uint32(len(body)))
	binary.BigEndian.PutUint32(b[start+4:], crc32.Checksum(body, castagnoli))
	return b
}

func decodeJournalEntry(b []byte) (string, []mlog.TopicPartitionOffset, bool) {
	str := func() (string, bool) {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return "", false
		}
		s := string(b[k : k+int(n)])
		b = b[k+int(n):]
		return s, true
	}
	group, ok := str()
	if !ok {
		return "", nil, false
	}
	count, k := binary.Uvarint(b)
	if k <= 0 || count > uint64(len(b)) { // every offset takes at least 3 bytes
		return "", nil, false
	}
	b = b[k:]
	offs := make([]mlog.TopicPartitionOffset, 0, count)
	for range count {
		topic, ok := str()
		if !ok {
			return "", nil, false
		}
		p, k := binary.Uvarint(b)
		if k <= 0 || p > 1<<31-1 {
			return "", nil, false
		}
		b = b[k:]
		off, k := binary.Varint(b)
		if k <= 0 || off < 0 {
			return "", nil, false
		}
		b = b[k:]
		offs = append(offs, mlog.TopicPartitionOffset{Topic: topic, Partition: int32(p), Offset: off})
	}
	return group, offs, len(b) == 0
}

func (s *offsetStore) set(group, topic string, partition int32, offset int64) {
	g := s.table[group]
	if g == nil {
		g = map[string]map[int32]int64{}
		s.table[group] = g
	}
	t := g[topic]
	if t == nil {
		t = map[int32]int64{}
		g[topic] = t
	}
	t[partition] = offset
}

// commit records offs for group and returns once they are durable.
func (s *offsetStore) commit(group string, offs []mlog.TopicPartitionOffset) error {
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return err
	}
	for _, o := range offs {
		s.set(group, o.Topic, o.Partition, o.Offset)
	}
	s.buf = appendJournalEntry(s.buf, group, offs)
	s.seq++
	mine := s.seq
	s.mu.Unlock()

	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	if s.synced >= mine {
		return nil // a flusher that ran meanwhile took this commit along
	}
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return err
	}
	buf, upto := s.buf, s.seq
	s.buf = s.spare[:0]
	s.mu.Unlock()

	_, err := s.f.WriteAt(buf, s.size)
	if err == nil {
		err = datasync(s.f)
	}
	if err != nil {
		// The table now holds offsets that are not durable: refuse every
		// later commit rather than acknowledge on a disk that failed.
		err = fmt.Errorf("embedded log: write consumer offsets journal %s: %w (restart after fixing the disk)", s.f.Name(), err)
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
		return err
	}
	s.size += int64(len(buf))
	s.flushes++
	s.spare = buf[:0]
	s.synced = upto
	if s.size >= journalCompactBytes {
		if err := s.compact(); err != nil {
			// The journal still holds everything; try again next time.
			s.logger.Warn("embedded log: could not compact the consumer offsets journal", "error", err)
		}
	}
	return nil
}

// compact writes the table to the snapshot and empties the journal. The
// caller holds flushMu.
func (s *offsetStore) compact() error {
	s.mu.Lock()
	b := s.snapshotJSON()
	s.mu.Unlock()
	if err := writeFileSync(filepath.Join(s.dir, offsetsSnapshotFile), b); err != nil {
		return err
	}
	if err := s.f.Truncate(0); err != nil {
		return err
	}
	s.size = 0
	return datasync(s.f)
}

// snapshotJSON encodes the table, sorted by group, topic and partition.
// The caller holds mu.
func (s *offsetStore) snapshotJSON() []byte {
	var all []groupOffset
	for _, g := range s.groupsLocked() {
		for _, o := range g.Offsets {
			all = append(all, groupOffset{Group: g.Group, TopicPartitionOffset: o})
		}
	}
	b, _ := json.Marshal(struct {
		Offsets []groupOffset `json:"offsets"`
	}{all})
	return b
}

func (s *offsetStore) get(group, topic string, partition int32) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.table[group][topic][partition]
	return o, ok
}

func (s *offsetStore) groups() []mlog.GroupOffsets {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.groupsLocked()
}

// groupsLocked lists the table sorted by group, topic and partition. The
// caller holds mu.
func (s *offsetStore) groupsLocked() []mlog.GroupOffsets {
	var out []mlog.GroupOffsets
	for g, ts := range s.table {
		gr := mlog.GroupOffsets{Group: g}
		for t, ps := range ts {
			for p, o := range ps {
				gr.Offsets = append(gr.Offsets, mlog.TopicPartitionOffset{Topic: t, Partition: p, Offset: o})
			}
		}
		sort.Slice(gr.Offsets, func(i, j int) bool {
			a, b := gr.Offsets[i], gr.Offsets[j]
			if a.Topic != b.Topic {
				return a.Topic < b.Topic
			}
			return a.Partition < b.Partition
		})
		out = append(out, gr)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Group < out[j].Group })
	return out
}

// close writes a snapshot, so that the next open replays nothing, and
// closes the journal.
func (s *offsetStore) close() error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	var err error
	if s.size > 0 && s.err == nil {
		err = s.compact()
	}
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	s.mu.Lock()
	s.err = mlog.ErrClosed
	s.mu.Unlock()
	return err
}
