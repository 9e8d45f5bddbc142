package uns

import (
	"testing"
	"time"
)

func TestTree(t *testing.T) {
	tr := NewTree()
	at := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	tr.Update(Point{Path: "acme/p1/press7/temp", Time: at, Value: FloatValue(21.5)})
	tr.Update(Point{Path: "acme/p1/press7/count", Time: at, Value: IntValue(3)})
	tr.Update(Point{Path: "acme/p2/oven/temp", Time: at, Value: FloatValue(180)})
	tr.Update(Point{Path: "acme/p1/press7/temp", Time: at.Add(-time.Second), Value: FloatValue(1)}) // late: ignored
	tr.Update(Point{Path: "acme/p1/press7/count", Time: at.Add(time.Second), Value: IntValue(4)})

	if tr.Len() != 3 {
		t.Errorf("Len = %d, want 3", tr.Len())
	}
	root, ok := tr.Browse("")
	if !ok || len(root.Children) != 1 || root.Children[0].Path != "acme" || !root.Children[0].HasChildren {
		t.Fatalf("root %+v", root)
	}
	v, ok := tr.Browse("acme/p1/press7")
	if !ok || v.Point != nil || len(v.Children) != 2 {
		t.Fatalf("press7 %+v", v)
	}
	if c := v.Children[0]; c.Name != "count" || c.Path != "acme/p1/press7/count" || c.HasChildren || c.Point == nil || c.Point.Value.String() != "4" {
		t.Errorf("count child %+v", c)
	}
	if c := v.Children[1]; c.Name != "temp" || c.Point.Value.String() != "21.5" {
		t.Errorf("temp child %+v (a late point must not replace a newer one)", c)
	}
	leaf, ok := tr.Browse("acme/p2/oven/temp")
	if !ok || leaf.Point == nil || len(leaf.Children) != 0 {
		t.Errorf("leaf %+v", leaf)
	}
	if _, ok := tr.Browse("acme/p3"); ok {
		t.Error("unknown path found")
	}
}

// A new value of a known path is stored in place: the tree is updated for
// every point of a busy stream.
func TestTreeUpdateKnownPathDoesNotAllocate(t *testing.T) {
	tr := NewTree()
	p := Point{Path: "Plant1/Line2/Filler/Temperature", Time: time.Unix(1, 0), Value: FloatValue(1), Quality: Good}
	tr.Update(p)
	allocs := testing.AllocsPerRun(100, func() {
		p.Time = p.Time.Add(time.Second)
		tr.Update(p)
	})
	if allocs != 0 {
		t.Fatalf("Update of a known path allocated %.1f times, want 0", allocs)
	}
	v, ok := tr.Browse(p.Path)
	if !ok || v.Point == nil || !v.Point.Time.Equal(p.Time) {
		t.Fatalf("Browse after updates: %+v, want the point at %v", v.Point, p.Time)
	}
}
