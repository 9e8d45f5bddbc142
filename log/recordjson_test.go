package log

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestAppendRecordJSONExact(t *testing.T) {
	r := Record{
		Topic:     "uns.points",
		Partition: 3,
		Offset:    42,
		Timestamp: time.Date(2026, 11, 22, 9, 0, 0, 123_456_789, time.FixedZone("CET", 3600)),
		Key:       []byte("site/line1/press"),
		Value:     []byte(`{"t":21.5}`),
		Headers: []Header{
			{Key: "qos", Value: []byte("1")},
			{Key: "raw", Value: []byte{0xff, 0x00}},
			{Key: "none"},
		},
	}
	want := `{"topic":"uns.points","partition":3,"offset":42,"timestamp":"2026-11-22T08:00:00.123Z",` +
		`"key":"site/line1/press","value":"{\"t\":21.5}",` +
		`"headers":[{"key":"qos","value":"1"},{"key":"raw","value":"/wA=","encoding":"base64"},{"key":"none","value":null}]}`
	if got := string(AppendRecordJSON(nil, &r)); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}

	bin := Record{Topic: "t", Value: []byte{0x80, 'a'}, Timestamp: time.UnixMilli(0)}
	want = `{"topic":"t","partition":0,"offset":0,"timestamp":"1970-01-01T00:00:00.000Z","key":null,"value":"gGE=","value_encoding":"base64","headers":[]}`
	if got := string(AppendRecordJSON([]byte("prefix "), &bin)); got != "prefix "+want {
		t.Fatalf("got\n%s\nwant prefix +\n%s", got, want)
	}
}

func TestRecordJSONRoundTrip(t *testing.T) {
	var allControl []byte
	for c := 0; c < 0x20; c++ {
		allControl = append(allControl, byte(c))
	}
	ts := time.UnixMilli(1_795_000_000_123)
	cases := map[string]Record{
		"text":        {Key: []byte("k"), Value: []byte("hello world")},
		"empty":       {Key: []byte{}, Value: []byte{}},
		"nil":         {},
		"binary":      {Key: []byte{0xfe, 0xff}, Value: []byte{0, 1, 2, 0x80, 0xc0, 0xff}},
		"unicode":     {Key: []byte("Größe/温度"), Value: []byte("😀 \u2028\u2029 <>&\u007f é")},
		"control":     {Key: allControl, Value: []byte("a\"b\\c\n\r\t\b\f\x00\x1f/")},
		"truncated":   {Value: []byte{0xe2, 0x82}}, // a cut-off multi-byte sequence is not UTF-8
		"large":       {Value: bytes.Repeat([]byte("0123456789abcdef"), 1<<12)},
		"large-bin":   {Value: bytes.Repeat([]byte{0, 0xff}, 1<<15)},
		"negative-ts": {Value: []byte("x")},
		"headers": {Headers: []Header{
			{Key: "qos", Value: []byte("1")},
			{Key: "qos", Value: []byte("2")},
			{Key: "empty", Value: []byte{}},
			{Key: "nil"},
			{Key: "bin", Value: []byte{0xff}},
			{Key: "ctl\x01\"", Value: []byte("\x02")},
		}},
	}
	for name, r := range cases {
		t.Run(name, func(t *testing.T) {
			r.Topic = "topic.a-b_c"
			r.Partition = 7
			r.Offset = 1<<62 + 5
			r.Timestamp = ts
			if name == "negative-ts" {
				r.Timestamp = time.UnixMilli(-86_400_001)
			}
			checkRoundTrip(t, &r)
		})
	}
}

// checkRoundTrip appends r, checks the output against encoding/json and
// parses it back.
func checkRoundTrip(t *testing.T, r *Record) {
	t.Helper()
	b := AppendRecordJSON(nil, r)
	if !json.Valid(b) {
		t.Fatalf("invalid JSON: %s", b)
	}
	// encoding/json must read every string the same way ParseRecordJSON
	// does; this checks the escaping against an independent decoder.
	var generic map[string]any
	if err := json.Unmarshal(b, &generic); err != nil {
		t.Fatal(err)
	}
	if got, want := generic["topic"], jsonNormalize(r.Topic); got != want {
		t.Fatalf("encoding/json reads topic %q, want %q", got, want)
	}
	got, err := ParseRecordJSON(b)
	if err != nil {
		t.Fatalf("parse %s: %v", b, err)
	}
	if msg := recordDiff(r, &got); msg != "" {
		t.Fatalf("%s\njson: %s", msg, b)
	}
}

