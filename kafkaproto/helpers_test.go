package kafkaproto

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	mlog "github.com/millstream/millstream/log"
	"github.com/millstream/millstream/log/embedded"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type testEnv struct {
	l    *embedded.Log
	s    *Server
	addr string
}

// startEnv opens an embedded log in a temp dir and serves it on
// 127.0.0.1:0. Everything is closed at the end of the test.
func startEnv(t testing.TB, opts Options) *testEnv {
	t.Helper()
	l, err := embedded.Open(t.TempDir(), embedded.Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return startServer(t, l, opts)
}

func startServer(t testing.TB, l *embedded.Log, opts Options) *testEnv {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	s, err := New(l, opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return &testEnv{l: l, s: s, addr: ln.Addr().String()}
}

func (e *testEnv) createTopic(t testing.TB, name string, partitions int32) {
	t.Helper()
	if err := e.l.CreateTopic(context.Background(), name, mlog.TopicConfig{Partitions: partitions}); err != nil {
		t.Fatal(err)
	}
}

// readAll reads every record of a topic from the log directly.
func (e *testEnv) readAll(t testing.TB, topic string) []mlog.Record {
	t.Helper()
	ctx := context.Background()
	info, err := e.l.Topic(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var out []mlog.Record
	for _, p := range info.Partitions {
		for off := p.Start; off < p.End; {
			recs, err := e.l.Fetch(ctx, topic, p.Partition, off, mlog.FetchOptions{})
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, recs...)
			off = recs[len(recs)-1].Offset + 1
		}
	}
	return out
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
