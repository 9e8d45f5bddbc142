package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	mlog "github.com/millstream/millstream/log"
)

// fetchRetries bounds how often one Fetch refreshes metadata and retries
// after a retriable error (leadership moving, a broker restarting).
const fetchRetries = 8

// Fetch reads records of one partition with a FetchRequest to the
// partition's leader. Kafka returns whole batches; records below offset are
// dropped and MaxRecords / MaxBytes are applied here, always keeping one
// record. With Wait and nothing to read, the partition joins its leader's
// shared long poll (one FetchRequest per broker covering every waiting
// partition) until the partition's high watermark passes offset, then reads.
func (l *Log) Fetch(ctx context.Context, topic string, partition int32, offset int64, opts mlog.FetchOptions) ([]mlog.Record, error) {
	if err := l.checkOpen("fetch"); err != nil {
		return nil, err
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 1 << 20
	}
	octx, cancel := l.opCtx(ctx)
	defer cancel()
	if offset < 0 {
		return nil, fmt.Errorf("kafka log: fetch %s/%d at %d: %w", topic, partition, offset, mlog.ErrOffsetOutOfRange)
	}
	for {
		recs, leader, err := l.fetchNow(octx, topic, partition, offset, opts)
		if err != nil {
			if octx.Err() != nil {
				return nil, l.ctxErr(ctx, fmt.Sprintf("fetch %s/%d at %d", topic, partition, offset))
			}
			return nil, err
		}
		if len(recs) > 0 || !opts.Wait {
			return recs, nil
		}
		if err := l.waitFor(octx, leader, topic, partition, offset); err != nil {
			return nil, l.ctxErr(ctx, fmt.Sprintf("fetch %s/%d at %d", topic, partition, offset))
		}
	}
}

// fetchNow issues one immediate fetch (retrying retriable errors) and
// returns the records and the leader it asked.
func (l *Log) fetchNow(ctx context.Context, topic string, partition int32, offset int64, opts mlog.FetchOptions) ([]mlog.Record, int32, error) {
	fresh := false
	var lastErr error
	for attempt := 0; attempt < fetchRetries; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return nil, 0, ctx.Err()
			case <-time.After(time.Duration(attempt) * 50 * time.Millisecond):
			}
		}
		m, err := l.topicMeta(ctx, topic, fresh)
		if err != nil {
			return nil, 0, fmt.Errorf("kafka log: fetch: %w", err)
		}
		if partition < 0 || int(partition) >= len(m.leaders) {
			if !fresh {
				fresh = true
				continue
			}
			return nil, 0, fmt.Errorf("kafka log: fetch: %w: %s/%d (topic has %d partitions)", mlog.ErrUnknownPartition, topic, partition, len(m.leaders))
		}
		leader := m.leaders[partition]
		if leader < 0 {
			fresh, lastErr = true, kerr.LeaderNotAvailable
			continue
		}
		req := fetchRequest(topic, m, partition, offset, int32(min(opts.MaxBytes, 1<<30)), 0)
		resp, err := l.cl.Broker(int(leader)).Request(ctx, req)
		if err != nil {
			if ctx.Err() != nil {
				return nil, 0, ctx.Err()
			}
			fresh, lastErr = true, err
			continue
		}
		rp, err := findPartition(resp.(*kmsg.FetchResponse), topic, m, partition)
		if err != nil {
			fresh, lastErr = true, err
			continue
		}
		fp, _ := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{Offset: offset, Topic: topic, Partition: partition}, rp, l.decompressor, nil)
		if fp.Err != nil {
			if errors.Is(fp.Err, kerr.OffsetOutOfRange) {
				return nil, 0, fmt.Errorf("kafka log: fetch %s/%d at %d (readable %d..%d): %w", topic, partition, offset, rp.LogStartOffset, rp.HighWatermark, mapErr(fp.Err))
			}
			if retriable(fp.Err) {
				fresh, lastErr = true, fp.Err
				continue
			}
			return nil, 0, fmt.Errorf("kafka log: fetch %s/%d at %d from broker %d: %w", topic, partition, offset, leader, mapErr(fp.Err))
		}
		return convert(fp.Records, opts), leader, nil
	}
	return nil, 0, fmt.Errorf("kafka log: fetch %s/%d at %d: gave up after %d attempts: %w", topic, partition, offset, fetchRetries, mapErr(lastErr))
}

