package kafkaproto

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	mlog "github.com/millstream/millstream/log"
)

// Action is what a client wants to do with a topic, for the Authorizer.
type Action int

const (
	// ActionRead covers Fetch, ListOffsets, OffsetCommit/OffsetFetch and
	// seeing the topic in Metadata. It corresponds to MQTT "subscribe".
	ActionRead Action = iota
	// ActionWrite covers Produce, CreateTopics and DeleteRecords. It
	// corresponds to MQTT "publish".
	ActionWrite
)

func (a Action) String() string {
	if a == ActionWrite {
		return "write"
	}
	return "read"
}

// Options configures a Server. Zero values take the defaults noted.
type Options struct {
	// Authenticator checks a SASL PLAIN username and password. Nil disables
	// SASL: every connection is anonymous (user "").
	Authenticator func(user, pass string) bool
	// SCRAM looks up a user's SCRAM-SHA-256 or SCRAM-SHA-512 credential;
	// nil offers PLAIN only. SCRAM needs an Authenticator too (which
	// decides whether authentication is required at all).
	SCRAM func(mechanism, user string) (SCRAMCredential, bool)
	// AllowAnonymous lets clients that do not authenticate use the server
	// as user "" when an Authenticator is set. Without an Authenticator
	// connections are always anonymous.
	AllowAnonymous bool
	// Authorizer decides whether user may act on topic. Nil allows
	// everything. Topics a user may neither read nor write are left out of
	// Metadata.
	Authorizer func(user, topic string, a Action) bool

	// AdvertisedAddr is the host:port put in Metadata and FindCoordinator
	// responses. Empty means the local address each connection arrived at,
	// which is right unless clients go through NAT or a proxy.
	AdvertisedAddr string
	// NodeID is this broker's node id. Zero is fine for a single node.
	NodeID int32
	// ClusterID is reported in Metadata. Empty means "millstream".
	ClusterID string

	// GroupPrefix is prepended to Kafka consumer group names before their
	// offsets are stored in the log, so that a Kafka client cannot move the
	// committed offsets of Millstream's own consumers ("historian", ...).
	// Groups in the log without the prefix are invisible to Kafka clients.
	GroupPrefix string
	// AutoCreateTopics creates unknown topics on Metadata (when the client
	// allows it) and Produce, with the log's default topic config.
	AutoCreateTopics bool
	// GroupInitialRebalanceDelay delays the first rebalance of an empty
	// group so that members starting together land in one generation (as
	// Kafka's group.initial.rebalance.delay.ms, default there 3s). Zero
	// means no delay.
	GroupInitialRebalanceDelay time.Duration

	// MaxRequestBytes closes connections that send a larger request. Zero
	// means 100 MiB (Kafka's socket.request.max.bytes).
	MaxRequestBytes int
	// MaxConnections refuses connections beyond this many. Zero means 1024.
	MaxConnections int
	// IdleTimeout closes connections that send nothing for this long. Zero
	// means 10 minutes (Kafka's connections.max.idle.ms).
	IdleTimeout time.Duration
	// TLSConfig makes ListenAndServe accept TLS connections.
	TLSConfig *tls.Config
	// Logger receives connection-level messages. Nil means slog.Default().
	Logger *slog.Logger
}

// Server is a Kafka protocol endpoint over a log.Log. It is a single-node
// cluster: one broker that leads every partition and coordinates every group.
type Server struct {
	l      mlog.Log
	opts   Options
	logger *slog.Logger
	m      *metrics

	groups    *coordinator
	producers *producerStore
	partLocks sync.Map // topicPartition -> *sync.Mutex; serialises batch appends

	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closed    bool
	wg        sync.WaitGroup
}

// ErrServerClosed is returned by Serve and ListenAndServe after Close.
var ErrServerClosed = errors.New("kafkaproto: server closed")

