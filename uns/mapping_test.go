package uns

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/millstream/millstream/log"
)

func TestMapperRules(t *testing.T) {
	m, err := NewMapper([]MappingRule{
		{Topic: "factory/{line}/{machine}/temp", Path: "acme/plant1/{line}/{machine}", Tag: "temperature", Value: "data.v", Timestamp: "data.ts", Unit: "degC", Scale: 0.1},
		{Topic: "factory/{line}/{machine}/counts", Path: "acme/plant1/{line}/{machine}", Tag: "good_parts", Value: "c.0", Quality: "ok"},
		{Topic: "factory/{line}/{machine}/status", Path: "acme/plant1/{line}/{machine}/state"},
		{Topic: "legacy/+/{cell}/#", Path: "acme/plant2/{cell}/{#}"},
		{Topic: "raw/{sensor}", Path: "acme/plant3/sensors", Tag: "{sensor}", Offset: -273.15},
	})
	if err != nil {
		t.Fatal(err)
	}
	recv := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	type want struct {
		path, value, quality, unit string
		time                       time.Time
	}
	cases := []struct {
		topic, payload string
		want           []want
	}{
		{"factory/L1/M7/temp", `{"data":{"v":812,"ts":1763884800123}}`,
			[]want{{"acme/plant1/L1/M7/temperature", "81.2", "good", "degC", time.UnixMilli(1763884800123).UTC()}}},
		{"factory/L1/M7/counts", `{"c":[41,2],"ok":false}`,
			[]want{{"acme/plant1/L1/M7/good_parts", "41", "bad", "", recv}}},
		{"factory/L2/M1/status", `{"mode":"AUTO","speed":12}`,
			[]want{{"acme/plant1/L2/M1/state/mode", "AUTO", "good", "", recv}, {"acme/plant1/L2/M1/state/speed", "12", "good", "", recv}}},
		{"legacy/x/c9/a/b", `true`,
			[]want{{"acme/plant2/c9/a/b", "true", "good", "", recv}}},
		{"raw/t1", `300`,
			[]want{{"acme/plant3/sensors/t1", "26.850000000000023", "good", "", recv}}},
	}
	for _, c := range cases {
		pts, ok, err := m.Normalize(nil, c.topic, []byte(c.payload), recv)
		if !ok || err != nil {
			t.Fatalf("%s: ok=%v err=%v", c.topic, ok, err)
		}
		if len(pts) != len(c.want) {
			t.Fatalf("%s: %d points %+v, want %d", c.topic, len(pts), pts, len(c.want))
		}
		for i, w := range c.want {
			p := pts[i]
			if p.Path != w.path || p.Value.String() != w.value || p.Quality.String() != w.quality || p.Unit != w.unit || !p.Time.Equal(w.time) || p.Source != "mqtt:"+c.topic {
				t.Errorf("%s point %d = %+v (value %s), want %+v", c.topic, i, p, p.Value, w)
			}
		}
	}

	// No rule matches: the caller normalises as usual.
	for _, topic := range []string{"factory/L1/M7", "factory/L1/M7/temp/x", "other/a", "legacy/x"} {
		if _, ok, _ := m.Normalize(nil, topic, []byte("1"), recv); ok {
			t.Errorf("%s matched a rule", topic)
		}
	}

	// A matching rule with a payload it cannot read: an error naming the rule.
	for topic, payload := range map[string]string{
		"factory/L1/M7/temp":   `{"data":{"ts":1}}`,
		"factory/L1/M8/temp":   `{"data":{"v":"x","ts":"yesterday"}}`,
		"factory/L1/M7/counts": `{"c":[],"ok":true}`,
	} {
		_, ok, err := m.Normalize(nil, topic, []byte(payload), recv)
		if !ok || err == nil || !strings.Contains(err.Error(), "mapping rule") {
			t.Errorf("%s %s: ok=%v err=%v", topic, payload, ok, err)
		}
	}
}

