package uns

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/millstream/millstream/log"
)

// Log topics of the namespace.
const (
	// PointsTopic holds normalised points; key = asset path (the point's
	// path without its tag) so that one asset's points stay in order.
	PointsTopic = "uns.points"
	// DeadLetterTopic holds source records that could not be normalised:
	// the original key, value and headers, plus the reason and where the
	// record came from.
	DeadLetterTopic = "uns.deadletter"
)

// The JSON value of a uns.points record (content type application/json):
//
//	{"path":"acme/p1/press7/temp","time":"2026-11-23T08:00:00.123Z",
//	 "type":"float","value":21.5,"quality":"good","unit":"°C","source":"mqtt:acme/p1/press7"}
//
// type is null, float, int, uint, bool, string or bytes; value is a JSON
// number (integers exact), true/false, a string, base64 for bytes, null for
// null, and "NaN", "+Inf" or "-Inf" for the float values JSON cannot write.
// unit is omitted when unknown. time is RFC 3339 in UTC with as many
// fractional digits as needed.

// AppendPointJSON appends the JSON of p to dst.
func AppendPointJSON(dst []byte, p *Point) []byte {
	dst = append(dst, `{"path":`...)
	dst = log.AppendJSONString(dst, p.Path)
	dst = append(dst, `,"time":"`...)
	dst = p.Time.UTC().AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","type":"`...)
	dst = append(dst, p.Value.kind.String()...)
	dst = append(dst, `","value":`...)
	v := p.Value
	switch v.kind {
	case Float:
		f := math.Float64frombits(v.bits)
		switch {
		case math.IsNaN(f):
			dst = append(dst, `"NaN"`...)
		case math.IsInf(f, 1):
			dst = append(dst, `"+Inf"`...)
		case math.IsInf(f, -1):
			dst = append(dst, `"-Inf"`...)
		default:
			dst = strconv.AppendFloat(dst, f, 'g', -1, 64)
		}
	case Int:
		dst = strconv.AppendInt(dst, int64(v.bits), 10)
	case Uint:
		dst = strconv.AppendUint(dst, v.bits, 10)
	case Bool:
		dst = strconv.AppendBool(dst, v.bits == 1)
	case String:
		dst = log.AppendJSONString(dst, v.str)
	case Bytes:
		dst = append(dst, '"')
		dst = base64.StdEncoding.AppendEncode(dst, []byte(v.str))
		dst = append(dst, '"')
	default:
		dst = append(dst, "null"...)
	}
	dst = append(dst, `,"quality":"`...)
	dst = append(dst, p.Quality.String()...)
	dst = append(dst, '"')
	if p.Unit != "" {
		dst = append(dst, `,"unit":`...)
		dst = log.AppendJSONString(dst, p.Unit)
	}
	dst = append(dst, `,"source":`...)
	dst = log.AppendJSONString(dst, p.Source)
	return append(dst, '}')
}

type pointJSON struct {
	Path    string          `json:"path"`
	Time    time.Time       `json:"time"`
	Type    string          `json:"type"`
	Value   json.RawMessage `json:"value"`
	Quality string          `json:"quality"`
	Unit    string          `json:"unit"`
	Source  string          `json:"source"`
}

// ParsePointJSON reads what AppendPointJSON writes. Records in exactly that
// layout (every record Millstream writes) take a fast path that does not go
// through encoding/json, the historian's and the tree's main cost when they
// read uns.points; anything else is parsed in full.
func ParsePointJSON(b []byte) (Point, error) {
	if p, ok := parsePointJSONFast(b); ok {
		return p, nil
	}
	return parsePointJSONSlow(b)
}

