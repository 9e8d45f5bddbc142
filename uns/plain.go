package uns

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ErrPayload is wrapped by every error about a payload that cannot be
// normalised; such messages go to the dead-letter topic with the error text.
var ErrPayload = errors.New("payload not understood")

// Limits that keep one bad payload from costing more than a message should.
const (
	maxObjectDepth = 8
	maxPoints      = 10000
)

// Keys with a meaning in a JSON object payload. An object with a "value" key
// is one point; in other objects these set the timestamp (and quality and
// unit) of every tag beside them.
var (
	timeKeys = []string{"timestamp", "ts", "time"}
	metaKeys = map[string]bool{"value": true, "timestamp": true, "ts": true, "time": true, "quality": true, "unit": true}
)

// NormalizePlain turns the payload of a plain (non-Sparkplug) MQTT message
// published on topic into points, appended to dst. The topic is the path.
//
//   - A bare value: a JSON number (integers stay integers), true/false, a
//     JSON string, null (a bad-quality point without value), or any other
//     UTF-8 text (a string point); other bytes become a bytes point.
//   - {"value": v, "timestamp": t, "quality": q, "unit": u}: one point;
//     only value is required; t is milliseconds since the epoch or RFC 3339.
//   - Any other object is a set of tags: each key is a tag under the topic
//     (nested objects nest the path), each value a bare value or a value
//     object; a "timestamp" ("ts", "time") key beside them timestamps all.
//
// Without a timestamp in the payload, points are stamped with received.
// An empty payload (MQTT's way to clear a retained message) yields no point.
// Arrays are refused: their meaning depends on the device, so they need a
// mapping rule.
func NormalizePlain(dst []Point, topic string, payload []byte, received time.Time) ([]Point, error) {
	if err := ValidatePath(topic); err != nil {
		return dst, fmt.Errorf("%w: topic is not a namespace path: %v", ErrPayload, err)
	}
	n := &normalizer{dst: dst, source: "mqtt:" + topic, received: received}
	p := bytes.TrimSpace(payload)
	if len(p) == 0 {
		return dst, nil
	}
	if p[0] != '{' {
		v, q, err := bareValue(p)
		if err != nil {
			return dst, err
		}
		n.add(topic, v, q, received, "")
		return n.dst, nil
	}
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.UseNumber()
	obj, err := readObject(dec, 0)
	if err != nil {
		return dst, fmt.Errorf("%w: %v", ErrPayload, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return dst, fmt.Errorf("%w: data after the JSON object", ErrPayload)
	}
	if err := n.object(topic, obj, received, Good, ""); err != nil {
		return dst, err
	}
	return n.dst, nil
}

type normalizer struct {
	dst      []Point
	source   string
	received time.Time
}

func (n *normalizer) add(path string, v Value, q Quality, t time.Time, unit string) {
	n.dst = append(n.dst, Point{Path: path, Time: t, Value: v, Quality: q, Unit: unit, Source: n.source})
}

// member is one key of a JSON object, in payload order.
type member struct {
	key string
	val any // json.Number, string, bool, nil, []member (object)
}

func readObject(dec *json.Decoder, depth int) ([]member, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("expected an object")
	}
	return readMembers(dec, depth)
}

// readMembers reads an object's members after its opening brace.
func readMembers(dec *json.Decoder, depth int) ([]member, error) {
	if depth >= maxObjectDepth {
		return nil, fmt.Errorf("objects nested deeper than %d levels", maxObjectDepth)
	}
	var ms []member
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, ok := kt.(string)
		if !ok {
			return nil, fmt.Errorf("object key expected, got %v", kt)
		}
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		var val any = tok
		if d, isDelim := tok.(json.Delim); isDelim {
			switch d {
			case '{':
				if val, err = readMembers(dec, depth+1); err != nil {
					return nil, err
				}
			case '[':
				return nil, fmt.Errorf("%q is an array; arrays need a mapping rule", key)
			default:
				return nil, fmt.Errorf("unexpected %q", d)
			}
		}
		ms = append(ms, member{key: key, val: val})
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, err
	}
	return ms, nil
}

// object emits the points of a JSON object at path.
func (n *normalizer) object(path string, obj []member, t time.Time, q Quality, unit string) error {
	if _, ok := lookup(obj, "value"); ok {
		return n.valueObject(path, obj, t)
	}
	// A set of tags; meta keys beside them apply to all.
	for _, k := range timeKeys {
		if v, ok := lookup(obj, k); ok {
			ts, err := parseTime(v)
			if err != nil {
				return fmt.Errorf("%w: %s: %v", ErrPayload, k, err)
			}
			t = ts
			break
		}
	}
	if v, ok := lookup(obj, "quality"); ok {
		s, isStr := v.(string)
		pq, err := ParseQuality(s)
		if !isStr || err != nil {
			return fmt.Errorf("%w: quality: use good, uncertain, bad or stale", ErrPayload)
		}
		q = pq
	}
	if v, ok := lookup(obj, "unit"); ok {
		s, isStr := v.(string)
		if !isStr {
			return fmt.Errorf("%w: unit must be a string", ErrPayload)
		}
		unit = s
	}
	tags := 0
	for _, m := range obj {
		if metaKeys[m.key] {
			continue
		}
		tags++
		p := path + "/" + m.key
		if err := ValidatePath(p); err != nil {
			return fmt.Errorf("%w: key %q does not make a namespace path: %v", ErrPayload, m.key, err)
		}
		if sub, ok := m.val.([]member); ok {
			if err := n.object(p, sub, t, q, unit); err != nil {
				return err
			}
			continue
		}
		v, vq, err := jsonValue(m.val)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrPayload, m.key, err)
		}
		if len(n.dst) >= maxPoints {
			return fmt.Errorf("%w: more than %d points in one message", ErrPayload, maxPoints)
		}
		n.add(p, v, max(q, vq), t, unit)
	}
	if tags == 0 {
		return fmt.Errorf("%w: object at %s has no tags and no \"value\"", ErrPayload, path)
	}
	return nil
}

