package uns

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

var received = time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)

type want struct {
	path    string
	value   Value
	quality Quality
	time    time.Time
	unit    string
}

func TestNormalizePlain(t *testing.T) {
	ts := time.Date(2026, 11, 23, 7, 59, 58, 123e6, time.UTC)
	cases := []struct {
		name    string
		topic   string
		payload string
		want    []want
	}{
		{"float", "acme/p1/press/temp", "21.5", []want{{"acme/p1/press/temp", FloatValue(21.5), Good, received, ""}}},
		{"integer stays integer", "acme/p1/press/count", "9007199254740993", []want{{"acme/p1/press/count", IntValue(9007199254740993), Good, received, ""}}},
		{"uint beyond int64", "a/b", "18446744073709551615", []want{{"a/b", UintValue(math.MaxUint64), Good, received, ""}}},
		{"negative", "a/b", " -3 \n", []want{{"a/b", IntValue(-3), Good, received, ""}}},
		{"exponent", "a/b", "1e3", []want{{"a/b", FloatValue(1000), Good, received, ""}}},
		{"bool", "a/running", "true", []want{{"a/running", BoolValue(true), Good, received, ""}}},
		{"null", "a/b", "null", []want{{"a/b", Value{}, Bad, received, ""}}},
		{"json string", "a/state", `"RUN \"auto\""`, []want{{"a/state", StringValue(`RUN "auto"`), Good, received, ""}}},
		{"bare text", "a/state", "running", []want{{"a/state", StringValue("running"), Good, received, ""}}},
		{"hex is text", "a/state", "0x1p-2", []want{{"a/state", StringValue("0x1p-2"), Good, received, ""}}},
		{"NaN", "a/b", "NaN", []want{{"a/b", FloatValue(math.NaN()), Good, received, ""}}},
		{"binary", "a/blob", "\xff\x00\x01", []want{{"a/blob", BytesValue([]byte{0xff, 0, 1}), Good, received, ""}}},
		{"empty clears retained", "a/b", "", nil},
		{"value object ms", "a/temp", `{"value": 21.5, "timestamp": 1795420798123, "unit": "°C"}`, []want{{"a/temp", FloatValue(21.5), Good, ts, "°C"}}},
		{"value object rfc3339", "a/temp", `{"ts": "2026-11-23T07:59:58.123Z", "value": 7, "quality": "uncertain"}`, []want{{"a/temp", IntValue(7), Uncertain, ts, ""}}},
		{"value object null", "a/temp", `{"value": null}`, []want{{"a/temp", Value{}, Bad, received, ""}}},
		{"flat object in order", "acme/p1/press", `{"temp": 21.5, "count": 42, "state": "RUN", "ok": false}`, []want{
			{"acme/p1/press/temp", FloatValue(21.5), Good, received, ""},
			{"acme/p1/press/count", IntValue(42), Good, received, ""},
			{"acme/p1/press/state", StringValue("RUN"), Good, received, ""},
			{"acme/p1/press/ok", BoolValue(false), Good, received, ""},
		}},
		{"flat object shared timestamp", "a", `{"temp": 1, "ts": 1795420798123, "rpm": 2}`, []want{
			{"a/temp", IntValue(1), Good, ts, ""},
			{"a/rpm", IntValue(2), Good, ts, ""},
		}},
		{"nested objects nest the path", "a", `{"motor": {"rpm": 1500, "temp": {"value": 60, "unit": "°C"}}, "x": null}`, []want{
			{"a/motor/rpm", IntValue(1500), Good, received, ""},
			{"a/motor/temp", IntValue(60), Good, received, "°C"},
			{"a/x", Value{}, Bad, received, ""},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := NormalizePlain(nil, c.topic, []byte(c.payload), received)
			if err != nil {
				t.Fatalf("error: %v", err)
			}
			if len(got) != len(c.want) {
				t.Fatalf("got %d points %+v, want %d", len(got), got, len(c.want))
			}
			for i, w := range c.want {
				g := got[i]
				if g.Path != w.path || !g.Value.Equal(w.value) || g.Quality != w.quality || !g.Time.Equal(w.time) || g.Unit != w.unit {
					t.Errorf("point %d = {%s %s(%v) %v %v %q}, want {%s %s(%v) %v %v %q}", i,
						g.Path, g.Value.Kind(), g.Value, g.Quality, g.Time, g.Unit,
						w.path, w.value.Kind(), w.value, w.quality, w.time, w.unit)
				}
				if g.Source != "mqtt:"+c.topic {
					t.Errorf("point %d source %q", i, g.Source)
				}
			}
		})
	}
}

