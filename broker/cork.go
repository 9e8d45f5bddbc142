package broker

import (
	"net"
	"sync"
	"syscall"
)

// corkConn is the connection mochi writes to. The acker corks it while it
// acknowledges a run of finished appends, so their PUBACKs (and anything else
// written meanwhile) leave in one write system call instead of one each: at
// tens of thousands of acknowledgements per second the per-packet syscalls
// were the broker's largest cost. Uncorked, a write goes straight through.
//
// All writes, buffered or not, are serialised by mu, so bytes leave in the
// order they were written.
//
// tryWrite is the acknowledgement path of the fanner, which writes the
// PUBACKs of many clients in turn and must never wait for one of them: it
// writes without blocking (plain TCP only, where the socket is reachable),
// and what the socket does not take at once is written by a catch-up
// goroutine, in order, before anything written later.
type corkConn struct {
	net.Conn
	mu     sync.Mutex
	corked bool
	buf    []byte
	err    error // a failed flush; later writes fail with it

	// For tryWrite; nil when the connection is not plain TCP.
	raw     syscall.RawConn
	counted *countingConn
	// behind is set while a catch-up goroutine writes buf: Write waits
	// for it (caughtUp) so that nothing overtakes the buffered bytes.
	behind   bool
	caughtUp *sync.Cond
}

// maxBehind bounds what tryWrite queues behind a catch-up in progress.
const maxBehind = 64 << 10

// newCorkConn wraps conn, a countingConn for TCP and TLS or a wsConn.
func newCorkConn(conn net.Conn) *corkConn {
	c := &corkConn{Conn: conn}
	c.caughtUp = sync.NewCond(&c.mu)
	if cc, ok := conn.(*countingConn); ok {
		if sc, ok := cc.Conn.(syscall.Conn); ok {
			if rc, err := sc.SyscallConn(); err == nil && rawWriteSupported {
				c.raw, c.counted = rc, cc
			}
		}
	}
	return c
}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.behind && !c.corked {
		c.caughtUp.Wait()
	}
	if c.err != nil {
		return 0, c.err
	}
	if c.corked {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// cork buffers writes until uncork.
func (c *corkConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// uncork writes what was buffered in one call. On failure the connection is
// closed: the client's reader sees it and the client resends what it did not
// see acknowledged.
func (c *corkConn) uncork() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	if c.behind {
		return // the catch-up goroutine writes buf
	}
	if len(c.buf) == 0 || c.err != nil {
		c.buf = c.buf[:0]
		return
	}
	_, err := c.Conn.Write(c.buf)
	c.releaseBuf()
	if err != nil {
		c.fail(err)
	}
}

func (c *corkConn) releaseBuf() {
	if cap(c.buf) > 64<<10 {
		c.buf = nil // do not keep a burst's buffer for an idle client
	} else {
		c.buf = c.buf[:0]
	}
}

func (c *corkConn) fail(err error) {
	c.err = err
	_ = c.Conn.Close()
}

// tryWrite writes p without waiting for the socket or for another writer.
// It reports false, having written nothing, when that is not possible (not
// plain TCP, or another goroutine is writing): the caller then writes with
// Write on a goroutine that may wait. True means p was written, or will be
// by the catch-up goroutine before anything written after it, or the
// connection has failed (and the client resends what it did not see
// acknowledged).
func (c *corkConn) tryWrite(p []byte) bool {
	if c.raw == nil || !c.mu.TryLock() {
		return false
	}
	defer c.mu.Unlock()
	switch {
	case c.err != nil:
		return true
	case c.behind && len(c.buf)+len(p) > maxBehind:
		// A client that publishes without reading its PUBACKs: the
		// caller's blocking path stops reading from it (backpressure)
		// instead of this buffer growing.
		return false
	case c.corked || c.behind:
		c.buf = append(c.buf, p...)
		return true
	}
	n, err := rawWrite(c.raw, p)
	c.counted.st.bytesOut.Add(uint64(n))
	switch {
	case n == len(p):
		return true
	case err != nil && err != syscall.EAGAIN:
		c.fail(err)
		return true
	}
	// The socket's send buffer is full: the client is not reading.
	c.counted.st.writeStalls.Add(1)
	c.buf = append(c.buf, p[n:]...)
	c.behind = true
	go c.catchUp()
	return true
}

// catchUp writes what tryWrite could not, waiting for the socket, then lets
// Write go ahead again.
func (c *corkConn) catchUp() {
	c.mu.Lock()
	defer c.mu.Unlock()
	var spare []byte
	for len(c.buf) > 0 && c.err == nil {
		b := c.buf
		c.buf = spare[:0]
		c.mu.Unlock()
		_, err := c.Conn.Write(b)
		c.mu.Lock()
		spare = b
		if err != nil {
			c.fail(err)
		}
	}
	c.buf = c.buf[:0]
	c.releaseBuf()
	c.behind = false
	c.caughtUp.Broadcast()
}
