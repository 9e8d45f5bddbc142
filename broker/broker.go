package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"

	"github.com/millstream/millstream/config"
	"github.com/millstream/millstream/log"
)

// DefaultStateTopic is the log topic holding sessions and retained messages.
const DefaultStateTopic = "__mqtt.state"

// Options are the broker's settings that are not user configuration.
type Options struct {
	// Logger receives the broker's and mochi's logs. Nil means slog.Default().
	Logger *slog.Logger
	// StateTopic is the log topic for sessions and retained messages;
	// empty means DefaultStateTopic.
	StateTopic string
	// StateCompactRecords is how many records of garbage (beyond the live
	// state, and at least 4x it) the state topic may hold before a snapshot
	// compacts it. 0 means 10000.
	StateCompactRecords int64
	// ConnectTimeout bounds the time from accepting a connection to its
	// CONNECT (and the TLS or WebSocket handshake). 0 means 10 s.
	ConnectTimeout time.Duration
	// ShutdownTimeout bounds how long Close waits for appends in progress
	// before it cancels them (they are then not acknowledged). 0 means 10 s.
	ShutdownTimeout time.Duration
}

// Broker is the MQTT broker. Create it with New, then Start it; Close it
// before closing the log.
type Broker struct {
	cfg     config.MQTT
	log     log.Log
	logger  *slog.Logger
	opts    Options
	srv     *mqtt.Server
	metrics *metrics
	access  *accessHook
	ingest  *ingestHook
	evloop  *eventLoop // nil where there is none: mochi reads each connection
	state   *stateHook
	aclLog  rateLimit

	listeners []*boundListener
	conns     atomic.Int64 // open connections, all listeners

	// ctx is the lifetime of appends; Close cancels it only after
	// ShutdownTimeout, so a graceful Close lets them finish.
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	started   bool
	closed    bool
	closeErr  error
	addrs     map[string]net.Addr
	closeOnce sync.Once
}

