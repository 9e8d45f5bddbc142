//go:build !linux

package broker

import (
	"log/slog"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// eventLoop is Linux only (epoll); elsewhere every connection is read by
// mochi's goroutine per connection.
type eventLoop struct{}

func newEventLoop(*ingestHook, *slog.Logger) (*eventLoop, error) {
	return nil, nil
}

func (el *eventLoop) close() {}

func (el *eventLoop) readClient(cl *mqtt.Client, handler mqtt.ReadFn) error { return cl.Read(handler) }
