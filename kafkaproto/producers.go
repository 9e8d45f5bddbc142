package kafkaproto

import (
	"sync"
	"time"
)

// Idempotent producers. A producer gets an id and epoch from InitProducerID;
// each of its batches carries the sequence number of its first record, per
// partition. The server accepts a batch only if it continues the previous
// one, answers a resend of one of the last dedupWindow batches with that
// batch's original result, and rejects gaps with OUT_OF_ORDER_SEQUENCE_NUMBER.
// State is in memory: after a restart producers get UNKNOWN_PRODUCER_ID and
// re-initialise (KIP-360), which clients do on their own.

// dedupWindow is how many recent batches per partition are remembered; Kafka
// keeps 5, matching max.in.flight.requests.per.connection for idempotence.
const dedupWindow = 5

const (
	producerExpiry = 24 * time.Hour // Kafka's producer.id.expiration.ms
	maxProducers   = 100_000
)

type producerStore struct {
	mu        sync.Mutex
	next      int64
	states    map[int64]*producerState
	lastSweep time.Time
}

type producerState struct {
	epoch    int16
	lastUsed time.Time
	parts    map[topicPartition]*seqState
}

type topicPartition struct {
	topic     string
	partition int32
}

type seqState struct {
	lastSeq int32 // -1 before the first batch
	// broken is set when an accepted batch failed to append: the client
	// will resend it, and it must not be mistaken for a duplicate nor may
	// later batches slip in before it; OUT_OF_ORDER_SEQUENCE_NUMBER makes
	// the client bump its epoch and start over.
	broken bool
	recent []*seqBatch
}

// seqBatch is one accepted batch; done is closed once its outcome is known.
type seqBatch struct {
	firstSeq, lastSeq int32
	done              chan struct{}
	baseOffset        int64
	code              int16
}

func newProducerStore() *producerStore {
	// Ids start at the current time in microseconds so that ids handed out
	// before a restart are not handed out again to someone else.
	return &producerStore{next: time.Now().UnixMicro(), states: map[int64]*producerState{}}
}

// init implements InitProducerID for idempotent (non-transactional)
// producers. With pid/epoch of a live producer (KIP-360) it bumps the epoch.
func (ps *producerStore) init(pid int64, epoch int16) (int64, int16, int16) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	now := time.Now()
	// Sweep idle producers at most once a minute: a client calling
	// InitProducerID in a loop must not make every call scan the map.
	if len(ps.states) >= maxProducers/2 && now.Sub(ps.lastSweep) > time.Minute {
		ps.lastSweep = now
		for id, st := range ps.states {
			if now.Sub(st.lastUsed) > producerExpiry {
				delete(ps.states, id)
			}
		}
	}
	if pid >= 0 {
		if st, ok := ps.states[pid]; ok {
			if epoch != st.epoch {
				return -1, -1, codeProducerFenced
			}
			if st.epoch < 32766 {
				st.epoch++
				st.parts = map[topicPartition]*seqState{}
				st.lastUsed = now
				return pid, st.epoch, 0
			}
		}
	}
	if len(ps.states) >= maxProducers {
		return -1, -1, codeNotEnoughReplicas
	}
	ps.next++
	id := ps.next
	ps.states[id] = &producerState{epoch: 0, lastUsed: now, parts: map[topicPartition]*seqState{}}
	return id, 0, 0
}

// seqResult says what to do with a batch of an idempotent producer.
type seqResult struct {
	code int16     // non-zero: reject with this code
	dup  *seqBatch // resend of an accepted batch: answer with its result
	acc  *seqBatch // accepted: append, then call finish
}

// check validates a batch's sequence and, if accepted, reserves it. The
// caller holds the partition's append lock, so check and append order agree.
func (ps *producerStore) check(tp topicPartition, pid int64, epoch int16, firstSeq, lastSeq int32) seqResult {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	st, ok := ps.states[pid]
	if !ok {
		return seqResult{code: codeUnknownProducerID}
	}
	st.lastUsed = time.Now()
	if epoch < st.epoch {
		return seqResult{code: codeInvalidProducerEpoch}
	}
	if epoch > st.epoch {
		// A client-side epoch bump: sequences restart at 0.
		st.epoch = epoch
		st.parts = map[topicPartition]*seqState{}
	}
	ss := st.parts[tp]
	if ss == nil {
		ss = &seqState{lastSeq: -1}
		st.parts[tp] = ss
	}
	for _, b := range ss.recent {
		if b.firstSeq == firstSeq && b.lastSeq == lastSeq {
			return seqResult{dup: b}
		}
	}
	if ss.broken || firstSeq != nextSeq(ss.lastSeq) {
		return seqResult{code: codeOutOfOrderSequence}
	}
	b := &seqBatch{firstSeq: firstSeq, lastSeq: lastSeq, done: make(chan struct{})}
	ss.lastSeq = lastSeq
	ss.recent = append(ss.recent, b)
	if len(ss.recent) > dedupWindow {
		ss.recent = ss.recent[1:]
	}
	return seqResult{acc: b}
}

// finish records an accepted batch's outcome. A failed batch breaks the
// partition's sequence (see seqState.broken) and is forgotten, so that its
// resend is not answered as a duplicate.
func (ps *producerStore) finish(tp topicPartition, pid int64, b *seqBatch, baseOffset int64, code int16) {
	ps.mu.Lock()
	b.baseOffset, b.code = baseOffset, code
	if code != 0 {
		if st, ok := ps.states[pid]; ok {
			if ss := st.parts[tp]; ss != nil {
				ss.broken = true
				for i, r := range ss.recent {
					if r == b {
						ss.recent = append(ss.recent[:i:i], ss.recent[i+1:]...)
						break
					}
				}
			}
		}
	}
	ps.mu.Unlock()
	close(b.done)
}

// nextSeq is the sequence after s; sequences wrap from MaxInt32 to 0.
func nextSeq(s int32) int32 {
	if s == 1<<31-1 {
		return 0
	}
	return s + 1
}
