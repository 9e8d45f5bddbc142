// Package api is Millstream's HTTP API: health and readiness probes,
// Prometheus metrics, and a read-only view of the log (topics and record
// replay). It is the surface that operators, the UI and `millstream replay
// --server` use, so every response is JSON and every error has the same
// shape:
//
//	{"error": "unknown topic", "detail": "..."}
//
// with a 4xx status when the request can be fixed by the caller (the detail
// says what is allowed) and a 5xx status when the server failed.
//
// # Routes
//
//	GET /healthz                          {"status":"ok","version":"..."}; the process is up
//	GET /readyz                           {"status":"ready"}, or 503 while Options.Ready fails
//	GET /metrics                          Prometheus text format
//	GET /debug/pprof/...                  Go profiler (net/http/pprof): CPU, heap, goroutines, trace
//	GET /api/v1/topics                    {"topics":[<topic>...]}
//	GET /api/v1/topics/{topic}            <topic>
//	GET /api/v1/topics/{topic}/records    replay, see below
//	GET /api/v1/uns?path=                 the live namespace: latest point at path and its children
//	GET /api/v1/uns/live?pattern=         server-sent events of new points under an MQTT-style pattern (+, #)
//	GET /api/v1/sparkplug/nodes           Sparkplug edge nodes and devices: online, births, seq errors, rebirths
//	POST /api/v1/commands                 a command to a device ({"path","value"}), audited; waits for the outcome
//	GET /api/v1/series?pattern=           historian series under a pattern, with type and last time
//	GET /api/v1/history?series=&from=&to=&step=&agg=   raw points or aggregates per step
//	GET|POST /api/v1/prom/api/v1/...      Prometheus read API (query_range, query, series, labels) for Grafana
//
// A <topic> is
//
//	{"name":"uns.points",
//	 "partitions":[{"partition":0,"start":0,"end":120,"bytes":8192,"segments":1}],
//	 "config":{"partitions":1,"retention_age":"168h0m0s","retention_bytes":-1}}
//
// where start is the first readable offset, end the offset the next record
// will get, and retention_age "-1" or retention_bytes -1 mean no limit, as in
// the configuration file.
//
// # Replay
//
// GET /api/v1/topics/{topic}/records reads a bounded range of the log and
// returns at once: it never waits for new records, so a client that wants to
// follow the log polls with the offsets it was given. Parameters:
//
//	partition  one partition; omitted means all, merged by timestamp
//	           (ties go to the lower partition; each partition stays in offset order)
//	from       first record: an offset, an RFC 3339 time (the first record at or
//	           after it, found per partition), or per-partition offsets
//	           "0:120,1:98" as returned in "next"; default the partition's start
//	to         end, exclusive, in the same forms; default the partition's current end
//	limit      at most this many records in total, 1-10000, default 1000
//	format     "json" (default) or "ndjson"; Accept: application/x-ndjson also
//	           selects ndjson
//
// The JSON response is
//
//	{"records":[<record>...],"next":{"0":121,"1":99}}
//
// where each <record> is exactly what log.AppendRecordJSON writes (text
// payloads as strings, other bytes as base64 with an "_encoding" flag) and
// "next" holds, per partition read, the offset to continue from: passing it
// back as from=0:121,1:99 (with the same to) returns the following records,
// each exactly once. A response with fewer records than the limit has
// reached "to" on every partition. Offsets that retention has already
// deleted are skipped: reading starts at the partition's start, and "next"
// and the records' offsets show where it really began.
//
// With ndjson the records are streamed one per line, flushed as they are
// read, and the stream stops when the client goes away; the offset to
// continue from is the last record's offset plus one, per partition. An
// error after the response has started aborts the connection, so a client
// never mistakes a cut-off stream for a complete one.
//
// # Metrics
//
// Every request is counted in millstream_http_requests_total{route,code} and
// timed in millstream_http_request_duration_seconds{route}, where route is
// the pattern that matched ("GET /api/v1/topics/{topic}"), never the raw
// path, so topic names and probing clients cannot grow the number of series.
// Requests that match no route are counted as route "unmatched".
package api
