package embedded

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"testing"
	"time"

	"github.com/millstream/millstream/log"
)

// FuzzSegmentReader feeds arbitrary bytes to the segment reader: it must
// never panic, and every batch it accepts must pass its CRC and decode into
// exactly the records its header announces.
func FuzzSegmentReader(f *testing.F) {
	for _, seed := range realSegments(f) {
		f.Add(seed)
		if len(seed) > 50 {
			f.Add(seed[:len(seed)-7])
			flipped := append([]byte(nil), seed...)
			flipped[len(seed)/2] ^= 0x40
			f.Add(flipped)
		}
	}
	f.Add([]byte{})
	f.Add(make([]byte, batchHeaderSize))
	f.Fuzz(func(t *testing.T, data []byte) {
		end, _ := ScanSegment(bytes.NewReader(data), 0, int64(len(data)), func(b ScannedBatch) error {
			crc := binary.BigEndian.Uint32(b.Raw[4:])
			if crc32.Checksum(b.Raw[8:], castagnoli) != crc {
				t.Fatalf("batch at %d accepted with a bad CRC", b.Pos)
			}
			h, err := parseHeader(b.Raw)
			if err != nil {
				t.Fatalf("accepted batch has a bad header: %v", err)
			}
			recs, err := decodeRecords(b.Raw, h, "t", 0, 0, nil)
			if err != nil || len(recs) != b.Count {
				t.Fatalf("accepted batch decodes to %d records (%v), header says %d", len(recs), err, b.Count)
			}
			return nil
		})
		if end < 0 || end > int64(len(data)) {
			t.Fatalf("valid end %d outside [0, %d]", end, len(data))
		}
		// The fetch path's reader (chunks of readAhead, refilled at a cut
		// batch) over the same bytes: never a panic, never a batch with a
		// bad CRC, always forward.
		c := chunkReader{r: bytes.NewReader(data)}
		for pos := int64(0); pos < int64(len(data)); {
			h, raw, err := c.batch(pos, int64(len(data)))
			if err != nil {
				break
			}
			if crc32.Checksum(raw[8:], castagnoli) != binary.BigEndian.Uint32(raw[4:]) {
				t.Fatalf("chunk reader returned the batch at %d with a bad CRC", pos)
			}
			if h.size() != int64(len(raw)) || h.size() <= 0 {
				t.Fatalf("chunk reader: batch at %d of %d bytes, header says %d", pos, len(raw), h.size())
			}
			pos += h.size()
		}
	})
}

// realSegments writes a few records with the real writer and returns the
// segment files' bytes.
func realSegments(f *testing.F) [][]byte {
	dir := f.TempDir()
	l, err := Open(dir, Options{SegmentBytes: 2 << 10, Logger: quietLogger()})
	if err != nil {
		f.Fatal(err)
	}
	if err := l.CreateTopic(bg, "t", log.TopicConfig{Partitions: 1}); err != nil {
		f.Fatal(err)
	}
	for i := 0; i < 30; i++ {
		rs := []*log.Record{
			{Topic: "t", Key: []byte(fmt.Sprint("k", i)), Value: []byte(fmt.Sprint("value ", i)), Timestamp: time.UnixMilli(int64(1e12 + i))},
			{Topic: "t", Value: nil, Headers: []log.Header{{Key: "a", Value: []byte("b")}, {Key: "n", Value: nil}}},
		}
		if err := l.ProduceSync(bg, rs...); err != nil {
			f.Fatal(err)
		}
	}
	l.Close()
	var out [][]byte
	for _, p := range segFiles(f, dir, "t", 0, ".log") {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}