// New returns a server over l. It serves nothing until Serve or
// ListenAndServe.
func New(l mlog.Log, opts Options) (*Server, error) {
	if l == nil {
		return nil, errors.New("kafkaproto: nil log")
	}
	if opts.ClusterID == "" {
		opts.ClusterID = "millstream"
	}
	if opts.MaxRequestBytes <= 0 {
		opts.MaxRequestBytes = 100 << 20
	}
	if opts.MaxConnections <= 0 {
		opts.MaxConnections = 1024
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 10 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.AdvertisedAddr != "" {
		if _, _, err := splitHostPort(opts.AdvertisedAddr); err != nil {
			return nil, fmt.Errorf("kafkaproto: advertised address %q: %w", opts.AdvertisedAddr, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		l: l, opts: opts, logger: opts.Logger.With("component", "kafka"), m: newMetrics(),
		producers: newProducerStore(),
		ctx:       ctx, cancel: cancel,
		listeners: map[net.Listener]struct{}{}, conns: map[*conn]struct{}{},
	}
	s.groups = newCoordinator(s)
	return s, nil
}

func splitHostPort(addr string) (string, int32, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", p, err)
	}
	return h, int32(n), nil
}

// ListenAndServe listens on addr (TCP, with TLS when Options.TLSConfig is
// set) and serves until Close.
func (s *Server) ListenAndServe(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("kafkaproto: listen %s: %w", addr, err)
	}
	if s.opts.TLSConfig != nil {
		ln = tls.NewListener(ln, s.opts.TLSConfig)
	}
	return s.Serve(ln)
}

// Serve accepts connections on ln until Close; it closes ln when it
// returns. It returns ErrServerClosed after Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		ln.Close()
	}()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Temporary resource exhaustion (EMFILE): back off as
				// net/http does rather than spin or give up.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("kafkaproto: accept: %w", err)
		}
		backoff = 0
		s.mu.Lock()
		if s.closed || len(s.conns) >= s.opts.MaxConnections {
			full := !s.closed
			s.mu.Unlock()
			if full {
				s.m.refused.Inc()
				s.logger.Warn("Kafka connection refused: too many connections", "remote", nc.RemoteAddr().String(), "limit", s.opts.MaxConnections)
			}
			nc.Close()
			continue
		}
		c := newConn(s, nc)
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go c.serve()
	}
}

// Addr returns the address of the first listener, or nil.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ln := range s.listeners {
		return ln.Addr()
	}
	return nil
}

// Close stops accepting, lets every connection finish the request it is
// processing and send the responses of produce requests already appended
// (so no durable record goes unacknowledged for want of a response),
// interrupts long-polling fetches and pending group joins, and closes the
// connections. Connections whose peer does not read its responses are cut
// after 10 s. The log itself is not closed.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.cancel() // before closing listeners: Serve tells Close from failure by it
	for ln := range s.listeners {
		ln.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.shutdown()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		// A peer that does not read its responses must not hold Close
		// forever: cut the connections.
		for _, c := range conns {
			c.nc.Close()
		}
		<-done
	}
	s.groups.close()
	return nil
}

func (s *Server) removeConn(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// conn is one client connection. One goroutine reads and handles requests
// in order (as a Kafka broker does per connection); handlers that wait only
// for durability (produce) hand a future to the writer goroutine, so a
// client that pipelines produce requests keeps the log's group commit busy
// while responses still go out in request order.
type conn struct {
	s      *Server
	nc     net.Conn
	remote string
	out    chan pendingResp

	clientID      string
	user          string
	authenticated bool
	saslMechanism string
	scram         *scramExchange // during a SCRAM exchange

	fetchRotate int
	stopping    atomic.Bool
}

type pendingResp struct {
	corr int32
	// resp is the response, or wait produces it.
	resp kmsg.Response
	wait func() kmsg.Response
}

func newConn(s *Server, nc net.Conn) *conn {
	return &conn{s: s, nc: nc, remote: nc.RemoteAddr().String(), out: make(chan pendingResp, 32)}
}

// shutdown makes the reader stop after the request in progress.
func (c *conn) shutdown() {
	c.stopping.Store(true)
	// Wake a reader blocked in Read; an in-flight handler finishes first.
	_ = c.nc.SetReadDeadline(time.Now())
}

func (c *conn) serve() {
	defer c.s.removeConn(c)
	c.s.m.conns.Inc()
	c.s.m.connsTotal.Inc()
	defer c.s.m.conns.Dec()

	writerDone := make(chan error, 1)
	go func() { writerDone <- c.writeLoop() }()
	err := c.readLoop()
	close(c.out)
	werr := <-writerDone
	c.nc.Close()
	switch {
	case err == nil || c.stopping.Load() || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed):
	case werr != nil:
		c.s.logger.Debug("Kafka connection closed", "remote", c.remote, "reason", werr.Error())
	default:
		c.s.logger.Info("Kafka connection closed", "remote", c.remote, "reason", err.Error())
	}
}