func fetchRequest(topic string, m *topicMeta, partition int32, offset int64, maxBytes, maxWaitMs int32) *kmsg.FetchRequest {
	req := kmsg.NewPtrFetchRequest()
	req.ReplicaID = -1
	req.MaxWaitMillis = maxWaitMs
	req.MinBytes = 1
	req.MaxBytes = maxBytes
	req.SessionID = 0
	req.SessionEpoch = -1 // no fetch session: every request is complete
	t := kmsg.NewFetchRequestTopic()
	t.Topic = topic // v12 and older name the topic
	t.TopicID = m.id
	p := kmsg.NewFetchRequestTopicPartition()
	p.Partition = partition
	p.FetchOffset = offset
	p.CurrentLeaderEpoch = -1
	p.LogStartOffset = -1
	p.PartitionMaxBytes = maxBytes
	t.Partitions = append(t.Partitions, p)
	req.Topics = append(req.Topics, t)
	return req
}

// findPartition picks the partition out of a response, matching the topic
// by name (v12-) or ID (v13+).
func findPartition(resp *kmsg.FetchResponse, topic string, m *topicMeta, partition int32) (*kmsg.FetchResponseTopicPartition, error) {
	if resp.ErrorCode != 0 {
		return nil, kerr.ErrorForCode(resp.ErrorCode)
	}
	for i := range resp.Topics {
		t := &resp.Topics[i]
		if t.Topic != topic && t.TopicID != m.id {
			continue
		}
		for j := range t.Partitions {
			if t.Partitions[j].Partition == partition {
				return &t.Partitions[j], nil
			}
		}
	}
	return nil, fmt.Errorf("fetch response has no %s/%d", topic, partition)
}

// convert turns fetched records into log records, applying MaxRecords and
// MaxBytes (at least one record).
func convert(krs []*kgo.Record, opts mlog.FetchOptions) []mlog.Record {
	n := len(krs)
	if opts.MaxRecords > 0 {
		n = min(n, opts.MaxRecords)
	}
	out := make([]mlog.Record, 0, n)
	size := 0
	for _, kr := range krs[:n] {
		r := mlog.Record{
			Topic: kr.Topic, Partition: kr.Partition, Offset: kr.Offset,
			Timestamp: time.UnixMilli(kr.Timestamp.UnixMilli()),
			Key:       kr.Key, Value: kr.Value,
		}
		if len(kr.Headers) > 0 {
			r.Headers = make([]mlog.Header, len(kr.Headers))
			for i, h := range kr.Headers {
				r.Headers[i] = mlog.Header{Key: h.Key, Value: h.Value}
			}
		}
		size += recordSize(&r)
		if len(out) > 0 && size > opts.MaxBytes {
			break
		}
		out = append(out, r)
	}
	return out
}

// waitFor blocks until the partition's high watermark passes offset, an
// error shows on the partition, or ctx ends.
func (l *Log) waitFor(ctx context.Context, leader int32, topic string, partition int32, offset int64) error {
	m, err := l.topicMeta(ctx, topic, false)
	if err != nil {
		return err
	}
	w := &waiter{topic: topic, id: m.id, partition: partition, offset: offset, done: make(chan struct{})}
	p := l.poller(leader)
	p.add(w)
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		p.remove(w)
		return ctx.Err()
	}
}

// waiter is one Fetch with Wait parked on its leader's long poll.
type waiter struct {
	topic     string
	id        [16]byte
	partition int32
	offset    int64
	done      chan struct{}
}

// poller runs one long-poll FetchRequest at a time to one broker for all
// partitions waiting on it. Kafka handles one request per connection at a
// time, so a long poll per waiting Fetch would queue them behind each
// other; one shared poll wakes every waiter as soon as its data exists.
type poller struct {
	l       *Log
	broker  int32
	mu      sync.Mutex
	waiters map[*waiter]struct{}
	running bool
}

