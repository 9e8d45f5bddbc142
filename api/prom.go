package api

// A Prometheus-compatible read API over the historian, so that Grafana's
// built-in Prometheus data source (URL http://HOST:8080/api/v1/prom) charts
// historian tags without a plugin (docs/grafana.md). Routes, all GET or
// POST (form-encoded), answering in Prometheus's JSON shapes:
//
//	/api/v1/prom/api/v1/query_range   query, start, end, step
//	/api/v1/prom/api/v1/query         query, time
//	/api/v1/prom/api/v1/series        match[]
//	/api/v1/prom/api/v1/labels        (match[])
//	/api/v1/prom/api/v1/label/{name}/values
//
// Each series has two labels: __name__, its path with every character
// outside [a-zA-Z0-9_:] replaced by "_" (acme/p1/press-7/temp becomes
// acme_p1_press_7_temp), and path, the UNS path itself. The query language
// is a subset of PromQL:
//
//	selector                      acme_p1_press_7_temp, {path="acme/p1/press-7/temp"},
//	                              {path=~"acme/p1/.*/temp"}, name{path!~".*test.*"}
//	                              (matchers =, !=, =~, !~ on __name__ and path;
//	                              regular expressions are anchored, as in Prometheus)
//	fn(selector[range])           avg_over_time, min_over_time, max_over_time,
//	                              sum_over_time, count_over_time, last_over_time,
//	                              stddev_over_time, rate, increase
//	number arithmetic             1+1 (what Grafana's "Save & test" sends)
//
// A bare selector takes, at each step, the last valid point in the 5
// minutes up to it (Prometheus's lookback). A function over [range] at time
// t covers (t-range, t]. rate and increase are counter-aware (resets) but,
// unlike Prometheus, not extrapolated to the window's edges: increase is
// the exact rise between the points, counting from the last point before
// the window (see historian.AggDelta). Values that are NaN, null, strings
// or of bad quality are left out (see historian.Agg).

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/millstream/millstream/historian"
	"github.com/millstream/millstream/uns"
)

const (
	// promMaxPoints is Prometheus's limit on points per series of a
	// range query; Grafana picks its step to stay below it.
	promMaxPoints = 11_000
	// promLookback is how far back a bare selector looks for a value.
	promLookback = 5 * 60 * 1000
)

var promFuncs = map[string]historian.Agg{
	"avg_over_time":    historian.AggAvg,
	"min_over_time":    historian.AggMin,
	"max_over_time":    historian.AggMax,
	"sum_over_time":    historian.AggSum,
	"count_over_time":  historian.AggCount,
	"last_over_time":   historian.AggLast,
	"stddev_over_time": historian.AggStddev,
	"rate":             historian.AggRate,
	"increase":         historian.AggDelta,
}

// PromName is the Prometheus metric name of a series: its path with
// characters outside [a-zA-Z0-9_:] replaced by "_", and "_" before a
// leading digit.
func PromName(path string) string {
	var b strings.Builder
	b.Grow(len(path) + 1)
	for i, c := range path {
		switch {
		case i == 0 && c >= '0' && c <= '9':
			b.WriteByte('_')
			b.WriteRune(c)
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == ':':
			b.WriteRune(c)
		default:
			b.WriteByte('_') // one per character, not per UTF-8 byte
		}
	}
	return b.String()
}

type promMatcher struct {
	label, op, value string
	re               *regexp.Regexp
}

func (m promMatcher) matches(labels map[string]string) bool {
	v := labels[m.label] // a missing label is "", as in Prometheus
	switch m.op {
	case "=":
		return v == m.value
	case "!=":
		return v != m.value
	case "=~":
		return m.re.MatchString(v)
	default:
		return !m.re.MatchString(v)
	}
}

// promExpr is a parsed query.
type promExpr struct {
	scalar   bool
	value    float64
	fn       string // "" for a bare selector
	agg      historian.Agg
	rangeMs  int64
	matchers []promMatcher
}