func (c *conn) writeLoop() error {
	var buf []byte
	var failed error
	for p := range c.out {
		if failed != nil {
			if p.wait != nil {
				p.wait() // let the append finish; its response cannot be sent
			}
			continue
		}
		resp := p.resp
		if p.wait != nil {
			resp = p.wait()
		}
		if resp == nil {
			continue // acks=0 produce
		}
		buf = appendResponse(buf[:0], p.corr, resp)
		c.s.m.bytesOut.Add(float64(len(buf)))
		_ = c.nc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.nc.Write(buf); err != nil {
			failed = err
			// Unblock the reader: it must not keep reading requests whose
			// responses can never be delivered.
			c.nc.Close()
		}
		if cap(buf) > 4<<20 {
			buf = nil // don't pin a large fetch buffer to an idle connection
		}
	}
	return failed
}

// appendResponse frames resp: size, correlation id, the response header's
// tagged fields (flexible versions, except ApiVersions whose response header
// is always v0 so clients can parse it before they know our versions), body.
func appendResponse(dst []byte, corr int32, resp kmsg.Response) []byte {
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, uint32(corr))
	if resp.IsFlexible() && resp.Key() != kmsg.ApiVersions.Int16() {
		dst = append(dst, 0)
	}
	dst = resp.AppendTo(dst)
	binary.BigEndian.PutUint32(dst, uint32(len(dst)-4))
	return dst
}

// preAuthMaxBytes bounds requests before SASL completes, so an
// unauthenticated peer cannot make the server allocate MaxRequestBytes.
const preAuthMaxBytes = 64 << 10

func (c *conn) readLoop() error {
	var size [4]byte
	for !c.stopping.Load() {
		_ = c.nc.SetReadDeadline(time.Now().Add(c.s.opts.IdleTimeout))
		if c.stopping.Load() {
			// shutdown raced with the deadline above and may have lost.
			return nil
		}
		if _, err := io.ReadFull(c.nc, size[:]); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !c.stopping.Load() {
				return fmt.Errorf("idle for %s", c.s.opts.IdleTimeout)
			}
			return err
		}
		n := int(binary.BigEndian.Uint32(size[:]))
		limit := c.s.opts.MaxRequestBytes
		if !c.mayUse() {
			limit = preAuthMaxBytes
		}
		if n < 8 || n > limit {
			c.s.m.malformed.Inc()
			return fmt.Errorf("request of %d bytes (allowed 8 to %d)", n, limit)
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(c.nc, body); err != nil {
			return fmt.Errorf("reading a %d-byte request: %w", n, err)
		}
		c.s.m.bytesIn.Add(float64(4 + n))
		p, err := c.handleFrame(body)
		if err != nil {
			return err
		}
		if p != nil {
			c.out <- *p
		}
	}
	return nil
}

// mayUse reports whether the connection may send requests beyond the SASL
// handshake.
func (c *conn) mayUse() bool {
	return c.authenticated || c.s.opts.Authenticator == nil || c.s.opts.AllowAnonymous
}

// handleFrame parses and handles one request. An error closes the
// connection: the request was malformed or not allowed in this state, and
// Kafka brokers close the connection in both cases.
func (c *conn) handleFrame(body []byte) (*pendingResp, error) {
	r := kbin.Reader{Src: body}
	key := r.Int16()
	version := r.Int16()
	corr := r.Int32()
	clientID := r.NullableString()
	if !r.Ok() {
		c.s.m.malformed.Inc()
		return nil, errors.New("truncated request header")
	}
	if clientID != nil {
		c.clientID = *clientID
	}
	req := kmsg.RequestForKey(key)
	apiName := apiLabel(key)
	if req == nil || version < 0 || version > req.MaxVersion() {
		// We cannot parse the body, but the frame is complete, so the
		// connection stays in sync: answer with the error code and keep
		// serving. The client gets UNSUPPORTED_VERSION where its response
		// has a top-level error code.
		c.s.m.request(apiName, kerr.UnsupportedVersion.Code)
		return &pendingResp{corr: corr, resp: rawErrorReply(key, kerr.UnsupportedVersion.Code)}, nil
	}
	req.SetVersion(version)
	if req.IsFlexible() {
		skipTags(&r)
		if !r.Ok() {
			c.s.m.malformed.Inc()
			return nil, fmt.Errorf("truncated %s request header", apiName)
		}
	}
	if err := req.ReadFrom(r.Src); err != nil {
		c.s.m.malformed.Inc()
		return nil, fmt.Errorf("malformed %s v%d request: %w", apiName, version, err)
	}
	if !c.mayUse() {
		switch req.(type) {
		case *kmsg.ApiVersionsRequest, *kmsg.SASLHandshakeRequest, *kmsg.SASLAuthenticateRequest:
		default:
			c.s.m.authFailures.Inc()
			return nil, fmt.Errorf("%s request before SASL authentication (anonymous access is off)", apiName)
		}
	}
	v, ok := supported[key]
	if !ok || version < v.min || version > v.max {
		if _, isAV := req.(*kmsg.ApiVersionsRequest); !isAV {
			resp := unsupportedResponse(req)
			c.s.m.request(apiName, kerr.UnsupportedVersion.Code)
			return &pendingResp{corr: corr, resp: resp}, nil
		}
	}
	p := c.dispatch(req)
	if p == nil {
		return nil, nil
	}
	p.corr = corr
	if p.wait == nil {
		c.s.m.request(apiName, errorCode(p.resp))
	} else {
		w := p.wait
		p.wait = func() kmsg.Response {
			resp := w()
			code := int16(0)
			if resp != nil {
				code = errorCode(resp)
			}
			c.s.m.request(apiName, code)
			return resp
		}
	}
	return p, nil
}

