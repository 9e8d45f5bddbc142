package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	mlog "github.com/millstream/millstream/log"
)

const (
	// shutdownTimeout bounds how long Serve lets in-flight requests finish.
	// Replays are bounded and never wait for new records, so this is ample.
	shutdownTimeout = 10 * time.Second
	// writeTimeout bounds writing one response, or one chunk of a replay:
	// a client that stops reading must not pin a goroutine forever.
	writeTimeout = 30 * time.Second
)

// Options configures a Server.
type Options struct {
	// Log is the log the topic and record routes read. Required.
	Log mlog.Log
	// Gatherer is what GET /metrics serves. Nil means a new NewRegistry.
	Gatherer prometheus.Gatherer
	// Registerer receives the API's own HTTP metrics. If nil, Gatherer is
	// used when it is a *prometheus.Registry; otherwise the metrics go to a
	// private registry that /metrics serves alongside Gatherer.
	Registerer prometheus.Registerer
	// Ready reports whether the node can serve traffic; GET /readyz answers
	// 503 with its error. Nil means always ready.
	Ready func() error
	// Logger receives server errors. Nil means slog.Default().
	Logger *slog.Logger
	// Version is reported by GET /healthz.
	Version string
	// Namespace is browsed by GET /api/v1/uns; nil answers 404 there.
	Namespace Namespace
	// Live streams new points on GET /api/v1/uns/live; nil answers 404.
	Live LiveNamespace
	// Sparkplug reports edge nodes on GET /api/v1/sparkplug/nodes; nil
	// answers 404.
	Sparkplug SparkplugNodes
	// Commands accepts POST /api/v1/commands; nil answers 404.
	Commands Commands
	// History serves /api/v1/series, /api/v1/history and the Prometheus
	// read API under /api/v1/prom; nil answers 404.
	History History
}

// Server is the HTTP API. Create it with New; it is safe for concurrent use.
type Server struct {
	log     mlog.Log
	ready   func() error
	logger  *slog.Logger
	version string
	ns      Namespace
	live    LiveNamespace
	spb     SparkplugNodes
	cmds    Commands

	// stopping is closed when Serve begins its graceful shutdown, so that
	// streams that never end by themselves (live events) let it finish.
	stopping     chan struct{}
	stoppingOnce sync.Once

	mux      *http.ServeMux
	metrics  *httpMetrics
	handler  http.Handler
	notFound http.Handler
}

