package embedded

import (
	"io"
	"log/slog"
	"testing"

	"github.com/millstream/millstream/log"
	"github.com/millstream/millstream/log/logtest"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func openT(t testing.TB, dir string, opts Options) *Log {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestConformance(t *testing.T) {
	logtest.Run(t, func(t *testing.T) log.Log {
		return openT(t, t.TempDir(), Options{SegmentBytes: 8 << 10})
	})
}

func TestConformanceAlways(t *testing.T) {
	logtest.Run(t, func(t *testing.T) log.Log {
		return openT(t, t.TempDir(), Options{Fsync: FsyncAlways})
	})
}
