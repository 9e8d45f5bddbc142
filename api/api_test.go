package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	mlog "github.com/millstream/millstream/log"
	"github.com/millstream/millstream/log/embedded"
)

// base is the timestamp of the first test record.
var base = time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)

type env struct {
	t     *testing.T
	log   *embedded.Log
	srv   *httptest.Server
	notOK atomic.Pointer[error]
}

func newEnv(t *testing.T) *env {
	t.Helper()
	l, err := embedded.Open(t.TempDir(), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	e := &env{t: t, log: l}
	s := New(Options{
		Log:      l,
		Gatherer: NewRegistry(),
		Version:  "1.2.3-test",
		Ready: func() error {
			if p := e.notOK.Load(); p != nil {
				return *p
			}
			return nil
		},
	})
	e.srv = httptest.NewServer(s.Handler())
	t.Cleanup(e.srv.Close)
	return e
}

func (e *env) createTopic(name string, parts int32) {
	e.t.Helper()
	if err := e.log.CreateTopic(context.Background(), name, mlog.TopicConfig{Partitions: parts, RetentionAge: -1, RetentionBytes: -1}); err != nil {
		e.t.Fatal(err)
	}
}

// produce appends one record per timestamp offset (in seconds from base)
// to partition p.
func (e *env) produce(topic string, p int32, seconds ...int) {
	e.t.Helper()
	rs := make([]*mlog.Record, len(seconds))
	for i, sec := range seconds {
		rs[i] = &mlog.Record{
			Topic: topic, Partition: p, PartitionSet: true,
			Timestamp: base.Add(time.Duration(sec) * time.Second),
			Key:       fmt.Appendf(nil, "p%d", p),
			Value:     fmt.Appendf(nil, "p%d t%d", p, sec),
		}
	}
	if err := e.log.ProduceSync(context.Background(), rs...); err != nil {
		e.t.Fatal(err)
	}
}

// get fetches path and returns status, body and content type.
func (e *env) get(path string, header ...string) (int, []byte, string) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, b, resp.Header.Get("Content-Type")
}

// getJSON fetches path, expects status code and decodes the body into v.
func (e *env) getJSON(path string, code int, v any) {
	e.t.Helper()
	got, b, ct := e.get(path)
	if got != code {
		e.t.Fatalf("GET %s: status %d, want %d; body %s", path, got, code, b)
	}
	if ct != "application/json" {
		e.t.Fatalf("GET %s: Content-Type %q", path, ct)
	}
	if err := json.Unmarshal(b, v); err != nil {
		e.t.Fatalf("GET %s: %v; body %s", path, err, b)
	}
}

type page struct {
	Records []json.RawMessage `json:"records"`
	Next    map[string]int64  `json:"next"`
}

// recordsPage reads one JSON page and checks that every record is exactly
// what log.AppendRecordJSON writes for the stored record.
func (e *env) recordsPage(topic string, q url.Values) ([]mlog.Record, map[string]int64) {
	e.t.Helper()
	var pg page
	e.getJSON("/api/v1/topics/"+topic+"/records?"+q.Encode(), http.StatusOK, &pg)
	if pg.Records == nil || pg.Next == nil {
		e.t.Fatalf("records or next missing: %+v", pg)
	}
	recs := make([]mlog.Record, len(pg.Records))
	for i, raw := range pg.Records {
		r, err := mlog.ParseRecordJSON(raw)
		if err != nil {
			e.t.Fatal(err)
		}
		stored, err := e.log.Fetch(context.Background(), topic, r.Partition, r.Offset, mlog.FetchOptions{MaxRecords: 1})
		if err != nil || len(stored) == 0 {
			e.t.Fatalf("fetch %d/%d: %v", r.Partition, r.Offset, err)
		}
		if want := mlog.AppendRecordJSON(nil, &stored[0]); !bytes.Equal(raw, want) {
			e.t.Fatalf("record JSON\n%s\nwant\n%s", raw, want)
		}
		recs[i] = r
	}
	return recs, pg.Next
}

func offsets(recs []mlog.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = fmt.Sprintf("%d:%d", r.Partition, r.Offset)
	}
	return out
}

