package main

import (
	"io"
	"net"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rxReader reads a TCP connection with recvmsg(2) and keeps the kernel's
// receive timestamp (SO_TIMESTAMPNS) of the last segment each read
// returned. The bench client's latencies are taken when its goroutine gets
// to a PUBACK, and on a small machine shared with the broker that goroutine
// can wait milliseconds for a CPU: the timestamp says when the PUBACK was
// in the client's socket, so the report can tell the broker's latency from
// the load generator's. A timestamp is of the newest segment a read
// returned, so it is never earlier than the arrival of any packet in that
// read: latencies from it are exact or a little long, never short.
type rxReader struct {
	rc  syscall.RawConn
	oob []byte
	at  time.Time
}

// newRxReader enables receive timestamps on c; ok is false when c is not a
// plain TCP connection (TLS, say) or the kernel refuses.
func newRxReader(c net.Conn) (*rxReader, bool) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, false
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}); err != nil || serr != nil {
		return nil, false
	}
	return &rxReader{rc: rc, oob: make([]byte, 2*unix.CmsgSpace(timespecLen))}, true
}

func (r *rxReader) Read(p []byte) (int, error) {
	var n, oobn int
	var rerr error
	err := r.rc.Read(func(fd uintptr) bool {
		n, oobn, _, _, rerr = unix.Recvmsg(int(fd), p, r.oob, 0)
		return rerr != unix.EAGAIN
	})
	switch {
	case err != nil:
		return 0, err
	case rerr != nil:
		return 0, rerr
	case n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	// A read without a timestamp (the kernel turns timestamping on
	// asynchronously, so the first segments may have none) clears it: an
	// older one would make a later packet look early.
	r.at, _ = cmsgTimestamp(r.oob[:oobn])
	return n, nil
}

// timespecLen is the size of SCM_TIMESTAMPNS's payload on this platform.
const timespecLen = int(unsafe.Sizeof(unix.Timespec{}))

// cmsgTimestamp finds SCM_TIMESTAMPNS in control messages without
// allocating (unix.ParseSocketControlMessage allocates on every read).
func cmsgTimestamp(b []byte) (time.Time, bool) {
	const hdr = unix.SizeofCmsghdr
	for len(b) >= hdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		l := int(h.Len)
		if l < hdr || l > len(b) {
			return time.Time{}, false
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && l >= unix.CmsgLen(timespecLen) {
			ts := (*unix.Timespec)(unsafe.Pointer(&b[unix.CmsgLen(0)]))
			return time.Unix(int64(ts.Sec), int64(ts.Nsec)), true
		}
		b = b[min(unix.CmsgSpace(l-hdr), len(b)):]
	}
	return time.Time{}, false
}

// lastRx is the receive timestamp of the newest segment the last read
// returned, zero before the first read and when that read had none.
func (r *rxReader) lastRx() time.Time { return r.at }