// New checks the configuration and builds a broker that appends to l. It
// does not touch the network or the log; Start does.
func New(cfg config.MQTT, l log.Log, opts Options) (*Broker, error) {
	if l == nil {
		return nil, errors.New("broker.New: the log is nil")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.StateTopic == "" {
		opts.StateTopic = DefaultStateTopic
	}
	if opts.StateCompactRecords <= 0 {
		opts.StateCompactRecords = 10000
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 10 * time.Second
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 10 * time.Second
	}
	if cfg.IngressTopic == "" {
		cfg.IngressTopic = config.Default().MQTT.IngressTopic
	}
	if err := log.ValidateTopicName(cfg.IngressTopic); err != nil {
		return nil, fmt.Errorf("mqtt.ingress_topic: %w", err)
	}
	if err := log.ValidateTopicName(opts.StateTopic); err != nil {
		return nil, fmt.Errorf("broker state topic: %w", err)
	}
	if opts.StateTopic == cfg.IngressTopic {
		return nil, fmt.Errorf("mqtt.ingress_topic %q is the broker's state topic; choose another name", cfg.IngressTopic)
	}
	if len(cfg.Listeners) == 0 {
		return nil, errors.New("mqtt.listeners is empty: configure at least one listener (type tcp or websocket)")
	}

	b := &Broker{cfg: cfg, log: l, logger: opts.Logger, opts: opts, metrics: newMetrics()}
	b.ctx, b.cancel = context.WithCancel(context.Background())

	seen := map[string]bool{}
	for i, lc := range cfg.Listeners {
		where := fmt.Sprintf("mqtt.listeners[%d]", i)
		if lc.Name == "" {
			return nil, fmt.Errorf("%s: name is empty (every listener needs a unique name, e.g. \"tcp\")", where)
		}
		if seen[lc.Name] {
			return nil, fmt.Errorf("%s: name %q is used by another listener", where, lc.Name)
		}
		seen[lc.Name] = true
		if lc.Type != "tcp" && lc.Type != "websocket" {
			return nil, fmt.Errorf("%s (%s): type %q is not one of tcp, websocket", where, lc.Name, lc.Type)
		}
		if lc.Address == "" {
			return nil, fmt.Errorf("%s (%s): address is empty (e.g. 127.0.0.1:1883, or :1883 for all interfaces)", where, lc.Name)
		}
		tc, err := loadTLS(lc.Name, lc.TLS)
		if err != nil {
			return nil, err
		}
		b.listeners = append(b.listeners, &boundListener{cfg: lc, tls: tc, stats: b.metrics.addListener(lc.Name, lc.Type)})
	}

	users := map[string][]byte{}
	for i, u := range cfg.Users {
		if u.Username == "" {
			return nil, fmt.Errorf("mqtt.users[%d]: username is empty", i)
		}
		if _, dup := users[u.Username]; dup {
			return nil, fmt.Errorf("mqtt.users[%d]: user %q is listed twice", i, u.Username)
		}
		if _, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil {
			return nil, fmt.Errorf("mqtt.users[%d] (%s): password_hash is not a bcrypt hash (%v); generate one with `millstream passwd`", i, u.Username, err)
		}
		users[u.Username] = []byte(u.PasswordHash)
	}
	a, err := newACL(cfg.ACL)
	if err != nil {
		return nil, err
	}

	lim := limitsWithDefaults(cfg.Limits)
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumClients = math.MaxInt64 // enforced by accessHook, which can log and count it
	caps.MaximumPacketSize = clampU32(int64(lim.MaxPacketSize))
	caps.ReceiveMaximum = lim.MaxInflight
	caps.MaximumInflight = uint16(min(int64(lim.MaxQueuedMessages), math.MaxUint16))
	caps.MaximumSessionExpiryInterval = clampU32(int64(time.Duration(lim.MaxSessionExpiry) / time.Second))
	// mochi would drop retained and queued messages older than a day; a
	// message expires only when its publisher asked for it.
	caps.MaximumMessageExpiryInterval = 0
	if lim.MaxQueuedMessages > math.MaxUint16 {
		b.logger.Warn("mqtt.limits.max_queued_messages is above what the broker supports; using 65535", "configured", lim.MaxQueuedMessages)
	}

	b.srv = mqtt.New(&mqtt.Options{
		Capabilities:           caps,
		Logger:                 slog.New(newQuietHandler(b.logger.Handler(), 10*time.Second)),
		SysTopicResendInterval: 10,
		InlineClient:           true, // Publish
		ReadClient: func(cl *mqtt.Client, handler mqtt.ReadFn) error {
			return b.evloop.readClient(cl, handler) // set in Start, before any listener
		},
	})
	b.access = &accessHook{b: b, users: users, acl: a, inflight: lim.MaxInflight, maxPacket: caps.MaximumPacketSize}
	if lim.MaxConnections > 0 {
		b.access.maxConns = lim.MaxConnections
	}
	b.ingest = &ingestHook{b: b, topic: cfg.IngressTopic, fanout: b.srv.NewClient(nil, mqtt.LocalListener, "millstream-fanout", true), idle: make(chan *acker)}
	b.ingest.newFanners()
	b.state = newStateHook(b, opts.StateTopic, opts.StateCompactRecords)
	for _, h := range []mqtt.Hook{b.access, b.ingest, b.state} {
		if err := b.srv.AddHook(h, nil); err != nil {
			return nil, fmt.Errorf("mqtt hook %s: %w", h.ID(), err)
		}
	}
	b.metrics.inflight = func() float64 { return float64(atomic.LoadInt64(&b.srv.Info.Inflight)) }
	b.metrics.queueDropped = func() uint64 { return uint64(atomic.LoadInt64(&b.srv.Info.InflightDropped)) }
	b.metrics.stateLive = func() (float64, float64) {
		return float64(b.state.nSess.Load()), float64(b.state.nRet.Load())
	}
	return b, nil
}

// limitsWithDefaults fills zero limits from config.Default, so a config built
// in code without limits gets the documented defaults, not "no limit".
// Negative values mean unlimited where the type allows it.
func limitsWithDefaults(l config.Limits) config.Limits {
	d := config.Default().MQTT.Limits
	if l.MaxPacketSize == 0 {
		l.MaxPacketSize = d.MaxPacketSize
	} else if l.MaxPacketSize < 0 {
		l.MaxPacketSize = 0 // mochi: no limit
	}
	if l.MaxConnections == 0 {
		l.MaxConnections = d.MaxConnections
	}
	if l.MaxInflight == 0 {
		l.MaxInflight = d.MaxInflight
	}
	if l.MaxSessionExpiry == 0 {
		l.MaxSessionExpiry = d.MaxSessionExpiry
	} else if l.MaxSessionExpiry < 0 {
		l.MaxSessionExpiry = config.Duration(math.MaxUint32 * time.Second)
	}
	if l.MaxQueuedMessages == 0 {
		l.MaxQueuedMessages = d.MaxQueuedMessages
	} else if l.MaxQueuedMessages < 0 {
		l.MaxQueuedMessages = math.MaxUint16
	}
	return l
}

func clampU32(v int64) uint32 {
	return uint32(max(0, min(v, math.MaxUint32)))
}

// Start creates the ingress and state topics if needed, restores sessions
// and retained messages from the state topic, binds every listener and
// starts serving. It returns once all listeners accept connections, or with
// an error naming the listener that could not bind. ctx bounds the start-up
// work only.
func (b *Broker) Start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started || b.closed {
		return errors.New("broker: Start called twice or after Close")
	}
	b.started = true

	err := b.log.CreateTopic(ctx, b.cfg.IngressTopic, log.TopicConfig{})
	if err != nil && !errors.Is(err, log.ErrTopicExists) {
		return fmt.Errorf("create MQTT ingress topic %s: %w", b.cfg.IngressTopic, err)
	}
	info, err := b.log.Topic(ctx, b.cfg.IngressTopic)
	if err != nil {
		return fmt.Errorf("MQTT ingress topic %s: %w", b.cfg.IngressTopic, err)
	}
	b.ingest.partitions = int32(len(info.Partitions))
	if err := b.state.load(ctx); err != nil {
		return err
	}

	if b.evloop, err = newEventLoop(b.ingest, b.logger); err != nil {
		b.logger.Warn("MQTT event loop not available; every connection is read by a goroutine of its own", "error", err)
	}
	for _, bl := range b.listeners {
		if err := b.bind(bl); err != nil {
			b.closeBound()
			return err
		}
	}

	anon := b.cfg.AllowAnonymous != nil && *b.cfg.AllowAnonymous
	if b.cfg.AllowAnonymous == nil {
		anon = true
		for _, bl := range b.listeners {
			if ta, ok := bl.raw.Addr().(*net.TCPAddr); !ok || !ta.IP.IsLoopback() {
				anon = false
			}
		}
		if anon {
			b.logger.Info("MQTT anonymous access on: every listener is bound to loopback (set mqtt.allow_anonymous: false to require credentials)")
		} else {
			b.logger.Info("MQTT anonymous access off: a listener is reachable from other hosts (set mqtt.allow_anonymous: true to allow it)")
		}
	} else if anon {
		b.logger.Warn("MQTT anonymous access on by mqtt.allow_anonymous: any client that reaches a listener can publish and subscribe (within the ACL)")
	}
	b.access.anonymous.Store(anon)
	if !anon && len(b.access.users) == 0 && !b.anyClientCA() {
		b.logger.Warn("MQTT: anonymous access is off and no users or client certificates are configured: no client can connect (add mqtt.users)")
	}

	for _, bl := range b.listeners {
		if err := b.srv.AddListener(bl.mochi); err != nil {
			b.closeBound()
			return fmt.Errorf("mqtt listener %q: %w", bl.cfg.Name, err)
		}
	}

	b.state.loading.Store(true)
	err = b.srv.Serve()
	b.state.loading.Store(false)
	if err != nil {
		_ = b.srv.Close()
		b.closeBound()
		return fmt.Errorf("start MQTT broker: %w", err)
	}
	b.state.startCompactor()
	b.ingest.startWorkers(2 * runtime.GOMAXPROCS(0))

	b.addrs = map[string]net.Addr{}
	for _, bl := range b.listeners {
		b.addrs[bl.cfg.Name] = bl.raw.Addr()
		b.logger.Info("MQTT listener ready", "listener", bl.cfg.Name, "type", bl.cfg.Type,
			"address", bl.raw.Addr().String(), "tls", bl.tls != nil)
	}
	return nil
}

