package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
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
