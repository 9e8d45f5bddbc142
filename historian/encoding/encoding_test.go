package encoding

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// specials are the float64 values a lossless column must keep bit for bit.
var specials = []float64{
	math.NaN(), math.Inf(1), math.Inf(-1), math.Copysign(0, -1), 0,
	math.MaxFloat64, -math.MaxFloat64, math.SmallestNonzeroFloat64,
	1e308, 1e-308, 0.1, 0.30000000000000004, 1 << 53, 1<<53 + 2,
}

// floatColumns are the shapes of real and hostile float columns.
func floatColumns(r *rand.Rand) map[string][]uint64 {
	n := 1 + r.IntN(700)
	cols := map[string][]uint64{}
	add := func(name string, f func(i int) float64) {
		c := make([]uint64, n)
		for i := range c {
			c[i] = math.Float64bits(f(i))
		}
		cols[name] = c
	}
	add("sine-0.01", func(i int) float64 {
		return math.Round((50+10*math.Sin(float64(i)/60)+r.NormFloat64()*0.05)*100) / 100
	})
	add("constant", func(int) float64 { return 21.5 })
	add("integers", func(i int) float64 { return float64(i * 3) })
	add("random-bits", func(int) float64 { return math.Float64frombits(r.Uint64()) })
	add("uniform", func(int) float64 { return r.Float64() * 1000 })
	add("specials", func(int) float64 { return specials[r.IntN(len(specials))] })
	add("sine-with-nan", func(i int) float64 {
		if i%17 == 5 {
			return math.NaN()
		}
		return math.Round(math.Sin(float64(i))*1000) / 1000
	})
	add("negative-zero", func(i int) float64 {
		if i%2 == 0 {
			return math.Copysign(0, -1)
		}
		return 1.25
	})
	add("huge-mantissa", func(i int) float64 { return float64(1<<53) + float64(2*i) })
	return cols
}

func TestFloatsRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 20 {
		for name, col := range floatColumns(r) {
			enc := AppendFloats([]byte{0xAA}, col)
			if enc[0] != 0xAA {
				t.Fatalf("%s: AppendFloats overwrote dst", name)
			}
			got, err := DecodeFloats([]uint64{7}, enc[1:], len(col))
			if err != nil {
				t.Fatalf("round %d %s: %v", round, name, err)
			}
			if got[0] != 7 || !slices.Equal(got[1:], col) {
				t.Fatalf("round %d %s: values differ after round trip", round, name)
			}
		}
	}
}

// The decimal form must be chosen where it applies (it is what makes noisy
// 0.01-resolution signals small) and never where it would lose bits.
func TestFloatsChoosesDecimal(t *testing.T) {
	col := []uint64{math.Float64bits(23.47), math.Float64bits(23.51), math.Float64bits(-0.07)}
	enc := AppendFloats(nil, col)
	if enc[0] != floatDecimal || enc[1] != 2 {
		t.Fatalf("kind %d exponent %d, want decimal with exponent 2", enc[0], enc[1])
	}
	a, b := 0.1, 0.2 // variables: constant arithmetic would be exact
	for _, f := range []float64{math.NaN(), math.Inf(1), math.Copysign(0, -1), a + b} {
		enc := AppendFloats(nil, []uint64{math.Float64bits(1.5), math.Float64bits(f)})
		if enc[0] != floatGorilla {
			t.Errorf("%v: kind %d, want Gorilla", f, enc[0])
		}
	}
}

func intColumns(r *rand.Rand) map[string][]int64 {
	n := r.IntN(700)
	cols := map[string][]int64{}
	add := func(name string, f func(i int) int64) {
		c := make([]int64, n)
		for i := range c {
			c[i] = f(i)
		}
		cols[name] = c
	}
	t0 := int64(1_700_000_000_000)
	add("regular-ms", func(i int) int64 { return t0 + int64(i)*1000 })
	add("jitter-gaps-equal", func(i int) int64 {
		switch i % 50 {
		case 10:
			t0 += 3_600_000 // gap
		case 20:
			// equal timestamp
		default:
			t0 += 1000 + r.Int64N(5) - 2
		}
		return t0
	})
	var c int64
	add("counter", func(int) int64 { c += r.Int64N(3); return c })
	add("extremes", func(i int) int64 {
		return []int64{math.MinInt64, math.MaxInt64, 0, -1, 1}[r.IntN(5)]
	})
	add("random", func(int) int64 { return int64(r.Uint64()) })
	add("states", func(i int) int64 { return int64(i / 100 % 4) })
	return cols
}

func TestIntsRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for round := range 20 {
		for name, col := range intColumns(r) {
			enc := AppendInts(nil, col)
			got, err := DecodeInts([]int64(nil), enc, len(col))
			if err != nil {
				t.Fatalf("round %d %s: %v", round, name, err)
			}
			if !slices.Equal(got, col) {
				t.Fatalf("round %d %s: values differ after round trip", round, name)
			}
			u := make([]uint64, len(col))
			for i, v := range col {
				u[i] = uint64(v) ^ 1<<63
			}
			gu, err := DecodeInts([]uint64(nil), AppendInts(nil, u), len(u))
			if err != nil || !slices.Equal(gu, u) {
				t.Fatalf("round %d %s: uint64 round trip: %v", round, name, err)
			}
		}
	}
}

