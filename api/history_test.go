package api

import (
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/millstream/millstream/historian"
	"github.com/millstream/millstream/log/embedded"
	"github.com/millstream/millstream/uns"
)

// hbase is the time of the first historian test point.
var hbase = time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)

const (
	tempPath   = "acme/p1/press-7/temp"
	temp8Path  = "acme/p1/press-8/temp"
	countPath  = "acme/p1/press-7/count"
	statePath  = "acme/p1/press-7/state"
	hStepMs    = 10_000 // one point every 10 s
	hPoints    = 360    // one hour
	countReset = 180    // the counter restarts from 0 at this index
)

// counterAt is the counter's value at index i: +5 per point, reset to 0
// at countReset.
func counterAt(i int) uint64 {
	if i >= countReset {
		return uint64(5 * (i - countReset))
	}
	return uint64(5 * i)
}

// newHistoryServer serves a historian holding one hour of test data.
func newHistoryServer(t *testing.T) (*httptest.Server, *historian.DB) {
	t.Helper()
	l, err := embedded.Open(t.TempDir(), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	db, err := historian.Open(historian.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for i := range hPoints {
		at := hbase.Add(time.Duration(i*hStepMs) * time.Millisecond)
		v := uns.FloatValue(float64(i))
		q := uns.Good
		if i == 7 {
			v = uns.FloatValue(math.NaN())
		}
		if i == 8 {
			q = uns.Bad
		}
		for _, p := range []uns.Point{
			{Path: tempPath, Time: at, Value: v, Quality: q},
			{Path: temp8Path, Time: at, Value: uns.FloatValue(100 + float64(i))},
			{Path: countPath, Time: at, Value: uns.UintValue(counterAt(i))},
		} {
			if err := db.AppendPoint(&p); err != nil {
				t.Fatal(err)
			}
		}
		if i%60 == 0 {
			p := uns.Point{Path: statePath, Time: at, Value: uns.StringValue("running \"fast\"")}
			if err := db.AppendPoint(&p); err != nil {
				t.Fatal(err)
			}
		}
		if i == 200 {
			if err := db.Flush(nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	srv := httptest.NewServer(New(Options{Log: l, Gatherer: NewRegistry(), History: db}).Handler())
	t.Cleanup(srv.Close)
	return srv, db
}

func getJSON(t *testing.T, u string, wantCode int, into any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantCode {
		t.Fatalf("GET %s: %s %s, want %d", u, resp.Status, body, wantCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("GET %s: Content-Type %q", u, ct)
	}
	if err := json.Unmarshal(body, into); err != nil {
		t.Fatalf("GET %s: %v in %s", u, err, body)
	}
}

// ms is hbase+d in ms since the epoch, as a query parameter.
func ms(d time.Duration) string { return strconv.FormatInt(hbase.Add(d).UnixMilli(), 10) }

func TestHistorySeries(t *testing.T) {
	srv, _ := newHistoryServer(t)
	var got struct {
		Series []struct {
			Name string `json:"name"`
			Type string `json:"type"`
			Last *int64 `json:"last"`
		} `json:"series"`
	}
	getJSON(t, srv.URL+"/api/v1/series?pattern="+url.QueryEscape("acme/+/+/temp"), 200, &got)
	if len(got.Series) != 2 || got.Series[0].Name != tempPath || got.Series[1].Name != temp8Path {
		t.Fatalf("series %+v", got.Series)
	}
	lastT := hbase.Add(time.Duration((hPoints-1)*hStepMs) * time.Millisecond).UnixMilli()
	if s := got.Series[0]; s.Type != "float" || s.Last == nil || *s.Last != lastT {
		t.Fatalf("series %+v, want float, last %d", s, lastT)
	}
	getJSON(t, srv.URL+"/api/v1/series", 200, &got)
	if len(got.Series) != 4 || got.Series[1].Type != "string" || got.Series[0].Type != "uint" {
		t.Fatalf("all series %+v", got.Series)
	}
	var e apiError
	getJSON(t, srv.URL+"/api/v1/series?pattern=a/%23/b", 400, &e)
	if e.Error != "bad pattern" {
		t.Fatalf("error %+v", e)
	}
}

func TestHistoryRaw(t *testing.T) {
	srv, _ := newHistoryServer(t)
	var got struct {
		From, To int64
		Series   []struct {
			Name      string
			Type      string
			Points    [][]any
			Truncated bool
		}
	}
	u := srv.URL + "/api/v1/history?series=acme/p1/press-7/%23&from=" + ms(60*time.Second) + "&to=" + ms(100*time.Second)
	getJSON(t, u, 200, &got)
	if len(got.Series) != 3 {
		t.Fatalf("%d series", len(got.Series))
	}
	byName := map[string][][]any{}
	for _, s := range got.Series {
		byName[s.Name] = s.Points
	}
	temp := byName[tempPath]
	if len(temp) != 5 { // 60, 70, 80, 90, 100 s
		t.Fatalf("temp points %v", temp)
	}
	if temp[0][0].(float64) != float64(hbase.Add(60*time.Second).UnixMilli()) || temp[0][1].(float64) != 6 || len(temp[0]) != 2 {
		t.Fatalf("first point %v", temp[0])
	}
	if temp[1][1] != "NaN" || temp[2][2] != "bad" {
		t.Fatalf("NaN point %v, bad point %v", temp[1], temp[2])
	}
	if st := byName[statePath]; len(st) != 0 {
		t.Fatalf("state points in range: %v", st)
	}
	// Strings keep their quoting; limit truncates.
	u = srv.URL + "/api/v1/history?series=" + url.QueryEscape(statePath) + "&from=" + ms(0) + "&to=" + ms(time.Hour) + "&limit=2"
	getJSON(t, u, 200, &got)
	if s := got.Series[0]; len(s.Points) != 2 || s.Points[0][1] != `running "fast"` || !s.Truncated {
		t.Fatalf("state %+v", s)
	}
}

func TestHistoryAggregates(t *testing.T) {
	srv, _ := newHistoryServer(t)
	var got struct {
		Step   int64
		Agg    string
		Series []struct {
			Name   string
			Points [][]float64
		}
	}
	u := srv.URL + "/api/v1/history?series=" + url.QueryEscape(tempPath) + "&from=" + ms(0) + "&to=" + ms(time.Hour-time.Millisecond) + "&step=5m&agg=avg"
	getJSON(t, u, 200, &got)
	if got.Step != 300_000 || got.Agg != "avg" || len(got.Series) != 1 {
		t.Fatalf("%+v", got)
	}
	pts := got.Series[0].Points
	if len(pts) != 12 {
		t.Fatalf("%d buckets, want 12", len(pts))
	}
	// Bucket k holds points 30k..30k+29 (values = index); the NaN (7) and
	// the bad-quality point (8) are left out of bucket 0.
	for k, p := range pts {
		var sum, n float64
		for i := 30 * k; i < 30*k+30; i++ {
			if i != 7 && i != 8 {
				sum += float64(i)
				n++
			}
		}
		if p[0] != float64(hbase.Add(time.Duration(k)*5*time.Minute).UnixMilli()) || p[1] != sum/n {
			t.Fatalf("bucket %d = %v, want avg %v", k, p, sum/n)
		}
	}
	// The counter's delta over the whole hour counts the reset.
	u = srv.URL + "/api/v1/history?series=" + url.QueryEscape(countPath) + "&from=" + ms(0) + "&to=" + ms(time.Hour-time.Millisecond) + "&step=1h&agg=delta"
	getJSON(t, u, 200, &got)
	want := float64(counterAt(countReset-1) + counterAt(hPoints-1))
	if p := got.Series[0].Points; len(p) != 1 || p[0][1] != want {
		t.Fatalf("delta %v, want %v", p, want)
	}
}

func TestHistoryErrors(t *testing.T) {
	srv, _ := newHistoryServer(t)
	for _, c := range []struct{ query, want string }{
		{"", "series is required"},
		{"series=a/%23/b", "series:"},
		{"series=a&from=yesterday", "from:"},
		{"series=a&from=" + ms(time.Hour) + "&to=" + ms(0), "to is before from"},
		{"series=a&agg=avg", "agg needs a step"},
		{"series=a&step=1m&agg=median", "median"},
		{"series=a&step=0", "step:"},
		{"series=a&step=1ms&from=0&to=100000000000", "buckets"},
		{"series=a&limit=0", "limit"},
	} {
		var e apiError
		getJSON(t, srv.URL+"/api/v1/history?"+c.query, 400, &e)
		if d, _ := e.Detail.(string); e.Error != "bad history query" || !strings.Contains(d, c.want) {
			t.Errorf("%s: %+v, want detail with %q", c.query, e, c.want)
		}
	}
	// Without a historian the routes answer 404.
	l, err := embedded.Open(t.TempDir(), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	off := httptest.NewServer(New(Options{Log: l, Gatherer: NewRegistry()}).Handler())
	defer off.Close()
	for _, p := range []string{"/api/v1/series", "/api/v1/history?series=a", "/api/v1/prom/api/v1/labels"} {
		resp, err := http.Get(off.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Errorf("%s without a historian: %s", p, resp.Status)
		}
	}
}

func TestParseTime(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	def := now.Add(-time.Hour)
	for in, want := range map[string]time.Time{
		"":                     def,
		"now":                  now,
		"-1h":                  now.Add(-time.Hour),
		"now-15m":              now.Add(-15 * time.Minute),
		"now+1d":               now.Add(24 * time.Hour),
		"-1h30m":               now.Add(-90 * time.Minute),
		"2026-03-01T08:00:00Z": time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC),
		"1772352000000":        time.UnixMilli(1772352000000),
	} {
		got, err := ParseTime(in, now, def)
		if err != nil || got != want.UnixMilli() {
			t.Errorf("ParseTime(%q) = %d, %v; want %d", in, got, err, want.UnixMilli())
		}
	}
	for _, bad := range []string{"yesterday", "-1x", "now-", "2026-03-01"} {
		if _, err := ParseTime(bad, now, def); err == nil {
			t.Errorf("ParseTime(%q) accepted", bad)
		}
	}
	for in, want := range map[string]int64{"1m": 60_000, "250": 250, "1h30m": 5_400_000, "2d": 172_800_000} {
		if got, err := ParseStep(in); err != nil || got != want {
			t.Errorf("ParseStep(%q) = %d, %v", in, got, err)
		}
	}
	for _, bad := range []string{"0", "-5", "1us", "m"} {
		if _, err := ParseStep(bad); err == nil {
			t.Errorf("ParseStep(%q) accepted", bad)
		}
	}
}
