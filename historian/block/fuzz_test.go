package block

import (
	"hash/crc32"
	"math/rand/v2"
	"testing"

	"github.com/millstream/millstream/uns"
)

func crcOf(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// FuzzDecode feeds arbitrary bytes to the block decoder: it must return an
// error or a block that re-encodes to the same points, and never panic.
// Inputs get a valid checksum appended half of the time so that the
// fuzzer reaches the column decoders behind the CRC.
func FuzzDecode(f *testing.F) {
	r := rand.New(rand.NewPCG(9, 9))
	for _, k := range kinds {
		p := build(f, randomSeries(r, k, 70))
		if k == uns.Null {
			p = build(f, []sample{{1, uns.Value{}, uns.Bad}, {2, uns.Value{}, uns.Stale}})
		}
		b, err := Append(nil, 3, p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
		f.Add(b[:len(b)-4], true)
	}
	f.Fuzz(func(t *testing.T, data []byte, fixCRC bool) {
		if fixCRC {
			data = append(data[:len(data):len(data)], 0, 0, 0, 0)
			c := crcOf(data[:len(data)-4])
			data[len(data)-4], data[len(data)-3], data[len(data)-2], data[len(data)-1] = byte(c), byte(c>>8), byte(c>>16), byte(c>>24)
		}
		var d Decoder
		var p Points
		h, err := d.Decode(&p, data)
		if err != nil {
			return
		}
		if p.Len() != h.Count {
			t.Fatalf("decoded %d points, header says %d", p.Len(), h.Count)
		}
		again, err := Append(nil, h.SeriesID, &p)
		if err != nil {
			t.Fatalf("decoded block does not re-encode: %v", err)
		}
		var q Points
		if _, err := d.Decode(&q, again); err != nil {
			t.Fatalf("re-encoded block does not decode: %v", err)
		}
		for i := range p.Len() {
			if p.Times[i] != q.Times[i] || !p.Value(i).Equal(q.Value(i)) || p.Quality[i] != q.Quality[i] {
				t.Fatalf("point %d differs after re-encoding", i)
			}
		}
	})
}

// FuzzRoundTrip builds a batch from arbitrary bytes and checks that it
// survives a block round trip.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9}, uint8(1))
	f.Add([]byte{0xff, 0, 0x80, 0x7f, 1, 1, 1, 1}, uint8(4))
	f.Fuzz(func(t *testing.T, data []byte, kind uint8) {
		k := kinds[int(kind)%len(kinds)]
		var p Points
		tm := int64(0)
		for i := 0; i+1 < len(data); i += 2 {
			a, b := data[i], data[i+1]
			tm += int64(a % 4 * 250) // equal timestamps when a%4 == 0
			var v uns.Value
			switch k {
			case uns.Float:
				v = uns.FloatValue(float64(int8(b)) / 8)
			case uns.Int:
				v = uns.IntValue(int64(int8(b)) << (a % 64))
			case uns.Uint:
				v = uns.UintValue(uint64(b) << (a % 64))
			case uns.Bool:
				v = uns.BoolValue(b&1 == 1)
			case uns.String, uns.Bytes:
				s := data[:int(b%8)%len(data)]
				v = uns.StringValue(string(s))
				if k == uns.Bytes {
					v = uns.BytesValue(s)
				}
			}
			if a&0x80 != 0 {
				v = uns.Value{}
			}
			if err := p.Append(tm, v, uns.Quality(a>>4&3)); err != nil {
				t.Fatal(err)
			}
		}
		if p.Len() == 0 {
			return
		}
		b, err := Append(nil, 5, &p)
		if err != nil {
			t.Fatal(err)
		}
		var d Decoder
		var q Points
		if _, err := d.Decode(&q, b); err != nil {
			t.Fatal(err)
		}
		for i := range p.Len() {
			if p.Times[i] != q.Times[i] || !p.Value(i).Equal(q.Value(i)) || p.Quality[i] != q.Quality[i] {
				t.Fatalf("point %d differs", i)
			}
		}
	})
}
