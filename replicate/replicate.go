package replicate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	mlog "github.com/millstream/millstream/log"
)

// HeaderSource names the header stamped on every replicated record:
// "<site>/<topic>/<partition>/<offset>" of the source record. It is how a
// restarted replicator finds what the remote already holds.
const HeaderSource = "millstream.src"

// Replicator runs the configured flows and cloud-to-edge commands.
type Replicator struct {
	l      mlog.Log
	opts   Options
	log    *slog.Logger
	m      *metrics
	bucket *tokenBucket
	flows  []*flow
	wan    wanState
	// crash makes stopping skip the flush and final checkpoint (tests).
	crash atomic.Bool
}

// New checks opts and builds a Replicator; Run starts it.
func New(local mlog.Log, opts Options) (*Replicator, error) {
	if local == nil {
		return nil, errors.New("replicate: no local log")
	}
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	r := &Replicator{l: local, opts: opts, log: opts.Logger, m: newMetrics()}
	r.wan.r = r
	r.m.wanUp.Set(0)
	if opts.Remote.BandwidthBytesPerSec > 0 {
		r.bucket = newTokenBucket(opts.Remote.BandwidthBytesPerSec, opts.Remote.BandwidthBurstBytes, time.Now)
	}
	for i := range r.opts.Flows {
		r.flows = append(r.flows, newFlow(r, &r.opts.Flows[i]))
	}
	return r, nil
}

// Register registers the replicator's metrics.
func (r *Replicator) Register(reg prometheus.Registerer) error {
	for _, c := range r.m.collectors() {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("replicate: register metrics: %w", err)
		}
	}
	return nil
}

// Run replicates until ctx is done, then stops (waiting at most CloseTimeout
// for records in flight) and returns nil. A flow whose session fails (WAN
// down at start, a record refused) retries after RetryBackoff; Run itself
// returns an error only for what retrying cannot fix.
func (r *Replicator) Run(ctx context.Context) error {
	probe, err := r.newClient("probe")
	if err != nil {
		return err
	}
	defer probe.Close()
	var wg sync.WaitGroup
	errs := make(chan error, len(r.flows)+1)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.probeLoop(runCtx, probe)
	}()
	for _, f := range r.flows {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f.run(runCtx); err != nil {
				errs <- err
				cancel()
			}
		}()
	}
	if r.opts.Commands.Enabled {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.runCommands(runCtx); err != nil {
				errs <- err
				cancel()
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// newClient builds a franz-go client to the remote with the shared
// connection options, the WAN state hooks and extra opts.
func (r *Replicator) newClient(suffix string, extra ...kgo.Opt) (*kgo.Client, error) {
	opts, err := r.opts.Remote.clientOpts(suffix)
	if err != nil {
		return nil, err
	}
	opts = append(opts, kgo.WithHooks(&r.wan), kgo.WithLogger(kgoLogger{r.log}))
	opts = append(opts, extra...)
	opts = append(opts, r.opts.Remote.ClientOptions...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("replicate: remote client: %w", err)
	}
	return cl, nil
}

func (r *Replicator) probeLoop(ctx context.Context, cl *kgo.Client) {
	t := time.NewTicker(r.opts.ProbeInterval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, max(r.opts.ProbeInterval, time.Second))
		err := cl.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			r.wan.set(false, err)
		} else {
			r.wan.set(true, nil)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Status is a snapshot of the replicator's state, for the API.
type Status struct {
	WANUp      bool
	LastError  string
	Since      time.Time // of the last WAN state change
	Reconnects int
}

// Status returns the WAN state.
func (r *Replicator) Status() Status {
	r.wan.mu.Lock()
	defer r.wan.mu.Unlock()
	return Status{WANUp: r.wan.up, LastError: r.wan.lastErr, Since: r.wan.since, Reconnects: r.wan.reconnects}
}

// wanState follows the WAN link from every remote client's connection
// attempts and from the probe. It implements kgo's connect hook.
type wanState struct {
	r          *Replicator
	mu         sync.Mutex
	known, up  bool
	lastErr    string
	since      time.Time
	reconnects int
}

func (w *wanState) set(up bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		msg := err.Error()
		if msg != w.lastErr {
			w.r.m.wanError.Reset()
			w.r.m.wanError.WithLabelValues(msg).Set(1)
			w.lastErr = msg
		}
	}
	if w.known && w.up == up {
		return
	}
	if up {
		w.r.m.wanUp.Set(1)
		if w.known {
			w.reconnects++
			w.r.m.reconnects.Inc()
			w.r.log.Info("WAN link up: replication resumes", "down_for", time.Since(w.since).Round(time.Millisecond))
		} else {
			w.r.log.Info("WAN link up")
		}
	} else {
		w.r.m.wanUp.Set(0)
		w.r.log.Warn("WAN link down: data stays in the local log until it is back", "error", w.lastErr)
	}
	w.known, w.up, w.since = true, up, time.Now()
}

// OnBrokerConnect implements kgo.HookBrokerConnect.
func (w *wanState) OnBrokerConnect(_ kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	w.set(err == nil, err)
}

// kgoLogger passes franz-go's warnings and errors on, at debug level: a WAN
// outage makes the client log every failed dial, and the replicator itself
// reports the outage once (WAN link down / up).
type kgoLogger struct{ l *slog.Logger }

func (k kgoLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (k kgoLogger) Log(_ kgo.LogLevel, msg string, keyvals ...any) {
	k.l.Debug("kafka client: "+msg, keyvals...)
}

// retryLog reports a failed session that is about to be retried. Through a
// WAN outage a session fails every RetryBackoff for as long as the outage
// lasts, and "WAN link down" has already said why: so only the first
// failure, a failure with another error, one after a session that had been
// running (retryRan), and then one every retryRepeat are warnings; the
// rest go to debug level (a flow's are all counted in
// millstream_replicate_session_failures_total).
type retryLog struct {
	log      *slog.Logger
	msg      string
	lastErr  string
	lastWarn time.Time
	quiet    int // failures at debug level since the last warning
}

const (
	retryRan    = time.Minute
	retryRepeat = 10 * time.Minute
)

func (l *retryLog) failed(err error, ran, backoff time.Duration) {
	e := fmt.Sprint(err)
	if e != l.lastErr || ran >= retryRan || time.Since(l.lastWarn) >= retryRepeat {
		args := []any{"error", err, "retry_in", backoff}
		if l.quiet > 0 {
			args = append(args, "failed_since_last_warning", l.quiet)
		}
		l.log.Warn(l.msg, args...)
		l.lastErr, l.lastWarn, l.quiet = e, time.Now(), 0
		return
	}
	l.quiet++
	l.log.Debug(l.msg, "error", err, "retry_in", backoff, "failed_since_last_warning", l.quiet)
}
