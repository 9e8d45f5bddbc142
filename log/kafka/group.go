package kafka

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	mlog "github.com/millstream/millstream/log"
)

// GroupOptions tunes a GroupConsumer. Zero values take the defaults noted.
// The callbacks get maps of topic to partitions; they must return quickly
// (well within Options.GroupRebalanceTimeout) and must not call Poll,
// Commit or Close.
type GroupOptions struct {
	// StartAt applies to partitions the group has no committed offset for.
	StartAt mlog.StartAt
	// MaxPollRecords bounds the records one Poll returns. Zero means 1000.
	MaxPollRecords int
	// OnAssigned is called when this member gets partitions, before Poll
	// returns any of their records: load per-partition state here.
	OnAssigned func(ctx context.Context, assigned map[string][]int32)
	// OnRevoked is called when partitions move to another member (or this
	// member leaves), after everything Poll returned for them has been
	// handed out and before their positions are committed: save
	// per-partition state here. The partitions' next owner starts at the
	// committed positions only after OnRevoked returned and the commit
	// is done.
	OnRevoked func(ctx context.Context, revoked map[string][]int32)
	// OnLost is called when the group took partitions away without a
	// chance to commit (this member missed its session timeout): drop
	// their state, another member may already be processing them from
	// the last commit.
	OnLost func(ctx context.Context, lost map[string][]int32)
}

// GroupConsumer is a member of a Kafka consumer group: the group's members
// split the partitions of the topics among themselves (cooperative-sticky
// balancing) and take over the partitions of a member that leaves or dies.
// Like log.Consumer, it is used by one goroutine (Poll, Commit); Close may
// be called from any goroutine once that goroutine has stopped polling.
//
// Rebalances never interrupt processing: from the moment Poll returns
// records until the next Poll (or Close), the group waits, so callbacks do
// not run while the records are being processed. Callbacks run on the
// client's goroutine while the owner is inside Poll, or idle after a Poll
// that returned nothing; state they share with the processing goroutine
// needs a mutex (never contended by processing).
type GroupConsumer struct {
	l      *Log
	cl     *kgo.Client
	group  string
	opts   GroupOptions
	closed bool

	mu       sync.Mutex
	assigned map[string]map[int32]bool
	// pending is, per partition, the position after the last batch Poll
	// returned, until the owner says it is processed (by calling Poll or
	// Commit again); pos the processed positions, which revocations
	// commit; committed what was last committed.
	pending   map[string]map[int32]kgo.EpochOffset
	pos       map[string]map[int32]kgo.EpochOffset
	committed map[string]map[int32]int64
}

// GroupConsumer joins group as a consumer of topics. All members of a group
// must consume the same topics. The topics must exist.
func (l *Log) GroupConsumer(ctx context.Context, group string, topics []string, opts GroupOptions) (*GroupConsumer, error) {
	if group == "" {
		return nil, errors.New("kafka log: group consumer: empty group name (name the consumer, e.g. \"historian\")")
	}
	if len(topics) == 0 {
		return nil, fmt.Errorf("kafka log: group consumer %s: no topics", group)
	}
	if err := l.checkOpen("group consumer " + group); err != nil {
		return nil, err
	}
	for _, t := range topics {
		if _, err := l.topicMeta(ctx, t, false); err != nil {
			return nil, fmt.Errorf("kafka log: group consumer %s: %w", group, err)
		}
	}
	if opts.MaxPollRecords <= 0 {
		opts.MaxPollRecords = 1000
	}
	c := &GroupConsumer{
		l: l, group: group, opts: opts,
		assigned:  map[string]map[int32]bool{},
		pending:   map[string]map[int32]kgo.EpochOffset{},
		pos:       map[string]map[int32]kgo.EpochOffset{},
		committed: map[string]map[int32]int64{},
	}
	reset := kgo.NewOffset().AtStart()
	if opts.StartAt == mlog.StartLatest {
		reset = kgo.NewOffset().AtEnd()
	}
	common, err := l.opts.clientOpts()
	if err != nil {
		return nil, err
	}
	copts := append(common,
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topics...),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(reset),
		kgo.OnPartitionsAssigned(c.onAssigned),
		kgo.OnPartitionsRevoked(c.onRevoked),
		kgo.OnPartitionsLost(c.onLost),
	)
	if d := l.opts.GroupSessionTimeout; d > 0 {
		copts = append(copts, kgo.SessionTimeout(d))
	}
	if d := l.opts.GroupHeartbeatInterval; d > 0 {
		copts = append(copts, kgo.HeartbeatInterval(d))
	}
	if d := l.opts.GroupRebalanceTimeout; d > 0 {
		copts = append(copts, kgo.RebalanceTimeout(d))
	}
	copts = append(copts, l.opts.ClientOptions...)
	if c.cl, err = kgo.NewClient(copts...); err != nil {
		return nil, fmt.Errorf("kafka log: group consumer %s: %w", group, err)
	}
	return c, nil
}

