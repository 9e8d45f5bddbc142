package block_test

import (
	"flag"
	"testing"
	"time"

	"github.com/millstream/millstream/historian/block"
	"github.com/millstream/millstream/historian/synth"
)

// The reference data set (package synth): -synth.tags tags of the standard
// mix for -synth.duration at 1 Hz, cut into blocks of -synth.block (the
// historian's partition length).
var (
	synthTags     = flag.Int("synth.tags", 1000, "tags in the BenchmarkSize data set")
	synthDuration = flag.Duration("synth.duration", 24*time.Hour, "span of the BenchmarkSize data set")
	synthBlock    = flag.Duration("synth.block", 2*time.Hour, "time span of one block")
)

// blocksOf cuts one tag's samples into batches of span each.
func blocksOf(g *synth.Signal, span time.Duration, each func(p *block.Points)) {
	var p block.Points
	spanMs := span.Milliseconds()
	var end int64
	for {
		t, v, q, ok := g.Next()
		if !ok || (p.Len() > 0 && t >= end) {
			if p.Len() > 0 {
				each(&p)
				p.Reset()
			}
			if !ok {
				return
			}
		}
		if p.Len() == 0 {
			end = t - t%spanMs + spanMs
		}
		if err := p.Append(t, v, q); err != nil {
			panic(err)
		}
	}
}

// BenchmarkSize reports lossless bytes per sample of the reference data
// set, for the mix and per shape. It streams tag by tag, so the full
// 10,000-tag day (-synth.tags 10000) runs in little memory; run it with
// -benchtime 1x.
func BenchmarkSize(b *testing.B) {
	set := synth.New(synth.Config{Tags: *synthTags, Duration: *synthDuration, Seed: 1})
	for b.Loop() {
		var bytes, samples [5]int
		var buf []byte
		for i := range set.Tags() {
			s := synth.ShapeOf(i)
			blocksOf(set.Signal(i), *synthBlock, func(p *block.Points) {
				var err error
				if buf, err = block.Append(buf[:0], uint64(i), p); err != nil {
					b.Fatal(err)
				}
				bytes[s] += len(buf)
				samples[s] += p.Len()
			})
		}
		var tb, ts int
		for s := range bytes {
			if samples[s] > 0 {
				b.ReportMetric(float64(bytes[s])/float64(samples[s]), synth.Shape(s).String()+"-B/sample")
			}
			tb += bytes[s]
			ts += samples[s]
		}
		b.ReportMetric(float64(tb)/float64(ts), "mix-B/sample")
		b.ReportMetric(float64(ts), "samples")
	}
}

// loadBlocks materialises the blocks of tags [0, tags) of shape (or of
// every shape when all is set) for a day.
func loadBlocks(tags int, keep func(i int) bool) (batches []*block.Points, encoded [][]byte, samples int) {
	set := synth.New(synth.Config{Tags: tags, Seed: 1})
	for i := range tags {
		if !keep(i) {
			continue
		}
		blocksOf(set.Signal(i), 2*time.Hour, func(p *block.Points) {
			c := &block.Points{Kind: p.Kind, Times: append([]int64(nil), p.Times...),
				Bits: append([]uint64(nil), p.Bits...), Strs: append([]string(nil), p.Strs...),
				Quality: append([]uint8(nil), p.Quality...)}
			batches = append(batches, c)
			e, err := block.Append(nil, uint64(i), c)
			if err != nil {
				panic(err)
			}
			encoded = append(encoded, e)
			samples += c.Len()
		})
	}
	return batches, encoded, samples
}

type selection struct {
	name string
	keep func(i int) bool
}

func selections() []selection {
	sel := []selection{{"mix", func(int) bool { return true }}}
	for s := synth.Analog; s <= synth.Switch; s++ {
		sel = append(sel, selection{s.String(), func(i int) bool { return synth.ShapeOf(i) == s }})
	}
	return sel
}

// BenchmarkEncode measures block encoding of a day of 40 tags (two of each
// mix cycle) in 2 h blocks, on one goroutine.
func BenchmarkEncode(b *testing.B) {
	for _, sel := range selections() {
		batches, encoded, samples := loadBlocks(40, sel.keep)
		size := 0
		for _, e := range encoded {
			size += len(e)
		}
		b.Run(sel.name, func(b *testing.B) {
			var buf []byte
			var err error
			for b.Loop() {
				for i, p := range batches {
					if buf, err = block.Append(buf[:0], uint64(i), p); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(samples)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
			b.ReportMetric(float64(size)/float64(samples), "B/sample")
		})
	}
}

// BenchmarkDecode measures decoding the same blocks into reused Points.
func BenchmarkDecode(b *testing.B) {
	for _, sel := range selections() {
		_, encoded, samples := loadBlocks(40, sel.keep)
		b.Run(sel.name, func(b *testing.B) {
			var d block.Decoder
			var p block.Points
			for b.Loop() {
				for _, e := range encoded {
					if _, err := d.Decode(&p, e); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(samples)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
		})
	}
}
