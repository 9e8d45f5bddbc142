package api

// The historian routes (docs/historian.md has examples):
//
//	GET /api/v1/series?pattern=P
//	    {"series":[{"name":"acme/p1/press/temp","type":"float","last":1764662400000}]}
//	    every series matching the UNS pattern P ("+" one level, "#" the
//	    rest; default "#"), the kind of its newest value and that value's
//	    time (ms since the epoch; null when the series has no points).
//
//	GET /api/v1/history?series=P&from=&to=&step=&agg=&limit=
//	    {"from":..,"to":..,"step":..,"agg":"avg",
//	     "series":[{"name":"...","type":"float","points":[[t,v],...]}]}
//	    from/to: RFC 3339, ms since the epoch, "now", or relative to now
//	    ("-1h", "now-15m"); defaults -1h and now; both inclusive.
//	    Without step: the raw points, [t, value] or [t, value, quality]
//	    when the quality is not good; values typed as in uns.points (NaN
//	    and infinities as the strings "NaN", "+Inf", "-Inf", bytes as
//	    base64), at most limit per series (default 100000; a series cut
//	    short has "truncated":true). With step (a duration like "1m", or
//	    ms): one [t, number] per step-wide bucket starting at from, t the
//	    bucket's start, computed with agg (default avg; see
//	    historian.Agg: min, max, avg, twavg, first, last, count, sum,
//	    stddev, delta, rate, previous, linear); buckets without a value
//	    are left out.

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/millstream/millstream/historian"
	"github.com/millstream/millstream/uns"
)

// History is the historian the /api/v1/series, /api/v1/history and
// Prometheus routes read; *historian.DB implements it.
type History interface {
	Select(pattern string) ([]historian.SeriesInfo, error)
	Query(q historian.Query) ([]historian.Result, error)
	Aggregate(dst []historian.Point, id uint64, agg historian.Agg, g historian.Grid) ([]historian.Point, error)
}

const (
	defaultRawLimit = 100_000
	maxRawLimit     = 10_000_000
)

type seriesJSON struct {
	Name string `json:"name"`
	Type string `json:"type"`
	Last *int64 `json:"last"`
}

// historySeries answers GET /api/v1/series.
func (s *Server) historySeries(h History) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h == nil {
			writeError(w, http.StatusNotFound, "the historian is not enabled on this server", nil)
			return
		}
		pattern := r.URL.Query().Get("pattern")
		if pattern == "" {
			pattern = "#"
		}
		if err := uns.ValidatePattern(pattern); err != nil {
			writeError(w, http.StatusBadRequest, "bad pattern", err.Error())
			return
		}
		series, err := h.Select(pattern)
		if err != nil {
			s.internalError(w, r, err)
			return
		}
		out := make([]seriesJSON, len(series))
		for i, x := range series {
			out[i] = seriesJSON{Name: x.Name, Type: x.Kind.String()}
			if x.Last != historian.NoTime {
				out[i].Last = &series[i].Last
			}
		}
		writeJSON(w, http.StatusOK, map[string]any{"series": out})
	})
}

type historySeriesJSON struct {
	Name      string          `json:"name"`
	Type      string          `json:"type"`
	Points    json.RawMessage `json:"points"`
	Truncated bool            `json:"truncated,omitempty"`
}

type historyJSON struct {
	From   int64               `json:"from"`
	To     int64               `json:"to"`
	Step   int64               `json:"step,omitempty"`
	Agg    string              `json:"agg,omitempty"`
	Series []historySeriesJSON `json:"series"`
}

// history answers GET /api/v1/history.
func (s *Server) history(h History) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h == nil {
			writeError(w, http.StatusNotFound, "the historian is not enabled on this server", nil)
			return
		}
		q, err := parseHistoryQuery(r.URL.Query(), time.Now())
		if err != nil {
			writeError(w, http.StatusBadRequest, "bad history query", err.Error())
			return
		}
		res, err := h.Query(q)
		if err != nil {
			s.internalError(w, r, err)
			return
		}
		b := MarshalHistory(q, res)
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Content-Length", strconv.Itoa(len(b)))
		w.WriteHeader(http.StatusOK)
		w.Write(b)
	})
}