// parsePointJSONFast parses the exact layout of AppendPointJSON, with
// strings free of escapes. ok is false for anything else (the caller then
// parses in full, so the result never differs).
func parsePointJSONFast(b []byte) (p Point, ok bool) {
	// field returns the bytes of a string field; only what the point keeps
	// (path, unit, source) becomes a string: the time, type and quality
	// were a third of this parser's garbage.
	field := func(key string) ([]byte, bool) {
		if !bytes.HasPrefix(b, []byte(key)) {
			return nil, false
		}
		b = b[len(key):]
		i := bytes.IndexByte(b, '"')
		if i < 0 {
			return nil, false
		}
		v := b[:i:i]
		if bytes.IndexByte(v, '\\') >= 0 || !utf8.Valid(v) || hasControl(v) {
			return nil, false
		}
		b = b[i+1:]
		return v, true
	}
	path, ok := field(`{"path":"`)
	if !ok {
		return p, false
	}
	p.Path = string(path)
	ts, ok := field(`,"time":"`)
	if !ok || p.Time.UnmarshalText(ts) != nil {
		return p, false
	}
	typ, ok := field(`,"type":"`)
	if !ok || !bytes.HasPrefix(b, []byte(`,"value":`)) {
		return p, false
	}
	b = b[len(`,"value":`):]
	end := bytes.Index(b, []byte(`,"quality":"`))
	if end < 0 {
		return p, false
	}
	raw := b[:end]
	b = b[end:]
	qual, ok := field(`,"quality":"`)
	if !ok {
		return p, false
	}
	q, ok := qualityByName(qual)
	if !ok {
		return p, false
	}
	p.Quality = q
	if bytes.HasPrefix(b, []byte(`,"unit":"`)) {
		unit, ok := field(`,"unit":"`)
		if !ok {
			return p, false
		}
		p.Unit = string(unit)
	}
	source, ok := field(`,"source":"`)
	if !ok || string(b) != "}" {
		return p, false
	}
	p.Source = string(source)
	quoted := func() (string, bool) {
		if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
			return "", false
		}
		v := raw[1 : len(raw)-1]
		if bytes.IndexByte(v, '"') >= 0 || bytes.IndexByte(v, '\\') >= 0 || !utf8.Valid(v) || hasControl(v) {
			return "", false
		}
		return string(v), true
	}
	switch string(typ) {
	case "null":
		return p, string(raw) == "null"
	case "float":
		switch string(raw) {
		case `"NaN"`:
			p.Value = FloatValue(math.NaN())
			return p, true
		case `"+Inf"`:
			p.Value = FloatValue(math.Inf(1))
			return p, true
		case `"-Inf"`:
			p.Value = FloatValue(math.Inf(-1))
			return p, true
		}
		if !jsonNumber(raw) {
			return p, false
		}
		f, err := strconv.ParseFloat(string(raw), 64)
		p.Value = FloatValue(f)
		return p, err == nil
	case "int":
		i, err := strconv.ParseInt(string(raw), 10, 64)
		p.Value = IntValue(i)
		return p, err == nil && jsonNumber(raw)
	case "uint":
		u, err := strconv.ParseUint(string(raw), 10, 64)
		p.Value = UintValue(u)
		return p, err == nil && jsonNumber(raw)
	case "bool":
		switch string(raw) {
		case "true":
			p.Value = BoolValue(true)
			return p, true
		case "false":
			p.Value = BoolValue(false)
			return p, true
		}
	case "string":
		v, ok := quoted()
		p.Value = StringValue(v)
		return p, ok
	case "bytes":
		v, ok := quoted()
		if !ok {
			return p, false
		}
		by, err := base64.StdEncoding.DecodeString(v)
		p.Value = BytesValue(by)
		return p, err == nil
	}
	return p, false
}

// hasControl reports whether b holds a byte JSON strings may not hold raw.
func hasControl(b []byte) bool {
	for _, c := range b {
		if c < 0x20 {
			return true
		}
	}
	return false
}

// jsonNumber reports whether b is a JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func jsonNumber(b []byte) bool {
	i := 0
	if i < len(b) && b[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if i < len(b) && b[i] == '0' {
		i++
	} else if digits() == 0 {
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(b)
}

// parsePointJSONSlow parses a point in any JSON layout.
func parsePointJSONSlow(b []byte) (Point, error) {
	var j pointJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return Point{}, fmt.Errorf("point JSON: %w", err)
	}
	q, err := ParseQuality(j.Quality)
	if err != nil {
		return Point{}, fmt.Errorf("point JSON: %w", err)
	}
	p := Point{Path: j.Path, Time: j.Time, Quality: q, Unit: j.Unit, Source: j.Source}
	raw := string(j.Value)
	bad := func(err error) (Point, error) {
		return Point{}, fmt.Errorf("point JSON: %s value %s: %v", j.Type, raw, err)
	}
	switch j.Type {
	case "null":
		if raw != "null" && raw != "" {
			return bad(fmt.Errorf("want null"))
		}
	case "float":
		var f float64
		switch raw {
		case `"NaN"`:
			f = math.NaN()
		case `"+Inf"`:
			f = math.Inf(1)
		case `"-Inf"`:
			f = math.Inf(-1)
		default:
			if f, err = strconv.ParseFloat(raw, 64); err != nil {
				return bad(err)
			}
		}
		p.Value = FloatValue(f)
	case "int":
		i, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			return bad(err)
		}
		p.Value = IntValue(i)
	case "uint":
		u, err := strconv.ParseUint(raw, 10, 64)
		if err != nil {
			return bad(err)
		}
		p.Value = UintValue(u)
	case "bool":
		bv, err := strconv.ParseBool(raw)
		if err != nil || (raw != "true" && raw != "false") {
			return bad(fmt.Errorf("want true or false"))
		}
		p.Value = BoolValue(bv)
	case "string", "bytes":
		var s string
		if err := json.Unmarshal(j.Value, &s); err != nil {
			return bad(err)
		}
		if j.Type == "string" {
			p.Value = StringValue(s)
			break
		}
		by, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return bad(err)
		}
		p.Value = BytesValue(by)
	default:
		return Point{}, fmt.Errorf("point JSON: type %q: want null, float, int, uint, bool, string or bytes", j.Type)
	}
	return p, nil
}

// qualityByName is the quality whose name (as String writes it, exactly) b
// is.
func qualityByName(b []byte) (Quality, bool) {
	for i, n := range qualityNames {
		if string(b) == n {
			return Quality(i), true
		}
	}
	return 0, false
}
