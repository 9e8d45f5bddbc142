package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/millstream/millstream/api"
	"github.com/millstream/millstream/config"
	"github.com/millstream/millstream/historian"
	"github.com/millstream/millstream/node"
)

const queryUsage = `usage: millstream query SERIES-PATTERN [--from T] [--to T] [--step D --agg A] [--format csv|json] [--server URL | --data-dir DIR]

SERIES-PATTERN is a UNS path or pattern: + matches one level, # the rest
(e.g. 'acme/plant1/+/temperature', 'acme/plant1/#').
Times are RFC 3339, ms since the epoch, now, or relative: -1h, now-15m.
Without --step the raw points are printed; with it one value per step, by
--agg: ` + "min, max, avg, twavg, first, last, count, sum, stddev, delta, rate, previous, linear" + `.
`

func cmdQuery(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("query", stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, queryUsage)
		fs.PrintDefaults()
	}
	from := fs.String("from", "-1h", "start of the range (inclusive)")
	to := fs.String("to", "now", "end of the range (inclusive)")
	step := fs.String("step", "", "aggregate into buckets of this width (e.g. 1m, 1h); default: raw points")
	agg := fs.String("agg", "", "aggregate with --step (default avg)")
	format := fs.String("format", "csv", "output: csv (series,time,value[,quality]) or json (as GET /api/v1/history)")
	limit := fs.Int("limit", 0, "at most this many raw points per series (default: the server's, 100000)")
	server := fs.String("server", "", "query a running server's HTTP API, e.g. http://127.0.0.1:8080")
	dataDir := fs.String("data-dir", "", "read a stopped server's data dir (default: data_dir of --config, else ./data)")
	cfgFile := fs.String("config", "", "the server's configuration file, for its data_dir and historian settings (the Parquet tier)")
	// The pattern may come before or after the flags.
	var pattern string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		pattern, args = args[0], args[1:]
	}
	if err := parseFlags(fs, args, true); err != nil {
		return err
	}
	if pattern == "" && fs.NArg() > 0 {
		pattern = fs.Arg(0)
		if err := parseFlags(fs, fs.Args()[1:], false); err != nil {
			return err
		}
	} else if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if pattern == "" {
		return fmt.Errorf("%w: a series pattern is required, e.g. millstream query 'acme/+/temperature' --from -1h", errUsage)
	}
	if *format != "csv" && *format != "json" {
		return fmt.Errorf("%w: --format %q: use csv or json", errUsage, *format)
	}
	if *server != "" && (*dataDir != "" || *cfgFile != "") {
		return fmt.Errorf("%w: use either --server or --data-dir/--config, not both", errUsage)
	}
	params := url.Values{"series": {pattern}, "from": {*from}, "to": {*to}}
	if *step != "" {
		params.Set("step", *step)
	}
	if *agg != "" {
		params.Set("agg", *agg)
	}
	if *limit > 0 {
		params.Set("limit", strconv.Itoa(*limit))
	}
	// Check the query here too, so a mistake gets the same answer offline
	// and online, before any server is contacted.
	q, err := api.ParseHistoryQuery(params, time.Now())
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	var body []byte
	if *server != "" {
		body, err = queryServer(ctx, *server, params)
	} else {
		var cfg config.Config
		if cfg, err = loadConfig(*cfgFile); err != nil {
			return err
		}
		if *dataDir != "" {
			cfg.SetDataDir(*dataDir)
		}
		body, err = queryDataDir(cfg, q)
	}
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(stdout, 256<<10)
	defer w.Flush()
	if *format == "json" {
		if _, err := w.Write(body); err != nil {
			return err
		}
		return w.Flush()
	}
	if err := writeHistoryCSV(w, body); err != nil {
		return err
	}
	return w.Flush()
}

// queryDataDir answers from the historian directory of a stopped server.
// It sees what the server flushed: everything, after a clean stop.
func queryDataDir(cfg config.Config, q historian.Query) ([]byte, error) {
	opts := node.HistorianOptions(cfg)
	dir := opts.Dir
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("no historian at %s: %w (is --data-dir the server's data_dir?)", dir, err)
	}
	// Read-only use: never export, only read what the tier holds.
	opts.Tier.After = 0
	db, err := historian.Open(opts)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	res, err := db.Query(q)
	if err != nil {
		return nil, err
	}
	return api.MarshalHistory(q, res), nil
}

func queryServer(ctx context.Context, server string, params url.Values) ([]byte, error) {
	u, err := url.Parse(strings.TrimRight(server, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: --server %q: want a URL like http://127.0.0.1:8080", errUsage, server)
	}
	u.Path += "/api/v1/history"
	u.RawQuery = params.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Timeout: 5 * time.Minute}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("server %s: %w", server, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<30))
	if err != nil {
		return nil, fmt.Errorf("server %s: %w", server, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error  string `json:"error"`
			Detail any    `json:"detail"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			if e.Detail != nil {
				return nil, fmt.Errorf("server: %s: %v", e.Error, e.Detail)
			}
			return nil, fmt.Errorf("server: %s", e.Error)
		}
		return nil, fmt.Errorf("server %s: %s: %s", server, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// writeHistoryCSV prints a /api/v1/history body as CSV: one row per point,
// series,time,value,quality with times in RFC 3339 (UTC, ms) and the
// quality column empty for good points.
func writeHistoryCSV(w io.Writer, body []byte) error {
	var h struct {
		Series []struct {
			Name   string              `json:"name"`
			Points [][]json.RawMessage `json:"points"`
		} `json:"series"`
	}
	if err := json.Unmarshal(body, &h); err != nil {
		return fmt.Errorf("reading the history response: %w", err)
	}
	cw := csv.NewWriter(w)
	if err := cw.Write([]string{"series", "time", "value", "quality"}); err != nil {
		return err
	}
	for _, s := range h.Series {
		for _, p := range s.Points {
			if len(p) < 2 {
				return errors.New("reading the history response: a point without a value")
			}
			ms, err := strconv.ParseInt(string(p[0]), 10, 64)
			if err != nil {
				return fmt.Errorf("reading the history response: time %s: %w", p[0], err)
			}
			row := []string{s.Name, time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z07:00"), csvValue(p[1]), ""}
			if len(p) > 2 {
				_ = json.Unmarshal(p[2], &row[3])
			}
			if err := cw.Write(row); err != nil {
				return err
			}
		}
	}
	cw.Flush()
	return cw.Error()
}

// csvValue is a JSON value as CSV text: strings unquoted, null empty,
// numbers and booleans as written.
func csvValue(raw json.RawMessage) string {
	var s string
	if len(raw) > 0 && raw[0] == '"' && json.Unmarshal(raw, &s) == nil {
		return s
	}
	if string(raw) == "null" {
		return ""
	}
	return string(raw)
}