func TestMapperRuleErrors(t *testing.T) {
	for _, c := range []struct {
		rule  MappingRule
		field string
		msg   string
	}{
		{MappingRule{Path: "a"}, "topic", "empty"},
		{MappingRule{Topic: "a/#/b", Path: "a"}, "topic", "last level"},
		{MappingRule{Topic: "a/x{b}", Path: "a"}, "topic", "whole levels"},
		{MappingRule{Topic: "a/{b}/{b}", Path: "a"}, "topic", "twice"},
		{MappingRule{Topic: "spBv1.0/#", Path: "a"}, "topic", "Sparkplug"},
		{MappingRule{Topic: "a/{b}"}, "path", "empty"},
		{MappingRule{Topic: "a/{b}", Path: "x/{c}"}, "path", "not captured"},
		{MappingRule{Topic: "a/{b}", Path: "x/{b"}, "path", "unmatched"},
		{MappingRule{Topic: "a/{b}", Path: "x", Tag: "{z}"}, "tag", "not captured"},
		{MappingRule{Topic: "a/{b}", Path: "x", Value: "a..b"}, "value", "empty field"},
	} {
		field, err := CheckMappingRule(c.rule)
		if err == nil || field != c.field || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%+v: field %q err %v, want %s ~ %q", c.rule, field, err, c.field, c.msg)
		}
	}
	if _, err := CheckMappingRule(MappingRule{Topic: "a/{b}/#", Path: "x/{b}/{#}", Tag: "t", Value: "v.0"}); err != nil {
		t.Errorf("good rule: %v", err)
	}
}

func FuzzMapper(f *testing.F) {
	m, err := NewMapper([]MappingRule{
		{Topic: "f/{a}/#", Path: "p/{a}", Tag: "t", Value: "d.v.1", Timestamp: "d.ts", Quality: "q", Scale: 2},
		{Topic: "g/{a}", Path: "p/{a}"},
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Add("f/x/y", []byte(`{"d":{"v":[1,2],"ts":5},"q":"good"}`))
	f.Add("g/y", []byte(`{"a":{"b":1},"ts":"2026-01-01T00:00:00Z"}`))
	f.Add("g/z", []byte(`3.5`))
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		pts, _, err := m.Normalize(nil, topic, payload, time.Unix(0, 0))
		if err != nil {
			return
		}
		for _, p := range pts {
			if err := ValidatePath(p.Path); err != nil {
				t.Fatalf("mapped to an invalid path %q: %v", p.Path, err)
			}
		}
	})
}

// TestNormalizerAppliesMappings: the normaliser maps brownfield topics
// before the plain rules, and a mapped payload it cannot read is a dead
// letter naming the rule.
func TestNormalizerAppliesMappings(t *testing.T) {
	l := openLog(t)
	m, err := NewMapper([]MappingRule{{Topic: "factory/{line}/{machine}/temp", Path: "acme/{line}/{machine}", Tag: "temperature", Value: "v", Scale: 0.1, Unit: "degC"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.CreateTopic(context.Background(), "mqtt.ingress", log.TopicConfig{}); err != nil {
		t.Fatal(err)
	}
	ingest(t, l, "factory/L1/M7/temp", `{"v":215}`)
	ingest(t, l, "factory/L1/M7/temp", `{"x":1}`)
	ingest(t, l, "acme/L1/M7/speed", `12`)
	n := NewNormalizer(l, NormalizerOptions{Mapper: m, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	runUntil(t, l, n, 2)
	got := map[string]string{}
	for _, r := range readAll(t, l, PointsTopic) {
		p, err := ParsePointJSON(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		got[p.Path] = p.Value.String() + " " + p.Unit
	}
	if got["acme/L1/M7/temperature"] != "21.5 degC" || got["acme/L1/M7/speed"] != "12 " || len(got) != 2 {
		t.Errorf("points %v", got)
	}
	dl := readAll(t, l, DeadLetterTopic)
	if len(dl) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dl))
	}
	if reason, _ := dl[0].HeaderValue(HeaderReason); !strings.Contains(string(reason), "mapping rule 0") {
		t.Errorf("dead letter reason %q", reason)
	}
}
