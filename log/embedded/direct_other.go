//go:build !linux

package embedded

func openDirect(string) (int, error)        { return -1, errDirectUnsupported }
func pwriteDirect(int, []byte, int64) error { return errDirectUnsupported }
func closeDirect(int) error                 { return nil }
func isDirectRefused(error) bool            { return true }
