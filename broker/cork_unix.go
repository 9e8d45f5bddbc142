//go:build unix

package broker

import "syscall"

const rawWriteSupported = true

// rawWrite makes one non-blocking write attempt on the socket: the
// descriptor is already non-blocking (Go's poller owns it), and the callback
// reports done whatever the result, so it never parks on EAGAIN.
func rawWrite(rc syscall.RawConn, p []byte) (n int, err error) {
	werr := rc.Write(func(fd uintptr) bool {
		for {
			n, err = syscall.Write(int(fd), p)
			if err != syscall.EINTR {
				return true
			}
		}
	})
	if n < 0 {
		n = 0
	}
	if err == nil {
		err = werr
	}
	return n, err
}
