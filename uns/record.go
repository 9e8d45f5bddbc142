package uns

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

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

// ParsePointJSON reads what AppendPointJSON writes.
func ParsePointJSON(b []byte) (Point, error) {
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
