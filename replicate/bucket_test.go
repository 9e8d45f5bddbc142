package replicate

import (
	"context"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time              { return c.t }
func (c *fakeClock) add(d time.Duration)         { c.t = c.t.Add(d) }
func approx(a, b time.Duration) bool             { return a-b < time.Microsecond && b-a < time.Microsecond }
func waitOf(b *tokenBucket, n int) time.Duration { return b.take(n) }

func TestTokenBucket(t *testing.T) {
	clk := &fakeClock{t: time.Unix(0, 0)}
	b := newTokenBucket(1000, 2000, clk.now) // 1000 B/s, burst 2000 B

	// The full bucket lets a burst through at once.
	if d := waitOf(b, 1500); d != 0 {
		t.Fatalf("first 1500 B wait %s, want 0", d)
	}
	if d := waitOf(b, 500); d != 0 {
		t.Fatalf("next 500 B wait %s, want 0 (burst 2000)", d)
	}
	// Empty: 100 B more wait 100 ms.
	if d := waitOf(b, 100); !approx(d, 100*time.Millisecond) {
		t.Fatalf("100 B on an empty bucket wait %s, want 100ms", d)
	}
	// The reservation is debt: the next 100 B wait 200 ms in total.
	if d := waitOf(b, 100); !approx(d, 200*time.Millisecond) {
		t.Fatalf("second 100 B wait %s, want 200ms", d)
	}
	// After 200 ms the debt is paid: 0 tokens, so 1 B waits 1 ms.
	clk.add(200 * time.Millisecond)
	if d := waitOf(b, 1); !approx(d, time.Millisecond) {
		t.Fatalf("after paying back, 1 B wait %s, want 1ms", d)
	}
	// Refill never exceeds the burst, however long idle.
	clk.add(time.Hour)
	if d := waitOf(b, 2000); d != 0 {
		t.Fatalf("after an hour idle, 2000 B wait %s, want 0", d)
	}
	if d := waitOf(b, 1000); !approx(d, time.Second) {
		t.Fatalf("beyond the burst, 1000 B wait %s, want 1s", d)
	}
	// A record larger than the bucket is not refused; it waits its share.
	clk.add(3 * time.Second) // back to full (2000)
	if d := waitOf(b, 5000); !approx(d, 3*time.Second) {
		t.Fatalf("5000 B on a 2000 B bucket wait %s, want 3s", d)
	}
}

// TestTokenBucketRate checks the long-run rate for many small records: N
// seconds of simulated sending let through rate*N + burst bytes.
func TestTokenBucketRate(t *testing.T) {
	clk := &fakeClock{t: time.Unix(0, 0)}
	b := newTokenBucket(10000, 1000, clk.now)
	sent := 0
	for clk.t.Before(time.Unix(10, 0)) {
		d := b.take(100)
		clk.add(d) // the sender sleeps the wait, then sends
		sent += 100
	}
	if want := 10*10000 + 1000; sent < want-100 || sent > want+100 {
		t.Errorf("sent %d bytes in 10 s at 10000 B/s with a 1000 B burst, want about %d", sent, want)
	}
}

func TestTokenBucketWaitContext(t *testing.T) {
	b := newTokenBucket(1, 1, time.Now)
	b.take(1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.wait(ctx, 1000); err == nil {
		t.Error("wait with an ended context returned nil")
	}
	var nb *tokenBucket
	if err := nb.wait(ctx, 1000); err != nil {
		t.Errorf("no bucket: %v", err)
	}
}