func (c *GroupConsumer) onAssigned(ctx context.Context, _ *kgo.Client, assigned map[string][]int32) {
	c.mu.Lock()
	for t, ps := range assigned {
		if c.assigned[t] == nil {
			c.assigned[t] = map[int32]bool{}
		}
		for _, p := range ps {
			c.assigned[t][p] = true
		}
	}
	c.mu.Unlock()
	if c.opts.OnAssigned != nil {
		c.opts.OnAssigned(ctx, assigned)
	}
}

func (c *GroupConsumer) onRevoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	if len(revoked) == 0 {
		return
	}
	if c.opts.OnRevoked != nil {
		c.opts.OnRevoked(ctx, revoked)
	}
	// Everything Poll returned for these partitions has been processed
	// (the owner is back in Poll, or closing): commit it so the next owner
	// starts right after it.
	if err := c.commit(ctx, revoked); err != nil {
		c.l.opts.Logger.Warn("kafka group consumer: commit on revoke failed; the next owner re-reads from the previous commit",
			"group", c.group, "err", err)
	}
	c.drop(revoked)
}

func (c *GroupConsumer) onLost(ctx context.Context, _ *kgo.Client, lost map[string][]int32) {
	if c.opts.OnLost != nil {
		c.opts.OnLost(ctx, lost)
	}
	c.drop(lost)
}

func (c *GroupConsumer) drop(parts map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for t, ps := range parts {
		for _, p := range ps {
			delete(c.assigned[t], p)
			delete(c.pending[t], p)
			delete(c.pos[t], p)
			delete(c.committed[t], p)
		}
	}
}

// Poll returns the next records of the partitions this member owns,
// blocking until there are some, ctx ends or the consumer is closed.
// Calling Poll says the records of the previous Poll are processed: a
// rebalance waiting for them may proceed, and Commit or a revocation
// commits past them. An error (a group or fetch problem the client keeps
// retrying, or ErrClosed) does not end the consumer; Poll may be called
// again.
func (c *GroupConsumer) Poll(ctx context.Context) ([]mlog.Record, error) {
	c.markProcessed()
	c.cl.AllowRebalance()
	for {
		fs := c.cl.PollRecords(ctx, c.opts.MaxPollRecords)
		if fs.IsClientClosed() {
			return nil, fmt.Errorf("kafka log: group consumer %s: %w", c.group, mlog.ErrClosed)
		}
		if err := ctx.Err(); err != nil && fs.Empty() {
			return nil, err
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if ferr == nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				ferr = fmt.Errorf("kafka log: group consumer %s: %s/%d: %w", c.group, t, p, mapErr(err))
			}
		})
		var out []mlog.Record
		c.mu.Lock()
		fs.EachRecord(func(kr *kgo.Record) {
			out = append(out, toRecord(kr))
			if c.pending[kr.Topic] == nil {
				c.pending[kr.Topic] = map[int32]kgo.EpochOffset{}
			}
			c.pending[kr.Topic][kr.Partition] = kgo.EpochOffset{Epoch: kr.LeaderEpoch, Offset: kr.Offset + 1}
		})
		c.mu.Unlock()
		if len(out) > 0 {
			return out, nil
		}
		if ferr != nil {
			return nil, ferr
		}
		// Nothing was handed out, but a poll that returned anything
		// (here only errors that are skipped) still counts as a poller
		// blocking rebalances until AllowRebalance: polling again
		// without it would hold a pending rebalance for as long as no
		// records came.
		c.cl.AllowRebalance()
	}
}