func (b *Broker) anyClientCA() bool {
	for _, bl := range b.listeners {
		if bl.tls != nil && bl.tls.ClientCAs != nil {
			return true
		}
	}
	return false
}

func (b *Broker) bind(bl *boundListener) error {
	raw, err := net.Listen("tcp", bl.cfg.Address)
	if err != nil {
		return fmt.Errorf("mqtt listener %q: listen on %s: %w (is another process using the port? change mqtt.listeners address)", bl.cfg.Name, bl.cfg.Address, err)
	}
	bl.raw = raw
	var ln net.Listener = &countingListener{Listener: raw, st: bl.stats, total: &b.conns}
	if bl.tls != nil {
		ln = tls.NewListener(ln, bl.tls)
	}
	bl.ln = ln
	switch bl.cfg.Type {
	case "websocket":
		bl.mochi = newWSListener(bl.cfg.Name, ln, b.opts.ConnectTimeout, b.logger)
	default:
		bl.mochi = &tcpListener{id: bl.cfg.Name, ln: ln, connectTimeout: b.opts.ConnectTimeout}
	}
	return nil
}

func (b *Broker) closeBound() {
	for _, bl := range b.listeners {
		if bl.raw != nil {
			_ = bl.raw.Close()
		}
	}
}

// Addrs returns the bound address of every listener by name (useful with
// port 0). It is empty before Start.
func (b *Broker) Addrs() map[string]net.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]net.Addr, len(b.addrs))
	for k, v := range b.addrs {
		out[k] = v
	}
	return out
}

