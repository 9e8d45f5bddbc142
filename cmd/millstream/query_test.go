package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"math"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/millstream/millstream/api"
	"github.com/millstream/millstream/historian"
	"github.com/millstream/millstream/log/embedded"
	"github.com/millstream/millstream/uns"
)

// runQuery runs the built binary's query command.
func runQuery(t *testing.T, wantCode int, args ...string) (string, string) {
	t.Helper()
	cmd := exec.Command(millstreamBin(t), append([]string{"query"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if code != wantCode {
		t.Fatalf("millstream query %v: exit %d, want %d\nstdout: %s\nstderr: %s", args, code, wantCode, out.String(), errb.String())
	}
	return out.String(), errb.String()
}

// TestQueryCommand queries a historian through a server's API and from
// the data dir; both must print the same, in CSV and JSON.
func TestQueryCommand(t *testing.T) {
	dataDir := t.TempDir()
	db, err := historian.Open(historian.Options{Dir: filepath.Join(dataDir, "historian")})
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	for i := range 120 { // 2 minutes at 1 Hz
		at := base.Add(time.Duration(i) * time.Second)
		for _, p := range []uns.Point{
			{Path: "acme/p1/press/temp", Time: at, Value: uns.FloatValue(float64(i) / 2)},
			{Path: "acme/p1/oven/temp", Time: at, Value: uns.IntValue(int64(200 + i))},
			{Path: "acme/p1/oven/state", Time: at, Value: uns.StringValue("heating, \"fast\"")},
		} {
			if err := db.AppendPoint(&p); err != nil {
				t.Fatal(err)
			}
		}
	}
	nan := uns.Point{Path: "acme/p1/press/temp", Time: base.Add(-time.Second), Value: uns.FloatValue(math.NaN()), Quality: uns.Bad}
	if err := db.AppendPoint(&nan); err != nil {
		t.Fatal(err)
	}
	if err := db.Flush(nil); err != nil {
		t.Fatal(err)
	}
	l, err := embedded.Open(t.TempDir(), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	srv := httptest.NewServer(api.New(api.Options{Log: l, Gatherer: api.NewRegistry(), History: db}).Handler())
	defer srv.Close()

	from, to := base.Add(-time.Second).Format(time.RFC3339), base.Add(2*time.Second).Format(time.RFC3339)
	rawCSV, _ := runQuery(t, 0, "acme/p1/+/temp", "--from", from, "--to", to, "--server", srv.URL)
	rows, err := csv.NewReader(strings.NewReader(rawCSV)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"series", "time", "value", "quality"},
		{"acme/p1/oven/temp", "2026-03-01T08:00:00.000Z", "200", ""},
		{"acme/p1/oven/temp", "2026-03-01T08:00:01.000Z", "201", ""},
		{"acme/p1/oven/temp", "2026-03-01T08:00:02.000Z", "202", ""},
		{"acme/p1/press/temp", "2026-03-01T07:59:59.000Z", "NaN", "bad"},
		{"acme/p1/press/temp", "2026-03-01T08:00:00.000Z", "0", ""},
		{"acme/p1/press/temp", "2026-03-01T08:00:01.000Z", "0.5", ""},
		{"acme/p1/press/temp", "2026-03-01T08:00:02.000Z", "1", ""},
	}
	if len(rows) != len(want) {
		t.Fatalf("csv:\n%s", rawCSV)
	}
	for i := range want {
		if strings.Join(rows[i], "|") != strings.Join(want[i], "|") {
			t.Fatalf("row %d = %v, want %v\n%s", i, rows[i], want[i], rawCSV)
		}
	}
	// Strings with commas and quotes survive CSV; the pattern may follow
	// the flags.
	stateCSV, _ := runQuery(t, 0, "--from", from, "--to", base.Format(time.RFC3339), "--server", srv.URL, "acme/p1/oven/state")
	if rows, err := csv.NewReader(strings.NewReader(stateCSV)).ReadAll(); err != nil || len(rows) != 2 || rows[1][2] != `heating, "fast"` {
		t.Fatalf("state csv %q: %v", stateCSV, err)
	}
	aggArgs := []string{"acme/p1/#", "--from", base.Format(time.RFC3339), "--to", base.Add(119 * time.Second).Format(time.RFC3339),
		"--step", "1m", "--agg", "max", "--format", "json"}
	aggJSON, _ := runQuery(t, 0, append(aggArgs, "--server", srv.URL)...)
	var h struct {
		Agg    string
		Series []struct {
			Name   string
			Points [][2]float64
		}
	}
	if err := json.Unmarshal([]byte(aggJSON), &h); err != nil || h.Agg != "max" || len(h.Series) != 3 {
		t.Fatalf("json %s: %v", aggJSON, err)
	}
	// Series sorted by name: oven/state (no numeric values), oven/temp,
	// press/temp.
	if p := h.Series[1].Points; len(p) != 2 || p[0][1] != 259 || p[1][1] != 319 || p[1][0] != float64(base.Add(time.Minute).UnixMilli()) {
		t.Fatalf("oven max %v", p)
	}
	if len(h.Series[0].Points) != 0 {
		t.Fatalf("string series aggregated: %v", h.Series[0].Points)
	}

	// The data dir is locked while the server has the historian open.
	_, stderr := runQuery(t, 1, "acme/#", "--data-dir", dataDir)
	if !strings.Contains(stderr, "in use by another process") {
		t.Fatalf("locked data dir: %s", stderr)
	}
	srv.Close()
	db.Close()
	dirCSV, _ := runQuery(t, 0, "acme/p1/+/temp", "--from", from, "--to", to, "--data-dir", dataDir)
	if dirCSV != rawCSV {
		t.Fatalf("--data-dir printed\n%s\n--server printed\n%s", dirCSV, rawCSV)
	}
	dirJSON, _ := runQuery(t, 0, append(aggArgs, "--data-dir", dataDir)...)
	if dirJSON != aggJSON {
		t.Fatalf("--data-dir printed\n%s\n--server printed\n%s", dirJSON, aggJSON)
	}
}

func TestQueryCommandErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "pattern is required"},
		{[]string{"a/#", "--format", "xml"}, 2, "--format"},
		{[]string{"a/#", "--server", "http://x", "--data-dir", "d"}, 2, "not both"},
		{[]string{"a/#", "--agg", "avg"}, 2, "agg needs a step"},
		{[]string{"a/#", "--from", "yesterday"}, 2, "from:"},
		{[]string{"a/#/b"}, 2, "series:"},
		{[]string{"a/#", "--data-dir", "/nonexistent"}, 1, "no historian at"},
		{[]string{"a/#", "--server", "http://127.0.0.1:1"}, 1, "server"},
		{[]string{"a/#", "b/#"}, 2, "unexpected argument"},
	} {
		_, stderr := runQuery(t, c.code, c.args...)
		if !strings.Contains(stderr, c.want) {
			t.Errorf("query %v: stderr %q, want %q", c.args, stderr, c.want)
		}
	}
}
