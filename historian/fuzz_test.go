package historian

import (
	"encoding/binary"
	"testing"

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
