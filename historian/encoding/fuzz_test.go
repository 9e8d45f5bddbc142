package encoding

import (
	"encoding/binary"
	"math"
	"slices"
	"testing"
)

// Each fuzz target checks two properties with the same input: read as a
// column, arbitrary bytes decode to an error or to values (never a panic,
// never more than n values), and read as values, they round-trip.

func words(data []byte) []uint64 {
	w := make([]uint64, len(data)/8)
	for i := range w {
		w[i] = binary.LittleEndian.Uint64(data[8*i:])
	}
	return w
}

// smallWords turns bytes into values with long runs and small steps, the
// shapes that reach the packed and run-length paths.
func smallWords(data []byte) []uint64 {
	w := make([]uint64, 0, len(data)*4)
	var v uint64
	for _, b := range data {
		v += uint64(int8(b << 2 >> 2)) // a small signed step
		for range 1 + int(b>>6)*5 {
			w = append(w, v)
		}
	}
	return w
}

func seedColumns(f *testing.F, enc ...[]byte) {
	for _, e := range enc {
		f.Add(e, uint16(3))
	}
	f.Add([]byte{}, uint16(0))
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 4}, uint16(2))
}

func FuzzInts(f *testing.F) {
	seedColumns(f, AppendInts(nil, []int64{1, 2, 3}), AppendInts(nil, []int64{10, 7, 1 << 62}))
	f.Fuzz(func(t *testing.T, data []byte, n uint16) {
		if got, err := DecodeInts([]int64(nil), data, int(n)); err == nil && len(got) != int(n) {
			t.Fatalf("decoded %d values, want %d", len(got), n)
		}
		for _, vals := range [][]uint64{words(data), smallWords(data)} {
			enc := AppendInts(nil, vals)
			got, err := DecodeInts([]uint64(nil), enc, len(vals))
			if err != nil || !slices.Equal(got, vals) {
				t.Fatalf("round trip of %d values: %v", len(vals), err)
			}
		}
	})
}

func FuzzFloats(f *testing.F) {
	seedColumns(f,
		AppendFloats(nil, []uint64{math.Float64bits(1.25), math.Float64bits(2.5), math.Float64bits(-3)}),
		AppendFloats(nil, []uint64{math.Float64bits(math.NaN()), math.Float64bits(math.Inf(1)), 1 << 63}))
	f.Fuzz(func(t *testing.T, data []byte, n uint16) {
		if got, err := DecodeFloats(nil, data, int(n)); err == nil && len(got) != int(n) {
			t.Fatalf("decoded %d values, want %d", len(got), n)
		}
		decimals := smallWords(data)
		for i, v := range decimals {
			// Values with a fixed resolution: the decimal path.
			decimals[i] = math.Float64bits(float64(int64(v)) / 100)
		}
		for _, vals := range [][]uint64{words(data), decimals} {
			enc := AppendFloats(nil, vals)
			got, err := DecodeFloats(nil, enc, len(vals))
			if err != nil || !slices.Equal(got, vals) {
				t.Fatalf("round trip of %d values: %v", len(vals), err)
			}
		}
	})
}

func FuzzBools(f *testing.F) {
	seedColumns(f, AppendBools(nil, []uint64{1, 1, 0}))
	f.Fuzz(func(t *testing.T, data []byte, n uint16) {
		if got, err := DecodeBools(nil, data, int(n)); err == nil && len(got) != int(n) {
			t.Fatalf("decoded %d values, want %d", len(got), n)
		}
		vals := smallWords(data)
		for i := range vals {
			vals[i] &= 1
		}
		got, err := DecodeBools(nil, AppendBools(nil, vals), len(vals))
		if err != nil || !slices.Equal(got, vals) {
			t.Fatalf("round trip of %d values: %v", len(vals), err)
		}
	})
}

func FuzzSymbols(f *testing.F) {
	seedColumns(f, AppendSymbols(nil, []uint8{0, 0, 2}))
	f.Fuzz(func(t *testing.T, data []byte, n uint16) {
		if got, err := DecodeSymbols(nil, data, int(n)); err == nil && len(got) != int(n) {
			t.Fatalf("decoded %d values, want %d", len(got), n)
		}
		w := smallWords(data)
		vals := make([]uint8, len(w))
		for i, v := range w {
			vals[i] = uint8(v)
		}
		got, err := DecodeSymbols(nil, AppendSymbols(nil, vals), len(vals))
		if err != nil || !slices.Equal(got, vals) {
			t.Fatalf("round trip of %d values: %v", len(vals), err)
		}
	})
}

func FuzzStrings(f *testing.F) {
	seedColumns(f, AppendStrings(nil, []string{"run", "run", "idle"}))
	f.Fuzz(func(t *testing.T, data []byte, n uint16) {
		if got, _, err := DecodeStrings(nil, nil, data, int(n)); err == nil && len(got) != int(n) {
			t.Fatalf("decoded %d values, want %d", len(got), n)
		}
		w := smallWords(data)
		vals := make([]string, len(w))
		for i, v := range w {
			vals[i] = string(data[:min(len(data), int(v%8))])
		}
		got, _, err := DecodeStrings(nil, nil, AppendStrings(nil, vals), len(vals))
		if err != nil || !slices.Equal(got, vals) {
			t.Fatalf("round trip of %d values: %v", len(vals), err)
		}
	})
}
