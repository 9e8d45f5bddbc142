//go:build linux

package broker

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/sys/unix"
)

// eventLoop reads every plain TCP MQTT connection from one goroutine.
//
// mochi reads each connection in a goroutine of its own. A device sends one
// small message at a time, so each message costs that goroutine a wake-up
// from Go's network poller, a read, and a second read that finds the socket
// empty before it parks again: on a busy two-core machine the read loops
// were a fifth of the broker's CPU. The loop instead waits on an epoll
// instance of its own (itself registered with Go's poller), reads each ready
// connection once and handles the whole packets it finds, so one wake-up
// serves every connection that has data, and a read is made only when data
// is there: half the read system calls (docs/benchmarks.md, eleventh
// session).
//
// Only packets whose handling cannot block are handled on the loop: valid
// QoS 0 and 1 PUBLISHes that the client may send (a free in-flight slot,
// allowed by the ACL) and PUBACKs. For any other packet the loop hands the connection
// back to its own goroutine (the one mochi started for it), which handles the
// packet and whatever whole packets follow, blocking if it must (QoS 2 waits
// for its append, a full in-flight window waits for acknowledgements, a
// PINGRESP is written directly), and then gives the connection back to the
// loop. Either the loop or the goroutine owns a connection's bytes at any
// time, never both, so its packets are handled in the order they were sent.
//
// The goroutine also enforces the keepalive (1.5 times the client's keepalive
// without a packet ends the connection, [MQTT-3.1.2-22]), since the loop's
// reads have no deadline.
type eventLoop struct {
	epfd *os.File // the epoll instance, registered with Go's poller
	rc   syscall.RawConn
	// ingest says which packets the loop may handle (handlesInline). A
	// concrete type, not a func value: through a func value the packet, a
	// 1.5 KB struct, would escape to the heap on every read.
	ingest *ingestHook

	mu     sync.Mutex
	conns  map[uint32]*evConn
	nextID uint32

	scratch   []byte // the loop's read buffer
	logger    *slog.Logger
	closed    chan struct{} // closed by close, or by run when it fails
	markOnce  sync.Once
	closeOnce sync.Once
	stopped   chan struct{}
}

// evConn is one connection while the loop may read it.
type evConn struct {
	id      uint32
	cl      *mqtt.Client
	rc      syscall.RawConn
	counted *countingConn
	handler mqtt.ReadFn

	mu     sync.Mutex // held while its bytes are read or its packets handled
	inLoop bool       // the loop owns the connection
	buf    []byte     // bytes read and not yet handled (part of a packet)
	back   chan evResult
	// lastRead is when a packet was last read (UnixNano), for the keepalive.
	lastRead atomic.Int64
	// readFn reads into the loop's buffer, setting n and rerr: made once,
	// so that a read allocates nothing.
	readFn func(fd uintptr) bool
	n      int
	rerr   error
}

// evResult is what the loop hands back to a connection's goroutine: a packet
// the loop would not handle, or the error that ended the connection.
type evResult struct {
	pk  packets.Packet
	has bool
	err error
}

// evReadSize is how much the loop reads from one connection at a time.
const evReadSize = 64 << 10

func newEventLoop(ingest *ingestHook, logger *slog.Logger) (*eventLoop, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("mqtt event loop: epoll_create1: %w", err)
	}
	// os.NewFile registers a non-blocking descriptor with Go's poller, which
	// reports the epoll instance readable when any of its connections is.
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("mqtt event loop: %w", err)
	}
	f := os.NewFile(uintptr(fd), "mqtt-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("mqtt event loop: %w", err)
	}
	el := &eventLoop{
		epfd:    f,
		rc:      rc,
		ingest:  ingest,
		conns:   map[uint32]*evConn{},
		scratch: make([]byte, evReadSize),
		logger:  logger,
		closed:  make(chan struct{}),
		stopped: make(chan struct{}),
	}
	go el.run()
	return el, nil
}

// close stops the loop. Connections still open are ended by the broker
// (mochi's listeners close them); their goroutines see them stop.
func (el *eventLoop) close() {
	if el == nil {
		return
	}
	el.closeOnce.Do(func() {
		el.markClosed()
		_ = el.epfd.Close() // wakes run
		<-el.stopped
	})
}

// markClosed sends new connections to mochi's goroutine per connection.
func (el *eventLoop) markClosed() { el.markOnce.Do(func() { close(el.closed) }) }