// jsonNormalize is what a string becomes after a trip through JSON: invalid
// UTF-8 bytes turn into U+FFFD.
func jsonNormalize(s string) string {
	b, _ := json.Marshal(s)
	var out string
	_ = json.Unmarshal(b, &out)
	return out
}

// recordDiff describes how got differs from what parsing the JSON of want
// must give, or returns "".
func recordDiff(want, got *Record) string {
	var d []string
	if got.Topic != jsonNormalize(want.Topic) {
		d = append(d, "topic "+got.Topic)
	}
	if got.Partition != want.Partition || got.Offset != want.Offset {
		d = append(d, "partition/offset")
	}
	wantTS := want.Timestamp.UTC().Truncate(time.Millisecond)
	if wantTS.Before(minJSONTime) {
		wantTS = minJSONTime
	} else if wantTS.After(maxJSONTime) {
		wantTS = maxJSONTime
	}
	if !got.Timestamp.Equal(wantTS) {
		d = append(d, "timestamp "+got.Timestamp.String()+" want "+wantTS.String())
	}
	if !sameBytes(got.Key, want.Key) {
		d = append(d, "key")
	}
	if !sameBytes(got.Value, want.Value) {
		d = append(d, "value")
	}
	if len(got.Headers) != len(want.Headers) {
		d = append(d, "header count")
	} else {
		for i := range got.Headers {
			if got.Headers[i].Key != jsonNormalize(want.Headers[i].Key) || !sameBytes(got.Headers[i].Value, want.Headers[i].Value) {
				d = append(d, "header "+want.Headers[i].Key)
			}
		}
	}
	if len(d) == 0 {
		return ""
	}
	return "round trip differs: " + strings.Join(d, ", ")
}

// sameBytes is bytes.Equal that also tells nil from empty.
func sameBytes(a, b []byte) bool {
	return (a == nil) == (b == nil) && bytes.Equal(a, b)
}

func TestRecordJSONInvalidUTF8Names(t *testing.T) {
	r := Record{Topic: "a\xffb", Headers: []Header{{Key: "\xc0k", Value: []byte("v")}}}
	b := AppendRecordJSON(nil, &r)
	if !bytes.Contains(b, []byte("\"topic\":\"a\uFFFDb\"")) || !bytes.Contains(b, []byte("\"key\":\"\uFFFDk\"")) {
		t.Fatalf("invalid UTF-8 in topic not replaced: %s", b)
	}
	checkRoundTrip(t, &r)
}

func TestRecordJSONTimestampClamped(t *testing.T) {
	for _, ts := range []time.Time{time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-5, 1, 1, 0, 0, 0, 0, time.UTC)} {
		r := Record{Topic: "t", Timestamp: ts}
		checkRoundTrip(t, &r)
	}
}

