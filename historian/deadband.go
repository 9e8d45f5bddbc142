package historian

import (
	"math"

	"github.com/millstream/millstream/uns"
)

// deadband is per-series exception reporting, the classic historian
// compression for noisy analog signals: a numeric point is stored only when
// it deviates from the last stored value by more than dev. When a point is
// stored after a run of dropped ones, the last dropped point is stored
// first, so that a trend drawn through the stored points bends where the
// signal started to move instead of sloping across the whole quiet run.
//
// Changes of kind or quality, nulls and non-numeric values are always
// stored, as are points that arrive out of order (the filter follows the
// in-order stream only). A dropped point is gone: with a deviation of d, a
// value read back by linear interpolation is within d of what was measured.
// The held (last dropped) point is not visible to queries until a later
// point causes it to be stored.
type deadband struct {
	init bool
	dev  float64
	err  error

	has   bool // last is set
	last  float64
	lastK uns.Kind
	lastQ uns.Quality

	held  bool
	heldT int64
	heldV uns.Value
	heldQ uns.Quality
}

// keep reports whether the caller should store the point (t, v, q), after
// storing the held point through store when that is due. On an error from
// store it returns false with d.err set.
func (d *deadband) keep(t int64, v uns.Value, q uns.Quality, store func(int64, uns.Value, uns.Quality) error) bool {
	d.err = nil
	if d.dev <= 0 {
		return true
	}
	f, numeric := v.Float()
	if numeric && d.has && v.Kind() == d.lastK && q == d.lastQ && within(f, d.last, d.dev) {
		d.held, d.heldT, d.heldV, d.heldQ = true, t, v, q
		return false
	}
	if d.held {
		d.held = false
		if d.err = store(d.heldT, d.heldV, d.heldQ); d.err != nil {
			return false
		}
	}
	d.has = numeric
	d.last, d.lastK, d.lastQ = f, v.Kind(), q
	return true
}

// within reports whether f is within dev of last; NaN is only within any
// deviation of NaN.
func within(f, last, dev float64) bool {
	if math.IsNaN(f) || math.IsNaN(last) {
		return math.IsNaN(f) && math.IsNaN(last)
	}
	return math.Abs(f-last) <= dev
}