func (el *eventLoop) run() {
	defer close(el.stopped)
	events := make([]unix.EpollEvent, 256)
	for {
		var n int
		var werr error
		err := el.rc.Read(func(fd uintptr) bool {
			n, werr = unix.EpollWait(int(fd), events, 0)
			return n > 0 || werr != nil // else wait in Go's poller
		})
		if err == nil && werr == unix.EINTR {
			continue
		}
		if err == nil {
			err = werr
		}
		if err != nil {
			select {
			case <-el.closed:
			default:
				el.fail(err)
			}
			return
		}
		for i := range events[:n] {
			el.mu.Lock()
			ec := el.conns[uint32(events[i].Fd)]
			el.mu.Unlock()
			if ec != nil {
				el.service(ec)
			}
		}
	}
}

// fail stops the loop after an error it cannot recover from (none is
// expected: the epoll descriptor is its own). Its connections are closed, so
// their clients reconnect, and new connections are read by mochi's
// goroutine per connection.
func (el *eventLoop) fail(err error) {
	el.logger.Error("MQTT event loop stopped; its clients are disconnected and reconnect to per-connection readers", "error", err)
	el.markClosed() // before the snapshot: a connection registered after it sees closed
	el.mu.Lock()
	conns := make([]*evConn, 0, len(el.conns))
	for _, ec := range el.conns {
		conns = append(conns, ec)
	}
	el.mu.Unlock()
	for _, ec := range conns {
		ec.cl.Stop(fmt.Errorf("mqtt event loop stopped: %w", err))
	}
}

// service reads ec once and handles the whole packets read.
func (el *eventLoop) service(ec *evConn) {
	ec.mu.Lock()
	defer ec.mu.Unlock()
	if !ec.inLoop {
		return // stale event: the goroutine has it
	}
	err := ec.rc.Read(ec.readFn)
	n := ec.n
	if err == nil {
		err = ec.rerr
	}
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		return // a stale event, or a signal: epoll reports it again if there is data
	case err == nil && n == 0:
		err = io.EOF
	}
	if err != nil {
		el.release(ec, evResult{err: err})
		return
	}
	ec.counted.st.bytesIn.Add(uint64(n))
	data := el.scratch[:n]
	if len(ec.buf) > 0 {
		ec.buf = append(ec.buf, data...)
		data = ec.buf
	}
	read := false
	for len(data) > 0 {
		if ec.cl.Closed() { // as mochi's read loop: a packet read is handled
			el.release(ec, evResult{})
			return
		}
		pk, used, err := ec.cl.ParsePacket(data)
		if err != nil {
			el.release(ec, evResult{err: err})
			return
		}
		if used == 0 {
			break
		}
		read = true
		data = data[used:]
		if !el.ingest.handlesInline(ec.cl, &pk) {
			ec.keep(data)
			ec.lastRead.Store(time.Now().UnixNano())
			el.release(ec, evResult{pk: pk, has: true})
			return
		}
		if err := ec.handler(ec.cl, pk); err != nil {
			el.release(ec, evResult{err: err})
			return
		}
	}
	ec.keep(data)
	if read {
		ec.lastRead.Store(time.Now().UnixNano())
	}
}

// keep saves the unhandled bytes (the start of a packet) for the next read.
func (ec *evConn) keep(rest []byte) {
	if len(rest) == 0 {
		ec.buf = ec.buf[:0]
		if cap(ec.buf) > evReadSize {
			ec.buf = nil // a large packet's buffer is not kept
		}
		return
	}
	ec.buf = append(ec.buf[:0], rest...) // copy handles the overlap
}

// release takes ec out of the loop (ec.mu held) and hands r to its goroutine.
func (el *eventLoop) release(ec *evConn, r evResult) {
	ec.inLoop = false
	el.remove(ec)
	ec.back <- r // buffered: one result at most is outstanding
}

// remove stops the loop's reads of ec (ec.mu held, ec.inLoop false). Done
// through the connection's RawConn so that a descriptor closed meanwhile
// (and perhaps reused by another connection) is never touched: a closed
// descriptor has left the epoll instance by itself.
func (el *eventLoop) remove(ec *evConn) {
	_ = ec.rc.Control(func(fd uintptr) {
		_ = el.ctl(unix.EPOLL_CTL_DEL, int(fd), nil)
	})
}

// ctl is epoll_ctl on the loop's instance, which it holds open meanwhile.
func (el *eventLoop) ctl(op, fd int, ev *unix.EpollEvent) error {
	var cerr error
	if err := el.rc.Control(func(epfd uintptr) {
		cerr = unix.EpollCtl(int(epfd), op, fd, ev)
	}); err != nil {
		return err
	}
	return cerr
}

// add gives ec to the loop.
func (el *eventLoop) add(ec *evConn) error {
	ec.mu.Lock()
	defer ec.mu.Unlock()
	ec.inLoop = true
	var cerr error
	err := ec.rc.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(ec.id)}
		cerr = el.ctl(unix.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		ec.inLoop = false
		return err
	}
	return nil
}

