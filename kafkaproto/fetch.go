package kafkaproto

import (
	"context"
	"errors"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	mlog "github.com/millstream/millstream/log"
)

// maxFetchWait bounds a fetch's long poll whatever the client asks for, so a
// request cannot hold its connection (and Close) for long.
const maxFetchWait = 30 * time.Second

type fetchPart struct {
	topic     string
	partition int32
	offset    int64
	maxBytes  int
	out       *kmsg.FetchResponseTopicPartition
	// next is where to wait for new data after a pass: after the last
	// record returned, or the fetch offset.
	next int64
}

// handleFetch answers a fetch without fetch sessions (the response's session
// id 0 tells clients to send full fetches). It returns at once when at least
// MinBytes are available, else it long-polls until data arrives or
// MaxWaitMillis passes, using the log's blocking Fetch (no polling).
func (c *conn) handleFetch(ctx context.Context, req *kmsg.FetchRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.FetchResponse)
	maxBytes := int(req.MaxBytes)
	if maxBytes <= 0 {
		maxBytes = 50 << 20
	}
	wait := min(time.Duration(max(req.MaxWaitMillis, 0))*time.Millisecond, maxFetchWait)
	deadline := time.Now().Add(wait)

	var parts []*fetchPart
	resp.Topics = make([]kmsg.FetchResponseTopic, len(req.Topics))
	for i := range req.Topics {
		rt := &req.Topics[i]
		ot := &resp.Topics[i]
		*ot = kmsg.NewFetchResponseTopic()
		ot.Topic, ot.TopicID = rt.Topic, rt.TopicID
		ot.Partitions = make([]kmsg.FetchResponseTopicPartition, len(rt.Partitions))
		allowed := c.allowed(rt.Topic, ActionRead)
		var (
			info mlog.TopicInfo
			err  error
		)
		if allowed {
			info, err = c.s.l.Topic(ctx, rt.Topic)
		}
		for j := range rt.Partitions {
			rp := &rt.Partitions[j]
			op := &ot.Partitions[j]
			*op = kmsg.NewFetchResponseTopicPartition()
			op.Partition = rp.Partition
			op.HighWatermark, op.LastStableOffset, op.LogStartOffset = -1, -1, -1
			op.RecordBatches = []byte{}
			switch {
			case !allowed:
				op.ErrorCode = codeTopicAuth
			case err != nil:
				op.ErrorCode = logErrorCode(err)
			case rp.Partition < 0 || int(rp.Partition) >= len(info.Partitions):
				op.ErrorCode = codeUnknownTopic
			default:
				parts = append(parts, &fetchPart{
					topic: rt.Topic, partition: rp.Partition, offset: rp.FetchOffset,
					maxBytes: int(rp.PartitionMaxBytes), out: op,
				})
			}
		}
	}
	if len(parts) == 0 {
		if len(req.Topics) == 0 {
			// A fetch for nothing waits as Kafka does, so a client
			// with no partitions does not spin.
			sleepCtx(ctx, time.Until(deadline))
		}
		return resp
	}
	// Rotate the partition order between requests so that when the
	// overall limit is hit, the same partitions are not always last.
	c.fetchRotate++
	rot := c.fetchRotate % len(parts)
	parts = append(parts[rot:len(parts):len(parts)], parts[:rot]...)

	for {
		total, cut := c.fetchPass(ctx, parts, maxBytes)
		if total >= int(req.MinBytes) && total > 0 || cut || !time.Now().Before(deadline) || ctx.Err() != nil {
			break
		}
		if total > 0 && req.MinBytes <= 1 {
			break
		}
		c.waitAny(ctx, parts, deadline)
	}
	return resp
}

// fetchPass reads what is available now from every partition without
// waiting, within the per-partition and overall byte limits. Kafka returns at
// least one record batch even beyond the limits so a large record cannot
// stall a consumer; the log's Fetch likewise returns at least one record.
// cut reports that the response should go out without waiting: records were
// left behind by the byte limits, or a partition has an error.
func (c *conn) fetchPass(ctx context.Context, parts []*fetchPart, maxBytes int) (total int, cut bool) {
	infos := map[string]mlog.TopicInfo{}
	for _, fp := range parts {
		op := fp.out
		// Empty, not null: librdkafka rejects a null record set.
		op.ErrorCode, op.RecordBatches = 0, []byte{}
		fp.next = fp.offset
		budget := min(fp.maxBytes, maxBytes-total)
		var recs []mlog.Record
		var err error
		if budget > 0 || total == 0 {
			recs, err = c.s.l.Fetch(ctx, fp.topic, fp.partition, fp.offset, mlog.FetchOptions{MaxBytes: max(budget, 1)})
		}
		if err != nil {
			op.ErrorCode = logErrorCode(err)
			cut = true // answer errors at once, as Kafka does
			if !errors.Is(err, mlog.ErrOffsetOutOfRange) {
				c.s.logger.Warn("Kafka fetch failed", "topic", fp.topic, "partition", fp.partition, "offset", fp.offset, "error", err.Error())
			}
		}
		info, ok := infos[fp.topic]
		if !ok {
			info, _ = c.s.l.Topic(ctx, fp.topic)
			infos[fp.topic] = info
		}
		if int(fp.partition) < len(info.Partitions) {
			pi := info.Partitions[fp.partition]
			op.HighWatermark, op.LastStableOffset, op.LogStartOffset = pi.End, pi.End, pi.Start
		}
		if len(recs) > 0 {
			op.RecordBatches = appendBatches(nil, recs)
			total += len(op.RecordBatches)
			fp.next = recs[len(recs)-1].Offset + 1
			// The high watermark was read after the records, but a
			// topic listing can lag a concurrent append; never report
			// one below what was returned.
			op.HighWatermark = max(op.HighWatermark, fp.next)
			op.LastStableOffset = op.HighWatermark
			if fp.next < op.HighWatermark {
				cut = true
			}
			c.s.m.recordsOut.Add(float64(len(recs)))
		}
	}
	return total, cut
}

// waitAny blocks until any partition may have new data, the deadline passes
// or ctx ends.
func (c *conn) waitAny(ctx context.Context, parts []*fetchPart, deadline time.Time) {
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	woke := make(chan struct{}, len(parts))
	for _, fp := range parts {
		if fp.out.ErrorCode != 0 {
			continue
		}
		go func(topic string, p int32, off int64) {
			// MaxRecords 1: only the wake-up matters; the next pass reads.
			_, _ = c.s.l.Fetch(wctx, topic, p, off, mlog.FetchOptions{Wait: true, MaxRecords: 1, MaxBytes: 1})
			woke <- struct{}{}
		}(fp.topic, fp.partition, fp.next)
	}
	select {
	case <-woke:
	case <-wctx.Done():
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