func TestNormalizePlainErrors(t *testing.T) {
	cases := []struct{ topic, payload, want string }{
		{"a//b", "1", "empty segment"},
		{"a/b", "[1,2]", "array"},
		{"a/b", `{"v": [1]}`, "array"},
		{"a/b", `{"value": 1, "extra": 2}`, `key "extra" beside "value"`},
		{"a/b", `{"value": 1, "timestamp": "yesterday"}`, "RFC 3339"},
		{"a/b", `{"value": 1, "timestamp": -5}`, "milliseconds"},
		{"a/b", `{"value": 1, "quality": "great"}`, "good, uncertain"},
		{"a/b", `{"value": {"x": 1}}`, "value is an object"},
		{"a/b", `{"ts": 1}`, "no tags"},
		{"a/b", `{"a+b": 1}`, "wildcard"},
		{"a/b", `{"x": 1} trailing`, "after the JSON object"},
		{"a/b", `{"x": 1`, "payload not understood"},
		{"a/b", `"unterminated`, "JSON string"},
		{"a/b", strings.Repeat(`{"a":`, 20) + "1" + strings.Repeat("}", 20), "nested deeper"},
	}
	for _, c := range cases {
		pts, err := NormalizePlain(nil, c.topic, []byte(c.payload), received)
		if err == nil {
			t.Errorf("%s %q: no error, points %+v", c.topic, c.payload, pts)
			continue
		}
		if !errors.Is(err, ErrPayload) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %q: error %q, want ErrPayload mentioning %q", c.topic, c.payload, err, c.want)
		}
		if len(pts) != 0 {
			t.Errorf("%s %q: %d points returned with the error", c.topic, c.payload, len(pts))
		}
	}
}

func TestValidatePath(t *testing.T) {
	for _, ok := range []string{"a", "acme/plant1/press/temperature", "Ünïcode/°C", strings.Repeat("a", MaxPathBytes)} {
		if err := ValidatePath(ok); err != nil {
			t.Errorf("ValidatePath(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "/a", "a/", "a//b", "a/+/b", "a/#", "a\x00b", "a\nb", "\xff", strings.Repeat("a", MaxPathBytes+1)} {
		if err := ValidatePath(bad); !errors.Is(err, ErrPath) {
			t.Errorf("ValidatePath(%q) = %v, want ErrPath", bad, err)
		}
	}
	if AssetOf("a/b/c") != "a/b" || AssetOf("c") != "" {
		t.Error("AssetOf")
	}
}

// FuzzNormalizePlain: no payload panics; every point has a valid path under
// the topic, the topic's source, and a known kind and quality; an error
// always wraps ErrPayload and comes with no points.
func FuzzNormalizePlain(f *testing.F) {
	for _, s := range []string{"21.5", "true", "null", `"x"`, "running", `{"value":1,"ts":1795420798123}`,
		`{"a":{"b":{"value":null,"unit":"m"}},"ts":"2026-11-23T08:00:00Z"}`, "[1]", "\xff", `{"a":1e400}`, "-0", "Inf"} {
		f.Add("plant/line/m1", []byte(s))
	}
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		pts, err := NormalizePlain(nil, topic, payload, received)
		if err != nil {
			if !errors.Is(err, ErrPayload) {
				t.Fatalf("error does not wrap ErrPayload: %v", err)
			}
			if len(pts) != 0 {
				t.Fatalf("points with an error")
			}
			return
		}
		for _, p := range pts {
			if err := ValidatePath(p.Path); err != nil {
				t.Fatalf("point path %q: %v", p.Path, err)
			}
			if p.Path != topic && !strings.HasPrefix(p.Path, topic+"/") {
				t.Fatalf("point %q outside topic %q", p.Path, topic)
			}
			if p.Source != "mqtt:"+topic || p.Quality > Stale || p.Value.Kind() > Bytes || p.Time.IsZero() {
				t.Fatalf("bad point %+v", p)
			}
			if s, ok := p.Value.Str(); ok && !utf8.ValidString(s) && len(payload) > 0 && payload[0] == '{' {
				t.Fatalf("invalid UTF-8 string from JSON: %q", s)
			}
		}
	})
}

func BenchmarkNormalizePlain(b *testing.B) {
	for _, c := range []struct{ name, payload string }{
		{"bare", "21.537"},
		{"value_object", `{"value": 21.537, "timestamp": 1795420798123, "unit": "°C"}`},
		{"flat_10_tags", `{"ts": 1795420798123, "t1": 21.5, "t2": 22.5, "t3": 23.5, "t4": 1, "t5": 2, "t6": true, "t7": "RUN", "t8": 8.25, "t9": 9, "t10": 10.5}`},
	} {
		b.Run(c.name, func(b *testing.B) {
			payload := []byte(c.payload)
			var pts []Point
			points := 0
			b.ReportAllocs()
			for b.Loop() {
				var err error
				pts, err = NormalizePlain(pts[:0], "acme/plant1/press7", payload, received)
				if err != nil {
					b.Fatal(err)
				}
				points += len(pts)
			}
			b.ReportMetric(float64(points)/b.Elapsed().Seconds(), "points/s")
		})
	}
}