type promParser struct {
	s   string
	pos int
}

func (p *promParser) ws() {
	for p.pos < len(p.s) && strings.IndexByte(" \t\r\n", p.s[p.pos]) >= 0 {
		p.pos++
	}
}

func (p *promParser) ident() string {
	start := p.pos
	for p.pos < len(p.s) {
		c := p.s[p.pos]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == ':' || (p.pos > start && c >= '0' && c <= '9') {
			p.pos++
			continue
		}
		break
	}
	return p.s[start:p.pos]
}

func (p *promParser) eat(tok string) bool {
	p.ws()
	if strings.HasPrefix(p.s[p.pos:], tok) {
		p.pos += len(tok)
		return true
	}
	return false
}

func (p *promParser) errorf(format string, args ...any) error {
	return fmt.Errorf("parse error at char %d: %s", p.pos+1, fmt.Sprintf(format, args...))
}

// parsePromQL parses the supported subset (see the top of this file).
func parsePromQL(q string) (*promExpr, error) {
	q = strings.TrimSpace(q)
	if q == "" {
		return nil, fmt.Errorf("empty query")
	}
	if v, ok := parseScalar(q); ok {
		return &promExpr{scalar: true, value: v}, nil
	}
	p := &promParser{s: q}
	e := &promExpr{}
	p.ws()
	save := p.pos
	name := p.ident()
	if agg, ok := promFuncs[name]; ok && p.eat("(") {
		e.fn, e.agg = name, agg
		if err := p.selector(e); err != nil {
			return nil, err
		}
		if !p.eat("[") {
			return nil, p.errorf("%s needs a range vector, e.g. %s(metric[5m])", name, name)
		}
		p.ws()
		end := strings.IndexByte(p.s[p.pos:], ']')
		if end < 0 {
			return nil, p.errorf("unclosed [")
		}
		d, err := parseDuration(strings.TrimSpace(p.s[p.pos : p.pos+end]))
		if err != nil {
			return nil, p.errorf("%v", err)
		}
		if d < time.Millisecond {
			return nil, p.errorf("range must be at least 1ms")
		}
		e.rangeMs = d.Milliseconds()
		p.pos += end + 1
		if !p.eat(")") {
			return nil, p.errorf("expected )")
		}
	} else {
		p.pos = save
		if err := p.selector(e); err != nil {
			return nil, err
		}
		e.agg, e.rangeMs = historian.AggLast, promLookback
		if p.eat("[") {
			return nil, p.errorf("a range vector needs a function around it, e.g. avg_over_time(...[5m]); supported: %s", funcNames())
		}
	}
	p.ws()
	if p.pos != len(p.s) {
		return nil, p.errorf("unexpected %q: this server supports selectors, number arithmetic and %s over a range", p.s[p.pos:], funcNames())
	}
	return e, nil
}

