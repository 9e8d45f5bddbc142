package uns

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Mapping rules put brownfield topic trees into the namespace. A plant's
// existing publishers rarely follow ISA-95: "factory/L1/M7/status" with
// {"data":{"v":812,"ts":...}} payloads, values in tenths of a degree. A rule
// matches such topics, names the asset path and the tag, picks the value and
// the timestamp out of the payload, and scales the value into engineering
// units. The first rule that matches a topic wins; topics no rule matches
// are normalised as usual (NormalizePlain).

// MappingRule is one rule as configured.
type MappingRule struct {
	// Topic is an MQTT topic pattern: literal levels, + (any one level),
	// {name} (any one level, captured as name) and a last # (any number of
	// levels, captured as # and usable in templates as {#}).
	Topic string
	// Path is the asset path template, e.g. "acme/plant1/{line}/{machine}".
	Path string
	// Tag is the tag name template appended to Path. Empty: the path is the
	// tag's full path when Value is set; otherwise the payload is normalised
	// as NormalizePlain would under Path (an object's keys become tags).
	Tag string
	// Value is the field path of the value in a JSON payload: names and
	// array indexes separated by dots ("data.v", "values.0"). Empty: the
	// whole payload is the value (or, without Tag, normalised as usual).
	Value string
	// Timestamp is the field path of the source timestamp (milliseconds
	// since 1970 or RFC 3339). Empty: the time the message was received.
	Timestamp string
	// Quality is the field path of a quality name (good, uncertain, bad,
	// stale) or a boolean (true = good, false = bad). Empty: good.
	Quality string
	// Unit is the engineering unit of the resulting points.
	Unit string
	// Scale and Offset turn raw numbers into engineering units:
	// value*Scale + Offset, as a float. Scale 0 means 1; with Scale 1 and
	// Offset 0 the value keeps its type (integers stay integers).
	Scale, Offset float64
}

// Mapper is a compiled, ordered set of mapping rules.
type Mapper struct {
	rules []compiledRule
}

type compiledRule struct {
	MappingRule
	levels []string // the topic pattern's levels; "{x}" captures
	path   template
	tag    template
	value  []string // field path segments
	ts     []string
	qual   []string
}

// template is a text with {name} placeholders, split into literal parts and
// capture names: lit[0] name[0] lit[1] name[1] ... lit[n].
type template struct {
	lit   []string
	names []string
}