// markProcessed moves the positions of the last batch to the processed
// ones.
func (c *GroupConsumer) markProcessed() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for t, ps := range c.pending {
		if c.pos[t] == nil {
			c.pos[t] = map[int32]kgo.EpochOffset{}
		}
		for p, eo := range ps {
			c.pos[t][p] = eo
		}
	}
	clear(c.pending)
}

func toRecord(kr *kgo.Record) mlog.Record {
	r := mlog.Record{
		Topic: kr.Topic, Partition: kr.Partition, Offset: kr.Offset,
		Timestamp: kr.Timestamp, Key: kr.Key, Value: kr.Value,
	}
	if len(kr.Headers) > 0 {
		r.Headers = make([]mlog.Header, len(kr.Headers))
		for i, h := range kr.Headers {
			r.Headers[i] = mlog.Header{Key: h.Key, Value: h.Value}
		}
	}
	return r
}

// Commit durably commits, for every owned partition, the position after the
// last record Poll returned. Call it after processing them (each batch, or
// every so often: what is not committed is read again by the next owner
// after a crash).
func (c *GroupConsumer) Commit(ctx context.Context) error {
	c.markProcessed()
	return c.commit(ctx, nil)
}

// commit commits the positions of only (all owned partitions if nil) that
// moved since the last commit.
func (c *GroupConsumer) commit(ctx context.Context, only map[string][]int32) error {
	todo := map[string]map[int32]kgo.EpochOffset{}
	c.mu.Lock()
	for t, ps := range c.pos {
		for p, eo := range ps {
			if only != nil && !slices.Contains(only[t], p) {
				continue
			}
			if cur, ok := c.committed[t][p]; ok && cur == eo.Offset {
				continue
			}
			if todo[t] == nil {
				todo[t] = map[int32]kgo.EpochOffset{}
			}
			todo[t][p] = eo
		}
	}
	c.mu.Unlock()
	if len(todo) == 0 {
		return nil
	}
	var cerr error
	done := make(chan struct{})
	c.cl.CommitOffsetsSync(ctx, todo, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		defer close(done)
		if err != nil {
			cerr = err
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if p.ErrorCode != 0 && cerr == nil {
					cerr = fmt.Errorf("%s/%d: %w", t.Topic, p.Partition, kerr.ErrorForCode(p.ErrorCode))
				}
			}
		}
	})
	<-done
	if cerr != nil {
		return fmt.Errorf("kafka log: group consumer %s: commit: %w", c.group, mapErr(cerr))
	}
	c.mu.Lock()
	for t, ps := range todo {
		if c.committed[t] == nil {
			c.committed[t] = map[int32]int64{}
		}
		for p, eo := range ps {
			c.committed[t][p] = eo.Offset
		}
	}
	c.mu.Unlock()
	return nil
}

// Assigned returns the partitions this member owns now, per topic, sorted.
func (c *GroupConsumer) Assigned() map[string][]int32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string][]int32{}
	for t, ps := range c.assigned {
		if len(ps) > 0 {
			out[t] = slices.Sorted(maps.Keys(ps))
		}
	}
	return out
}

// Positions returns, per owned partition, the offset after the last record
// Poll returned: what Commit would commit. A component that checkpoints its
// own state stores these with it. Once Close has begun (in OnRevoked while
// leaving) the last batch counts only if Commit was called after it.
func (c *GroupConsumer) Positions() map[string]map[int32]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]map[int32]int64{}
	for _, m := range []map[string]map[int32]kgo.EpochOffset{c.pos, c.pending} {
		for t, ps := range m {
			for p, eo := range ps {
				if out[t] == nil {
					out[t] = map[int32]int64{}
				}
				out[t][p] = eo.Offset
			}
		}
	}
	return out
}

// Close leaves the group: OnRevoked runs for every owned partition and
// their processed positions are committed, then the partitions go to the
// remaining members. The last batch Poll returned counts as processed only
// if Commit was called after it; otherwise the next owner reads it again.
// Call Close once the polling goroutine has stopped.
func (c *GroupConsumer) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	// The polling goroutine has stopped, so a batch still pending was
	// not processed (Commit after it would have moved it to pos). Drop
	// it before leaving: OnRevoked may stamp derived state with
	// Positions, and a position past records nobody processed makes the
	// next owner skip them (the normaliser lost points that way).
	clear(c.pending)
	c.mu.Unlock()
	c.cl.CloseAllowingRebalance()
	return nil
}
