package replicate

import (
	"testing"
	"time"

	mlog "github.com/millstream/millstream/log"
	"github.com/millstream/millstream/uns"
)

func TestPatternMatch(t *testing.T) {
	for _, c := range []struct {
		pat, path string
		want      bool
	}{
		{"#", "a", true},
		{"#", "a/b/c", true},
		{"a/#", "a", true},
		{"a/#", "a/b/c", true},
		{"a/#", "b/a", false},
		{"a/+/c", "a/b/c", true},
		{"a/+/c", "a/b/d", false},
		{"a/+/c", "a/b/c/d", false},
		{"a/+", "a", false},
		{"a/b", "a/b", true},
		{"a/b", "a/bb", false},
		{"+/+/temp", "x/y/temp", true},
	} {
		if got := compilePatterns([]string{c.pat})[0].match(c.path); got != c.want {
			t.Errorf("%q matches %q = %v, want %v", c.pat, c.path, got, c.want)
		}
	}
}

func pointRecord(t *testing.T, path string, proto bool) *mlog.Record {
	t.Helper()
	p := uns.Point{Path: path, Time: time.Unix(1700000000, 0), Value: uns.FloatValue(1.5), Quality: uns.Good}
	r := &mlog.Record{Topic: uns.PointsTopic, Key: []byte(p.Asset())}
	if proto {
		r.Value = uns.AppendPointProto(nil, &p)
		r.Headers = []mlog.Header{{Key: uns.HeaderContentType, Value: []byte("application/x-protobuf")}}
	} else {
		r.Value = uns.AppendPointJSON(nil, &p)
	}
	return r
}

func TestFilterDecide(t *testing.T) {
	f := newFilter(&Flow{Include: []string{"acme/+/+/temp", "acme/p1/#"}, Deny: []string{"acme/p1/secret/#", "+/+/+/recipe"}})
	for _, proto := range []bool{false, true} {
		for _, c := range []struct {
			path string
			want int
		}{
			{"acme/p2/press1/temp", selected},
			{"acme/p2/press1/speed", excluded},
			{"acme/p1/press1/speed", selected},
			{"acme/p1/secret/x/temp", denied},  // deny wins over both includes
			{"acme/p1/press1/recipe", denied},  // deny by point path
			{"acme/p2/secret/temp", selected},  // the deny is for p1 only
			{"other/p1/press1/temp", excluded}, // not included
		} {
			if got := f.decide(pointRecord(t, c.path, proto)); got != c.want {
				t.Errorf("proto=%v %s: verdict %d, want %d", proto, c.path, got, c.want)
			}
		}
	}
	// The key (asset path) is checked against deny too.
	fk := newFilter(&Flow{Deny: []string{"acme/p1/secret"}})
	if got := fk.decide(pointRecord(t, "acme/p1/secret/temp", false)); got != denied {
		t.Errorf("deny of the asset path: verdict %d, want denied", got)
	}
	// Unreadable points stay on site when rules exist, pass when none.
	bad := &mlog.Record{Topic: uns.PointsTopic, Key: []byte("acme/p1/x"), Value: []byte("{not json")}
	if got := f.decide(bad); got != denied {
		t.Errorf("unreadable point with rules: verdict %d, want denied", got)
	}
	if got := newFilter(&Flow{}).decide(bad); got != selected {
		t.Errorf("unreadable point without rules: verdict %d, want selected", got)
	}
	// Other topics are filtered by key.
	r := &mlog.Record{Topic: "line.events", Key: []byte("acme/p1/secret/a"), Value: []byte("acme/p2/x")}
	if got := f.decide(r); got != denied {
		t.Errorf("keyed record: verdict %d, want denied", got)
	}
	r.Key = []byte("acme/p1/press/a")
	if got := f.decide(r); got != selected {
		t.Errorf("keyed record: verdict %d, want selected", got)
	}
}

func TestParseSource(t *testing.T) {
	site, topic, p, o, ok := parseSource([]byte("plant-1/uns.points/3/123456789012"))
	if !ok || site != "plant-1" || topic != "uns.points" || p != 3 || o != 123456789012 {
		t.Errorf("parseSource = %q %q %d %d %v", site, topic, p, o, ok)
	}
	for _, bad := range []string{"", "a/b/c", "a/b/x/1", "a/b/1/y", "a/b/c/1/2"} {
		if _, _, _, _, ok := parseSource([]byte(bad)); ok {
			t.Errorf("parseSource(%q) ok", bad)
		}
	}
}