func funcNames() string {
	var names []string
	for n := range promFuncs {
		names = append(names, n)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

func (p *promParser) selector(e *promExpr) error {
	p.ws()
	if name := p.ident(); name != "" {
		if _, isFn := promFuncs[name]; isFn || p.peek() == '(' {
			return p.errorf("function %s is not supported; supported: %s", name, funcNames())
		}
		e.matchers = append(e.matchers, promMatcher{label: "__name__", op: "=", value: name})
	}
	if p.eat("{") {
		for !p.eat("}") {
			p.ws()
			label := p.ident()
			if label == "" {
				return p.errorf("expected a label name")
			}
			p.ws()
			var op string
			for _, o := range []string{"=~", "!~", "!=", "="} {
				if p.eat(o) {
					op = o
					break
				}
			}
			if op == "" {
				return p.errorf("expected =, !=, =~ or !~ after %s", label)
			}
			val, err := p.str()
			if err != nil {
				return err
			}
			m := promMatcher{label: label, op: op, value: val}
			if op == "=~" || op == "!~" {
				if m.re, err = regexp.Compile("^(?:" + val + ")$"); err != nil {
					return p.errorf("regular expression %q: %v", val, err)
				}
			}
			e.matchers = append(e.matchers, m)
			if !p.eat(",") {
				if !p.eat("}") {
					return p.errorf("expected , or }")
				}
				break
			}
		}
	}
	if len(e.matchers) == 0 {
		return p.errorf("expected a metric name or {label matchers}")
	}
	return nil
}

func (p *promParser) peek() byte {
	p.ws()
	if p.pos < len(p.s) {
		return p.s[p.pos]
	}
	return 0
}

// str reads a string literal: "..." or '...' with Go escapes, or `...`.
func (p *promParser) str() (string, error) {
	p.ws()
	if p.pos >= len(p.s) {
		return "", p.errorf("expected a string")
	}
	q := p.s[p.pos]
	if q != '"' && q != '\'' && q != '`' {
		return "", p.errorf("expected a quoted string")
	}
	for i := p.pos + 1; i < len(p.s); i++ {
		if p.s[i] == '\\' && q != '`' {
			i++
			continue
		}
		if p.s[i] == q {
			lit := p.s[p.pos : i+1]
			p.pos = i + 1
			if q == '`' {
				return lit[1 : len(lit)-1], nil
			}
			if q == '\'' {
				// Same escapes; requote for strconv.Unquote.
				lit = `"` + strings.ReplaceAll(strings.ReplaceAll(lit[1:len(lit)-1], `\'`, `'`), `"`, `\"`) + `"`
			}
			s, err := strconv.Unquote(lit)
			if err != nil {
				return "", p.errorf("bad string %s", lit)
			}
			return s, nil
		}
	}
	return "", p.errorf("unterminated string")
}

// parseScalar evaluates arithmetic on number literals: + - * / and
// parentheses.
func parseScalar(s string) (float64, bool) {
	p := &promParser{s: s}
	v, ok := p.sum()
	p.ws()
	return v, ok && p.pos == len(p.s)
}

func (p *promParser) sum() (float64, bool) {
	v, ok := p.product()
	for ok {
		switch {
		case p.eat("+"):
			w, ok2 := p.product()
			v, ok = v+w, ok2
		case p.eat("-"):
			w, ok2 := p.product()
			v, ok = v-w, ok2
		default:
			return v, true
		}
	}
	return 0, false
}

func (p *promParser) product() (float64, bool) {
	v, ok := p.unary()
	for ok {
		switch {
		case p.eat("*"):
			w, ok2 := p.unary()
			v, ok = v*w, ok2
		case p.eat("/"):
			w, ok2 := p.unary()
			v, ok = v/w, ok2
		default:
			return v, true
		}
	}
	return 0, false
}

func (p *promParser) unary() (float64, bool) {
	switch {
	case p.eat("-"):
		v, ok := p.unary()
		return -v, ok
	case p.eat("+"):
		return p.unary()
	case p.eat("("):
		v, ok := p.sum()
		return v, ok && p.eat(")")
	}
	p.ws()
	start := p.pos
	for p.pos < len(p.s) && (p.s[p.pos] >= '0' && p.s[p.pos] <= '9' || p.s[p.pos] == '.' ||
		(p.pos > start && (p.s[p.pos] == 'e' || p.s[p.pos] == 'E' ||
			(p.s[p.pos] == '-' || p.s[p.pos] == '+') && (p.s[p.pos-1] == 'e' || p.s[p.pos-1] == 'E')))) {
		p.pos++
	}
	v, err := strconv.ParseFloat(p.s[start:p.pos], 64)
	return v, err == nil
}

// promSeries is one series of a result.
type promResult struct {
	labels map[string]string
	points []historian.Point
}

func promLabelsOf(name string) map[string]string {
	return map[string]string{"__name__": PromName(name), "path": name}
}

// selectSeries returns the series every matcher accepts.
func selectSeries(h History, ms []promMatcher) ([]historian.SeriesInfo, error) {
	pattern := "#"
	for _, m := range ms {
		// An exact path narrows the scan to one series.
		if m.label == "path" && m.op == "=" && !strings.ContainsAny(m.value, "+#") && uns.ValidatePattern(m.value) == nil {
			pattern = m.value
		}
	}
	all, err := h.Select(pattern)
	if err != nil {
		return nil, err
	}
	var out []historian.SeriesInfo
	for _, s := range all {
		labels := promLabelsOf(s.Name)
		ok := true
		for _, m := range ms {
			if !m.matches(labels) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, s)
		}
	}
	return out, nil
}

// eval evaluates e at start, start+step, ... end (ms).
func eval(h History, e *promExpr, start, end, step int64) ([]promResult, error) {
	if e.scalar {
		var pts []historian.Point
		for t := start; t <= end; t += step {
			pts = append(pts, historian.Point{Time: t, Value: e.value})
		}
		return []promResult{{labels: map[string]string{}, points: pts}}, nil
	}
	series, err := selectSeries(h, e.matchers)
	if err != nil {
		return nil, err
	}
	g := historian.Grid{Start: start, End: end, Step: step, Lo: -e.rangeMs + 1, Hi: 0}
	var out []promResult
	for _, s := range series {
		pts, err := h.Aggregate(nil, s.ID, e.agg, g)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.Name, err)
		}
		if len(pts) == 0 {
			continue
		}
		labels := promLabelsOf(s.Name)
		if e.fn != "" {
			delete(labels, "__name__") // functions drop the metric name
		}
		out = append(out, promResult{labels: labels, points: pts})
	}
	return out, nil
}

