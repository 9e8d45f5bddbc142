//go:build !unix

package broker

import (
	"errors"
	"syscall"
)

const rawWriteSupported = false

func rawWrite(syscall.RawConn, []byte) (int, error) {
	return 0, errors.ErrUnsupported
}