func TestHealthAndReady(t *testing.T) {
	e := newEnv(t)
	var h map[string]string
	e.getJSON("/healthz", http.StatusOK, &h)
	if h["status"] != "ok" || h["version"] != "1.2.3-test" {
		t.Fatalf("healthz = %v", h)
	}
	e.getJSON("/readyz", http.StatusOK, &h)
	if h["status"] != "ready" {
		t.Fatalf("readyz = %v", h)
	}

	err := errors.New("log recovery running")
	e.notOK.Store(&err)
	var ae map[string]any
	e.getJSON("/readyz", http.StatusServiceUnavailable, &ae)
	if ae["error"] != "not ready" || ae["detail"] != "log recovery running" {
		t.Fatalf("readyz while not ready = %v", ae)
	}
	e.notOK.Store(nil)
	e.getJSON("/readyz", http.StatusOK, &h)
}

func TestTopics(t *testing.T) {
	e := newEnv(t)
	var empty struct {
		Topics []topicJSON `json:"topics"`
	}
	e.getJSON("/api/v1/topics", http.StatusOK, &empty)
	if empty.Topics == nil || len(empty.Topics) != 0 {
		t.Fatalf("no topics: got %+v, want an empty list", empty)
	}

	e.createTopic("b.events", 2)
	if err := e.log.CreateTopic(context.Background(), "a.points", mlog.TopicConfig{Partitions: 1, RetentionAge: 48 * time.Hour, RetentionBytes: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	e.produce("b.events", 1, 0, 1, 2)

	var list struct {
		Topics []topicJSON `json:"topics"`
	}
	e.getJSON("/api/v1/topics", http.StatusOK, &list)
	if len(list.Topics) != 2 || list.Topics[0].Name != "a.points" || list.Topics[1].Name != "b.events" {
		t.Fatalf("topics = %+v", list.Topics)
	}
	a := list.Topics[0]
	if a.Config != (topicConfigJSON{Partitions: 1, RetentionAge: "48h0m0s", RetentionBytes: 1 << 30}) {
		t.Fatalf("a.points config = %+v", a.Config)
	}

	var b topicJSON
	e.getJSON("/api/v1/topics/b.events", http.StatusOK, &b)
	if b.Config != (topicConfigJSON{Partitions: 2, RetentionAge: "-1", RetentionBytes: -1}) {
		t.Fatalf("b.events config = %+v", b.Config)
	}
	if len(b.Partitions) != 2 || b.Partitions[0].Partition != 0 || b.Partitions[0].End != 0 {
		t.Fatalf("b.events partitions = %+v", b.Partitions)
	}
	p1 := b.Partitions[1]
	if p1.Partition != 1 || p1.Start != 0 || p1.End != 3 || p1.Bytes <= 0 || p1.Segments != 1 {
		t.Fatalf("b.events partition 1 = %+v", p1)
	}

	// The raw JSON uses the documented snake_case names.
	_, raw, _ := e.get("/api/v1/topics/b.events")
	for _, field := range []string{`"name":`, `"partitions":[`, `"partition":1`, `"start":`, `"end":3`, `"bytes":`, `"segments":1`, `"retention_age":"-1"`, `"retention_bytes":-1`} {
		if !bytes.Contains(raw, []byte(field)) {
			t.Errorf("topic JSON lacks %s: %s", field, raw)
		}
	}
}

func TestErrors(t *testing.T) {
	e := newEnv(t)
	e.createTopic("t", 2)
	cases := []struct {
		path    string
		code    int
		err     string
		mention string
	}{
		{"/api/v1/topics/nope", 404, "unknown topic", "GET /api/v1/topics"},
		{"/api/v1/topics/nope/records", 404, "unknown topic", "GET /api/v1/topics"},
		{"/api/v1/topics/bad$name", 400, "invalid topic name", "not allowed"},
		{"/api/v1/topics/t/records?partition=2", 400, "invalid partition", "0 to 1"},
		{"/api/v1/topics/t/records?partition=-1", 400, "invalid partition", "0 to 1"},
		{"/api/v1/topics/t/records?partition=x", 400, "invalid partition", "0 to 1"},
		{"/api/v1/topics/t/records?from=yesterday", 400, "invalid from", "RFC 3339"},
		{"/api/v1/topics/t/records?from=-5", 400, "invalid from", "offset"},
		{"/api/v1/topics/t/records?from=0:1,7:2", 400, "invalid from", "partitions 0 to 1"},
		{"/api/v1/topics/t/records?to=2026-13-01T00:00:00Z", 400, "invalid to", "RFC 3339"},
		{"/api/v1/topics/t/records?limit=0", 400, "invalid limit", "1 to 10000"},
		{"/api/v1/topics/t/records?limit=10001", 400, "invalid limit", "1 to 10000"},
		{"/api/v1/topics/t/records?limit=many", 400, "invalid limit", "1 to 10000"},
		{"/api/v1/topics/t/records?format=xml", 400, "invalid format", "ndjson"},
		{"/api/v2/nothing", 404, "not found", "/api/v1"},
	}
	for _, c := range cases {
		var ae struct {
			Error  string `json:"error"`
			Detail string `json:"detail"`
		}
		e.getJSON(c.path, c.code, &ae)
		if ae.Error != c.err || !strings.Contains(ae.Detail, c.mention) {
			t.Errorf("GET %s = %+v, want error %q with detail mentioning %q", c.path, ae, c.err, c.mention)
		}
	}

	resp, err := e.srv.Client().Post(e.srv.URL+"/api/v1/topics", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || !strings.Contains(resp.Header.Get("Allow"), "GET") || !bytes.Contains(b, []byte(`"error":"method not allowed"`)) {
		t.Fatalf("POST /api/v1/topics: %d Allow %q %s", resp.StatusCode, resp.Header.Get("Allow"), b)
	}
}

func TestRecordsByOffset(t *testing.T) {
	e := newEnv(t)
	e.createTopic("t", 1)
	e.produce("t", 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9)

	recs, next := e.recordsPage("t", url.Values{"from": {"3"}, "to": {"7"}})
	if got := offsets(recs); !slices.Equal(got, []string{"0:3", "0:4", "0:5", "0:6"}) {
		t.Fatalf("from=3 to=7: %v", got)
	}
	if next["0"] != 7 {
		t.Fatalf("next = %v, want 0:7", next)
	}

	// Defaults: whole partition; to beyond the end stops at the end.
	recs, next = e.recordsPage("t", url.Values{"partition": {"0"}, "to": {"1000"}})
	if len(recs) != 10 || next["0"] != 10 {
		t.Fatalf("all: %v next %v", offsets(recs), next)
	}

	// Past the end: nothing, and continue where asked.
	recs, next = e.recordsPage("t", url.Values{"from": {"50"}})
	if len(recs) != 0 || next["0"] != 50 {
		t.Fatalf("from=50: %v next %v", offsets(recs), next)
	}
}

func TestRecordsByTime(t *testing.T) {
	e := newEnv(t)
	e.createTopic("t", 2)
	e.produce("t", 0, 0, 10, 20, 30, 40)
	e.produce("t", 1, 5, 15, 25, 35)

	from := base.Add(10 * time.Second).Format(time.RFC3339)
	to := base.Add(30 * time.Second).In(time.FixedZone("", 3600)).Format(time.RFC3339Nano) // +01:00
	recs, next := e.recordsPage("t", url.Values{"from": {from}, "to": {to}})
	var secs []int
	for _, r := range recs {
		secs = append(secs, int(r.Timestamp.Sub(base)/time.Second))
	}
	if !slices.Equal(secs, []int{10, 15, 20, 25}) {
		t.Fatalf("from %s to %s: seconds %v", from, to, secs)
	}
	if next["0"] != 3 || next["1"] != 3 {
		t.Fatalf("next = %v, want 0:3 1:3", next)
	}

	// An unescaped '+' arrives as a space and still works.
	_, body, _ := e.get("/api/v1/topics/t/records?partition=1&from=" + base.Add(20*time.Second).In(time.FixedZone("", 3600)).Format(time.RFC3339))
	if !bytes.Contains(body, []byte(`"offset":2`)) || bytes.Contains(body, []byte(`"offset":1,`)) {
		t.Fatalf("time with unescaped +01:00: %s", body)
	}

	// After the last record: nothing, next is the end.
	recs, next = e.recordsPage("t", url.Values{"from": {base.Add(time.Hour).Format(time.RFC3339)}})
	if len(recs) != 0 || next["0"] != 5 || next["1"] != 4 {
		t.Fatalf("from after last: %v next %v", offsets(recs), next)
	}
}

func TestRecordsMergeOrder(t *testing.T) {
	e := newEnv(t)
	e.createTopic("t", 3)
	e.produce("t", 0, 0, 3, 3, 9)
	e.produce("t", 1, 1, 3, 4)
	// Out-of-order timestamps within a partition: offset order still rules
	// inside it.
	e.produce("t", 2, 3, 2, 8)

	recs, next := e.recordsPage("t", nil)
	want := []string{"0:0", "1:0", "0:1", "0:2", "1:1", "2:0", "2:1", "1:2", "2:2", "0:3"}
	if got := offsets(recs); !slices.Equal(got, want) {
		t.Fatalf("merge order\n got %v\nwant %v", got, want)
	}
	if next["0"] != 4 || next["1"] != 3 || next["2"] != 3 {
		t.Fatalf("next = %v", next)
	}
}

func TestRecordsPaging(t *testing.T) {
	e := newEnv(t)
	e.createTopic("t", 3)
	rng := rand.New(rand.NewPCG(1, 2))
	for p := range int32(3) {
		secs := make([]int, 40+int(p)*7)
		for i := range secs {
			secs[i] = rng.IntN(60)
		}
		slices.Sort(secs)
		e.produce("t", p, secs...)
	}
	all, _ := e.recordsPage("t", url.Values{"limit": {"10000"}})
	if len(all) != 40+47+54 {
		t.Fatalf("%d records", len(all))
	}

	for _, partition := range []string{"", "1"} {
		var got []mlog.Record
		q := url.Values{"limit": {"7"}}
		if partition != "" {
			q.Set("partition", partition)
		}
		for pages := 0; ; pages++ {
			if pages > 100 {
				t.Fatal("paging does not end")
			}
			recs, next := e.recordsPage("t", q)
			got = append(got, recs...)
			if len(recs) < 7 {
				break
			}
			var cursor []string
			for p, off := range next {
				cursor = append(cursor, p+":"+strconv.FormatInt(off, 10))
			}
			q.Set("from", strings.Join(cursor, ","))
		}
		want := all
		if partition == "1" {
			want = slices.DeleteFunc(slices.Clone(all), func(r mlog.Record) bool { return r.Partition != 1 })
		}
		if g, w := offsets(got), offsets(want); !slices.Equal(g, w) {
			t.Fatalf("partition %q: pages gave\n%v\nwant\n%v", partition, g, w)
		}
	}
}

func TestRecordsBelowStart(t *testing.T) {
	e := newEnv(t)
	e.createTopic("t", 2)
	e.produce("t", 0, 0, 1, 2, 3, 4, 5)
	e.produce("t", 1, 0, 1, 2)
	if err := e.log.DeleteRecordsBefore(context.Background(), "t", 0, 4); err != nil {
		t.Fatal(err)
	}
	recs, next := e.recordsPage("t", url.Values{"partition": {"0"}, "from": {"1"}, "limit": {"1"}})
	if got := offsets(recs); !slices.Equal(got, []string{"0:4"}) || next["0"] != 5 {
		t.Fatalf("from below start: %v next %v", got, next)
	}
	recs, next = e.recordsPage("t", url.Values{"from": {"0:0,1:1"}, "to": {"0:3"}})
	if got := offsets(recs); !slices.Equal(got, []string{"1:1", "1:2"}) || next["0"] != 4 || next["1"] != 3 {
		t.Fatalf("to below start: %v next %v", got, next)
	}
}

func TestRecordsNDJSON(t *testing.T) {
	e := newEnv(t)
	e.createTopic("t", 2)
	e.produce("t", 0, 0, 2, 4)
	e.produce("t", 1, 1, 3)
	for _, c := range []struct {
		query  string
		header []string
	}{
		{"?format=ndjson", nil},
		{"", []string{"Accept", "application/json;q=0.5, application/x-ndjson"}},
	} {
		code, body, ct := e.get("/api/v1/topics/t/records"+c.query, c.header...)
		if code != http.StatusOK || ct != "application/x-ndjson" {
			t.Fatalf("%s %v: %d %q", c.query, c.header, code, ct)
		}
		sc := bufio.NewScanner(bytes.NewReader(body))
		var got []string
		for sc.Scan() {
			r, err := mlog.ParseRecordJSON(sc.Bytes())
			if err != nil {
				t.Fatalf("line %q: %v", sc.Text(), err)
			}
			got = append(got, string(r.Value))
		}
		if want := []string{"p0 t0", "p1 t1", "p0 t2", "p1 t3", "p0 t4"}; !slices.Equal(got, want) {
			t.Fatalf("ndjson values %v, want %v", got, want)
		}
	}
	// format=json wins over Accept.
	if _, _, ct := e.get("/api/v1/topics/t/records?format=json", "Accept", "application/x-ndjson"); ct != "application/json" {
		t.Fatalf("format=json with ndjson Accept: %q", ct)
	}
}

// A long ndjson stream is flushed in chunks and stops when the client
// leaves.
func TestRecordsNDJSONStreamStops(t *testing.T) {
	e := newEnv(t)
	e.createTopic("t", 1)
	big := bytes.Repeat([]byte("x"), 4<<10)
	rs := make([]*mlog.Record, 2000)
	for i := range rs {
		rs[i] = &mlog.Record{Topic: "t", Value: big}
	}
	if err := e.log.ProduceSync(context.Background(), rs...); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/api/v1/topics/t/records?format=ndjson&limit=2000", nil)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	// The first line arrives before the response is complete.
	line, err := bufio.NewReader(resp.Body).ReadBytes('\n')
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mlog.ParseRecordJSON(line); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()

	// Served directly with a canceled context, the handler writes nothing.
	rec := httptest.NewRecorder()
	e.srvHandler().ServeHTTP(rec, httptest.NewRequestWithContext(ctx, http.MethodGet, "/api/v1/topics/t/records?format=ndjson", nil))
	if rec.Body.Len() != 0 {
		t.Fatalf("canceled request wrote %d bytes", rec.Body.Len())
	}
}

func (e *env) srvHandler() http.Handler { return e.srv.Config.Handler }

func TestMetrics(t *testing.T) {
	e := newEnv(t)
	e.createTopic("t", 1)
	e.get("/healthz")
	e.get("/api/v1/topics/t")
	e.get("/api/v1/topics/nope")
	e.get("/no/such/path")
	_, body, ct := e.get("/metrics")
	if !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("metrics Content-Type %q", ct)
	}
	for _, want := range []string{
		`millstream_http_requests_total{code="200",route="GET /healthz"} 1`,
		`millstream_http_requests_total{code="200",route="GET /api/v1/topics/{topic}"} 1`,
		`millstream_http_requests_total{code="404",route="GET /api/v1/topics/{topic}"} 1`,
		`millstream_http_requests_total{code="404",route="unmatched"} 1`,
		`millstream_http_request_duration_seconds_count{route="GET /healthz"} 1`,
		"go_goroutines ",
		"process_start_time_seconds ",
		`go_sched_latencies_seconds_bucket{le="+Inf"} `,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(string(body), "nope") || strings.Contains(string(body), "/no/such") {
		t.Error("/metrics has raw paths as labels")
	}
}

func TestOwnMetricsBesideForeignGatherer(t *testing.T) {
	l, err := embedded.Open(t.TempDir(), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	foreign := prometheus.NewRegistry()
	foreign.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "foreign_total", Help: "x"}))
	h := New(Options{Log: l, Gatherer: prometheus.Gatherers{foreign}}).Handler()
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/healthz", nil))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, want := range []string{"foreign_total 0", `millstream_http_requests_total{code="200",route="GET /healthz"} 1`} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// Two servers on one registry share the HTTP metrics.
	reg := NewRegistry()
	New(Options{Log: l, Gatherer: reg})
	New(Options{Log: l, Gatherer: reg})
}

func TestServeGracefulShutdown(t *testing.T) {
	l, err := embedded.Open(t.TempDir(), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	inReady := make(chan struct{}, 1)
	release := make(chan struct{})
	var slow atomic.Bool
	s := New(Options{Log: l, Ready: func() error {
		if slow.Load() {
			inReady <- struct{}{}
			<-release
		}
		return nil
	}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	base := "http://" + ln.Addr().String()

	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %d", resp.StatusCode)
	}

	// A request in flight at shutdown completes.
	slow.Store(true)
	inflight := make(chan int, 1)
	go func() {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			inflight <- -1
			return
		}
		resp.Body.Close()
		inflight <- resp.StatusCode
	}()
	<-inReady
	cancel()
	select {
	case err := <-done:
		t.Fatalf("Serve returned %v with a request in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if code := <-inflight; code != http.StatusOK {
		t.Fatalf("in-flight request got %d", code)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after shutdown")
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Fatal("listener still accepts after Serve returned")
	}
}
