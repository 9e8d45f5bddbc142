package embedded

import (
	"os"

	"golang.org/x/sys/unix"
)

// datasync flushes a segment's data with fdatasync(2). For an append-only
// file it is as durable as fsync: the size change needed to read the new
// bytes back is flushed too; only timestamps (mtime) are left to the kernel,
// which saves a journal commit per group on ext4 and XFS.
func datasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = unix.Fdatasync(int(fd))
			if serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: serr}
	}
	return nil
}
