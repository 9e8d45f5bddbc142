package embedded

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/millstream/millstream/log"
)

func commitT(t testing.TB, l *Log, group string, p int32, off int64) {
	t.Helper()
	if err := l.CommitOffset(bg, group, "t", p, off); err != nil {
		t.Fatal(err)
	}
}

func committedT(t testing.TB, l *Log, group string, p int32) (int64, bool) {
	t.Helper()
	off, ok, err := l.CommittedOffset(bg, group, "t", p)
	if err != nil {
		t.Fatal(err)
	}
	return off, ok
}

// TestOffsetsJournalTornTail cuts the journal at every length and flips
// bytes in its last entry: the store opens, keeps every complete commit
// before the damage and truncates the rest.
func TestOffsetsJournalTornTail(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	createTopic(t, l, "t", log.TopicConfig{Partitions: 2})
	commitT(t, l, "g", 0, 10)
	commitT(t, l, "g", 1, 20)
	if err := l.CommitOffsets(bg, "g", []log.TopicPartitionOffset{{Topic: "t", Partition: 0, Offset: 11}, {Topic: "t", Partition: 1, Offset: 21}}); err != nil {
		t.Fatal(err)
	}
	journal := filepath.Join(dir, offsetsJournalFile)
	// Copy the files as they are before Close compacts them away.
	full, err := os.ReadFile(journal)
	if err != nil || len(full) == 0 {
		t.Fatalf("journal: %d bytes (%v)", len(full), err)
	}
	l.offs.f.Close() // as a crash would: no snapshot on the way out
	l.offs.mu.Lock()
	l.offs.err = log.ErrClosed
	l.offs.mu.Unlock()
	l.Close()

	// The last entry holds both offsets of the multi-partition commit.
	first := entryEnds(t, full)
	if len(first) != 3 {
		t.Fatalf("journal has %d entries, want 3", len(first))
	}
	want := func(n int) (int64, int64) { // offsets after the first n entries
		switch n {
		case 0:
			return -1, -1
		case 1:
			return 10, -1
		case 2:
			return 10, 20
		}
		return 11, 21
	}
	check := func(t *testing.T, data []byte, complete int) {
		d := t.TempDir()
		copyDir(t, dir, d)
		if err := os.WriteFile(filepath.Join(d, offsetsJournalFile), data, 0o644); err != nil {
			t.Fatal(err)
		}
		l := openT(t, d, Options{})
		w0, w1 := want(complete)
		for p, w := range []int64{w0, w1} {
			got, ok := committedT(t, l, "g", int32(p))
			if (w < 0) == ok || (ok && got != w) {
				t.Fatalf("partition %d: committed %d (%v), want %d", p, got, ok, w)
			}
		}
		if fi, err := os.Stat(filepath.Join(d, offsetsJournalFile)); err != nil || fi.Size() != int64(first[max(complete, 1)-1])*int64(min(complete, 1)) {
			t.Fatalf("journal not truncated to its %d complete entries: %v", complete, fi.Size())
		}
		// Commits go on after the repaired tail.
		commitT(t, l, "g", 0, 99)
		l.Close()
		l = openT(t, d, Options{})
		if got, _ := committedT(t, l, "g", 0); got != 99 {
			t.Fatalf("commit after recovery: %d, want 99", got)
		}
	}
	for cut := 0; cut <= len(full); cut++ {
		complete := 0
		for _, e := range first {
			if cut >= e {
				complete++
			}
		}
		t.Run("cut", func(t *testing.T) { check(t, full[:cut], complete) })
	}
	for pos := first[1]; pos < len(full); pos++ {
		b := append([]byte(nil), full...)
		b[pos] ^= 0x10
		t.Run("flip", func(t *testing.T) { check(t, b, 2) })
	}
}

// entryEnds returns where each journal entry ends.
func entryEnds(t *testing.T, j []byte) []int {
	s := &offsetStore{table: map[string]map[string]map[int32]int64{}}
	var ends []int
	for n := 1; n <= len(j); n++ {
		if int(s.replay(j[:n])) == n {
			ends = append(ends, n)
		}
	}
	return ends
}

// TestOffsetsCompaction commits until the journal is compacted several
// times: the snapshot plus the journal always give the latest offsets.
func TestOffsetsCompaction(t *testing.T) {
	old := journalCompactBytes
	journalCompactBytes = 512
	t.Cleanup(func() { journalCompactBytes = old })
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	createTopic(t, l, "t", log.TopicConfig{Partitions: 4})
	for i := int64(1); i <= 500; i++ {
		commitT(t, l, "group-"+string(rune('a'+i%3)), int32(i%4), i)
	}
	if fi, err := os.Stat(filepath.Join(dir, offsetsJournalFile)); err != nil || fi.Size() >= 512+64 {
		t.Fatalf("journal not compacted: %v", fi.Size())
	}
	if _, err := os.Stat(filepath.Join(dir, offsetsSnapshotFile)); err != nil {
		t.Fatalf("no snapshot after compaction: %v", err)
	}
	wantGroups, _ := l.Groups(bg)
	// Reopen without Close (no final snapshot): snapshot + journal.
	l.offs.f.Close()
	l.offs.err = log.ErrClosed
	l.Close()
	l = openT(t, dir, Options{})
	got, _ := l.Groups(bg)
	a, _ := json.Marshal(got)
	b, _ := json.Marshal(wantGroups)
	if string(a) != string(b) {
		t.Fatalf("after reopen:\n%s\nwant\n%s", a, b)
	}
	if o, _ := committedT(t, l, "group-b", 1); o != 493 {
		t.Fatalf("group-b/1 = %d, want 493", o)
	}
	// Close writes a snapshot and empties the journal.
	l.Close()
	if fi, err := os.Stat(filepath.Join(dir, offsetsJournalFile)); err != nil || fi.Size() != 0 {
		t.Fatalf("journal after Close: %v (%v)", fi.Size(), err)
	}
}

