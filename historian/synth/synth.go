// Package synth generates the historian's reference data set: N tags
// sampled at a fixed interval (1 Hz by default) for a duration, with the
// signal shapes a plant produces. It is deterministic: the same Config
// gives the same points, bit for bit, on every machine, so compression and
// speed figures can be reproduced and compared.
//
// Tag i has the kind given by i mod 20:
//
//	0..11  analog (60%): float64, base + amplitude·sin(2πt/period + phase)
//	       + Gaussian noise, rounded to a resolution of 0.01. Per tag:
//	       base in [0, 500), amplitude in [1, 50), period in [10 min, 1 day),
//	       noise σ in [0.01, 0.1) — so consecutive readings differ by a few
//	       hundredths, like a real temperature, pressure or flow.
//	12..15 counter (20%): uint64 totaliser (parts, Wh) that grows by a
//	       random 0..k per sample, k in [1, 20).
//	16     state (5%): string machine state (running, idle, setup, fault,
//	       blocked) from a Markov chain, mean dwell 5 minutes.
//	17     state code (5%): int64 of the same kind of chain.
//	18..19 bool (10%): on/off with a mean dwell of 10 minutes.
//
// Every tag has rare bad-quality episodes (probability 1e-5 per sample of
// starting one, 30 samples long) during which the value is null, as a
// failed sensor reports. Timestamps are on the exact interval grid, which
// is what sources with a fixed scan rate stamp.
//
// Paths are ISA-95 shaped: synth/site1/area<a>/line<l>/cell<c>/<tag name>.
package synth

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/millstream/millstream/uns"
)

// Config selects a data set.
type Config struct {
	Tags     int           // number of tags
	Start    time.Time     // time of the first sample (default 2025-01-01T00:00:00Z)
	Duration time.Duration // span of the data set (default 1 day)
	Interval time.Duration // sample interval (default 1 s)
	Seed     uint64        // every value derives from it
}

// Shape is the signal type of a tag.
type Shape uint8

// Shapes.
const (
	Analog Shape = iota
	Counter
	State
	StateCode
	Switch
)

var shapeNames = [...]string{"analog", "counter", "state", "statecode", "bool"}

func (s Shape) String() string { return shapeNames[s] }

// ShapeOf returns the shape of tag i.
func ShapeOf(i int) Shape {
	switch m := i % 20; {
	case m < 12:
		return Analog
	case m < 16:
		return Counter
	case m == 16:
		return State
	case m == 17:
		return StateCode
	}
	return Switch
}

// Kind is the value kind a shape produces.
func (s Shape) Kind() uns.Kind {
	return [...]uns.Kind{uns.Float, uns.Uint, uns.String, uns.Int, uns.Bool}[s]
}

// Set is a configured data set.
type Set struct {
	cfg   Config
	start int64 // ms
	step  int64 // ms
	n     int   // samples per tag
}

// New returns the data set of cfg, with defaults filled in.
func New(cfg Config) *Set {
	if cfg.Start.IsZero() {
		cfg.Start = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if cfg.Duration <= 0 {
		cfg.Duration = 24 * time.Hour
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	return &Set{
		cfg:   cfg,
		start: cfg.Start.UnixMilli(),
		step:  cfg.Interval.Milliseconds(),
		n:     int(cfg.Duration / cfg.Interval),
	}
}

// Tags is the number of tags.
func (s *Set) Tags() int { return s.cfg.Tags }

// Samples is the number of samples per tag.
func (s *Set) Samples() int { return s.n }

// Path is the UNS path of tag i.
func (s *Set) Path(i int) string {
	return fmt.Sprintf("synth/site1/area%d/line%d/cell%d/%s%d", i/2000, i/200%10, i/20%10, ShapeOf(i), i)
}

// Signal returns a fresh generator of tag i's samples.
func (s *Set) Signal(i int) *Signal {
	r := rand.New(rand.NewPCG(s.cfg.Seed, uint64(i)))
	g := &Signal{
		r:     r,
		shape: ShapeOf(i),
		t:     s.start,
		step:  s.step,
		left:  s.n,
		// Per-tag parameters, drawn first so that they do not depend on how
		// many samples were taken.
		base:   math.Round(r.Float64()*500*100) / 100,
		amp:    1 + r.Float64()*49,
		omega:  2 * math.Pi / (600 + r.Float64()*(86400-600)) * float64(s.step) / 1000,
		phase:  r.Float64() * 2 * math.Pi,
		sigma:  0.01 + r.Float64()*0.09,
		maxInc: 1 + r.Uint64N(19),
		count:  r.Uint64N(1 << 40),
	}
	g.state = r.IntN(len(states))
	g.on = r.IntN(2) == 0
	// Probabilities per sample of leaving a state: mean dwell 5 and 10 min.
	g.pState = float64(s.step) / 300_000
	g.pSwitch = float64(s.step) / 600_000
	return g
}

var states = []string{"running", "idle", "setup", "fault", "blocked"}

// Signal generates one tag's samples in time order.
type Signal struct {
	r      *rand.Rand
	shape  Shape
	t      int64
	step   int64
	left   int
	k      float64 // sample index
	bad    int     // samples left in a bad-quality episode
	base   float64
	amp    float64
	omega  float64
	phase  float64
	sigma  float64
	maxInc uint64
	count  uint64
	state  int
	on     bool

	pState, pSwitch float64
}

// Next returns the next sample, and false when the tag has no more.
func (g *Signal) Next() (t int64, v uns.Value, q uns.Quality, ok bool) {
	if g.left == 0 {
		return 0, v, 0, false
	}
	g.left--
	t = g.t
	g.t += g.step
	// Draw the signal whether or not this sample is bad so that an
	// episode does not shift the rest of the series.
	switch g.shape {
	case Analog:
		x := g.base + g.amp*math.Sin(g.omega*g.k+g.phase) + g.r.NormFloat64()*g.sigma
		v = uns.FloatValue(math.Round(x*100) / 100)
	case Counter:
		g.count += g.r.Uint64N(g.maxInc + 1)
		v = uns.UintValue(g.count)
	case State, StateCode:
		if g.r.Float64() < g.pState {
			g.state = (g.state + 1 + g.r.IntN(len(states)-1)) % len(states)
		}
		if g.shape == State {
			v = uns.StringValue(states[g.state])
		} else {
			v = uns.IntValue(int64(g.state))
		}
	case Switch:
		if g.r.Float64() < g.pSwitch {
			g.on = !g.on
		}
		v = uns.BoolValue(g.on)
	}
	g.k++
	if g.bad == 0 && g.r.Float64() < 1e-5 {
		g.bad = 30
	}
	if g.bad > 0 {
		g.bad--
		return t, uns.Value{}, uns.Bad, true
	}
	return t, v, uns.Good, true
}
