package embedded

import (
	"testing"

	"github.com/millstream/millstream/log"
)

// The writer's cycle (take what is queued, write it while more arrives,
// recycle the buffer, take the rest, find the queue empty, wait) reuses the
// queue's two buffers: a busy partition does not regrow a queue per group.
func TestQueueBuffersAreReused(t *testing.T) {
	p := &partition{signal: make(chan struct{}, 1)}
	rec := &log.Record{}
	enqueue := func(n int) {
		for range n {
			p.enqueue(pending{rec: rec})
		}
	}
	take := func(want int) []pending {
		q, _ := p.take()
		if len(q) != want {
			t.Fatalf("took %d, want %d", len(q), want)
		}
		return q
	}
	cycle := func() {
		enqueue(4)
		q := take(4)
		enqueue(2) // arrives while q is written
		p.recycle(q)
		more := take(2)
		p.recycle(more)
		take(0) // nothing more: the group is fsynced
		<-p.signal
	}
	cycle()
	cycle()
	if allocs := testing.AllocsPerRun(100, cycle); allocs != 0 {
		t.Fatalf("a write cycle allocated %.1f times, want 0", allocs)
	}
}