// TestOffsetsLegacySnapshot opens a directory written before the journal
// existed: its consumer-offsets.json is the starting table.
func TestOffsetsLegacySnapshot(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	createTopic(t, l, "t", log.TopicConfig{Partitions: 1})
	l.Close()
	os.Remove(filepath.Join(dir, offsetsJournalFile))
	legacy := `{"offsets":[{"group":"historian","Topic":"t","Partition":0,"Offset":42}]}`
	if err := os.WriteFile(filepath.Join(dir, offsetsSnapshotFile), []byte(legacy), 0o644); err != nil {
		t.Fatal(err)
	}
	l = openT(t, dir, Options{})
	if o, ok := committedT(t, l, "historian", 0); !ok || o != 42 {
		t.Fatalf("legacy offset: %d %v, want 42", o, ok)
	}
}

// TestOffsetCommitsShareSyncs checks that concurrent commits are group
// committed: far fewer journal syncs than commits, each commit durable
// when it returns.
func TestOffsetCommitsShareSyncs(t *testing.T) {
	l := openT(t, t.TempDir(), Options{})
	createTopic(t, l, "t", log.TopicConfig{Partitions: 8})
	const goroutines, per = 32, 20
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				if err := l.CommitOffset(bg, "g"+string(rune('a'+g)), "t", int32(g%8), int64(i+1)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	l.offs.flushMu.Lock()
	n := l.offs.flushes
	l.offs.flushMu.Unlock()
	t.Logf("%d journal syncs for %d commits", n, goroutines*per)
	if n >= goroutines*per/2 {
		t.Fatalf("%d syncs for %d concurrent commits: commits are not sharing syncs", n, goroutines*per)
	}
	for g := range goroutines {
		if o, _, _ := l.CommittedOffset(bg, "g"+string(rune('a'+g)), "t", int32(g%8)); o != per {
			t.Fatalf("group %d: %d, want %d", g, o, per)
		}
	}
}

// TestCommitOffsetsValidates rejects unknown partitions and negative
// offsets before anything is written.
func TestCommitOffsetsValidates(t *testing.T) {
	l := openT(t, t.TempDir(), Options{})
	createTopic(t, l, "t", log.TopicConfig{Partitions: 1})
	if err := l.CommitOffsets(bg, "g", []log.TopicPartitionOffset{{Topic: "t", Offset: 1}, {Topic: "t", Partition: 3, Offset: 1}}); err == nil {
		t.Fatal("commit to partition 3 of a 1-partition topic accepted")
	}
	if err := l.CommitOffsets(bg, "g", []log.TopicPartitionOffset{{Topic: "t", Offset: -1}}); err == nil {
		t.Fatal("negative offset accepted")
	}
	if _, ok := committedT(t, l, "g", 0); ok {
		t.Fatal("a rejected commit left an offset behind")
	}
	l.Close()
	if err := l.CommitOffset(bg, "g", "t", 0, 1); err == nil {
		t.Fatal("commit after Close accepted")
	}
}

// FuzzOffsetsJournal replays arbitrary bytes as a journal: no panic, the
// valid part ends within the input, every accepted entry decodes to
// non-negative partitions and offsets, and re-encoding the accepted entries
// replays to the same table.
func FuzzOffsetsJournal(f *testing.F) {
	var seed []byte
	seed = appendJournalEntry(seed, "normaliser", []log.TopicPartitionOffset{{Topic: "mqtt.ingress", Partition: 0, Offset: 12}})
	seed = appendJournalEntry(seed, "historian", []log.TopicPartitionOffset{{Topic: "uns.points", Partition: 1, Offset: 7}, {Topic: "uns.points", Partition: 2, Offset: 1 << 40}})
	f.Add(seed)
	f.Add(seed[:len(seed)-3])
	f.Add([]byte{})
	f.Add(make([]byte, 8))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := &offsetStore{table: map[string]map[string]map[int32]int64{}}
		end := s.replay(data)
		if end < 0 || end > int64(len(data)) {
			t.Fatalf("valid end %d outside [0, %d]", end, len(data))
		}
		var again []byte
		for pos := int64(0); pos < end; {
			n := int64(binary.BigEndian.Uint32(data[pos:]))
			group, offs, ok := decodeJournalEntry(data[pos+8 : pos+8+n])
			if !ok {
				t.Fatalf("accepted entry at %d does not decode", pos)
			}
			for _, o := range offs {
				if o.Offset < 0 || o.Partition < 0 {
					t.Fatalf("accepted a negative offset or partition: %+v", o)
				}
			}
			again = appendJournalEntry(again, group, offs)
			pos += 8 + n
		}
		s2 := &offsetStore{table: map[string]map[string]map[int32]int64{}}
		if n := s2.replay(again); n != int64(len(again)) {
			t.Fatalf("re-encoded journal: %d of %d bytes valid", n, len(again))
		}
		a, _ := json.Marshal(s.groups())
		b, _ := json.Marshal(s2.groups())
		if string(a) != string(b) {
			t.Fatalf("re-encoded journal replays to\n%s\nnot\n%s", b, a)
		}
	})
}
