package kafka

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	mlog "github.com/millstream/millstream/log"
)

// member runs a GroupConsumer the way a component would: poll, process
// (record what it saw), commit; per-partition state is loaded on assignment
// and saved on revocation.
type member struct {
	name string
	c    *GroupConsumer

	mu       sync.Mutex
	seen     []mlog.Record
	owned    map[int32]bool
	assigns  int
	revokes  int
	lastSeen map[int32]int64 // per-partition state: last offset processed

	stop chan struct{}
	done chan error
}

func startMember(t *testing.T, l *Log, name, group, topic string) *member {
	t.Helper()
	m := &member{name: name, owned: map[int32]bool{}, lastSeen: map[int32]int64{}, stop: make(chan struct{}), done: make(chan error, 1)}
	c, err := l.GroupConsumer(ctxT(t), group, []string{topic}, GroupOptions{
		MaxPollRecords: 7, // small batches so a handover happens mid-stream
		OnAssigned: func(_ context.Context, a map[string][]int32) {
			m.mu.Lock()
			defer m.mu.Unlock()
			m.assigns++
			for _, p := range a[topic] {
				m.owned[p] = true
			}
		},
		OnRevoked: func(_ context.Context, r map[string][]int32) {
			m.mu.Lock()
			defer m.mu.Unlock()
			m.revokes++
			for _, p := range r[topic] {
				delete(m.owned, p)
				delete(m.lastSeen, p)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	m.c = c
	go func() {
		ctx, cancel := context.WithCancel(context.Background())
		go func() { <-m.stop; cancel() }()
		for polls := 1; ; polls++ {
			rs, err := c.Poll(ctx)
			if ctx.Err() != nil {
				m.done <- c.Close()
				return
			}
			if err != nil {
				m.done <- err
				return
			}
			m.mu.Lock()
			for _, r := range rs {
				if !m.owned[r.Partition] {
					m.mu.Unlock()
					m.done <- fmt.Errorf("%s got a record of partition %d it does not own", name, r.Partition)
					return
				}
				if last, ok := m.lastSeen[r.Partition]; ok && r.Offset != last+1 {
					m.mu.Unlock()
					m.done <- fmt.Errorf("%s: partition %d jumped from %d to %d", name, r.Partition, last, r.Offset)
					return
				}
				m.lastSeen[r.Partition] = r.Offset
				m.seen = append(m.seen, r)
			}
			m.mu.Unlock()
			// Commit every third batch only, so a handover finds
			// processed but uncommitted records: the revocation must
			// commit them or the next owner reads them again.
			if polls%3 != 0 {
				continue
			}
			if err := c.Commit(ctx); err != nil && ctx.Err() == nil {
				m.done <- err
				return
			}
		}
	}()
	return m
}

func (m *member) ownedSorted() []int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ps []int32
	for p := range m.owned {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps
}

func (m *member) halt(t *testing.T) {
	t.Helper()
	close(m.stop)
	select {
	case err := <-m.done:
		if err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("%s did not stop", m.name)
	}
}

func waitUntil(t *testing.T, what string, ms ...*member) func(cond func() bool) {
	return func(cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			for _, m := range ms {
				select {
				case err := <-m.done:
					t.Fatalf("%s stopped while waiting for %s: %v", m.name, what, err)
				default:
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func produceN(t *testing.T, l *Log, topic string, from, n int) {
	t.Helper()
	rs := make([]*mlog.Record, n)
	for i := range rs {
		id := from + i
		rs[i] = &mlog.Record{Topic: topic, Key: []byte(fmt.Sprintf("asset-%d", id%13)), Value: []byte(fmt.Sprint(id))}
	}
	if err := l.ProduceSync(ctxT(t), rs...); err != nil {
		t.Fatal(err)
	}
}

// TestGroupSplitAndTakeOver is the scale-out check: two members of one group
// split a 4-partition topic; when one stops, the other takes over its
// partitions at the committed offsets, with nothing lost or read twice.
func TestGroupSplitAndTakeOver(t *testing.T) {
	c := newCluster(t, 3)
	l := open(t, testOptions(c))
	const topic, group = "uns.points", "historian"
	if err := l.CreateTopic(ctxT(t), topic, mlog.TopicConfig{Partitions: 4}); err != nil {
		t.Fatal(err)
	}
	produceN(t, l, topic, 0, 200)

	a := startMember(t, l, "a", group, topic)
	b := startMember(t, l, "b", group, topic)
	waitUntil(t, "the partitions to be split 2/2", a, b)(func() bool {
		return len(a.ownedSorted()) == 2 && len(b.ownedSorted()) == 2
	})
	if ps := append(a.ownedSorted(), b.ownedSorted()...); fmt.Sprint(sortedCopy(ps)) != "[0 1 2 3]" {
		t.Fatalf("a owns %v, b owns %v; want a split of 0..3", a.ownedSorted(), b.ownedSorted())
	}
	total := func() int {
		n := 0
		for _, m := range []*member{a, b} {
			m.mu.Lock()
			n += len(m.seen)
			m.mu.Unlock()
		}
		return n
	}
	produceN(t, l, topic, 200, 200)
	waitUntil(t, "400 records consumed", a, b)(func() bool { return total() >= 400 })

	// a leaves mid-stream: records keep coming while b takes over.
	produceN(t, l, topic, 400, 100)
	a.halt(t)
	waitUntil(t, "b to own all partitions", b)(func() bool { return len(b.ownedSorted()) == 4 })
	produceN(t, l, topic, 500, 100)
	waitUntil(t, "600 records consumed", b)(func() bool { return total() >= 600 })
	time.Sleep(200 * time.Millisecond) // let any duplicate show up
	b.halt(t)

	count := map[string]int{}
	for _, m := range []*member{a, b} {
		for _, r := range m.seen {
			count[string(r.Value)]++
		}
	}
	for i := 0; i < 600; i++ {
		switch n := count[fmt.Sprint(i)]; n {
		case 1:
		case 0:
			t.Errorf("record %d was never consumed", i)
		default:
			t.Errorf("record %d consumed %d times (everything was committed on leave: no duplicates allowed)", i, n)
		}
	}
	if len(count) != 600 {
		t.Errorf("consumed %d distinct records, want 600", len(count))
	}
	if a.revokes == 0 || b.assigns < 2 {
		t.Errorf("callbacks: a revoked %d times, b assigned %d times", a.revokes, b.assigns)
	}
	// The group's committed offsets cover everything.
	for p := int32(0); p < 4; p++ {
		off, ok, err := l.CommittedOffset(ctxT(t), group, topic, p)
		info, _ := l.Topic(ctxT(t), topic)
		if err != nil || !ok || off != info.Partitions[p].End {
			t.Errorf("partition %d: committed %d %v %v, end %d", p, off, ok, err, info.Partitions[p].End)
		}
	}
}

// TestGroupUnprocessedBatchIsReread: a batch polled but not marked
// processed by a member that stops is read again by the next owner
// (at-least-once), and only that batch.
func TestGroupUnprocessedBatchIsReread(t *testing.T) {
	c := newCluster(t, 1)
	l := open(t, testOptions(c))
	const topic, group = "uns.points", "twins"
	if err := l.CreateTopic(ctxT(t), topic, mlog.TopicConfig{Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	produceN(t, l, topic, 0, 50)
	// A component that checkpoints derived state on revocation stamps it
	// with Positions: at Close those must be the processed positions, not
	// the ones of a batch polled and dropped (the next owner would skip
	// its records; the normaliser lost points that way).
	var first *GroupConsumer
	var atRevoke map[int32]int64
	first, err := l.GroupConsumer(ctxT(t), group, []string{topic}, GroupOptions{MaxPollRecords: 10,
		OnRevoked: func(context.Context, map[string][]int32) { atRevoke = first.Positions()[topic] }})
	if err != nil {
		t.Fatal(err)
	}
	var committed, uncommitted []mlog.Record
	for len(committed) < 20 {
		rs, err := first.Poll(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		committed = append(committed, rs...)
		if err := first.Commit(ctxT(t)); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := first.Poll(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	uncommitted = rs
	// The member stops without processing its last batch (no Commit or
	// Poll after it): leaving commits only what was processed.
	first.Close()
	processed := map[int32]int64{}
	for _, r := range committed {
		processed[r.Partition] = max(processed[r.Partition], r.Offset+1)
	}
	for p, pos := range atRevoke {
		if pos != processed[p] {
			t.Errorf("partition %d: Positions said %d when revoked at Close, want the processed position %d", p, pos, processed[p])
		}
	}

	second, err := l.GroupConsumer(ctxT(t), group, []string{topic}, GroupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	var again []mlog.Record
	for len(committed)+len(again) < 50 {
		rs, err := second.Poll(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		again = append(again, rs...)
	}
	if len(committed)+len(again) != 50 {
		t.Fatalf("second member read %d records after %d committed, want %d", len(again), len(committed), 50-len(committed))
	}
	seen := map[string]bool{}
	for _, r := range committed {
		seen[string(r.Value)] = true
	}
	for _, r := range again {
		if seen[string(r.Value)] {
			t.Fatalf("committed record %s read again", r.Value)
		}
	}
	reread := 0
	for _, r := range uncommitted {
		for _, r2 := range again {
			if string(r.Value) == string(r2.Value) {
				reread++
			}
		}
	}
	if reread != len(uncommitted) {
		t.Fatalf("%d of %d uncommitted records read again, want all", reread, len(uncommitted))
	}
}

func sortedCopy(ps []int32) []int32 {
	out := slices.Clone(ps)
	slices.Sort(out)
	return out
}