// MarshalHistory returns the JSON body of GET /api/v1/history (with a
// final newline) for the results of q; millstream query --data-dir
// prints the same.
func MarshalHistory(q historian.Query, res []historian.Result) []byte {
	out := historyJSON{From: q.From, To: q.To, Step: q.Step, Series: make([]historySeriesJSON, len(res))}
	if q.Step > 0 {
		out.Agg = q.Agg.String()
	}
	var buf []byte
	for i, x := range res {
		buf = append(buf[:0], '[')
		if q.Step > 0 {
			for k, p := range x.Points {
				if k > 0 {
					buf = append(buf, ',')
				}
				buf = append(buf, '[')
				buf = strconv.AppendInt(buf, p.Time, 10)
				buf = append(buf, ',')
				buf = appendJSONFloat(buf, p.Value)
				buf = append(buf, ']')
			}
		} else {
			for k := range x.Samples {
				if k > 0 {
					buf = append(buf, ',')
				}
				buf = appendSampleJSON(buf, &x.Samples[k])
			}
		}
		buf = append(buf, ']')
		out.Series[i] = historySeriesJSON{Name: x.Name, Type: x.Kind.String(),
			Points: append(json.RawMessage(nil), buf...), Truncated: x.Truncated}
	}
	b, err := json.Marshal(out)
	if err != nil {
		// Only RawMessages this function wrote, always valid.
		panic(fmt.Sprintf("api: marshal history: %v", err))
	}
	return append(b, '\n')
}

// ParseHistoryQuery reads the parameters of GET /api/v1/history (series,
// from, to, step, agg, limit), resolving relative times against now.
func ParseHistoryQuery(v url.Values, now time.Time) (historian.Query, error) {
	return parseHistoryQuery(v, now)
}

func parseHistoryQuery(v url.Values, now time.Time) (historian.Query, error) {
	q := historian.Query{Pattern: v.Get("series"), Limit: defaultRawLimit}
	if q.Pattern == "" {
		return q, fmt.Errorf("series is required: a UNS path or pattern, e.g. series=acme/p1/+/temperature")
	}
	if err := uns.ValidatePattern(q.Pattern); err != nil {
		return q, fmt.Errorf("series: %v", err)
	}
	var err error
	if q.From, err = ParseTime(v.Get("from"), now, now.Add(-time.Hour)); err != nil {
		return q, fmt.Errorf("from: %v", err)
	}
	if q.To, err = ParseTime(v.Get("to"), now, now); err != nil {
		return q, fmt.Errorf("to: %v", err)
	}
	if q.To < q.From {
		return q, fmt.Errorf("to is before from")
	}
	if st := v.Get("step"); st != "" {
		if q.Step, err = ParseStep(st); err != nil {
			return q, fmt.Errorf("step: %v", err)
		}
		q.Agg = historian.AggAvg
		if (q.To-q.From)/q.Step >= 1_000_000 {
			return q, fmt.Errorf("step %s makes %d buckets; at most 1000000", st, (q.To-q.From)/q.Step+1)
		}
	}
	if a := v.Get("agg"); a != "" {
		if q.Step == 0 {
			return q, fmt.Errorf("agg needs a step (e.g. step=1m&agg=%s)", a)
		}
		if q.Agg, err = historian.ParseAgg(a); err != nil {
			return q, err
		}
	}
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > maxRawLimit {
			return q, fmt.Errorf("limit %q: want 1-%d", l, maxRawLimit)
		}
		q.Limit = n
	}
	return q, nil
}

// ParseTime reads a time as RFC 3339, ms since the Unix epoch, "now", or a
// duration relative to now ("-1h", "now-15m", "now+5m"), and returns it in
// ms since the epoch; "" is def.
func ParseTime(s string, now, def time.Time) (int64, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return def.UnixMilli(), nil
	case s == "now":
		return now.UnixMilli(), nil
	}
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return ms, nil
	}
	rel := strings.TrimPrefix(s, "now")
	if rel != "" && (rel[0] == '-' || rel[0] == '+') {
		d, err := parseDuration(rel[1:])
		if err != nil {
			return 0, fmt.Errorf("%q: %v", s, err)
		}
		if rel[0] == '-' {
			d = -d
		}
		return now.Add(d).UnixMilli(), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, fmt.Errorf("%q is not an RFC 3339 time (2026-11-22T08:00:00Z), ms since the epoch, now, or relative like -1h or now-15m", s)
	}
	return t.UnixMilli(), nil
}

