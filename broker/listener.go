package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/millstream/millstream/config"
)

// The broker binds its sockets itself instead of letting mochi's listeners do
// it, so that Start reports a bind failure synchronously, port 0 works (Addrs),
// every connection is counted per listener, and a client that never sends its
// CONNECT cannot hold a goroutine forever (connectTimeout).

// countingListener counts connections and bytes of one MQTT listener.
type countingListener struct {
	net.Listener
	st    *listenerStats
	total *atomic.Int64 // connections over all listeners, for max_connections
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.st.conns.Add(1)
	l.total.Add(1)
	return &countingConn{Conn: c, st: l.st, total: l.total}, nil
}

// countingConn counts wire bytes. It sits below TLS and WebSocket framing.
type countingConn struct {
	net.Conn
	st     *listenerStats
	total  *atomic.Int64
	closed atomic.Bool
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.st.bytesIn.Add(uint64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.st.bytesOut.Add(uint64(n))
	return n, err
}

func (c *countingConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.st.conns.Add(-1)
		c.total.Add(-1)
	}
	return c.Conn.Close()
}

// boundListener is one configured listener after binding.
type boundListener struct {
	cfg   config.Listener
	tls   *tls.Config
	raw   net.Listener // the bound socket (for Addrs and loopback checks)
	ln    net.Listener // counting, and TLS when configured
	mochi listeners.Listener
	stats *listenerStats
}

