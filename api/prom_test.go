package api

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

type promResponse struct {
	Status    string          `json:"status"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Data      json.RawMessage `json:"data"`
}

type promMatrix struct {
	ResultType string `json:"resultType"`
	Result     []struct {
		Metric map[string]string `json:"metric"`
		Values [][2]any          `json:"values"`
		Value  [2]any            `json:"value"`
	} `json:"result"`
}

// promCall sends the request the way Grafana's Prometheus data source
// does by default: POST with a form body.
func promCall(t *testing.T, base, path string, form url.Values, post bool, wantCode int) promResponse {
	t.Helper()
	var resp *http.Response
	var err error
	if post {
		resp, err = http.PostForm(base+"/api/v1/prom/api/v1/"+path, form)
	} else {
		resp, err = http.Get(base + "/api/v1/prom/api/v1/" + path + "?" + form.Encode())
	}
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var pr promResponse
	if err := json.Unmarshal(body, &pr); err != nil {
		t.Fatalf("%s: %v in %s", path, err, body)
	}
	if resp.StatusCode != wantCode {
		t.Fatalf("%s %v: %s %s, want %d", path, form, resp.Status, body, wantCode)
	}
	return pr
}

func secs(d time.Duration) string { return strconv.FormatInt(hbase.Add(d).Unix(), 10) }

// stepTimes is Grafana's grid: start, start+step, ... end.
func stepTimes(start, end, step time.Duration) []time.Time {
	var ts []time.Time
	for d := start; d <= end; d += step {
		ts = append(ts, hbase.Add(d))
	}
	return ts
}

// checkSeries compares one matrix series against want at each grid time
// (NaN in want: no value expected).
func checkValues(t *testing.T, what string, got [][2]any, grid []time.Time, want func(at time.Time) (float64, bool)) {
	t.Helper()
	k := 0
	for _, at := range grid {
		w, ok := want(at)
		if !ok {
			continue
		}
		if k >= len(got) {
			t.Fatalf("%s: no value at %s, want %v", what, at, w)
		}
		ts, _ := got[k][0].(float64)
		vs, _ := got[k][1].(string)
		v, err := strconv.ParseFloat(vs, 64)
		if ts != float64(at.UnixMilli())/1000 || err != nil || v != w {
			t.Fatalf("%s: value %d is %v, want [%v %q]", what, k, got[k], float64(at.UnixMilli())/1000, strconv.FormatFloat(w, 'f', -1, 64))
		}
		k++
	}
	if k != len(got) {
		t.Fatalf("%s: %d values, want %d", what, len(got), k)
	}
}

// index is the test data's point index at time at, and whether a point
// is there.
func index(at time.Time) (int, bool) {
	d := at.Sub(hbase).Milliseconds()
	return int(d / hStepMs), d >= 0 && d%hStepMs == 0 && d/hStepMs < hPoints
}

func TestPromQueryRangeGrafanaShapes(t *testing.T) {
	srv, _ := newHistoryServer(t)
	start, end, step := 5*time.Minute, 59*time.Minute, time.Minute
	grid := stepTimes(start, end, step)
	form := url.Values{"start": {secs(start)}, "end": {secs(end)}, "step": {"60"}}

	// avg_over_time(name[1m]): the points in (t-1m, t], NaN and the
	// bad-quality point left out; the metric name is dropped.
	form.Set("query", "avg_over_time(acme_p1_press_7_temp[1m])")
	var m promMatrix
	pr := promCall(t, srv.URL, "query_range", form, true, 200)
	if err := json.Unmarshal(pr.Data, &m); err != nil || pr.Status != "success" || m.ResultType != "matrix" || len(m.Result) != 1 {
		t.Fatalf("%+v %s", pr, pr.Data)
	}
	if lbl := m.Result[0].Metric; len(lbl) != 1 || lbl["path"] != tempPath {
		t.Fatalf("labels %v", lbl)
	}
	checkValues(t, "avg_over_time", m.Result[0].Values, grid, func(at time.Time) (float64, bool) {
		var sum, n float64
		for d := at.Add(-time.Minute + time.Millisecond); !d.After(at); d = d.Add(time.Millisecond) {
			if i, ok := index(d); ok && i != 7 && i != 8 {
				sum += float64(i)
				n++
			}
		}
		return sum / n, n > 0
	})

	// rate over a counter that resets: the rise per second, the reset
	// counted from 0. Sent with GET and a duration step.
	form.Set("query", "rate(acme_p1_press_7_count[5m])")
	form.Set("step", "1m")
	pr = promCall(t, srv.URL, "query_range", form, false, 200)
	m = promMatrix{}
	if err := json.Unmarshal(pr.Data, &m); err != nil || len(m.Result) != 1 {
		t.Fatalf("%s", pr.Data)
	}
	checkValues(t, "rate", m.Result[0].Values, grid, func(at time.Time) (float64, bool) {
		var inc float64
		seen := false
		for d := at.Add(-5*time.Minute + time.Millisecond); !d.After(at); d = d.Add(time.Millisecond) {
			i, ok := index(d)
			if !ok {
				continue
			}
			seen = true
			switch {
			case i == 0:
			case counterAt(i) >= counterAt(i-1):
				inc += float64(counterAt(i) - counterAt(i-1))
			default:
				inc += float64(counterAt(i))
			}
		}
		return inc / 300, seen
	})
	// The reset lies inside the grid, so the check above covered it.
	if r := hbase.Add(countReset * hStepMs * time.Millisecond); r.Before(grid[0]) || r.After(grid[len(grid)-1]) {
		t.Fatal("test data: the reset is outside the grid")
	}

	// A bare regex selector: the last value within 5 minutes, both
	// series, with their names; past the data's end nothing.
	form = url.Values{"query": {`{path=~"acme/p1/press-.*/temp"}`}, "start": {secs(0)}, "end": {secs(70 * time.Minute)}, "step": {"600"}}
	pr = promCall(t, srv.URL, "query_range", form, true, 200)
	m = promMatrix{}
	if err := json.Unmarshal(pr.Data, &m); err != nil || len(m.Result) != 2 {
		t.Fatalf("%s", pr.Data)
	}
	slices.SortFunc(m.Result, func(a, b struct {
		Metric map[string]string `json:"metric"`
		Values [][2]any          `json:"values"`
		Value  [2]any            `json:"value"`
	}) int {
		return strings.Compare(a.Metric["path"], b.Metric["path"])
	})
	if m.Result[1].Metric["__name__"] != "acme_p1_press_8_temp" || m.Result[1].Metric["path"] != temp8Path {
		t.Fatalf("labels %v", m.Result[1].Metric)
	}
	checkValues(t, "press-8 selector", m.Result[1].Values, stepTimes(0, 70*time.Minute, 10*time.Minute), func(at time.Time) (float64, bool) {
		d := at.Sub(hbase).Milliseconds()
		i := min(int(d/hStepMs), hPoints-1)
		return 100 + float64(i), d-int64(i)*hStepMs < 5*60*1000
	})

	// Grafana's "Save & test".
	pr = promCall(t, srv.URL, "query", url.Values{"query": {"1+1"}, "time": {"1772352000.5"}}, true, 200)
	var sc struct {
		ResultType string `json:"resultType"`
		Result     [2]any `json:"result"`
	}
	if err := json.Unmarshal(pr.Data, &sc); err != nil || sc.ResultType != "scalar" || sc.Result[0] != 1772352000.5 || sc.Result[1] != "2" {
		t.Fatalf("1+1: %s", pr.Data)
	}
}

func TestPromInstantAndMetadata(t *testing.T) {
	srv, _ := newHistoryServer(t)
	pr := promCall(t, srv.URL, "query", url.Values{"query": {`max_over_time({__name__="acme_p1_press_8_temp"}[10m])`},
		"time": {hbase.Add(30 * time.Minute).Format(time.RFC3339)}}, false, 200)
	var m promMatrix
	if err := json.Unmarshal(pr.Data, &m); err != nil || m.ResultType != "vector" || len(m.Result) != 1 || m.Result[0].Value[1] != "280" {
		t.Fatalf("%s", pr.Data)
	}

	pr = promCall(t, srv.URL, "series", url.Values{"match[]": {"acme_p1_press_7_temp", `{path="acme/p1/press-8/temp"}`}}, false, 200)
	var series []map[string]string
	if err := json.Unmarshal(pr.Data, &series); err != nil || len(series) != 2 ||
		series[0]["path"] != tempPath || series[1]["__name__"] != "acme_p1_press_8_temp" {
		t.Fatalf("series %s", pr.Data)
	}
	var names []string
	pr = promCall(t, srv.URL, "labels", url.Values{}, true, 200)
	if err := json.Unmarshal(pr.Data, &names); err != nil || !slices.Equal(names, []string{"__name__", "path"}) {
		t.Fatalf("labels %s", pr.Data)
	}
	pr = promCall(t, srv.URL, "label/__name__/values", url.Values{}, false, 200)
	if err := json.Unmarshal(pr.Data, &names); err != nil || !slices.Equal(names, []string{"acme_p1_press_7_count", "acme_p1_press_7_state", "acme_p1_press_7_temp", "acme_p1_press_8_temp"}) {
		t.Fatalf("names %s", pr.Data)
	}
	pr = promCall(t, srv.URL, "label/path/values", url.Values{"match[]": {`{path=~".*temp"}`}}, false, 200)
	if err := json.Unmarshal(pr.Data, &names); err != nil || !slices.Equal(names, []string{tempPath, temp8Path}) {
		t.Fatalf("paths %s", pr.Data)
	}
	pr = promCall(t, srv.URL, "label/job/values", url.Values{}, false, 200)
	if err := json.Unmarshal(pr.Data, &names); err != nil || len(names) != 0 {
		t.Fatalf("job values %s", pr.Data)
	}
}

func TestPromErrors(t *testing.T) {
	srv, _ := newHistoryServer(t)
	rng := url.Values{"start": {secs(0)}, "end": {secs(time.Hour)}, "step": {"60"}}
	for _, c := range []struct {
		path  string
		form  url.Values
		wantE string
	}{
		{"query_range", with(rng, "query", "sum(rate(x[5m]))"), "not supported"},
		{"query_range", with(rng, "query", "x[5m]"), "needs a function"},
		{"query_range", with(rng, "query", `{path=~"("}`), "regular expression"},
		{"query_range", with(rng, "query", "rate(x)"), "range vector"},
		{"query_range", with(rng, "query", ""), "empty query"},
		{"query_range", with(with(rng, "query", "x"), "step", "0.1"), "11,000 points"},
		{"query_range", with(with(rng, "query", "x"), "step", "-1"), "step"},
		{"query_range", with(with(rng, "query", "x"), "end", secs(-time.Hour)), "end timestamp"},
		{"query_range", url.Values{"query": {"x"}, "step": {"60"}}, "start"},
		{"query", url.Values{"query": {"x"}, "time": {"noon"}}, "time"},
		{"series", url.Values{}, "match[]"},
		{"series", url.Values{"match[]": {"{path=}"}}, "match[]"},
	} {
		pr := promCall(t, srv.URL, c.path, c.form, true, 400)
		if pr.Status != "error" || pr.ErrorType != "bad_data" || !strings.Contains(pr.Error, c.wantE) {
			t.Errorf("%s %v: %+v, want an error with %q", c.path, c.form, pr, c.wantE)
		}
	}
	req, _ := http.NewRequest(http.MethodDelete, srv.URL+"/api/v1/prom/api/v1/query", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET, POST" {
		t.Fatalf("DELETE: %s allow %q", resp.Status, resp.Header.Get("Allow"))
	}
}

func with(v url.Values, k, val string) url.Values {
	c := url.Values{}
	for kk, vv := range v {
		c[kk] = slices.Clone(vv)
	}
	c.Set(k, val)
	return c
}

func TestPromName(t *testing.T) {
	for in, want := range map[string]string{
		"acme/p1/press-7/temp": "acme_p1_press_7_temp",
		"1st/line":             "_1st_line",
		"a:b/c.d":              "a:b_c_d",
		"Ünï/x":                "_n__x",
	} {
		if got := PromName(in); got != want {
			t.Errorf("PromName(%q) = %q, want %q", in, got, want)
		}
	}
}