func (l *Log) poller(broker int32) *poller {
	l.pollMu.Lock()
	defer l.pollMu.Unlock()
	p := l.pollers[broker]
	if p == nil {
		p = &poller{l: l, broker: broker, waiters: map[*waiter]struct{}{}}
		l.pollers[broker] = p
	}
	return p
}

func (p *poller) add(w *waiter) {
	p.mu.Lock()
	p.waiters[w] = struct{}{}
	if !p.running {
		p.running = true
		go p.run()
	}
	p.mu.Unlock()
}

func (p *poller) remove(w *waiter) {
	p.mu.Lock()
	delete(p.waiters, w)
	p.mu.Unlock()
}

// wake releases w (the caller holds p.mu).
func (p *poller) wake(w *waiter) {
	delete(p.waiters, w)
	close(w.done)
}

type tp struct {
	topic     string
	partition int32
}

func (p *poller) run() {
	maxWait := int32(p.l.opts.FetchWait.Milliseconds())
	for {
		p.mu.Lock()
		if len(p.waiters) == 0 || p.l.ctx.Err() != nil {
			// Close ends the waiters through their own contexts.
			p.running = false
			p.mu.Unlock()
			return
		}
		// One entry per partition at the lowest waiting offset: the poll
		// returns as soon as that one has data, and the high watermark
		// it reports tells every waiter of the partition.
		at := map[tp]*waiter{}
		for w := range p.waiters {
			k := tp{w.topic, w.partition}
			if cur := at[k]; cur == nil || w.offset < cur.offset {
				at[k] = w
			}
		}
		p.mu.Unlock()

		req := kmsg.NewPtrFetchRequest()
		req.ReplicaID = -1
		req.MaxWaitMillis = maxWait
		req.MinBytes = 1
		req.MaxBytes = 1 << 20
		req.SessionEpoch = -1
		topics := map[string]int{}
		for k, w := range at {
			i, ok := topics[k.topic]
			if !ok {
				t := kmsg.NewFetchRequestTopic()
				t.Topic, t.TopicID = w.topic, w.id
				req.Topics = append(req.Topics, t)
				i = len(req.Topics) - 1
				topics[k.topic] = i
			}
			pr := kmsg.NewFetchRequestTopicPartition()
			pr.Partition = k.partition
			pr.FetchOffset = w.offset
			pr.CurrentLeaderEpoch = -1
			pr.LogStartOffset = -1
			// Only the high watermark matters; the waiter reads the
			// records itself with its own limits. Kafka still returns
			// the first batch of the first partition with data.
			pr.PartitionMaxBytes = 1
			req.Topics[i].Partitions = append(req.Topics[i].Partitions, pr)
		}
		kresp, err := p.l.waitCl.Broker(int(p.broker)).Request(p.l.ctx, req)
		p.mu.Lock()
		if err != nil {
			// The broker is unreachable or gone: wake everyone so each
			// Fetch refreshes metadata and finds the current leader.
			for w := range p.waiters {
				p.wake(w)
			}
			p.mu.Unlock()
			continue
		}
		resp := kresp.(*kmsg.FetchResponse)
		if resp.ErrorCode != 0 {
			for w := range p.waiters {
				p.wake(w)
			}
			p.mu.Unlock()
			continue
		}
		ids := map[[16]byte]string{}
		for _, w := range at {
			ids[w.id] = w.topic
		}
		hwm := map[tp]int64{}
		for _, t := range resp.Topics {
			name := t.Topic
			if name == "" {
				name = ids[t.TopicID]
			}
			for _, rp := range t.Partitions {
				k := tp{name, rp.Partition}
				if rp.ErrorCode != 0 {
					hwm[k] = -1 // wake: the waiter's own fetch reports or retries
				} else {
					hwm[k] = rp.HighWatermark
				}
			}
		}
		for w := range p.waiters {
			if h, ok := hwm[tp{w.topic, w.partition}]; ok && (h < 0 || h > w.offset) {
				p.wake(w)
			}
		}
		p.mu.Unlock()
	}
}