// parsePromTime reads a Prometheus time parameter: Unix seconds (with a
// fraction) or RFC 3339; returns ms.
func parsePromTime(s string, def time.Time) (int64, error) {
	if s == "" {
		return def.UnixMilli(), nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f) > 1e15 {
			return 0, fmt.Errorf("time %q out of range", s)
		}
		return int64(math.Round(f * 1000)), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, fmt.Errorf("cannot parse %q to a valid timestamp", s)
	}
	return t.UnixMilli(), nil
}

// parsePromStep reads a step: seconds (with a fraction) or a duration.
func parsePromStep(s string) (int64, error) {
	if s == "" {
		return 0, fmt.Errorf("step is required")
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		ms := int64(math.Round(f * 1000))
		if ms <= 0 || f > 1e12 {
			return 0, fmt.Errorf("zero or negative query resolution step widths are not accepted. Try a positive integer")
		}
		return ms, nil
	}
	d, err := parseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("cannot parse %q to a valid duration", s)
	}
	if d < time.Millisecond {
		return 0, fmt.Errorf("zero or negative query resolution step widths are not accepted. Try a positive integer")
	}
	return d.Milliseconds(), nil
}

func writePromError(w http.ResponseWriter, code int, typ string, err error) {
	writeJSON(w, code, map[string]string{"status": "error", "errorType": typ, "error": err.Error()})
}

func writePromData(w http.ResponseWriter, data any) {
	writeJSON(w, http.StatusOK, map[string]any{"status": "success", "data": data})
}

// promHandler wraps a Prometheus route: method and form checks, and 404
// when the historian is off.
func promHandler(h History, f func(w http.ResponseWriter, r *http.Request)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodPost {
			w.Header().Set("Allow", "GET, POST")
			writePromError(w, http.StatusMethodNotAllowed, "bad_data", fmt.Errorf("method %s not allowed; use GET or POST", r.Method))
			return
		}
		if h == nil {
			writePromError(w, http.StatusNotFound, "unavailable", fmt.Errorf("the historian is not enabled on this server"))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
		if err := r.ParseForm(); err != nil {
			writePromError(w, http.StatusBadRequest, "bad_data", err)
			return
		}
		f(w, r)
	})
}