// valueObject emits {"value": v, "timestamp": t, "quality": q, "unit": u}.
func (n *normalizer) valueObject(path string, obj []member, t time.Time) error {
	var (
		v    Value
		q    = Good
		unit string
	)
	for _, m := range obj {
		var err error
		switch m.key {
		case "value":
			if _, isObj := m.val.([]member); isObj {
				return fmt.Errorf("%w: %s: value is an object; objects need a mapping rule", ErrPayload, path)
			}
			var vq Quality
			v, vq, err = jsonValue(m.val)
			q = max(q, vq)
		case "timestamp", "ts", "time":
			t, err = parseTime(m.val)
		case "quality":
			s, ok := m.val.(string)
			if !ok {
				err = errors.New("use good, uncertain, bad or stale")
				break
			}
			var pq Quality
			pq, err = ParseQuality(s)
			q = max(q, pq)
		case "unit":
			s, ok := m.val.(string)
			if !ok {
				err = errors.New("must be a string")
			}
			unit = s
		default:
			return fmt.Errorf("%w: %s: key %q beside \"value\" (allowed: value, timestamp, quality, unit); other layouts need a mapping rule", ErrPayload, path, m.key)
		}
		if err != nil {
			return fmt.Errorf("%w: %s: %s: %v", ErrPayload, path, m.key, err)
		}
	}
	n.add(path, v, q, t, unit)
	return nil
}

func lookup(obj []member, key string) (any, bool) {
	for _, m := range obj {
		if m.key == key {
			return m.val, true
		}
	}
	return nil, false
}

// jsonValue converts a decoded JSON scalar.
func jsonValue(v any) (Value, Quality, error) {
	switch x := v.(type) {
	case nil:
		return Value{}, Bad, nil
	case bool:
		return BoolValue(x), Good, nil
	case string:
		return StringValue(x), Good, nil
	case json.Number:
		return numberValue(string(x))
	}
	return Value{}, Bad, fmt.Errorf("unsupported value %T", v)
}

// numberValue keeps integers as integers (counters must not lose precision
// past 2^53) and everything else as float64.
func numberValue(s string) (Value, Quality, error) {
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return IntValue(i), Good, nil
	}
	if u, err := strconv.ParseUint(s, 10, 64); err == nil {
		return UintValue(u), Good, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return Value{}, Bad, fmt.Errorf("%q is not a number", s)
	}
	return FloatValue(f), Good, nil
}

// bareValue reads a payload that is not a JSON object.
func bareValue(p []byte) (Value, Quality, error) {
	switch string(p) {
	case "true":
		return BoolValue(true), Good, nil
	case "false":
		return BoolValue(false), Good, nil
	case "null":
		return Value{}, Bad, nil
	}
	switch c := p[0]; {
	case c == '"':
		var s string
		if err := json.Unmarshal(p, &s); err != nil {
			return Value{}, Bad, fmt.Errorf("%w: a JSON string that does not parse: %v", ErrPayload, err)
		}
		return StringValue(s), Good, nil
	case c == '[':
		return Value{}, Bad, fmt.Errorf("%w: a JSON array; arrays need a mapping rule", ErrPayload)
	case c == '-' || c == '+' || c == '.' || (c >= '0' && c <= '9') || c == 'N' || c == 'I' || c == 'i' || c == 'n':
		if v, q, err := numberValue(string(p)); err == nil && looksNumeric(p) {
			return v, q, nil
		}
	}
	if utf8.Valid(p) {
		return StringValue(string(p)), Good, nil
	}
	return BytesValue(p), Good, nil
}

// looksNumeric refuses words strconv accepts that are not numbers a device
// would send as text ("infinity" is fine, "nan" is fine, "0x1p-2" is not).
func looksNumeric(p []byte) bool {
	s := strings.ToLower(string(p))
	return !strings.ContainsAny(s, "xp_")
}

// parseTime reads a timestamp: milliseconds since the epoch (a JSON number,
// fractions allowed) or an RFC 3339 string.
func parseTime(v any) (time.Time, error) {
	switch x := v.(type) {
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 253402300799999 {
			return time.Time{}, fmt.Errorf("%s is not milliseconds since 1970 (0 to year 9999)", x)
		}
		ms := math.Floor(f)
		return time.UnixMilli(int64(ms)).Add(time.Duration((f - ms) * 1e6)).UTC(), nil
	case string:
		t, err := time.Parse(time.RFC3339Nano, x)
		if err != nil {
			return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time (e.g. 2026-11-23T08:00:00.123Z)", x)
		}
		return t.UTC(), nil
	}
	return time.Time{}, errors.New("use milliseconds since 1970 or an RFC 3339 string")
}
