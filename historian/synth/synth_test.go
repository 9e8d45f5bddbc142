package synth

import (
	"math"
	"testing"
	"time"

	"github.com/millstream/millstream/uns"
)

func TestDeterministicAndShaped(t *testing.T) {
	cfg := Config{Tags: 40, Duration: 2 * time.Hour, Seed: 7}
	a, b := New(cfg), New(cfg)
	other := New(Config{Tags: 40, Duration: 2 * time.Hour, Seed: 8})
	if a.Samples() != 7200 {
		t.Fatalf("%d samples per tag, want 7200", a.Samples())
	}
	differ := 0
	for i := range a.Tags() {
		ga, gb, go2 := a.Signal(i), b.Signal(i), other.Signal(i)
		n, nulls, changes := 0, 0, 0
		var prev uns.Value
		for {
			ta, va, qa, ok := ga.Next()
			tb, vb, qb, _ := gb.Next()
			_, vo, _, _ := go2.Next()
			if !ok {
				break
			}
			if ta != tb || !va.Equal(vb) || qa != qb {
				t.Fatalf("tag %d sample %d differs between two runs of the same seed", i, n)
			}
			if !va.Equal(vo) {
				differ++
			}
			if want := a.start + int64(n)*1000; ta != want {
				t.Fatalf("tag %d sample %d at %d, want %d (the 1 s grid)", i, n, ta, want)
			}
			if va.IsNull() {
				nulls++
				if qa != uns.Bad {
					t.Fatalf("null value with quality %s", qa)
				}
			} else {
				if va.Kind() != ShapeOf(i).Kind() {
					t.Fatalf("tag %d (%s) produced a %s", i, ShapeOf(i), va.Kind())
				}
				if f, ok := va.Float(); ok && va.Kind() == uns.Float {
					if r := f * 100; math.Abs(r-math.Round(r)) > 1e-6 {
						t.Fatalf("tag %d value %v is not at 0.01 resolution", i, f)
					}
				}
				if !prev.IsNull() && !va.Equal(prev) {
					changes++
				}
				prev = va
			}
			n++
		}
		if n != 7200 {
			t.Fatalf("tag %d: %d samples", i, n)
		}
		// States and switches hold for minutes; analog values move.
		switch ShapeOf(i) {
		case State, StateCode, Switch:
			if changes > 200 {
				t.Errorf("tag %d (%s): %d changes in 2 h", i, ShapeOf(i), changes)
			}
		case Analog:
			if changes < 3000 {
				t.Errorf("analog tag %d: only %d changes in 7200 samples", i, changes)
			}
		}
	}
	if differ == 0 {
		t.Fatal("a different seed gave the same data")
	}
}

func TestMix(t *testing.T) {
	count := map[Shape]int{}
	for i := range 1000 {
		count[ShapeOf(i)]++
	}
	if count[Analog] != 600 || count[Counter] != 200 || count[State] != 50 || count[StateCode] != 50 || count[Switch] != 100 {
		t.Fatalf("mix %v", count)
	}
	s := New(Config{Tags: 10000})
	if err := uns.ValidatePath(s.Path(9999)); err != nil {
		t.Fatal(err)
	}
}
