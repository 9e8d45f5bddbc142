package replicate

import (
	"context"
	"sync"
	"time"
)

// tokenBucket caps a byte rate: it holds up to burst tokens (bytes), refills
// at rate per second, and take(n) reserves n tokens, returning how long the
// caller must wait until they exist. Reservations may drive the level below
// zero (a record larger than what is left, or larger than the bucket, is not
// refused: its sender just waits longer), which keeps the long-run rate at
// rate exactly, whatever the record sizes.
type tokenBucket struct {
	mu     sync.Mutex
	rate   float64 // bytes per second
	burst  float64
	tokens float64
	last   time.Time
	now    func() time.Time
}

func newTokenBucket(rate, burst int64, now func() time.Time) *tokenBucket {
	return &tokenBucket{rate: float64(rate), burst: float64(burst), tokens: float64(burst), last: now(), now: now}
}

// take reserves n bytes and returns the wait before sending them.
func (b *tokenBucket) take(n int) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(b.burst, b.tokens+el.Seconds()*b.rate)
		b.last = now
	}
	b.tokens -= float64(n)
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / b.rate * float64(time.Second))
}

// wait reserves n bytes and sleeps until they may be sent, or ctx ends.
func (b *tokenBucket) wait(ctx context.Context, n int) error {
	if b == nil {
		return nil
	}
	d := b.take(n)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
