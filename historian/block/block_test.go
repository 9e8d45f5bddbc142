package block

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/millstream/millstream/uns"
)

type sample struct {
	t int64
	v uns.Value
	q uns.Quality
}

// randomSeries makes n points of kind k with gaps, equal timestamps,
// nulls, quality changes and (for floats) NaN, ±Inf and -0.
func randomSeries(r *rand.Rand, k uns.Kind, n int) []sample {
	out := make([]sample, n)
	t := int64(1_700_000_000_000)
	states := []string{"running", "idle", "fault", ""}
	var c int64
	for i := range out {
		switch r.IntN(20) {
		case 0: // equal timestamp
		case 1:
			t += r.Int64N(86_400_000) // gap
		default:
			t += 1000
		}
		c += r.Int64N(3)
		var v uns.Value
		switch k {
		case uns.Float:
			f := math.Round(math.Sin(float64(i)/30)*1e4) / 100
			if r.IntN(30) == 0 {
				f = []float64{math.NaN(), math.Inf(1), math.Inf(-1), math.Copysign(0, -1)}[r.IntN(4)]
			}
			v = uns.FloatValue(f)
		case uns.Int:
			v = uns.IntValue(c - 50)
		case uns.Uint:
			v = uns.UintValue(uint64(c) + math.MaxUint64/2)
		case uns.Bool:
			v = uns.BoolValue(i/7%2 == 0)
		case uns.String:
			v = uns.StringValue(states[i/11%len(states)])
		case uns.Bytes:
			v = uns.BytesValue([]byte{byte(i / 5), 0})
		}
		q := uns.Good
		if r.IntN(25) == 0 {
			q = uns.Quality(r.IntN(4))
			if r.IntN(2) == 0 {
				v = uns.Value{}
			}
		}
		out[i] = sample{t, v, q}
	}
	return out
}

var kinds = []uns.Kind{uns.Float, uns.Int, uns.Uint, uns.Bool, uns.String, uns.Bytes, uns.Null}

func build(t testing.TB, s []sample) *Points {
	var p Points
	for _, x := range s {
		if err := p.Append(x.t, x.v, x.q); err != nil {
			t.Fatal(err)
		}
	}
	return &p
}

func TestRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	var d Decoder
	var got Points
	for _, k := range kinds {
		for _, n := range []int{1, 2, 3, 63, 64, 65, 1000} {
			s := randomSeries(r, k, n)
			if k == uns.Null {
				for i := range s {
					s[i].v = uns.Value{}
				}
			}
			b, err := Append([]byte("prefix"), 42, build(t, s))
			if err != nil {
				t.Fatal(err)
			}
			b = b[len("prefix"):]
			if size, err := Size(append(b, 1, 2, 3)); err != nil || size != len(b) {
				t.Fatalf("Size: %d, %v; block is %d bytes", size, err, len(b))
			}
			h, err := d.Decode(&got, b)
			if err != nil {
				t.Fatalf("%s × %d: %v", k, n, err)
			}
			if h.SeriesID != 42 || h.Count != n || h.MinTime != s[0].t || h.MaxTime != s[n-1].t {
				t.Fatalf("%s × %d: header %+v", k, n, h)
			}
			for i, x := range s {
				v := got.Value(i)
				if got.Times[i] != x.t || !v.Equal(x.v) || got.QualityAt(i) != x.q {
					t.Fatalf("%s × %d: point %d is (%d %v %s), want (%d %v %s)", k, n, i,
						got.Times[i], v, got.QualityAt(i), x.t, x.v, x.q)
				}
			}
		}
	}
}

func TestPointsKindAndInsert(t *testing.T) {
	var p Points
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(p.Append(10, uns.Value{}, uns.Bad))
	must(p.Append(30, uns.FloatValue(1.5), uns.Good))
	must(p.Insert(1, 20, uns.FloatValue(2.5), uns.Uncertain))
	if err := p.Append(40, uns.IntValue(1), uns.Good); !errors.Is(err, ErrKind) {
		t.Fatalf("int into a float batch: %v, want ErrKind", err)
	}
	want := []sample{{10, uns.Value{}, uns.Bad}, {20, uns.FloatValue(2.5), uns.Uncertain}, {30, uns.FloatValue(1.5), uns.Good}}
	if p.Len() != len(want) || p.Kind != uns.Float {
		t.Fatalf("%d points of %s", p.Len(), p.Kind)
	}
	for i, w := range want {
		if p.Times[i] != w.t || !p.Value(i).Equal(w.v) || p.QualityAt(i) != w.q {
			t.Fatalf("point %d: (%d %v %s), want %v", i, p.Times[i], p.Value(i), p.QualityAt(i), w)
		}
	}
}

func TestAppendRejectsBadBatches(t *testing.T) {
	if _, err := Append(nil, 1, &Points{}); err == nil {
		t.Error("empty batch accepted")
	}
	p := build(t, []sample{{2, uns.IntValue(1), uns.Good}, {1, uns.IntValue(2), uns.Good}})
	if _, err := Append(nil, 1, p); err == nil {
		t.Error("unordered batch accepted")
	}
}

func TestDecodeRejectsCorruption(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	b, err := Append(nil, 7, build(t, randomSeries(r, uns.Float, 500)))
	if err != nil {
		t.Fatal(err)
	}
	var d Decoder
	var p Points
	// Every single-bit flip is caught (the CRC guarantees it).
	for i := range len(b) * 8 {
		c := append([]byte(nil), b...)
		c[i/8] ^= 1 << (i % 8)
		if _, err := d.Decode(&p, c); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("bit %d flipped: err %v", i, err)
		}
	}
	for n := range len(b) {
		if _, err := d.Decode(&p, b[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d bytes: err %v", n, err)
		}
	}
}

// A block with a valid checksum but inconsistent contents (what a buggy
// writer could produce) is still rejected.
func TestDecodeChecksContentsBehindTheCRC(t *testing.T) {
	p := build(t, []sample{{1000, uns.IntValue(1), uns.Good}, {2000, uns.IntValue(2), uns.Good}})
	b, _ := Append(nil, 7, p)
	b = b[:len(b)-4]
	_, cols, _ := ReadHeader(b)
	// Rewrite the max time in the header to disagree with the column.
	hdr := []byte{version, byte(uns.Int)}
	hdr = binary.AppendUvarint(hdr, 7)
	hdr = binary.AppendUvarint(hdr, 2)
	hdr = binary.AppendVarint(hdr, 1000)
	hdr = binary.AppendVarint(hdr, 3000)
	for i := range 3 {
		hdr = binary.AppendUvarint(hdr, uint64(cols[i+1]-cols[i]))
	}
	forged := append(hdr, b[cols[0]:]...)
	forged = binary.LittleEndian.AppendUint32(forged, crcOf(forged))
	var d Decoder
	if _, err := d.Decode(p, forged); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("forged max time: err %v", err)
	}
}

func TestDecodeAllocations(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	b, _ := Append(nil, 7, build(t, randomSeries(r, uns.Float, 5000)))
	var d Decoder
	var p Points
	if _, err := d.Decode(&p, b); err != nil {
		t.Fatal(err)
	}
	if a := testing.AllocsPerRun(20, func() { _, _ = d.Decode(&p, b) }); a != 0 {
		t.Fatalf("%v allocations per decode of a float block, want 0", a)
	}
}