func (c *conn) dispatch(req kmsg.Request) *pendingResp {
	ctx := c.s.ctx
	done := func(r kmsg.Response) *pendingResp { return &pendingResp{resp: r} }
	switch req := req.(type) {
	case *kmsg.ApiVersionsRequest:
		return done(c.handleApiVersions(req))
	case *kmsg.MetadataRequest:
		return done(c.handleMetadata(ctx, req))
	case *kmsg.ProduceRequest:
		w := c.handleProduce(ctx, req)
		if w == nil {
			return nil
		}
		return &pendingResp{wait: w}
	case *kmsg.FetchRequest:
		return done(c.handleFetch(ctx, req))
	case *kmsg.ListOffsetsRequest:
		return done(c.handleListOffsets(ctx, req))
	case *kmsg.FindCoordinatorRequest:
		return done(c.handleFindCoordinator(req))
	case *kmsg.JoinGroupRequest:
		return done(c.s.groups.join(ctx, c, req))
	case *kmsg.SyncGroupRequest:
		return done(c.s.groups.sync(ctx, req))
	case *kmsg.HeartbeatRequest:
		return done(c.s.groups.heartbeat(req))
	case *kmsg.LeaveGroupRequest:
		return done(c.s.groups.leave(req))
	case *kmsg.OffsetCommitRequest:
		return done(c.handleOffsetCommit(ctx, req))
	case *kmsg.OffsetFetchRequest:
		return done(c.handleOffsetFetch(ctx, req))
	case *kmsg.ListGroupsRequest:
		return done(c.handleListGroups(ctx, req))
	case *kmsg.DescribeGroupsRequest:
		return done(c.handleDescribeGroups(ctx, req))
	case *kmsg.InitProducerIDRequest:
		return done(c.handleInitProducerID(req))
	case *kmsg.CreateTopicsRequest:
		return done(c.handleCreateTopics(ctx, req))
	case *kmsg.DescribeConfigsRequest:
		return done(c.handleDescribeConfigs(ctx, req))
	case *kmsg.DeleteRecordsRequest:
		return done(c.handleDeleteRecords(ctx, req))
	case *kmsg.SASLHandshakeRequest:
		return done(c.handleSASLHandshake(req))
	case *kmsg.SASLAuthenticateRequest:
		return done(c.handleSASLAuthenticate(req))
	}
	// supported and dispatch disagree: a programming error, answered as
	// an unsupported request rather than a panic.
	return done(unsupportedResponse(req))
}

// allowed applies the Authorizer.
func (c *conn) allowed(topic string, a Action) bool {
	if c.s.opts.Authorizer == nil {
		return true
	}
	return c.s.opts.Authorizer(c.user, topic, a)
}

// advertised returns the host and port clients should connect to.
func (c *conn) advertised() (string, int32) {
	addr := c.s.opts.AdvertisedAddr
	if addr == "" {
		addr = c.nc.LocalAddr().String()
	}
	h, p, err := splitHostPort(addr)
	if err != nil {
		return "127.0.0.1", 9092
	}
	return h, p
}

// skipTags skips a tagged-field section like kmsg.SkipTags, but stops at the
// end of the input: kmsg.SkipTags runs its loop for the full declared count
// (up to 2^32) even after the input is exhausted, which costs seconds of
// CPU for a 5-byte header.
func skipTags(r *kbin.Reader) {
	n := r.Uvarint()
	for ; n > 0 && r.Ok(); n-- {
		r.Uvarint()
		r.Span(int(r.Uvarint()))
		if len(r.Src) == 0 && n > 1 {
			r.Span(1) // more tags declared than bytes: mark the reader bad
		}
	}
}