// NewMapper compiles rules; an error names the rule (by index) and what is
// wrong with it.
func NewMapper(rules []MappingRule) (*Mapper, error) {
	m := &Mapper{}
	var errs []error
	for i, r := range rules {
		c, err := compileRule(r)
		if err != nil {
			errs = append(errs, fmt.Errorf("mapping rule %d: %w", i, err))
			continue
		}
		m.rules = append(m.rules, c)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return m, nil
}

// CheckMappingRule reports what is wrong with one rule, naming the field
// ("topic", "path", ...) so that configuration errors point at the key.
func CheckMappingRule(r MappingRule) (field string, err error) {
	_, err = compileRule(r)
	var fe *ruleError
	if errors.As(err, &fe) {
		return fe.field, fe.err
	}
	return "", err
}

type ruleError struct {
	field string
	err   error
}

func (e *ruleError) Error() string { return e.field + ": " + e.err.Error() }

func compileRule(r MappingRule) (compiledRule, error) {
	c := compiledRule{MappingRule: r}
	if c.Scale == 0 {
		c.Scale = 1
	}
	if r.Topic == "" {
		return c, &ruleError{"topic", errors.New("is empty; give an MQTT topic pattern such as factory/{line}/{machine}/#")}
	}
	captures := map[string]bool{}
	c.levels = strings.Split(r.Topic, "/")
	for i, l := range c.levels {
		switch {
		case l == "#":
			if i != len(c.levels)-1 {
				return c, &ruleError{"topic", fmt.Errorf("%q: # must be the last level", r.Topic)}
			}
			captures["#"] = true
		case l == "+":
		case strings.HasPrefix(l, "{") && strings.HasSuffix(l, "}"):
			name := l[1 : len(l)-1]
			if name == "" || name == "#" || strings.ContainsAny(name, "{}+#/") {
				return c, &ruleError{"topic", fmt.Errorf("%q: bad capture %s; use {name} with a name of letters, digits and _", r.Topic, l)}
			}
			if captures[name] {
				return c, &ruleError{"topic", fmt.Errorf("%q: {%s} appears twice", r.Topic, name)}
			}
			captures[name] = true
		case strings.ContainsAny(l, "+#{}"):
			return c, &ruleError{"topic", fmt.Errorf("%q: level %q mixes text with a wildcard; +, # and {name} must be whole levels", r.Topic, l)}
		}
	}
	if strings.HasPrefix(r.Topic, "spBv1.0/") {
		return c, &ruleError{"topic", fmt.Errorf("%q is a Sparkplug B topic; those are read by the Sparkplug host application, not by mapping rules", r.Topic)}
	}
	var err error
	if r.Path == "" {
		return c, &ruleError{"path", errors.New("is empty; give the asset path, e.g. acme/plant1/{line}/{machine}")}
	}
	if c.path, err = parseTemplate(r.Path, captures); err != nil {
		return c, &ruleError{"path", err}
	}
	if c.tag, err = parseTemplate(r.Tag, captures); err != nil {
		return c, &ruleError{"tag", err}
	}
	for _, f := range []struct {
		name string
		src  string
		dst  *[]string
	}{{"value", r.Value, &c.value}, {"timestamp", r.Timestamp, &c.ts}, {"quality", r.Quality, &c.qual}} {
		if f.src == "" {
			continue
		}
		*f.dst = strings.Split(f.src, ".")
		for _, s := range *f.dst {
			if s == "" {
				return c, &ruleError{f.name, fmt.Errorf("%q has an empty field name; use names separated by dots, e.g. data.value", f.src)}
			}
		}
	}
	if math.IsNaN(c.Scale) || math.IsInf(c.Scale, 0) || math.IsNaN(c.Offset) || math.IsInf(c.Offset, 0) {
		return c, &ruleError{"scale", errors.New("scale and offset must be finite numbers")}
	}
	return c, nil
}

func parseTemplate(s string, captures map[string]bool) (template, error) {
	var t template
	for {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			if strings.IndexByte(s, '}') >= 0 {
				return t, fmt.Errorf("unmatched } in %q", s)
			}
			t.lit = append(t.lit, s)
			return t, nil
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return t, fmt.Errorf("unmatched { in %q", s)
		}
		name := s[i+1 : i+j]
		if !captures[name] {
			return t, fmt.Errorf("{%s} is not captured by the topic pattern", name)
		}
		t.lit = append(t.lit, s[:i])
		t.names = append(t.names, name)
		s = s[i+j+1:]
	}
}

func (t template) expand(vals map[string]string) string {
	if len(t.names) == 0 {
		return t.lit[0]
	}
	var b strings.Builder
	for i, name := range t.names {
		b.WriteString(t.lit[i])
		b.WriteString(vals[name])
	}
	b.WriteString(t.lit[len(t.lit)-1])
	return b.String()
}

// match returns the captures of topic, or false. As in MQTT, "a/#" also
// matches "a".
func (c *compiledRule) match(topic string) (map[string]string, bool) {
	segs := strings.Split(topic, "/")
	vals := map[string]string{}
	for i, l := range c.levels {
		if l == "#" {
			vals["#"] = strings.Join(segs[min(i, len(segs)):], "/")
			return vals, true
		}
		if i >= len(segs) {
			return nil, false
		}
		switch {
		case l == "+":
		case len(l) > 2 && l[0] == '{' && l[len(l)-1] == '}':
			vals[l[1:len(l)-1]] = segs[i]
		case l != segs[i]:
			return nil, false
		}
	}
	return vals, len(segs) == len(c.levels)
}

// Normalize applies the first rule that matches topic. ok is false when no
// rule matches (the caller normalises the message as usual).
func (m *Mapper) Normalize(dst []Point, topic string, payload []byte, received time.Time) (out []Point, ok bool, err error) {
	if m == nil {
		return dst, false, nil
	}
	for i := range m.rules {
		r := &m.rules[i]
		vals, hit := r.match(topic)
		if !hit {
			continue
		}
		out, err := r.normalize(dst, topic, vals, payload, received)
		if err != nil {
			return dst, true, fmt.Errorf("%w (mapping rule %d, topic pattern %s)", err, i, r.Topic)
		}
		return out, true, nil
	}
	return dst, false, nil
}

