package uns

import (
	"encoding/json"
	"math"
	"testing"
	"time"
)

func TestPointJSONRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 23, 8, 0, 0, 123456789, time.UTC)
	for _, v := range []Value{{}, FloatValue(21.5), FloatValue(math.NaN()), FloatValue(math.Inf(-1)), FloatValue(1e-300),
		IntValue(math.MinInt64), UintValue(math.MaxUint64), BoolValue(true), BoolValue(false),
		StringValue("RUN \"auto\"\n\x01 °C"), BytesValue([]byte{0, 0xff}), BytesValue(nil)} {
		p := Point{Path: "acme/p1/press7/temp", Time: at, Value: v, Quality: Uncertain, Unit: "°C", Source: "mqtt:acme/p1/press7"}
		b := AppendPointJSON(nil, &p)
		if !json.Valid(b) {
			t.Fatalf("invalid JSON %s", b)
		}
		got, err := ParsePointJSON(b)
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if got.Path != p.Path || !got.Time.Equal(p.Time) || !got.Value.Equal(p.Value) || got.Quality != p.Quality || got.Unit != p.Unit || got.Source != p.Source {
			t.Errorf("round trip of %s: %+v", b, got)
		}
	}
}

func FuzzPointJSON(f *testing.F) {
	f.Add("a/b", int64(1795420798123), uint8(1), 21.5, "x", []byte{1})
	f.Fuzz(func(t *testing.T, path string, ms int64, kind uint8, fv float64, s string, by []byte) {
		var v Value
		switch kind % 7 {
		case 1:
			v = FloatValue(fv)
		case 2:
			v = IntValue(ms)
		case 3:
			v = UintValue(uint64(ms))
		case 4:
			v = BoolValue(ms%2 == 0)
		case 5:
			v = StringValue(s)
		case 6:
			v = BytesValue(by)
		}
		p := Point{Path: path, Time: time.UnixMilli(ms % 253402300799999).UTC(), Value: v, Quality: Quality(kind % 4), Unit: s, Source: s}
		b := AppendPointJSON(nil, &p)
		if !json.Valid(b) {
			t.Fatalf("invalid JSON %q", b)
		}
		got, err := ParsePointJSON(b)
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if kind%7 != 5 && !got.Value.Equal(p.Value) { // strings may have had invalid UTF-8 replaced
			t.Fatalf("value %v != %v", got.Value, p.Value)
		}
		// The fast path agrees with the full parser wherever it answers.
		for _, in := range [][]byte{b, by, []byte(s)} {
			fp, ok := parsePointJSONFast(in)
			if !ok {
				continue
			}
			sp, err := parsePointJSONSlow(in)
			if err != nil {
				t.Fatalf("fast path accepted %q, the full parser refuses it: %v", in, err)
			}
			if fp.Path != sp.Path || !fp.Time.Equal(sp.Time) || !samePointValue(fp.Value, sp.Value) || fp.Quality != sp.Quality || fp.Unit != sp.Unit || fp.Source != sp.Source {
				t.Fatalf("%q: fast %+v, full %+v", in, fp, sp)
			}
		}
		// Arbitrary bytes never panic the parser.
		_, _ = ParsePointJSON(by)
	})
}

func samePointValue(a, b Value) bool {
	if af, ok := a.Float(); ok && a.Kind() == Float && math.IsNaN(af) {
		bf, _ := b.Float()
		return b.Kind() == Float && math.IsNaN(bf)
	}
	return a.Equal(b)
}

// The records Millstream writes take the fast path.
func TestPointJSONFastPath(t *testing.T) {
	p := Point{Path: "acme/p1/press7/temp", Time: time.Date(2026, 11, 23, 8, 0, 0, 123e6, time.UTC), Value: FloatValue(21.5), Quality: Good, Unit: "°C", Source: "mqtt:acme/p1/press7"}
	for _, v := range []Value{{}, FloatValue(21.5), FloatValue(math.NaN()), IntValue(-3), UintValue(7), BoolValue(true), StringValue("RUN"), BytesValue([]byte{1, 2})} {
		p.Value = v
		if _, ok := parsePointJSONFast(AppendPointJSON(nil, &p)); !ok {
			t.Errorf("%s: not on the fast path", AppendPointJSON(nil, &p))
		}
	}
}

func BenchmarkParsePointJSON(b *testing.B) {
	p := Point{Path: "Plant1/Edge3/Filler2/Line/Temperature", Time: time.Date(2026, 11, 23, 8, 0, 0, 123e6, time.UTC),
		Value: FloatValue(21.57), Quality: Good, Unit: "degC", Source: "spb:Plant1/Edge3/Filler2"}
	in := AppendPointJSON(nil, &p)
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			if _, err := ParsePointJSON(in); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("full", func(b *testing.B) {
		for b.Loop() {
			if _, err := parsePointJSONSlow(in); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// The fast path allocates only the strings the point keeps: path, unit
// and source.
func TestParsePointJSONAllocations(t *testing.T) {
	p := Point{Path: "Plant1/Edge3/Filler2/Line/Temperature", Time: time.Date(2026, 11, 23, 8, 0, 0, 123e6, time.UTC),
		Value: FloatValue(21.57), Quality: Good, Unit: "degC", Source: "spb:Plant1/Edge3/Filler2"}
	in := AppendPointJSON(nil, &p)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := ParsePointJSON(in); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 3 {
		t.Fatalf("ParsePointJSON allocated %.1f times, want at most 3", allocs)
	}
}
