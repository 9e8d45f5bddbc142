package embedded

import (
	"errors"

	"golang.org/x/sys/unix"
)

func openDirect(path string) (int, error) {
	for {
		fd, err := unix.Open(path, unix.O_WRONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// pwriteDirect writes all of buf at off.
func pwriteDirect(fd int, buf []byte, off int64) error {
	for len(buf) > 0 {
		n, err := unix.Pwrite(fd, buf, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return errors.New("direct write wrote nothing")
		}
		buf, off = buf[n:], off+int64(n)
	}
	return nil
}

func closeDirect(fd int) error { return unix.Close(fd) }

// isDirectRefused reports whether a direct write was refused for its
// alignment or by a filesystem that accepted O_DIRECT at open only.
func isDirectRefused(err error) bool { return errors.Is(err, unix.EINVAL) }
