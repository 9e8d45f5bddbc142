package historian

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/millstream/millstream/uns"
)

// TestTierReadableByArrow reads the tier's Parquet files with a second,
// independent implementation (Apache Arrow's Go Parquet reader, the
// reader family pandas/pyarrow use) and checks the column types and that
// every row equals what the historian answers for that series.
func TestTierReadableByArrow(t *testing.T) {
	root := t.TempDir()
	db := openTier(t, t.TempDir(), TierOptions{Dir: root})
	defer db.Close()
	m, ids, now := tierData(t, db, 4)
	// Everything: the newest partition too.
	if n, err := db.TierBefore(context.Background(), now+db.partMs); err != nil || n == 0 || len(db.files) != 0 {
		t.Fatalf("tiered %d, %d files left: %v", n, len(db.files), err)
	}
	got := map[string][]Sample{}
	files, _ := filepath.Glob(filepath.Join(root, "date=*", "*.parquet"))
	if len(files) != len(db.tiers) {
		t.Fatalf("%d parquet files, %d tier objects", len(files), len(db.tiers))
	}
	wantTypes := map[string]arrow.DataType{
		"series":       arrow.BinaryTypes.String,
		"time":         &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"},
		"value_float":  arrow.PrimitiveTypes.Float64,
		"value_int":    arrow.PrimitiveTypes.Int64,
		"value_uint":   arrow.PrimitiveTypes.Uint64,
		"value_bool":   arrow.FixedWidthTypes.Boolean,
		"value_string": arrow.BinaryTypes.String,
		"value_bytes":  arrow.BinaryTypes.Binary,
		"quality":      arrow.BinaryTypes.String,
	}
	for _, f := range files {
		pr, err := file.OpenParquetFile(f, false)
		if err != nil {
			t.Fatal(err)
		}
		fr, err := pqarrow.NewFileReader(pr, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
		if err != nil {
			t.Fatal(err)
		}
		tbl, err := fr.ReadTable(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		sc := tbl.Schema()
		if sc.NumFields() != len(wantTypes) {
			t.Fatalf("%s: %d columns: %s", f, sc.NumFields(), sc)
		}
		for _, fl := range sc.Fields() {
			if w, ok := wantTypes[fl.Name]; !ok || (!arrow.TypeEqual(fl.Type, w) && fl.Name != "time") {
				t.Fatalf("%s: column %s is %s, want %v", f, fl.Name, fl.Type, w)
			}
			if ts, ok := fl.Type.(*arrow.TimestampType); fl.Name == "time" && (!ok || ts.Unit != arrow.Millisecond) {
				t.Fatalf("%s: time column is %s", f, fl.Type)
			}
		}
		tr := array.NewTableReader(tbl, 4096)
		for tr.Next() {
			rec := tr.RecordBatch()
			col := func(name string) arrow.Array { return rec.Column(rec.Schema().FieldIndices(name)[0]) }
			series := col("series").(*array.String)
			tm := col("time").(*array.Timestamp)
			vf := col("value_float").(*array.Float64)
			vi := col("value_int").(*array.Int64)
			vu := col("value_uint").(*array.Uint64)
			vb := col("value_bool").(*array.Boolean)
			vs := col("value_string").(*array.String)
			vy := col("value_bytes").(*array.Binary)
			q := col("quality").(*array.String)
			for i := range int(rec.NumRows()) {
				s := Sample{Time: int64(tm.Value(i))}
				switch {
				case vf.IsValid(i):
					s.Value = uns.FloatValue(vf.Value(i))
				case vi.IsValid(i):
					s.Value = uns.IntValue(vi.Value(i))
				case vu.IsValid(i):
					s.Value = uns.UintValue(vu.Value(i))
				case vb.IsValid(i):
					s.Value = uns.BoolValue(vb.Value(i))
				case vs.IsValid(i):
					s.Value = uns.StringValue(vs.Value(i))
				case vy.IsValid(i):
					s.Value = uns.BytesValue(vy.Value(i))
				}
				qq, err := uns.ParseQuality(q.Value(i))
				if err != nil {
					t.Fatal(err)
				}
				s.Quality = qq
				got[series.Value(i)] = append(got[series.Value(i)], s)
			}
		}
		if err := tr.Err(); err != nil {
			t.Fatal(err)
		}
		tr.Release()
		tbl.Release()
		pr.Close()
	}
	rows := 0
	for _, id := range ids {
		name, _ := db.Name(id)
		want := m.rangeOf(id, math.MinInt64, math.MaxInt64)
		if err := sameSamples(got[name], want); err != nil {
			t.Fatal(fmt.Errorf("series %s read with arrow: %w", name, err))
		}
		rows += len(want)
	}
	if rows == 0 {
		t.Fatal("no rows")
	}
}
