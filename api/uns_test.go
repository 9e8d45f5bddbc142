package api

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/millstream/millstream/log/embedded"
	"github.com/millstream/millstream/uns"
)

func TestBrowseUNS(t *testing.T) {
	tree := uns.NewTree()
	at := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	tree.Update(uns.Point{Path: "acme/p1/press7/temp", Time: at, Value: uns.FloatValue(21.5), Unit: "°C", Source: "mqtt:acme/p1/press7"})
	tree.Update(uns.Point{Path: "acme/p1/press7/state", Time: at, Value: uns.StringValue("RUN")})
	s := New(Options{Log: openLog(t), Namespace: tree})
	h := s.Handler()

	get := func(url string) (int, map[string]any) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, url, nil))
		var body map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("%s: %v: %s", url, err, rec.Body)
		}
		return rec.Code, body
	}

	code, body := get("/api/v1/uns?path=acme/p1/press7")
	if code != 200 {
		t.Fatalf("status %d: %v", code, body)
	}
	children := body["children"].([]any)
	if len(children) != 2 || body["point"] != nil {
		t.Fatalf("press7: %v", body)
	}
	temp := children[1].(map[string]any)
	pt := temp["point"].(map[string]any)
	if temp["path"] != "acme/p1/press7/temp" || pt["value"] != 21.5 || pt["unit"] != "°C" || pt["type"] != "float" || pt["quality"] != "good" {
		t.Errorf("temp child: %v", temp)
	}
	if code, body := get("/api/v1/uns"); code != 200 || len(body["children"].([]any)) != 1 {
		t.Errorf("root: %d %v", code, body)
	}
	if code, body := get("/api/v1/uns?path=acme/p1/press7/temp"); code != 200 || body["point"] == nil {
		t.Errorf("leaf: %d %v", code, body)
	}
	if code, body := get("/api/v1/uns?path=acme/nowhere"); code != 404 || body["error"] == nil {
		t.Errorf("unknown path: %d %v", code, body)
	}
	if code, _ := get("/api/v1/uns?path=acme/%2B/x"); code != 400 {
		t.Errorf("wildcard path: %d", code)
	}
	noNS := New(Options{Log: openLog(t)}).Handler()
	rec := httptest.NewRecorder()
	noNS.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/uns", nil))
	if rec.Code != 404 {
		t.Errorf("without a namespace: %d", rec.Code)
	}
}

func openLog(t *testing.T) *embedded.Log {
	t.Helper()
	l, err := embedded.Open(t.TempDir(), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestLiveUNS(t *testing.T) {
	live := uns.NewLive()
	srv := httptest.NewServer(New(Options{Log: openLog(t), Live: live}).Handler())
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/api/v1/uns/live?pattern=acme/%2B/press7/%23")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	sc := bufio.NewScanner(resp.Body)
	if !sc.Scan() || !strings.HasPrefix(sc.Text(), ": subscribed to acme/+/press7/#") {
		t.Fatalf("first line %q", sc.Text())
	}
	for live.Subscribers() == 0 {
		time.Sleep(time.Millisecond)
	}
	at := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	live.Publish([]uns.Point{
		{Path: "acme/p1/press7/temp", Time: at, Value: uns.FloatValue(21.5)},
		{Path: "acme/p1/oven/temp", Time: at, Value: uns.FloatValue(180)},
		{Path: "acme/p2/press7/count", Time: at, Value: uns.IntValue(7)},
	})
	var got []string
	for len(got) < 2 && sc.Scan() {
		if line, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			p, err := uns.ParsePointJSON([]byte(line))
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, p.Path+"="+p.Value.String())
		}
	}
	if strings.Join(got, " ") != "acme/p1/press7/temp=21.5 acme/p2/press7/count=7" {
		t.Errorf("events %v", got)
	}

	bad, err := http.Get(srv.URL + "/api/v1/uns/live?pattern=a/%23/b")
	if err != nil {
		t.Fatal(err)
	}
	bad.Body.Close()
	if bad.StatusCode != 400 {
		t.Errorf("bad pattern: %d", bad.StatusCode)
	}
}

// TestServeEndsLiveStreams: a graceful shutdown ends open event streams
// instead of waiting for them until its timeout.
func TestServeEndsLiveStreams(t *testing.T) {
	s := New(Options{Log: openLog(t), Live: uns.NewLive()})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ctx, ln) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/api/v1/uns/live")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if !bufio.NewScanner(resp.Body).Scan() {
		t.Fatal("no first line")
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil { // a stream still open at the grace period's end is an error
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Serve did not return: the live stream held the shutdown")
	}
}
