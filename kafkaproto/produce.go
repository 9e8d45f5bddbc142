package kafkaproto

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kmsg"

	mlog "github.com/millstream/millstream/log"
)

// topicInfo looks a topic up, creating it when auto-creation is on and the
// caller allows it.
func (s *Server) topicInfo(ctx context.Context, name string, create bool) (mlog.TopicInfo, error) {
	info, err := s.l.Topic(ctx, name)
	if errors.Is(err, mlog.ErrUnknownTopic) && create && s.opts.AutoCreateTopics {
		if err := s.l.CreateTopic(ctx, name, mlog.TopicConfig{}); err != nil && !errors.Is(err, mlog.ErrTopicExists) {
			return info, err
		}
		s.logger.Info("Kafka client created topic (auto-create)", "topic", name)
		return s.l.Topic(ctx, name)
	}
	return info, err
}

func (s *Server) partLock(tp topicPartition) *sync.Mutex {
	if m, ok := s.partLocks.Load(tp); ok {
		return m.(*sync.Mutex)
	}
	m, _ := s.partLocks.LoadOrStore(tp, new(sync.Mutex))
	return m.(*sync.Mutex)
}

// handleProduce validates and decodes every partition's batches and hands
// the records to the log in the reader goroutine, so that appends follow
// request order; the returned function waits until they are durable and
// builds the response (nil for acks=0, which gets none).
func (c *conn) handleProduce(ctx context.Context, req *kmsg.ProduceRequest) func() kmsg.Response {
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	var waits []func()
	resp.Topics = make([]kmsg.ProduceResponseTopic, len(req.Topics))
	for i := range req.Topics {
		rt := &req.Topics[i]
		out := &resp.Topics[i]
		*out = kmsg.NewProduceResponseTopic()
		out.Topic = rt.Topic
		out.Partitions = make([]kmsg.ProduceResponseTopicPartition, len(rt.Partitions))
		var (
			info    mlog.TopicInfo
			infoErr error
			allowed = c.allowed(rt.Topic, ActionWrite)
		)
		if allowed {
			info, infoErr = c.s.topicInfo(ctx, rt.Topic, true)
		}
		for j := range rt.Partitions {
			rp := &rt.Partitions[j]
			op := &out.Partitions[j]
			*op = kmsg.NewProduceResponseTopicPartition()
			op.Partition = rp.Partition
			switch {
			case req.TransactionID != nil:
				op.ErrorCode = codeTxnIDAuth
				op.ErrorMessage = strPtr("transactions are not supported by Millstream's Kafka endpoint")
				continue
			case !allowed:
				op.ErrorCode = codeTopicAuth
				continue
			case infoErr != nil:
				op.ErrorCode = logErrorCode(infoErr)
				continue
			case rp.Partition < 0 || int(rp.Partition) >= len(info.Partitions):
				op.ErrorCode = codeUnknownTopic
				continue
			}
			batches, err := decodeBatches(rt.Topic, rp.Partition, rp.Records, c.s.opts.MaxRequestBytes)
			if err != nil {
				op.ErrorCode = codeCorrupt
				switch {
				case errors.Is(err, errUnsupportedFormat):
					op.ErrorCode = codeUnsupportedForFormat
				case errors.Is(err, errTransactional):
					op.ErrorCode = codeInvalidRequest
				}
				op.ErrorMessage = strPtr(err.Error())
				continue
			}
			op.LogStartOffset = info.Partitions[rp.Partition].Start
			waits = append(waits, c.s.appendPartition(ctx, topicPartition{rt.Topic, rp.Partition}, batches, op))
		}
	}
	return func() kmsg.Response {
		for _, w := range waits {
			w()
		}
		if req.Acks == 0 {
			return nil
		}
		return resp
	}
}

func strPtr(s string) *string { return &s }

// appendPartition appends the batches of one partition. Idempotent batches
// are checked against the producer's sequence first; the partition lock
// keeps a batch's records contiguous and the sequence check in append order.
// The returned function waits for the outcome and fills in op.
func (s *Server) appendPartition(ctx context.Context, tp topicPartition, batches []batch, op *kmsg.ProduceResponseTopicPartition) func() {
	type result struct {
		done    chan struct{}
		base    int64
		code    int16
		errText string
	}
	results := make([]*result, 0, len(batches))
	lock := s.partLock(tp)
	lock.Lock()
	for _, b := range batches {
		res := &result{done: make(chan struct{})}
		results = append(results, res)
		var acc *seqBatch
		if b.producerID >= 0 {
			lastSeq := int32((int64(b.firstSeq) + int64(b.lastDelta)) % (1 << 31))
			sr := s.producers.check(tp, b.producerID, b.producerEpoch, b.firstSeq, lastSeq)
			switch {
			case sr.code != 0:
				res.code = sr.code
				close(res.done)
				continue
			case sr.dup != nil:
				dup := sr.dup
				go func() {
					<-dup.done
					res.base, res.code = dup.baseOffset, dup.code
					close(res.done)
				}()
				continue
			}
			acc = sr.acc
		}
		var (
			pending = int32(len(b.records))
			mu      sync.Mutex
			first   error
		)
		pid := b.producerID
		for k, r := range b.records {
			s.l.Produce(ctx, r, func(r *mlog.Record, err error) {
				mu.Lock()
				if err != nil && first == nil {
					first = err
				}
				if k == 0 && err == nil {
					res.base = r.Offset
				}
				mu.Unlock()
				if atomic.AddInt32(&pending, -1) != 0 {
					return
				}
				res.code = logErrorCode(first)
				if first != nil {
					res.errText = first.Error()
				} else {
					s.m.recordsIn.Add(float64(len(b.records)))
				}
				if acc != nil {
					s.producers.finish(tp, pid, acc, res.base, res.code)
				}
				close(res.done)
			})
		}
	}
	lock.Unlock()
	return func() {
		op.BaseOffset = -1
		for i, res := range results {
			<-res.done
			if i == 0 {
				op.BaseOffset = res.base
			}
			if res.code != 0 && op.ErrorCode == 0 {
				op.ErrorCode = res.code
				if res.errText != "" {
					op.ErrorMessage = strPtr(res.errText)
				}
			}
		}
		if op.ErrorCode != 0 {
			op.BaseOffset = -1
		}
	}
}
