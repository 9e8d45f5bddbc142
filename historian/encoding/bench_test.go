package encoding

import (
	"math"
	"testing"
	"time"

	"github.com/millstream/millstream/historian/synth"
)

// BenchmarkFloatForms compares the two float forms on the reference data
// set's analog tags (2 h columns): decimal, which AppendFloats picks for
// them, against plain Gorilla XOR, the baseline it improves on.
func BenchmarkFloatForms(b *testing.B) {
	set := synth.New(synth.Config{Tags: 240, Duration: 2 * time.Hour, Seed: 1})
	var cols [][]uint64
	samples := 0
	for i := range set.Tags() {
		if synth.ShapeOf(i) != synth.Analog {
			continue
		}
		var col []uint64
		g := set.Signal(i)
		for {
			_, v, _, ok := g.Next()
			if !ok {
				break
			}
			f, isNum := v.Float()
			if !isNum && len(col) > 0 { // nulls hold the previous value, as blocks store them
				f = math.Float64frombits(col[len(col)-1])
			}
			col = append(col, math.Float64bits(f))
		}
		cols = append(cols, col)
		samples += len(col)
	}
	for _, form := range []struct {
		name string
		enc  func([]byte, []uint64) []byte
	}{{"decimal", AppendFloats}, {"gorilla", appendGorilla}} {
		b.Run(form.name, func(b *testing.B) {
			var buf []byte
			size := 0
			for b.Loop() {
				size = 0
				for _, c := range cols {
					buf = form.enc(buf[:0], c)
					size += len(buf)
				}
			}
			b.ReportMetric(float64(size)/float64(samples), "B/sample")
			b.ReportMetric(float64(samples)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
		})
	}
}