// ParseStep reads a step: a duration ("1m", "1h30m", "1d") or ms.
func ParseStep(s string) (int64, error) {
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		if ms <= 0 {
			return 0, fmt.Errorf("%q must be positive", s)
		}
		return ms, nil
	}
	d, err := parseDuration(s)
	if err != nil {
		return 0, err
	}
	if d < time.Millisecond {
		return 0, fmt.Errorf("%q is shorter than 1ms", s)
	}
	return d.Milliseconds(), nil
}

// parseDuration reads Go durations and Prometheus's (which add d, w and y
// and allow compounds such as 1h30m): one or more number-unit pairs.
func parseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, fmt.Errorf("empty duration")
	}
	units := []struct {
		name string
		d    time.Duration
	}{ // longest names first, so "ms" is not read as "m"
		{"ms", time.Millisecond}, {"us", time.Microsecond}, {"ns", time.Nanosecond},
		{"s", time.Second}, {"m", time.Minute}, {"h", time.Hour},
		{"d", 24 * time.Hour}, {"w", 7 * 24 * time.Hour}, {"y", 365 * 24 * time.Hour},
	}
	var total time.Duration
	rest := s
	for rest != "" {
		i := 0
		for i < len(rest) && (rest[i] >= '0' && rest[i] <= '9' || rest[i] == '.') {
			i++
		}
		if i == 0 {
			return 0, fmt.Errorf("duration %q: want a number and a unit (ms, s, m, h, d, w, y), e.g. 5m or 1h30m", s)
		}
		n, err := strconv.ParseFloat(rest[:i], 64)
		if err != nil {
			return 0, fmt.Errorf("duration %q: %v", s, err)
		}
		rest = rest[i:]
		found := false
		for _, u := range units {
			if strings.HasPrefix(rest, u.name) {
				f := n * float64(u.d)
				if f > math.MaxInt64/2 {
					return 0, fmt.Errorf("duration %q is too long", s)
				}
				total += time.Duration(f)
				rest, found = rest[len(u.name):], true
				break
			}
		}
		if !found {
			return 0, fmt.Errorf("duration %q: want a unit (ms, s, m, h, d, w, y) after %v", s, n)
		}
	}
	return total, nil
}

// appendJSONFloat writes f as a JSON number, or as "NaN", "+Inf" or
// "-Inf", which JSON cannot write as numbers.
func appendJSONFloat(b []byte, f float64) []byte {
	switch {
	case math.IsNaN(f):
		return append(b, `"NaN"`...)
	case math.IsInf(f, 1):
		return append(b, `"+Inf"`...)
	case math.IsInf(f, -1):
		return append(b, `"-Inf"`...)
	}
	return strconv.AppendFloat(b, f, 'g', -1, 64)
}

// appendSampleJSON writes [t, value] or [t, value, "quality"].
func appendSampleJSON(b []byte, x *historian.Sample) []byte {
	b = append(b, '[')
	b = strconv.AppendInt(b, x.Time, 10)
	b = append(b, ',')
	v := x.Value
	switch v.Kind() {
	case uns.Float:
		f, _ := v.Float()
		b = appendJSONFloat(b, f)
	case uns.Int:
		i, _ := v.Int()
		b = strconv.AppendInt(b, i, 10)
	case uns.Uint:
		u, _ := v.Uint()
		b = strconv.AppendUint(b, u, 10)
	case uns.Bool:
		t, _ := v.Bool()
		b = strconv.AppendBool(b, t)
	case uns.String:
		str, _ := v.Str()
		j, _ := json.Marshal(str)
		b = append(b, j...)
	case uns.Bytes:
		by, _ := v.Bytes()
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, by)
		b = append(b, '"')
	default:
		b = append(b, "null"...)
	}
	if x.Quality != uns.Good {
		b = append(b, `,"`...)
		b = append(b, x.Quality.String()...)
		b = append(b, '"')
	}
	return append(b, ']')
}