// appendPromValue writes [t_seconds,"value"].
func appendPromValue(b []byte, p historian.Point) []byte {
	b = append(b, '[')
	b = strconv.AppendFloat(b, float64(p.Time)/1000, 'f', -1, 64)
	b = append(b, `,"`...)
	switch {
	case math.IsNaN(p.Value):
		b = append(b, "NaN"...)
	case math.IsInf(p.Value, 1):
		b = append(b, "+Inf"...)
	case math.IsInf(p.Value, -1):
		b = append(b, "-Inf"...)
	default:
		b = strconv.AppendFloat(b, p.Value, 'f', -1, 64)
	}
	return append(b, `"]`...)
}

func metricJSON(labels map[string]string) json.RawMessage {
	b, _ := json.Marshal(labels) // sorted keys
	return b
}

type promSample struct {
	Metric json.RawMessage `json:"metric"`
	Values json.RawMessage `json:"values,omitempty"`
	Value  json.RawMessage `json:"value,omitempty"`
}

func (s *Server) promQueryRange(h History) http.Handler {
	return promHandler(h, func(w http.ResponseWriter, r *http.Request) {
		start, err := parsePromTime(r.Form.Get("start"), time.Time{})
		if err == nil && r.Form.Get("start") == "" {
			err = fmt.Errorf("start is required")
		}
		if err != nil {
			writePromError(w, http.StatusBadRequest, "bad_data", fmt.Errorf("invalid parameter \"start\": %v", err))
			return
		}
		end, err := parsePromTime(r.Form.Get("end"), time.Time{})
		if err == nil && r.Form.Get("end") == "" {
			err = fmt.Errorf("end is required")
		}
		if err != nil {
			writePromError(w, http.StatusBadRequest, "bad_data", fmt.Errorf("invalid parameter \"end\": %v", err))
			return
		}
		if end < start {
			writePromError(w, http.StatusBadRequest, "bad_data", fmt.Errorf("invalid parameter \"end\": end timestamp must not be before start time"))
			return
		}
		step, err := parsePromStep(r.Form.Get("step"))
		if err != nil {
			writePromError(w, http.StatusBadRequest, "bad_data", fmt.Errorf("invalid parameter \"step\": %v", err))
			return
		}
		if (end-start)/step >= promMaxPoints {
			writePromError(w, http.StatusBadRequest, "bad_data", fmt.Errorf("exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"))
			return
		}
		e, err := parsePromQL(r.Form.Get("query"))
		if err != nil {
			writePromError(w, http.StatusBadRequest, "bad_data", fmt.Errorf("invalid parameter \"query\": %v", err))
			return
		}
		res, err := eval(h, e, start, end, step)
		if err != nil {
			writePromError(w, http.StatusInternalServerError, "execution", err)
			return
		}
		out := make([]promSample, len(res))
		var buf []byte
		for i, x := range res {
			buf = append(buf[:0], '[')
			for k, p := range x.points {
				if k > 0 {
					buf = append(buf, ',')
				}
				buf = appendPromValue(buf, p)
			}
			buf = append(buf, ']')
			out[i] = promSample{Metric: metricJSON(x.labels), Values: append(json.RawMessage(nil), buf...)}
		}
		writePromData(w, map[string]any{"resultType": "matrix", "result": out})
	})
}

