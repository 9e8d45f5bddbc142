package broker

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestQuietHandlerLimitsRepeats(t *testing.T) {
	var buf bytes.Buffer
	h := newQuietHandler(slog.NewTextHandler(&buf, nil), 10*time.Second)
	l := slog.New(h).With("component", "broker")
	t0 := time.Now()
	emit := func(at time.Time, level slog.Level, msg string) {
		r := slog.NewRecord(at, level, msg, 0)
		r.AddAttrs(slog.String("client", "sub"))
		if err := l.Handler().Handle(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 1000 {
		emit(t0.Add(time.Duration(i)*time.Millisecond), slog.LevelWarn, "client store quota reached")
	}
	emit(t0, slog.LevelWarn, "packet ids exhausted")        // another message: not held back
	emit(t0, slog.LevelError, "client store quota reached") // another level: not held back
	emit(t0.Add(11*time.Second), slog.LevelWarn, "client store quota reached")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines, want 4:\n%s", len(lines), buf.String())
	}
	if !strings.Contains(lines[0], "component=broker") || strings.Contains(lines[0], "suppressed") {
		t.Fatalf("first line: %s", lines[0])
	}
	if !strings.Contains(lines[3], "suppressed_since_last=999") {
		t.Fatalf("line after the interval does not count the suppressed ones: %s", lines[3])
	}
}
