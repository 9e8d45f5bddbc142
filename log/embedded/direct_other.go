//go:build !linux

package embedded

import "errors"

// errDirectUnsupported is returned by openDirect where there is no O_DIRECT.
var errDirectUnsupported = errors.New("direct I/O is not supported on this system")

func openDirect(string) (int, error)        { return -1, errDirectUnsupported }
func pwriteDirect(int, []byte, int64) error { return errDirectUnsupported }
func closeDirect(int) error                 { return nil }
func isDirectRefused(error) bool            { return true }