// loadTLS builds the tls.Config of a listener, or nil without TLS.
func loadTLS(name string, t config.TLS) (*tls.Config, error) {
	if t.CertFile == "" {
		if t.KeyFile != "" || t.ClientCAFile != "" || t.RequireClientCert {
			return nil, fmt.Errorf("mqtt listener %q: tls.key_file, tls.client_ca_file and tls.require_client_cert need tls.cert_file (set it to enable TLS)", name)
		}
		return nil, nil
	}
	if t.KeyFile == "" {
		return nil, fmt.Errorf("mqtt listener %q: tls.cert_file is set but tls.key_file is not (set both to enable TLS)", name)
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("mqtt listener %q: load TLS certificate %s and key %s: %w (both must be PEM files of one key pair)", name, t.CertFile, t.KeyFile, err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if t.ClientCAFile != "" {
		pem, err := os.ReadFile(t.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt listener %q: read tls.client_ca_file: %w", name, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("mqtt listener %q: tls.client_ca_file %s holds no PEM certificate", name, t.ClientCAFile)
		}
		tc.ClientCAs = pool
		// Without require_client_cert a certificate is optional; one that is
		// presented must still verify, and then authenticates the client.
		tc.ClientAuth = tls.VerifyClientCertIfGiven
	}
	if t.RequireClientCert {
		if t.ClientCAFile == "" {
			return nil, fmt.Errorf("mqtt listener %q: tls.require_client_cert needs tls.client_ca_file (the CA that signs client certificates)", name)
		}
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// peerCertificate returns the verified client certificate of a connection, or
// nil when the client presented none.
func peerCertificate(c net.Conn) *x509.Certificate {
	var cs *tls.ConnectionState
	switch c := c.(type) {
	case *tls.Conn:
		s := c.ConnectionState()
		cs = &s
	case *wsConn:
		cs = c.tls
	case *corkConn:
		return peerCertificate(c.Conn)
	}
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
		return nil
	}
	return cs.PeerCertificates[0]
}

// tcpListener serves MQTT over TCP (or TLS) on an already bound listener.
// It implements mochi's listeners.Listener.
type tcpListener struct {
	id             string
	ln             net.Listener
	log            *slog.Logger
	connectTimeout time.Duration
	closed         atomic.Bool
}

func (l *tcpListener) ID() string       { return l.id }
func (l *tcpListener) Address() string  { return l.ln.Addr().String() }
func (l *tcpListener) Protocol() string { return "tcp" }

func (l *tcpListener) Init(log *slog.Logger) error {
	l.log = log
	return nil
}

func (l *tcpListener) Serve(establish listeners.EstablishFn) {
	var backoff time.Duration
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			if l.closed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: keep serving the
			// connections we have, retry accepting a little later.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.log.Warn("mqtt accept failed; retrying", "listener", l.id, "error", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		// mochi sets the keepalive deadline only after CONNECT; until then
		// this bounds how long a silent peer may hold the connection.
		_ = conn.SetDeadline(time.Now().Add(l.connectTimeout))
		go func() {
			if err := establish(l.id, newCorkConn(conn)); err != nil {
				l.log.Debug("mqtt connection ended", "listener", l.id, "remote", conn.RemoteAddr().String(), "error", err)
			}
		}()
	}
}

func (l *tcpListener) Close(closeClients listeners.CloseFn) {
	if l.closed.CompareAndSwap(false, true) {
		_ = l.ln.Close() // stop accepting first, then disconnect the clients
		closeClients(l.id)
	}
}

// wsListener serves MQTT over WebSocket (subprotocol "mqtt", any path).
type wsListener struct {
	id             string
	ln             net.Listener
	log            *slog.Logger
	srv            *http.Server
	upgrader       websocket.Upgrader
	establish      listeners.EstablishFn
	connectTimeout time.Duration
	closed         atomic.Bool
	ready          chan struct{}
	readyOnce      sync.Once
}

func newWSListener(id string, ln net.Listener, connectTimeout time.Duration, logger *slog.Logger) *wsListener {
	l := &wsListener{
		id:             id,
		ln:             ln,
		connectTimeout: connectTimeout,
		ready:          make(chan struct{}),
		upgrader: websocket.Upgrader{
			Subprotocols: []string{"mqtt", "mqttv3.1"},
			// MQTT over WebSocket is used by HMI pages served from other
			// origins; authentication is MQTT's, not the browser's cookies.
			CheckOrigin: func(*http.Request) bool { return true },
		},
	}
	l.srv = &http.Server{
		Handler:           http.HandlerFunc(l.handle),
		ReadHeaderTimeout: connectTimeout,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	return l
}

func (l *wsListener) ID() string       { return l.id }
func (l *wsListener) Address() string  { return l.ln.Addr().String() }
func (l *wsListener) Protocol() string { return "ws" }

func (l *wsListener) Init(log *slog.Logger) error {
	l.log = log
	return nil
}

func (l *wsListener) Serve(establish listeners.EstablishFn) {
	l.establish = establish
	l.readyOnce.Do(func() { close(l.ready) })
	err := l.srv.Serve(l.ln)
	if err != nil && !errors.Is(err, http.ErrServerClosed) && !l.closed.Load() {
		l.log.Error("mqtt websocket listener stopped", "listener", l.id, "error", err)
	}
}

func (l *wsListener) handle(w http.ResponseWriter, r *http.Request) {
	<-l.ready // Serve has set establish
	c, err := l.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered with an HTTP error
	}
	defer c.Close()
	conn := &wsConn{Conn: c.NetConn(), ws: c, tls: r.TLS}
	_ = conn.SetDeadline(time.Now().Add(l.connectTimeout))
	if err := l.establish(l.id, newCorkConn(conn)); err != nil {
		l.log.Debug("mqtt connection ended", "listener", l.id, "remote", conn.RemoteAddr().String(), "error", err)
	}
}

func (l *wsListener) Close(closeClients listeners.CloseFn) {
	if l.closed.CompareAndSwap(false, true) {
		// Close stops accepting; upgraded connections are hijacked and not
		// tracked by http.Server, closeClients ends them.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = l.srv.Shutdown(ctx)
		cancel()
		closeClients(l.id)
	}
}

// wsConn presents a WebSocket connection as the byte stream mochi reads MQTT
// packets from: binary messages concatenated, each write one binary message.
type wsConn struct {
	net.Conn
	ws  *websocket.Conn
	tls *tls.ConnectionState
	r   io.Reader // current message, nil between messages
}

var errWSNotBinary = errors.New("websocket: MQTT needs binary messages, got a text message")

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			op, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if op != websocket.BinaryMessage {
				return 0, errWSNotBinary
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n == 0 {
				continue // empty message or end of one: read the next
			}
			return n, nil
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) Close() error { return c.Conn.Close() }
