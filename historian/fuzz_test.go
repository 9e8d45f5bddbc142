package historian

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"testing"

	"github.com/parquet-go/parquet-go"

	"github.com/millstream/millstream/uns"
)

// FuzzPartitionIndex feeds arbitrary bytes to the partition index decoder
// (both versions): it must return an error or entries within the file,
// never panic; a decoded newest point re-encodes to the same bytes.
func FuzzPartitionIndex(f *testing.F) {
	idx := binary.AppendUvarint(nil, 1)
	for _, v := range []uint64{7, 8, 100} {
		idx = binary.AppendUvarint(idx, v)
	}
	idx = binary.AppendVarint(idx, -5)
	idx = binary.AppendVarint(idx, 1000)
	idx = binary.AppendUvarint(idx, 3)
	idx = binary.AppendUvarint(idx, 2)
	for _, s := range []Sample{{1000, uns.FloatValue(1.5), uns.Good}, {-3, uns.StringValue("run"), uns.Bad}} {
		idx = binary.AppendUvarint(idx, 7)
		idx = appendSample(idx, s)
	}
	f.Add(idx, false)
	f.Add(idx[1:], true)
	f.Add([]byte{}, false)
	f.Fuzz(func(t *testing.T, b []byte, v1 bool) {
		pf := &partFile{name: "p0-1.hdb"}
		const end = 1 << 20
		if err := pf.parseIndex(b, end, v1); err != nil {
			return
		}
		for _, e := range pf.refs {
			if e.ref.off < 0 || e.ref.off+e.ref.size > end {
				t.Fatalf("entry %+v outside the file", e.ref)
			}
		}
		for _, e := range pf.newest {
			enc := appendSample(nil, e.s)
			s, n, err := readSample(enc)
			if err != nil || n != len(enc) || s.Time != e.s.Time || !s.Value.Equal(e.s.Value) || s.Quality != e.s.Quality {
				t.Fatalf("sample %+v does not round-trip: %+v %v", e.s, s, err)
			}
		}
	})
}

// FuzzManifest: the manifest decoder never panics, and what it accepts
// re-encodes to the same bytes.
func FuzzManifest(f *testing.F) {
	f.Add((&manifest{seriesLen: 10, checkpoint: []byte("ck"), files: []string{"p0-1.hdb"}}).encode())
	f.Add([]byte(manifestMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeManifest(b)
		if err != nil {
			return
		}
		if got := m.encode(); string(got) != string(b) {
			t.Fatalf("re-encoded %x, was %x", got, b)
		}
	})
}

// FuzzTierIndex: the local index of a tier object is checked (CRC,
// ranges) and never panics the decoder; what it accepts re-encodes to the
// same bytes.
func FuzzTierIndex(f *testing.F) {
	t := &tierObject{key: "date=2025-01-01/p0-3.parquet", size: 1234, rows: 10, sum: 99,
		entries: []tierEntry{{id: 5, row: 0, count: 4, minTime: 1, maxTime: 9}, {id: 6, row: 4, count: 6, minTime: -3, maxTime: 3}},
		newest:  []newestEntry{{5, Sample{9, uns.BytesValue([]byte{1}), uns.Stale}}}}
	f.Add(t.encode(), false)
	f.Add([]byte(tierIndexMagic), true)
	f.Fuzz(func(t *testing.T, b []byte, fixCRC bool) {
		if fixCRC && len(b) >= 4 {
			binary.LittleEndian.PutUint32(b[len(b)-4:], crc32.Checksum(b[:len(b)-4], castagnoli))
		}
		o, err := decodeTierIndex(b)
		if err != nil {
			return
		}
		for _, e := range o.entries {
			if e.count <= 0 || e.row < 0 || e.row+int64(e.count) > o.rows {
				t.Fatalf("entry %+v outside %d rows", e, o.rows)
			}
		}
		if _, err := decodeTierIndex(o.encode()); err != nil {
			t.Fatalf("re-encoded index refused: %v", err)
		}
	})
}

// FuzzTierParquet: a damaged or foreign Parquet object is an error when
// opened or read, never a panic.
func FuzzTierParquet(f *testing.F) {
	var buf bytes.Buffer
	w := parquet.NewGenericWriter[tierRow](&buf)
	var rows []tierRow
	for i, s := range []Sample{{1, uns.FloatValue(1.5), uns.Good}, {2, uns.StringValue("x"), uns.Bad}, {3, uns.Value{}, uns.Stale}} {
		var r tierRow
		r.set(fmt.Sprint("a/", i), s)
		rows = append(rows, r)
	}
	if _, err := w.Write(rows); err != nil {
		f.Fatal(err)
	}
	if err := w.Close(); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte("PAR1PAR1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		pf, err := openParquet(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		var starts []int64
		var n int64
		for _, rg := range pf.RowGroups() {
			starts = append(starts, n)
			n += rg.NumRows()
		}
		if n <= 0 || n > 1<<16 {
			return
		}
		rows, err := readParquetRows(pf, starts, 0, int(n), nil)
		if err != nil {
			return
		}
		for i := range rows {
			rows[i].sample()
		}
	})
}