// readClient is mochi's ReadClient: it reads a plain TCP connection through
// the loop and any other (TLS, WebSocket) with mochi's own read loop.
func (el *eventLoop) readClient(cl *mqtt.Client, handler mqtt.ReadFn) error {
	if el == nil {
		return cl.Read(handler)
	}
	cc, _ := cl.Net.Conn.(*corkConn)
	if cc == nil || cc.counted == nil {
		return cl.Read(handler)
	}
	tcp, ok := cc.counted.Conn.(*net.TCPConn)
	if !ok {
		return cl.Read(handler)
	}
	rc, err := tcp.SyscallConn()
	if err != nil {
		return cl.Read(handler)
	}
	ec := &evConn{cl: cl, rc: rc, counted: cc.counted, handler: handler, back: make(chan evResult, 1)}
	ec.readFn = func(fd uintptr) bool {
		ec.n, ec.rerr = unix.Read(int(fd), el.scratch)
		return true // never wait in Go's poller: epoll said it is readable
	}
	ec.lastRead.Store(time.Now().UnixNano())
	el.mu.Lock()
	select {
	case <-el.closed:
		el.mu.Unlock()
		return cl.Read(handler)
	default:
	}
	for {
		el.nextID++
		if _, used := el.conns[el.nextID]; !used && el.nextID != 0 {
			break
		}
	}
	ec.id = el.nextID
	el.conns[ec.id] = ec
	el.mu.Unlock()
	ec.buf = cl.TakeBuffered() // read ahead with the CONNECT
	defer func() {
		el.mu.Lock()
		delete(el.conns, ec.id)
		el.mu.Unlock()
	}()
	// The loop's reads have no deadline, and mochi set one (read and write)
	// at CONNECT: the keepalive is enforced in wait.
	_ = tcp.SetDeadline(time.Time{})

	var next evResult
	for {
		if cl.Closed() {
			return nil
		}
		// Packets handled here may write to the client directly (a
		// PINGRESP, a SUBACK): as in mochi's read loop, such a write fails
		// once the client has been silent for 1.5 times its keepalive, so a
		// client that neither reads nor sends cannot hold this goroutine.
		if limit := keepaliveLimit(cl); limit > 0 {
			_ = tcp.SetWriteDeadline(time.Unix(0, ec.lastRead.Load()).Add(limit))
		}
		if next.has {
			if err := handler(cl, next.pk); err != nil {
				return err
			}
			next = evResult{}
		}
		// Whole packets left behind by the loop (or read with the
		// CONNECT) are handled here, in order, before the loop reads more.
		for {
			if cl.Closed() {
				return nil
			}
			pk, n, err := cl.ParsePacket(ec.buf)
			if err != nil {
				return err
			}
			if n == 0 {
				break
			}
			ec.buf = ec.buf[n:]
			if err := handler(cl, pk); err != nil {
				return err
			}
		}
		ec.keep(ec.buf)                       // the part packet left, at the front of the buffer
		_ = tcp.SetWriteDeadline(time.Time{}) // wait enforces the keepalive
		if err := el.add(ec); err != nil {
			if cl.Closed() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		if next, err = el.wait(ec); err != nil || !next.has {
			return err
		}
	}
}

// keepaliveLimit is how long the client may stay silent: 1.5 times its
// keepalive [MQTT-3.1.2-22], 0 for none.
func keepaliveLimit(cl *mqtt.Client) time.Duration {
	return time.Duration(cl.State.Keepalive) * 1500 * time.Millisecond
}

// wait blocks until the loop hands ec back, the client is stopped, or the
// keepalive runs out.
func (el *eventLoop) wait(ec *evConn) (evResult, error) {
	var expire <-chan time.Time
	var t *time.Timer
	limit := keepaliveLimit(ec.cl)
	if limit > 0 {
		t = time.NewTimer(limit)
		defer t.Stop()
		expire = t.C
	}
	for {
		select {
		case r := <-ec.back:
			return r, r.err
		case <-ec.cl.Done():
			r, _ := el.takeBack(ec)
			return r, r.err
		case <-expire:
			idle := time.Since(time.Unix(0, ec.lastRead.Load()))
			if idle < limit {
				t.Reset(limit - idle)
				continue
			}
			if r, handed := el.takeBack(ec); handed {
				return r, r.err // the loop had just handed it back
			}
			return evResult{}, fmt.Errorf("keepalive: no packet for %s: %w", idle.Round(time.Millisecond), os.ErrDeadlineExceeded)
		}
	}
}

// takeBack takes ec from the loop for good. If the loop had handed it back
// already, its result is returned with handed true.
func (el *eventLoop) takeBack(ec *evConn) (r evResult, handed bool) {
	ec.mu.Lock()
	defer ec.mu.Unlock()
	if ec.inLoop {
		ec.inLoop = false
		el.remove(ec)
		return evResult{}, false
	}
	return <-ec.back, true
}