func (s *Server) promQuery(h History) http.Handler {
	return promHandler(h, func(w http.ResponseWriter, r *http.Request) {
		at, err := parsePromTime(r.Form.Get("time"), time.Now())
		if err != nil {
			writePromError(w, http.StatusBadRequest, "bad_data", fmt.Errorf("invalid parameter \"time\": %v", err))
			return
		}
		e, err := parsePromQL(r.Form.Get("query"))
		if err != nil {
			writePromError(w, http.StatusBadRequest, "bad_data", fmt.Errorf("invalid parameter \"query\": %v", err))
			return
		}
		if e.scalar {
			writePromData(w, map[string]any{"resultType": "scalar",
				"result": json.RawMessage(appendPromValue(nil, historian.Point{Time: at, Value: e.value}))})
			return
		}
		res, err := eval(h, e, at, at, 1)
		if err != nil {
			writePromError(w, http.StatusInternalServerError, "execution", err)
			return
		}
		out := make([]promSample, len(res))
		for i, x := range res {
			out[i] = promSample{Metric: metricJSON(x.labels), Value: appendPromValue(nil, x.points[0])}
		}
		writePromData(w, map[string]any{"resultType": "vector", "result": out})
	})
}

// matchedSeries returns the series any match[] selector selects (all
// series without match[]) that have a point at or after start, if given.
func matchedSeries(h History, r *http.Request, required bool) ([]historian.SeriesInfo, error) {
	sels := r.Form["match[]"]
	if len(sels) == 0 && required {
		return nil, fmt.Errorf("no match[] parameter provided")
	}
	var from int64 = math.MinInt64
	if s := r.Form.Get("start"); s != "" {
		var err error
		if from, err = parsePromTime(s, time.Time{}); err != nil {
			return nil, fmt.Errorf("invalid parameter \"start\": %v", err)
		}
	}
	seen := map[uint64]bool{}
	var out []historian.SeriesInfo
	add := func(ss []historian.SeriesInfo) {
		for _, s := range ss {
			if !seen[s.ID] && s.Last != historian.NoTime && s.Last >= from {
				seen[s.ID] = true
				out = append(out, s)
			}
		}
	}
	if len(sels) == 0 {
		all, err := h.Select("#")
		if err != nil {
			return nil, err
		}
		add(all)
		return out, nil
	}
	for _, sel := range sels {
		e := &promExpr{}
		p := &promParser{s: sel}
		if err := p.selector(e); err != nil {
			return nil, fmt.Errorf("invalid parameter \"match[]\": %v", err)
		}
		if p.ws(); p.pos != len(p.s) {
			return nil, fmt.Errorf("invalid parameter \"match[]\": unexpected %q", p.s[p.pos:])
		}
		ss, err := selectSeries(h, e.matchers)
		if err != nil {
			return nil, err
		}
		add(ss)
	}
	slices.SortFunc(out, func(a, b historian.SeriesInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func (s *Server) promSeries(h History) http.Handler {
	return promHandler(h, func(w http.ResponseWriter, r *http.Request) {
		ss, err := matchedSeries(h, r, true)
		if err != nil {
			writePromError(w, http.StatusBadRequest, "bad_data", err)
			return
		}
		out := make([]map[string]string, len(ss))
		for i, x := range ss {
			out[i] = promLabelsOf(x.Name)
		}
		writePromData(w, out)
	})
}

func (s *Server) promLabels(h History) http.Handler {
	return promHandler(h, func(w http.ResponseWriter, r *http.Request) {
		ss, err := matchedSeries(h, r, false)
		if err != nil {
			writePromError(w, http.StatusBadRequest, "bad_data", err)
			return
		}
		out := []string{}
		if len(ss) > 0 {
			out = []string{"__name__", "path"}
		}
		writePromData(w, out)
	})
}

func (s *Server) promLabelValues(h History) http.Handler {
	return promHandler(h, func(w http.ResponseWriter, r *http.Request) {
		ss, err := matchedSeries(h, r, false)
		if err != nil {
			writePromError(w, http.StatusBadRequest, "bad_data", err)
			return
		}
		out := []string{}
		switch r.PathValue("name") {
		case "__name__":
			for _, x := range ss {
				out = append(out, PromName(x.Name))
			}
		case "path":
			for _, x := range ss {
				out = append(out, x.Name)
			}
		}
		slices.Sort(out)
		writePromData(w, slices.Compact(out))
	})
}