func (r *compiledRule) normalize(dst []Point, topic string, vals map[string]string, payload []byte, received time.Time) ([]Point, error) {
	path := r.path.expand(vals)
	if tag := r.tag.expand(vals); tag != "" {
		path += "/" + tag
	}
	if err := ValidatePath(path); err != nil {
		return dst, fmt.Errorf("%w: mapped path: %v", ErrPayload, err)
	}
	if r.value == nil && r.Tag == "" && r.ts == nil && r.qual == nil {
		// Only the path changes: the payload reads as any plain payload.
		start := len(dst)
		out, err := NormalizePlain(dst, path, payload, received)
		if err != nil {
			return dst, err
		}
		for i := start; i < len(out); i++ {
			out[i].Source = "mqtt:" + topic
			if r.Unit != "" {
				out[i].Unit = r.Unit
			}
			out[i].Value = r.scale(out[i].Value)
		}
		return out, nil
	}
	p := Point{Path: path, Time: received, Quality: Good, Unit: r.Unit, Source: "mqtt:" + topic}
	trimmed := bytes.TrimSpace(payload)
	var doc any
	if r.value != nil || r.ts != nil || r.qual != nil {
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		dec.UseNumber()
		if err := dec.Decode(&doc); err != nil {
			return dst, fmt.Errorf("%w: payload is not JSON: %v", ErrPayload, err)
		}
		if dec.More() {
			return dst, fmt.Errorf("%w: data after the JSON value", ErrPayload)
		}
	}
	if r.value == nil {
		v, q, err := bareValue(trimmed)
		if err != nil {
			return dst, err
		}
		p.Value, p.Quality = v, q
	} else {
		raw, err := field(doc, r.value)
		if err != nil {
			return dst, fmt.Errorf("%w: value %s: %v", ErrPayload, r.Value, err)
		}
		if _, isObj := raw.(map[string]any); isObj {
			return dst, fmt.Errorf("%w: value %s is an object, not a value", ErrPayload, r.Value)
		}
		if _, isArr := raw.([]any); isArr {
			return dst, fmt.Errorf("%w: value %s is an array; pick an element (%s.0)", ErrPayload, r.Value, r.Value)
		}
		v, q, err := jsonValue(raw)
		if err != nil {
			return dst, fmt.Errorf("%w: value %s: %v", ErrPayload, r.Value, err)
		}
		p.Value, p.Quality = v, q
	}
	if r.ts != nil {
		raw, err := field(doc, r.ts)
		if err == nil {
			p.Time, err = parseTime(raw)
		}
		if err != nil {
			return dst, fmt.Errorf("%w: timestamp %s: %v", ErrPayload, r.Timestamp, err)
		}
	}
	if r.qual != nil {
		raw, err := field(doc, r.qual)
		if err == nil {
			switch x := raw.(type) {
			case bool:
				if !x {
					p.Quality = max(p.Quality, Bad)
				}
			case string:
				var q Quality
				q, err = ParseQuality(x)
				p.Quality = max(p.Quality, q)
			default:
				err = errors.New("use good, uncertain, bad, stale or a boolean")
			}
		}
		if err != nil {
			return dst, fmt.Errorf("%w: quality %s: %v", ErrPayload, r.Quality, err)
		}
	}
	p.Value = r.scale(p.Value)
	return append(dst, p), nil
}

// scale applies Scale and Offset to numbers; other values pass unchanged.
func (r *compiledRule) scale(v Value) Value {
	if r.Scale == 1 && r.Offset == 0 {
		return v
	}
	f, ok := v.Float()
	if !ok || v.Kind() == Bool {
		return v
	}
	return FloatValue(f*r.Scale + r.Offset)
}

// field walks a decoded JSON document along a field path.
func field(doc any, path []string) (any, error) {
	cur := doc
	for i, name := range path {
		switch x := cur.(type) {
		case map[string]any:
			v, ok := x[name]
			if !ok {
				return nil, fmt.Errorf("no field %q", strings.Join(path[:i+1], "."))
			}
			cur = v
		case []any:
			j, err := strconv.Atoi(name)
			if err != nil || j < 0 || j >= len(x) {
				return nil, fmt.Errorf("%q: index %q out of range (array of %d)", strings.Join(path[:i], "."), name, len(x))
			}
			cur = x[j]
		default:
			return nil, fmt.Errorf("%q is not an object or array", strings.Join(path[:i], "."))
		}
	}
	return cur, nil
}
