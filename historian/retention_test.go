package historian

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/millstream/millstream/uns"
)

func TestRetention(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Dir: dir, Partition: time.Hour, Retention: 2 * time.Hour}
	db, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	id, _ := db.Series("a/b")
	other, _ := db.Series("a/c")
	// Five hourly partitions, each flushed on its own.
	for h := range 5 {
		for m := 0; m < 60; m += 10 {
			at := base.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute).UnixMilli()
			if err := db.Append(id, at, uns.FloatValue(float64(h)), uns.Good); err != nil {
				t.Fatal(err)
			}
			if h == 0 {
				if err := db.Append(other, at, uns.IntValue(1), uns.Good); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := db.Flush([]byte{byte(h)}); err != nil {
			t.Fatal(err)
		}
	}
	// Nothing to drop yet.
	if n, err := db.ApplyRetention(base.Add(2 * time.Hour)); n != 0 || err != nil {
		t.Fatalf("early retention dropped %d: %v", n, err)
	}
	// At 04:30 with 2 h retention, partitions ending at or before 02:30
	// go: 00:00 and 01:00 (02:00 ends at 03:00 and stays).
	n, err := db.ApplyRetention(base.Add(4*time.Hour + 30*time.Minute))
	if err != nil || n != 2 {
		t.Fatalf("dropped %d, %v; want 2", n, err)
	}
	check := func(db *DB) {
		t.Helper()
		got, err := db.Range(nil, id, 0, base.Add(24*time.Hour).UnixMilli())
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 18 || got[0].Time != base.Add(2*time.Hour).UnixMilli() {
			t.Fatalf("%d points from %d after retention", len(got), got[0].Time)
		}
		last, err := db.Last(nil, []uint64{other}, base.Add(24*time.Hour).UnixMilli())
		if err != nil || last[0].Time != NoTime {
			t.Fatalf("dropped series still has a last point: %+v %v", last, err)
		}
		if string(db.Checkpoint()) != string([]byte{4}) {
			t.Fatalf("retention changed the checkpoint to %v", db.Checkpoint())
		}
	}
	check(db)
	db.Close()
	ents, _ := os.ReadDir(dir)
	var parts []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".hdb") {
			parts = append(parts, e.Name())
		}
	}
	if len(parts) != 3 {
		t.Fatalf("files left: %v", parts)
	}
	db, err = Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	check(db)
	if _, err := os.Stat(filepath.Join(dir, "LOCK")); err != nil {
		t.Fatal(err)
	}
}
