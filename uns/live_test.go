package uns

import "testing"

func TestMatchPattern(t *testing.T) {
	cases := []struct {
		pattern, path string
		want          bool
	}{
		{"#", "a/b/c", true},
		{"a/#", "a/b/c", true},
		{"a/#", "a", true},
		{"a/+/c", "a/b/c", true},
		{"a/+/c", "a/b/d", false},
		{"a/+", "a/b/c", false},
		{"a/b/c", "a/b/c", true},
		{"a/b", "a/b/c", false},
		{"a/b/c/d", "a/b/c", false},
		{"+/+/+", "a/b/c", true},
		{"b/#", "a/b", false},
	}
	for _, c := range cases {
		if err := ValidatePattern(c.pattern); err != nil {
			t.Fatal(err)
		}
		if got := matchPattern(splitPattern(c.pattern), c.path); got != c.want {
			t.Errorf("match(%q, %q) = %v, want %v", c.pattern, c.path, got, c.want)
		}
	}
	for _, bad := range []string{"", "a/#/b", "a+/b", "a//b"} {
		if ValidatePattern(bad) == nil {
			t.Errorf("pattern %q accepted", bad)
		}
	}
}

func splitPattern(p string) []string {
	s, _ := NewLive().Subscribe(p, 1)
	return s.pattern
}

func TestLiveDropsSlowSubscriber(t *testing.T) {
	l := NewLive()
	fast, _ := l.Subscribe("acme/#", 10)
	slow, _ := l.Subscribe("acme/p1/+", 1)
	other, _ := l.Subscribe("other/#", 1)
	l.Publish([]Point{{Path: "acme/p1/a"}, {Path: "acme/p1/b"}, {Path: "acme/p2/x/y"}})
	if len(fast.C) != 3 {
		t.Errorf("fast subscriber got %d points", len(fast.C))
	}
	if !slow.Overflowed() {
		t.Error("slow subscriber not dropped")
	}
	n := 0
	for range slow.C { // closed after the one point it had room for
		n++
	}
	if n != 1 {
		t.Errorf("slow subscriber drained %d points", n)
	}
	if len(other.C) != 0 || other.Overflowed() {
		t.Error("non-matching subscriber got points")
	}
	if l.Subscribers() != 2 {
		t.Errorf("%d subscribers after the drop", l.Subscribers())
	}
	fast.Close()
	fast.Close()
	other.Close()
	if l.Subscribers() != 0 {
		t.Error("Close did not unsubscribe")
	}
}
