package main

import (
	"bufio"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	mlog "github.com/millstream/millstream/log"
	"github.com/millstream/millstream/log/embedded"
	"github.com/millstream/millstream/node"
)

// replaySource reads pages of one partition, from a data dir or a server.
type replaySource interface {
	partitions(ctx context.Context, topic string) ([]int32, error)
	// offsetFor resolves a --from/--to bound to an offset of one partition.
	offsetForTime(ctx context.Context, topic string, p int32, t time.Time) (int64, error)
	fetch(ctx context.Context, topic string, p int32, offset int64, max int) ([]mlog.Record, error)
	close() error
}

// bound is a --from or --to value: an offset or a time.
type bound struct {
	set    bool
	offset int64
	time   time.Time
	isTime bool
}

func parseBound(s string) (bound, error) {
	if s == "" {
		return bound{}, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 {
			return bound{}, fmt.Errorf("offset %d is negative", n)
		}
		return bound{set: true, offset: n}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return bound{}, fmt.Errorf("%q is neither an offset nor an RFC 3339 time (e.g. 2026-11-22T08:00:00Z)", s)
	}
	return bound{set: true, time: t, isTime: true}, nil
}

func cmdReplay(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("replay", stderr)
	topic := fs.String("topic", "", "topic to replay (required)")
	fromS := fs.String("from", "", "first offset, or RFC 3339 time (default: the start of the log)")
	toS := fs.String("to", "", "stop before this offset or time (default: the current end)")
	partition := fs.Int("partition", -1, "replay one partition only (default: all, merged by timestamp)")
	limit := fs.Int64("limit", 0, "stop after this many records (0: no limit)")
	dataDir := fs.String("data-dir", "", "read a stopped server's data dir (default ./data)")
	server := fs.String("server", "", "read from a running server's HTTP API instead, e.g. http://127.0.0.1:8080")
	progress := fs.Bool("progress", isTerminal(os.Stderr), "report progress on stderr")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if *topic == "" {
		return fmt.Errorf("%w: --topic is required (list topics with: curl http://127.0.0.1:8080/api/v1/topics)", errUsage)
	}
	if *server != "" && *dataDir != "" {
		return fmt.Errorf("%w: use either --data-dir or --server, not both", errUsage)
	}
	from, err := parseBound(*fromS)
	if err != nil {
		return fmt.Errorf("%w: --from: %v", errUsage, err)
	}
	to, err := parseBound(*toS)
	if err != nil {
		return fmt.Errorf("%w: --to: %v", errUsage, err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	var src replaySource
	if *server != "" {
		src, err = newServerSource(*server)
	} else {
		dir := *dataDir
		if dir == "" {
			dir = "./data"
		}
		src, err = newDirSource(dir)
	}
	if err != nil {
		return err
	}
	defer src.close()

	parts, err := src.partitions(ctx, *topic)
	if err != nil {
		return err
	}
	if *partition >= 0 {
		found := false
		for _, p := range parts {
			if p == int32(*partition) {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("topic %s has no partition %d (it has %d)", *topic, *partition, len(parts))
		}
		parts = []int32{int32(*partition)}
	}

	w := bufio.NewWriterSize(stdout, 256<<10)
	defer w.Flush()
	m := &merger{src: src, topic: *topic, to: to}
	for _, p := range parts {
		start := int64(0)
		if from.isTime {
			if start, err = src.offsetForTime(ctx, *topic, p, from.time); err != nil {
				return err
			}
		} else if from.set {
			start = from.offset
		}
		if err := m.add(ctx, p, start); err != nil {
			return err
		}
	}

	var n int64
	var buf []byte
	began := time.Now()
	lastReport := began
	for *limit == 0 || n < *limit {
		r, ok, err := m.next(ctx)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		buf = mlog.AppendRecordJSON(buf[:0], &r)
		buf = append(buf, '\n')
		if _, err := w.Write(buf); err != nil {
			return err
		}
		n++
		if *progress && time.Since(lastReport) > 2*time.Second {
			lastReport = time.Now()
			fmt.Fprintf(stderr, "replay: %d records, %.0f records/s, at %s\n",
				n, float64(n)/time.Since(began).Seconds(), r.Timestamp.UTC().Format(time.RFC3339))
		}
	}
	if *progress {
		fmt.Fprintf(stderr, "replay: done, %d records in %s\n", n, time.Since(began).Round(time.Millisecond))
	}
	return w.Flush()
}

// merger interleaves partitions by record timestamp (offset order within a
// partition), reading each a page at a time so memory stays bounded.
type merger struct {
	src   replaySource
	topic string
	to    bound
	h     cursorHeap
}

type cursor struct {
	partition int32
	next      int64 // offset of the next page
	page      []mlog.Record
	done      bool
}

const replayPage = 1000

func (m *merger) add(ctx context.Context, p int32, offset int64) error {
	c := &cursor{partition: p, next: offset}
	if err := m.fill(ctx, c); err != nil {
		return err
	}
	if len(c.page) > 0 {
		heap.Push(&m.h, c)
	}
	return nil
}

func (m *merger) fill(ctx context.Context, c *cursor) error {
	if c.done {
		return nil
	}
	recs, err := m.src.fetch(ctx, m.topic, c.partition, c.next, replayPage)
	if err != nil {
		return err
	}
	// Stop at --to: by offset or by time.
	for i, r := range recs {
		if m.to.set && ((m.to.isTime && !r.Timestamp.Before(m.to.time)) || (!m.to.isTime && r.Offset >= m.to.offset)) {
			recs = recs[:i]
			c.done = true
			break
		}
	}
	if len(recs) == 0 {
		c.done = true
	} else {
		c.next = recs[len(recs)-1].Offset + 1
	}
	c.page = recs
	return nil
}

func (m *merger) next(ctx context.Context) (mlog.Record, bool, error) {
	if m.h.Len() == 0 {
		return mlog.Record{}, false, nil
	}
	c := m.h[0]
	r := c.page[0]
	c.page = c.page[1:]
	if len(c.page) == 0 {
		if err := m.fill(ctx, c); err != nil {
			return r, false, err
		}
	}
	if len(c.page) == 0 {
		heap.Pop(&m.h)
	} else {
		heap.Fix(&m.h, 0)
	}
	return r, true, nil
}

type cursorHeap []*cursor

func (h cursorHeap) Len() int { return len(h) }
func (h cursorHeap) Less(i, j int) bool {
	a, b := h[i].page[0], h[j].page[0]
	if !a.Timestamp.Equal(b.Timestamp) {
		return a.Timestamp.Before(b.Timestamp)
	}
	return a.Partition < b.Partition
}
func (h cursorHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *cursorHeap) Push(x any)   { *h = append(*h, x.(*cursor)) }
func (h *cursorHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	*h = old[:len(old)-1]
	return c
}

// dirSource reads a stopped server's data dir directly.
type dirSource struct{ l *embedded.Log }

func newDirSource(dataDir string) (*dirSource, error) {
	logDir := filepath.Join(dataDir, "log")
	if _, err := os.Stat(logDir); err != nil {
		return nil, fmt.Errorf("no log at %s: %w (is --data-dir the server's data_dir?)", logDir, err)
	}
	cfg, err := loadConfig("")
	if err != nil {
		return nil, err
	}
	opts := node.LogOptions(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	l, err := embedded.Open(logDir, opts)
	if err != nil {
		return nil, fmt.Errorf("%w\n(if a server is running on this data dir, read through it: --server http://127.0.0.1:8080)", err)
	}
	return &dirSource{l: l}, nil
}

func (s *dirSource) partitions(ctx context.Context, topic string) ([]int32, error) {
	info, err := s.l.Topic(ctx, topic)
	if err != nil {
		if errors.Is(err, mlog.ErrUnknownTopic) {
			return nil, unknownTopic(topic, s.topicNames(ctx))
		}
		return nil, err
	}
	ps := make([]int32, len(info.Partitions))
	for i, p := range info.Partitions {
		ps[i] = p.Partition
	}
	return ps, nil
}

func (s *dirSource) topicNames(ctx context.Context) []string {
	ts, _ := s.l.Topics(ctx)
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = t.Name
	}
	return names
}

func unknownTopic(topic string, have []string) error {
	return fmt.Errorf("topic %q does not exist; topics: %s", topic, strings.Join(have, ", "))
}

func (s *dirSource) offsetForTime(ctx context.Context, topic string, p int32, t time.Time) (int64, error) {
	return s.l.OffsetForTime(ctx, topic, p, t)
}

func (s *dirSource) fetch(ctx context.Context, topic string, p int32, offset int64, max int) ([]mlog.Record, error) {
	recs, err := s.l.Fetch(ctx, topic, p, offset, mlog.FetchOptions{MaxRecords: max, MaxBytes: 4 << 20})
	if errors.Is(err, mlog.ErrOffsetOutOfRange) {
		info, ierr := s.l.Topic(ctx, topic)
		if ierr == nil && int(p) < len(info.Partitions) {
			pi := info.Partitions[p]
			if offset < pi.Start {
				// Retention removed the start; replay what is left and say so.
				fmt.Fprintf(os.Stderr, "replay: partition %d starts at offset %d (older records were removed by retention)\n", p, pi.Start)
				return s.l.Fetch(ctx, topic, p, pi.Start, mlog.FetchOptions{MaxRecords: max, MaxBytes: 4 << 20})
			}
			if offset >= pi.End {
				return nil, nil
			}
		}
	}
	return recs, err
}

func (s *dirSource) close() error { return s.l.Close() }

// serverSource reads through a running server's HTTP API.
type serverSource struct {
	base   *url.URL
	client *http.Client
}

func newServerSource(server string) (*serverSource, error) {
	u, err := url.Parse(strings.TrimRight(server, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: --server %q: want a URL like http://127.0.0.1:8080", errUsage, server)
	}
	return &serverSource{base: u, client: &http.Client{Timeout: 60 * time.Second}}, nil
}

func (s *serverSource) get(ctx context.Context, path string, q url.Values, into any) error {
	u := *s.base
	u.Path += path
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("server %s: %w", s.base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return fmt.Errorf("server %s: %w", s.base, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("server: %s", e.Error)
		}
		return fmt.Errorf("server %s: %s: %s", u.String(), resp.Status, strings.TrimSpace(string(body)))
	}
	return json.Unmarshal(body, into)
}

func (s *serverSource) partitions(ctx context.Context, topic string) ([]int32, error) {
	var resp struct {
		Topics []struct {
			Name       string `json:"name"`
			Partitions []struct {
				Partition int32 `json:"partition"`
			} `json:"partitions"`
		} `json:"topics"`
	}
	if err := s.get(ctx, "/api/v1/topics", nil, &resp); err != nil {
		return nil, err
	}
	var names []string
	for _, t := range resp.Topics {
		if t.Name == topic {
			ps := make([]int32, len(t.Partitions))
			for i, p := range t.Partitions {
				ps[i] = p.Partition
			}
			return ps, nil
		}
		names = append(names, t.Name)
	}
	return nil, unknownTopic(topic, names)
}

func (s *serverSource) records(ctx context.Context, topic string, p int32, from string, max int) ([]mlog.Record, error) {
	q := url.Values{}
	q.Set("partition", strconv.Itoa(int(p)))
	q.Set("from", from)
	q.Set("limit", strconv.Itoa(max))
	var resp struct {
		Records []json.RawMessage `json:"records"`
	}
	if err := s.get(ctx, "/api/v1/topics/"+url.PathEscape(topic)+"/records", q, &resp); err != nil {
		return nil, err
	}
	recs := make([]mlog.Record, 0, len(resp.Records))
	for _, raw := range resp.Records {
		r, err := mlog.ParseRecordJSON(raw)
		if err != nil {
			return nil, fmt.Errorf("server sent a record this version cannot read: %w", err)
		}
		recs = append(recs, r)
	}
	return recs, nil
}

func (s *serverSource) offsetForTime(ctx context.Context, topic string, p int32, t time.Time) (int64, error) {
	recs, err := s.records(ctx, topic, p, t.UTC().Format(time.RFC3339Nano), 1)
	if err != nil {
		return 0, err
	}
	if len(recs) == 0 {
		return 1<<63 - 1, nil // nothing at or after t: past the end
	}
	return recs[0].Offset, nil
}

func (s *serverSource) fetch(ctx context.Context, topic string, p int32, offset int64, max int) ([]mlog.Record, error) {
	if offset == 1<<63-1 {
		return nil, nil
	}
	return s.records(ctx, topic, p, strconv.FormatInt(offset, 10), max)
}

func (s *serverSource) close() error { return nil }

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
