//go:build !linux

package main

import (
	"net"
	"time"
)

// rxReader: kernel receive timestamps are read on Linux only (see
// benchrx_linux.go); elsewhere newRxReader declines and the bench reports
// the client's latencies alone.
type rxReader struct{ net.Conn }

func newRxReader(net.Conn) (*rxReader, bool) { return nil, false }

func (r *rxReader) lastRx() time.Time { return time.Time{} }