// A regular 1 Hz timestamp column must cost about one byte per 64 samples:
// that is what makes the time column near free.
func TestIntsRegularIsSmall(t *testing.T) {
	col := make([]int64, 6400)
	for i := range col {
		col[i] = 1_700_000_000_000 + int64(i)*1000
	}
	if enc := AppendInts(nil, col); len(enc) > 120 {
		t.Fatalf("regular timestamps: %d bytes for %d values", len(enc), len(col))
	}
}

func TestBoolsSymbolsStringsRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 200 {
		n := r.IntN(500)
		change := 1 + r.IntN(50)
		bools := make([]uint64, n)
		syms := make([]uint8, n)
		strs := make([]string, n)
		states := []string{"", "running", "idle", "fault", "setup", "blocked ✓"}
		var b uint64
		var s uint8
		for i := range n {
			if r.IntN(change) == 0 {
				b ^= 1
				s = uint8(r.IntN(4)) | uint8(r.IntN(2))<<7
			}
			bools[i], syms[i] = b, s
			if r.IntN(change) == 0 || i == 0 {
				strs[i] = states[r.IntN(len(states))]
			} else {
				strs[i] = strs[i-1]
			}
		}
		if r.IntN(4) == 0 { // many distinct strings: the dictionary map path
			for i := range strs {
				strs[i] = string(rune('a' + r.IntN(40)))
			}
		}
		gb, err := DecodeBools(nil, AppendBools(nil, bools), n)
		if err != nil || !slices.Equal(gb, bools) {
			t.Fatalf("bools: %v", err)
		}
		gs, err := DecodeSymbols(nil, AppendSymbols(nil, syms), n)
		if err != nil || !slices.Equal(gs, syms) {
			t.Fatalf("symbols: %v", err)
		}
		gt, _, err := DecodeStrings(nil, nil, AppendStrings(nil, strs), n)
		if err != nil || !slices.Equal(gt, strs) {
			t.Fatalf("strings: %v", err)
		}
	}
}

func TestConstantQualityIsTiny(t *testing.T) {
	if enc := AppendSymbols(nil, make([]uint8, 86400)); len(enc) > 4 {
		t.Fatalf("constant quality: %d bytes", len(enc))
	}
}

func TestDecodersRejectCorruptInput(t *testing.T) {
	ints := AppendInts(nil, []int64{1, 5, 2, 9, 100})
	floats := AppendFloats(nil, []uint64{math.Float64bits(1.5), math.Float64bits(math.Pi)})
	cases := []struct {
		name string
		err  error
	}{
		{"ints truncated", errOf(DecodeInts([]int64(nil), ints[:len(ints)-1], 5))},
		{"ints trailing", errOf(DecodeInts([]int64(nil), append(slices.Clip(ints), 0), 5))},
		{"ints count too large", errOf(DecodeInts([]int64(nil), ints, 1<<40))},
		{"ints bad mode", errOf(DecodeInts([]int64(nil), []byte{9, 0}, 1))},
		{"ints bad width", errOf(DecodeInts([]int64(nil), []byte{0, 65, 0}, 1))},
		{"floats truncated", errOf(DecodeFloats(nil, floats[:len(floats)-1], 2))},
		{"floats bad kind", errOf(DecodeFloats(nil, []byte{7}, 1))},
		{"bools run too long", errOf(DecodeBools(nil, []byte{1, 5}, 3))},
		{"symbols repeated run", errOf(DecodeSymbols(nil, []byte{1, 1, 1, 1}, 2))},
		{"strings index out of range", err3(DecodeStrings(nil, nil, []byte{1, 1, 'a', 1, 1}, 1))},
	}
	for _, c := range cases {
		if !errors.Is(c.err, ErrCorrupt) {
			t.Errorf("%s: err %v, want ErrCorrupt", c.name, c.err)
		}
	}
}

func errOf[T any](_ T, err error) error        { return err }
func err3[T, U any](_ T, _ U, err error) error { return err }

// Decoding never allocates per value when the caller reuses its slices.
func TestDecodeDoesNotAllocate(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	fcols, icols := floatColumns(r), intColumns(r)
	col, icol := fcols["sine-0.01"], icols["jitter-gaps-equal"]
	fenc := AppendFloats(nil, col)
	genc := AppendFloats(nil, fcols["uniform"])
	ienc := AppendInts(nil, icol)
	senc := AppendStrings(nil, []string{"a", "a", "b", "c", "c"})
	var fs []uint64
	var is []int64
	var ss, dict []string
	var err error
	for name, f := range map[string]func(){
		"decimal": func() { fs, err = DecodeFloats(fs[:0], fenc, len(col)) },
		"gorilla": func() { fs, err = DecodeFloats(fs[:0], genc, len(col)) },
		"ints":    func() { is, err = DecodeInts(is[:0], ienc, len(icol)) },
	} {
		if f(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if allocs := testing.AllocsPerRun(50, f); allocs != 0 {
			t.Errorf("%s: %v allocations per decode, want 0", name, allocs)
		}
	}
	// The only allocations are the three distinct strings of the dictionary.
	if allocs := testing.AllocsPerRun(50, func() { ss, dict, _ = DecodeStrings(ss[:0], dict, senc, 5) }); allocs > 3 {
		t.Errorf("strings: %v allocations per decode, want ≤ 3", allocs)
	}
}
