package broker

import (
	"net"
	"sync"
)

// corkConn is the connection mochi writes to. The acker corks it while it
// acknowledges a run of finished appends, so their PUBACKs (and anything else
// written meanwhile) leave in one write system call instead of one each: at
// tens of thousands of acknowledgements per second the per-packet syscalls
// were the broker's largest cost. Uncorked, a write goes straight through.
//
// All writes, buffered or not, are serialised by mu, so bytes leave in the
// order they were written.
type corkConn struct {
	net.Conn
	mu     sync.Mutex
	corked bool
	buf    []byte
	err    error // a failed flush; later writes fail with it
}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
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
	if len(c.buf) == 0 || c.err != nil {
		c.buf = c.buf[:0]
		return
	}
	_, err := c.Conn.Write(c.buf)
	if cap(c.buf) > 64<<10 {
		c.buf = nil // do not keep a burst's buffer for an idle client
	} else {
		c.buf = c.buf[:0]
	}
	if err != nil {
		c.err = err
		_ = c.Conn.Close()
	}
}