// Register registers the broker's metrics.
func (b *Broker) Register(reg prometheus.Registerer) error {
	if err := reg.Register(b.metrics); err != nil {
		return fmt.Errorf("register MQTT broker metrics: %w", err)
	}
	return nil
}

// Publish publishes a message from inside Millstream (Sparkplug host
// commands and state, for example) as if a client had sent it: it is
// appended to the ingress topic, retained if asked, and delivered to
// subscribers. It needs a started broker.
func (b *Broker) Publish(topic string, payload []byte, retain bool, qos byte) error {
	b.mu.Lock()
	ok := b.started && !b.closed
	b.mu.Unlock()
	if !ok {
		return errors.New("broker: Publish before Start or after Close")
	}
	if err := b.srv.Publish(topic, payload, retain, qos); err != nil {
		return fmt.Errorf("broker: publish to %s: %w", topic, err)
	}
	return nil
}

// awaitDeliveries waits, at most timeout, until no connected client has a
// QoS 1 or 2 message in flight (sent and not acknowledged, or queued).
func (b *Broker) awaitDeliveries(timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for {
		busy := false
		for _, cl := range b.srv.Clients.GetAll() {
			if !cl.Net.Inline && !cl.Closed() && cl.State.Inflight.Len() > 0 {
				busy = true
				break
			}
		}
		if !busy || time.Now().After(deadline) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Close stops accepting connections, disconnects the clients (persistent
// sessions are kept), waits for appends in progress and state writes to be
// reported, and stops. It waits at most Options.ShutdownTimeout for appends
// and then cancels them: cancelled QoS 1/2 messages are not acknowledged.
// It does not close the log; close the log after the broker.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		started := b.started
		b.closed = true
		b.mu.Unlock()
		if !started {
			b.cancel()
			return
		}

		// Messages published just before Close (the Sparkplug host's
		// offline STATE) are in connected subscribers' queues: let QoS 1
		// and 2 deliveries be acknowledged first, briefly.
		b.awaitDeliveries(min(time.Second, b.opts.ShutdownTimeout))

		deadline := time.NewTimer(b.opts.ShutdownTimeout)
		defer deadline.Stop()
		done := make(chan struct{})
		go func() {
			// Closes listeners, disconnects clients and waits for their
			// goroutines, and so for every OnPublish in progress.
			_ = b.srv.Close()
			close(done)
		}()
		select {
		case <-done:
		case <-deadline.C:
			b.logger.Warn("MQTT shutdown: appends still waiting for the log after the shutdown timeout; cancelling them (they are not acknowledged)",
				"timeout", b.opts.ShutdownTimeout)
			b.cancel()
			<-done
		}
		b.evloop.close()

		// Asynchronous appends (QoS 0, wills) and state writes: the log
		// reports each exactly once; wait for that, bounded.
		wctx, wcancel := context.WithTimeout(context.Background(), b.opts.ShutdownTimeout)
		defer wcancel()
		var errs []error
		if err := waitGroup(wctx, &b.ingest.pending); err != nil {
			errs = append(errs, fmt.Errorf("MQTT appends still pending at shutdown: %w", err))
		}
		if err := b.state.close(wctx); err != nil {
			errs = append(errs, err)
		}
		b.cancel()
		b.closeErr = errors.Join(errs...)
		b.logger.Info("MQTT broker stopped")
	})
	return b.closeErr
}

func waitGroup(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

var _ listeners.Listener = (*tcpListener)(nil)
var _ listeners.Listener = (*wsListener)(nil)