func TestParseRecordJSONErrors(t *testing.T) {
	const base = `"topic":"t","partition":0,"offset":1,"timestamp":"2026-01-01T00:00:00Z"`
	cases := map[string]string{
		"not json":        `{`,
		"not an object":   `[1]`,
		"missing topic":   `{"partition":0,"offset":1,"timestamp":"2026-01-01T00:00:00Z"}`,
		"missing offset":  `{"topic":"t","partition":0,"timestamp":"2026-01-01T00:00:00Z"}`,
		"missing ts":      `{"topic":"t","partition":0,"offset":1}`,
		"bad ts":          `{"topic":"t","partition":0,"offset":1,"timestamp":"yesterday"}`,
		"partition range": `{"topic":"t","partition":4294967296,"offset":1,"timestamp":"2026-01-01T00:00:00Z"}`,
		"bad base64":      `{` + base + `,"value":"!!","value_encoding":"base64"}`,
		"bad encoding":    `{` + base + `,"key":"x","key_encoding":"hex"}`,
		"header no key":   `{` + base + `,"headers":[{"value":"x"}]}`,
		"header encoding": `{` + base + `,"headers":[{"key":"k","value":"x","encoding":"rot13"}]}`,
	}
	for name, in := range cases {
		if _, err := ParseRecordJSON([]byte(in)); err == nil {
			t.Errorf("%s: no error for %s", name, in)
		}
	}

	// Fields left out read as nil; other RFC 3339 forms are accepted.
	r, err := ParseRecordJSON([]byte(`{"topic":"t","partition":1,"offset":2,"timestamp":"2026-01-01T01:00:00.123999+01:00","extra":true}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.Key != nil || r.Value != nil || r.Headers != nil || !r.Timestamp.Equal(time.UnixMilli(1767225600123)) {
		t.Fatalf("got %+v", r)
	}
}

func TestAppendRecordJSONAllocs(t *testing.T) {
	r := benchRecord(false)
	rb := benchRecord(true)
	buf := make([]byte, 0, 64<<10)
	if n := testing.AllocsPerRun(100, func() {
		buf = AppendRecordJSON(buf[:0], &r)
		buf = AppendRecordJSON(buf[:0], &rb)
	}); n != 0 {
		t.Fatalf("%v allocations per call into a large enough buffer, want 0", n)
	}
}

func FuzzRecordJSON(f *testing.F) {
	f.Add("uns.points", int32(0), int64(0), int64(1_795_000_000_123), []byte("k"), false, []byte(`{"t":1}`), "qos", []byte("1"), []byte(`{"topic":"t","partition":0,"offset":0,"timestamp":"2026-01-01T00:00:00.000Z","key":null,"value":"","headers":[]}`))
	f.Add("", int32(-1), int64(-1), int64(-1), []byte{0xff}, true, []byte{0, 0x1f, '"', '\\'}, "\xff", []byte{0x80}, []byte(`{"topic":"t","partition":0,"offset":0,"timestamp":"x","value":"AA==","value_encoding":"base64","headers":[{"key":"k","value":null}]}`))
	f.Add("t", int32(1<<30), int64(1<<62), int64(-1<<62), []byte("\u2028"), false, []byte(nil), "", []byte(nil), []byte(`null`))
	f.Fuzz(func(t *testing.T, topic string, partition int32, offset, ms int64, key []byte, nilKey bool, value []byte, hkey string, hvalue []byte, raw []byte) {
		// Arbitrary bytes must never panic the parser, and whatever it
		// accepts must survive another trip.
		if r, err := ParseRecordJSON(raw); err == nil {
			checkRoundTrip(t, &r)
		}

		if nilKey {
			key = nil
		} else if key == nil {
			key = []byte{}
		}
		r := Record{
			Topic:     topic,
			Partition: partition,
			Offset:    offset,
			Timestamp: time.UnixMilli(ms),
			Key:       key,
			Value:     value,
		}
		if hkey != "" || hvalue != nil {
			r.Headers = []Header{{Key: hkey, Value: hvalue}, {Key: "second", Value: value}}
		}
		checkRoundTrip(t, &r)
	})
}

func benchRecord(binary bool) Record {
	r := Record{
		Topic:     "uns.points",
		Partition: 2,
		Offset:    123456789,
		Timestamp: time.UnixMilli(1_795_000_000_123),
		Key:       []byte("acme/plant1/press/line3/cell2/press7/temperature"),
		Value:     []byte(`{"path":"acme/plant1/press/line3/cell2/press7/temperature","time":"2026-11-22T08:00:00.123Z","value":21.5,"quality":"good","unit":"°C"}`),
		Headers:   []Header{{Key: "source", Value: []byte("sparkplug")}, {Key: "content-type", Value: []byte("application/json")}},
	}
	if binary {
		r.Value = bytes.Repeat([]byte{0x08, 0x96, 0x01, 0xff}, 40)
	}
	return r
}

func BenchmarkAppendRecordJSON(b *testing.B) {
	for _, bc := range []struct {
		name   string
		binary bool
	}{{"text", false}, {"binary", true}} {
		b.Run(bc.name, func(b *testing.B) {
			r := benchRecord(bc.binary)
			buf := AppendRecordJSON(nil, &r)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				buf = AppendRecordJSON(buf[:0], &r)
			}
		})
	}
}

func BenchmarkParseRecordJSON(b *testing.B) {
	r := benchRecord(false)
	buf := AppendRecordJSON(nil, &r)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseRecordJSON(buf); err != nil {
			b.Fatal(err)
		}
	}
}