// NewRegistry returns a registry with the Go runtime and process collectors,
// the base that every component registers its metrics into.
//
// Besides the default Go metrics it exports the scheduler's latency
// histogram (go_sched_latencies_seconds: how long goroutines waited to run
// once runnable). On a small edge box shared with other work, that wait is
// what stretches acknowledgement latency long before the CPU shows 100%.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
			collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/sched/latencies:seconds$`)},
		)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// New builds a Server. It panics if o.Log is nil or if the HTTP metrics
// conflict with differently shaped metrics of the same name in the
// registerer, both programming errors.
func New(o Options) *Server {
	if o.Log == nil {
		panic("api: Options.Log is required")
	}
	s := &Server{
		log:     o.Log,
		ready:   o.Ready,
		logger:  o.Logger,
		version: o.Version,
		ns:      o.Namespace,
		live:    o.Live,
		spb:     o.Sparkplug,
		cmds:    o.Commands,

		stopping: make(chan struct{}),
		mux:      http.NewServeMux(),
	}
	if s.logger == nil {
		s.logger = slog.Default()
	}
	if s.ready == nil {
		s.ready = func() error { return nil }
	}

	gatherer, reg := o.Gatherer, o.Registerer
	if gatherer == nil {
		r := NewRegistry()
		gatherer = r
		if reg == nil {
			reg = r
		}
	}
	if reg == nil {
		if r, ok := gatherer.(*prometheus.Registry); ok {
			reg = r
		} else {
			private := prometheus.NewRegistry()
			reg = private
			gatherer = prometheus.Gatherers{gatherer, private}
		}
	}
	s.metrics = newHTTPMetrics(reg)

	s.route("GET /healthz", http.HandlerFunc(s.healthz))
	s.route("GET /readyz", http.HandlerFunc(s.readyz))
	s.route("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
		// A failing collector should cost its own series, not the scrape.
		ErrorHandling: promhttp.ContinueOnError,
	}))
	// Go's profiler, as Prometheus and VictoriaMetrics expose it: how an
	// operator finds where CPU and memory go on a live plant server
	// (e.g. go tool pprof http://127.0.0.1:8080/debug/pprof/profile?seconds=10).
	s.route("GET /debug/pprof/", http.HandlerFunc(pprof.Index))
	s.route("GET /debug/pprof/cmdline", http.HandlerFunc(pprof.Cmdline))
	s.route("GET /debug/pprof/profile", http.HandlerFunc(pprof.Profile))
	s.route("GET /debug/pprof/symbol", http.HandlerFunc(pprof.Symbol))
	s.route("GET /debug/pprof/trace", http.HandlerFunc(pprof.Trace))
	s.route("GET /api/v1/uns", http.HandlerFunc(s.browseUNS))
	s.route("GET /api/v1/uns/live", http.HandlerFunc(s.liveUNS))
	s.route("GET /api/v1/sparkplug/nodes", http.HandlerFunc(s.sparkplugNodes))
	s.route("POST /api/v1/commands", http.HandlerFunc(s.postCommand))
	s.route("GET /api/v1/topics", http.HandlerFunc(s.listTopics))
	s.route("GET /api/v1/topics/{topic}", http.HandlerFunc(s.getTopic))
	s.route("GET /api/v1/topics/{topic}/records", http.HandlerFunc(s.records))
	s.route("GET /api/v1/series", s.historySeries(o.History))
	s.route("GET /api/v1/history", s.history(o.History))
	s.route("/api/v1/prom/api/v1/query_range", s.promQueryRange(o.History))
	s.route("/api/v1/prom/api/v1/query", s.promQuery(o.History))
	s.route("/api/v1/prom/api/v1/series", s.promSeries(o.History))
	s.route("/api/v1/prom/api/v1/labels", s.promLabels(o.History))
	s.route("/api/v1/prom/api/v1/label/{name}/values", s.promLabelValues(o.History))

	// The mux would answer requests that match no route in plain text, and
	// outside any instrumented handler; send them through unmatched for a
	// JSON error and a fixed "unmatched" route label instead.
	s.notFound = s.instrument("unmatched", http.HandlerFunc(s.unmatched))
	s.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := s.mux.Handler(r); pattern == "" {
			s.notFound.ServeHTTP(w, r)
			return
		}
		s.mux.ServeHTTP(w, r)
	})
	return s
}

// Handler returns the API's root handler, for use in another server or in
// tests.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve serves the API on ln until ctx is done, then shuts down gracefully:
// it stops accepting, lets in-flight requests finish for up to 10 s, and
// returns nil. It returns an error if serving fails or in-flight requests
// outlast the timeout (they are then cut off). Serve closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	select {
	case err := <-errc:
		return fmt.Errorf("http server on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	s.stoppingOnce.Do(func() { close(s.stopping) })
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
		<-errc
		return fmt.Errorf("http server on %s: requests still running after %s, closed them: %w", ln.Addr(), shutdownTimeout, err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http server on %s: %w", ln.Addr(), err)
	}
	return nil
}

// route registers h under a ServeMux pattern, instrumented with the pattern
// as its route label.
func (s *Server) route(pattern string, h http.Handler) {
	s.mux.Handle(pattern, s.instrument(pattern, h))
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "version": s.version})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if err := s.ready(); err != nil {
		writeError(w, http.StatusServiceUnavailable, "not ready", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// unmatched turns the mux's plain-text 404 and 405 answers into the API's
// JSON errors, keeping the Allow header of a 405.
func (s *Server) unmatched(w http.ResponseWriter, r *http.Request) {
	h, _ := s.mux.Handler(r)
	c := &captureWriter{header: http.Header{}}
	h.ServeHTTP(c, r)
	if c.code == http.StatusMethodNotAllowed {
		allow := c.header.Get("Allow")
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, "method not allowed",
			fmt.Sprintf("%s is not supported on %s; allowed: %s", r.Method, r.URL.Path, allow))
		return
	}
	writeError(w, http.StatusNotFound, "not found",
		fmt.Sprintf("no route for %s %s; the API is under /api/v1, start with GET /api/v1/topics", r.Method, r.URL.Path))
}

// captureWriter records what the mux's fallback handler would answer.
type captureWriter struct {
	header http.Header
	code   int
}

func (c *captureWriter) Header() http.Header { return c.header }
func (c *captureWriter) Write(b []byte) (int, error) {
	c.WriteHeader(http.StatusOK)
	return len(b), nil
}
func (c *captureWriter) WriteHeader(code int) {
	if c.code == 0 {
		c.code = code
	}
}

// apiError is the body of every error response.
type apiError struct {
	Error  string `json:"error"`
	Detail any    `json:"detail,omitempty"`
}

func writeError(w http.ResponseWriter, code int, msg string, detail any) {
	writeJSON(w, code, apiError{Error: msg, Detail: detail})
}

// internalError answers 500 for an error of the log. A canceled request
// context means the client left, so there is nobody to tell and nothing to
// log.
func (s *Server) internalError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return
	}
	s.logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, "internal error", err.Error())
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only the API's own response types get here; they always marshal.
		panic(fmt.Sprintf("api: marshal %T: %v", v, err))
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// httpMetrics are the API's own request metrics.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millstream_http_requests_total",
			Help: "HTTP API requests by route pattern and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "millstream_http_request_duration_seconds",
			Help:    "HTTP API request latency by route pattern, until the handler returns (for replays, the whole stream).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"route"}),
	}
	m.requests = register(reg, m.requests)
	m.duration = register(reg, m.duration)
	return m
}

// register registers c, or returns the collector already registered under
// the same description, so that several Servers (one per test, or a restart
// within one process) can share a registry.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(fmt.Sprintf("api: register HTTP metrics: %v", err))
	}
	return c
}

// instrument counts and times requests to h under route.
func (s *Server) instrument(route string, h http.Handler) http.Handler {
	duration := s.metrics.duration.WithLabelValues(route)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		// Deferred so that a replay aborted with http.ErrAbortHandler is
		// still counted.
		defer func() {
			duration.Observe(time.Since(start).Seconds())
			s.metrics.requests.WithLabelValues(route, strconv.Itoa(sw.status())).Inc()
		}()
		h.ServeHTTP(sw, r)
	})
}

// statusWriter remembers the status code sent. Unwrap lets
// http.ResponseController reach the connection for Flush and write
// deadlines.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	// 1xx responses are informational; the final status comes later.
	if w.code == 0 && code >= 200 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}

// wantsNDJSON reports whether an Accept header asks for newline-delimited
// JSON.
func wantsNDJSON(accept string) bool {
	for part := range strings.SplitSeq(accept, ",") {
		mt, _, _ := strings.Cut(part, ";")
		if strings.EqualFold(strings.TrimSpace(mt), "application/x-ndjson") {
			return true
		}
	}
	return false
}
