package uns

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/millstream/millstream/log"
)

// GroupConsumer is a member of a consumer group as the normaliser uses it:
// the group's members split the partitions of the topic, and a member that
// leaves or dies has its partitions moved to the others. Poll, Commit and
// Positions behave as log.Consumer's: Poll returns the next records of the
// owned partitions and says that the previous batch is processed; Commit
// commits the processed positions; Positions returns them, per topic and
// partition, including the last batch. As with log.Consumer, Poll may
// return records although ctx has ended; they are the caller's to process.
// Close leaves the group: the OnRevoked callback runs for every owned
// partition, then their processed positions are committed (a batch Poll
// returned and nobody committed after is not counted). (*kafka.Log).GroupConsumer satisfies it; uns
// does not depend on the backend.
type GroupConsumer interface {
	Poll(ctx context.Context) ([]log.Record, error)
	Commit(ctx context.Context) error
	Positions() map[string]map[int32]int64
	Close() error
}

// GroupCallbacks are the group consumer's rebalance callbacks (maps of
// topic to partitions). A GroupConsumer calls them only while its owner is
// inside Poll or Close (never while a polled batch is being processed):
// OnAssigned before Poll returns records of new partitions; OnRevoked when
// partitions move away, after the owner processed everything polled of
// them and before their positions are committed (the next owner starts
// only after that commit); OnLost when the group took partitions away
// without a chance to commit (this member missed its session timeout).
type GroupCallbacks struct {
	OnAssigned, OnRevoked, OnLost func(ctx context.Context, parts map[string][]int32)
}

// GroupConsumerFactory joins group as a consumer of topics.
type GroupConsumerFactory func(ctx context.Context, group string, topics []string, cb GroupCallbacks) (GroupConsumer, error)

// BookmarkGroup is the group under which a normaliser that is a group
// member bookmarks uns.points for ingress partition p. It is not the
// consumer group: Kafka refuses commits from outside a group with live
// members, and each partition's bookmark moves on its own.
func BookmarkGroup(p int32) string { return NormalizerGroup + ".bookmark." + strconv.Itoa(int(p)) }

// SparkplugPartition is the ingress partition, among n, of every message
// of a Sparkplug edge node and its devices: the MQTT broker keys them by
// "spBv1.0/{group}/{edge_node}" (broker.IngressPartitionKey) so that one
// edge node's sequence stays in one partition, in order.
func SparkplugPartition(group, edgeNode string, n int32) int32 {
	return log.PartitionForKey([]byte(sparkplugPrefix+group+"/"+edgeNode), n)
}

// groupRun is the state of Run as a group member. The loop owns the
// writer; the rebalance callbacks share only the fields under mu (they
// run while the loop is in Poll, so mu is never contended by processing).
type groupRun struct {
	n          *Normalizer
	gc         GroupConsumer
	stateParts int32 // partitions of the ingress topic and of HostStateTopic

	mu sync.Mutex
	// toLoad are assigned partitions whose state the loop has not loaded
	// yet; owned those it has; gone those revoked or lost since the loop
	// last looked (it forgets their skip state).
	toLoad, owned, gone map[int32]bool
	// failed: Run is returning an error, the host may hold effects of a
	// batch that is not processed, so it must not be checkpointed.
	failed bool

	bookmarked map[int32][]int64 // uns.points ends of each partition's last bookmark
	pending    map[int32]int64   // per partition, the highest source offset still in done
}

// runGroup is Run as a member of the consumer group NormalizerGroup.
//
// Exactly-once with several writers. Each batch is durable in uns.points
// before the ingress positions are committed, as on one node, and after a
// commit each owned ingress partition p gets its own bookmark
// (BookmarkGroup(p), at most every CheckpointInterval): the end offsets of
// uns.points at that moment. Points of p written after p's last commit are
// therefore after p's bookmark, whoever else writes to uns.points. When a
// member is assigned p, before it processes any record of p it reads
// uns.points from p's bookmark to the end and skips the points it finds
// whose source is in p at or after p's committed offset (written by the
// previous owner, not committed).
//
// Sparkplug host state per ingress partition. All messages of one edge
// node are in one ingress partition (SparkplugPartition), so the host
// state splits by partition: the nodes of p are checkpointed to partition
// p of HostStateTopic, with p's position. On assignment the member merges
// p's last checkpoint into its host; records of p below the checkpoint's
// position are already in that state (a stop between checkpoint and
// commit) and are skipped whole. On revocation it checkpoints p's nodes at
// the processed position, which the group consumer then commits, and
// forgets them; on loss it only forgets them.
//
// Races. The group consumer does not hand p to the next owner before the
// previous owner has run OnRevoked (checkpoint) and committed p's
// processed positions, and nothing of p is processed while it is in
// flight: a clean handover (stop, scale out, scale in) writes every point
// once and keeps every edge node's state, without a rebirth. A member
// that crashes stops writing when it dies; the next owner finds its
// uncommitted points after the bookmark and resumes the host state from
// the last checkpoint, which is never behind the committed position. The
// one case this cannot cover without Kafka transactions is a member that
// is alive but cut off from the group for longer than the session timeout
// (a long GC pause, a network partition) while it can still write to
// uns.points: points it writes after the next owner has read the bookmark
// may be written twice, and the next owner may ask its edge nodes to
// rebirth. Its commits are refused, so nothing is lost.
func (n *Normalizer) runGroup(ctx context.Context, stateParts int32) error {
	info, err := n.l.Topic(ctx, HostStateTopic)
	if err != nil {
		return fmt.Errorf("uns normaliser: %w", err)
	}
	if int32(len(info.Partitions)) != stateParts {
		return fmt.Errorf("uns normaliser: %s has %d partitions and %s %d; as a consumer group member the normaliser keeps the Sparkplug state of each ingress partition in the partition of the same number: delete %s with Kafka's tools (edge nodes will be asked to rebirth once) or give it %d partitions",
			HostStateTopic, len(info.Partitions), n.opts.Source, stateParts, HostStateTopic, stateParts)
	}
	g := &groupRun{n: n, stateParts: stateParts,
		toLoad: map[int32]bool{}, owned: map[int32]bool{}, gone: map[int32]bool{},
		bookmarked: map[int32][]int64{}, pending: map[int32]int64{}}
	gc, err := n.opts.GroupConsumer(ctx, NormalizerGroup, []string{n.opts.Source}, GroupCallbacks{
		OnAssigned: g.onAssigned, OnRevoked: g.onRevoked, OnLost: g.onLost,
	})
	if err != nil {
		return fmt.Errorf("uns normaliser: join group %s: %w", NormalizerGroup, err)
	}
	g.gc = gc
	err = g.loop(ctx)
	if err != nil {
		g.mu.Lock()
		g.failed = true
		g.mu.Unlock()
	}
	// Leaving the group checkpoints the owned partitions (onRevoked) and
	// commits them, so that the next owner continues right after.
	if cerr := gc.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("uns normaliser: leave group: %w", cerr)
	}
	return err
}

func (g *groupRun) loop(ctx context.Context) error {
	n := g.n
	w := n.newWriter()
	w.done, w.skipBelow, w.dirty = map[string]bool{}, map[int32]int64{}, map[int32]bool{}
	lastCheckpoint, lastBookmark := time.Now(), time.Time{}
	errLog := time.Time{}
	// A batch is finished even when ctx ends during it: a half-written
	// batch would leave the host state ahead of the processed positions,
	// and the handover on leaving could not checkpoint it. Writes still
	// blocked 10 s after ctx ended fail (Kafka unreachable).
	wctx, wcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer wcancel()
	stopWrites := context.AfterFunc(ctx, func() { time.AfterFunc(10*time.Second, wcancel) })
	defer stopWrites()
	for {
		recs, err := g.gc.Poll(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			// The group consumer retries group and fetch problems
			// itself; Poll again after a pause.
			if time.Since(errLog) > 10*time.Second {
				errLog = time.Now()
				n.log.Warn("uns normaliser: group consumer", "error", err)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if err := g.settle(wctx, w); err != nil {
			return err
		}
		if err := n.normalize(wctx, w, recs); err != nil {
			return err
		}
		if n.beforeCommit != nil {
			if err := n.beforeCommit(); err != nil {
				return err
			}
		}
		if w.hostDirty {
			if time.Since(lastCheckpoint) < n.opts.CheckpointInterval {
				continue
			}
			if err := g.checkpoint(wctx, slices.Collect(maps.Keys(w.dirty))); err != nil {
				return err
			}
			clear(w.dirty)
			w.hostDirty, lastCheckpoint = false, time.Now()
		}
		if err := g.gc.Commit(wctx); err != nil {
			return fmt.Errorf("uns normaliser: %w", err)
		}
		g.passed(w)
		if time.Since(lastBookmark) >= n.opts.CheckpointInterval {
			// A bookmark that cannot move stays behind, which costs the
			// next owner a longer read, never a duplicate.
			if err := g.bookmark(wctx); err != nil {
				n.log.Warn("uns normaliser: bookmark not moved", "error", err)
			}
			lastBookmark = time.Now()
		}
	}
}

func (g *groupRun) onAssigned(_ context.Context, parts map[string][]int32) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, p := range parts[g.n.opts.Source] {
		g.toLoad[p] = true
		delete(g.gone, p)
	}
}

func (g *groupRun) onRevoked(ctx context.Context, parts map[string][]int32) {
	ps := parts[g.n.opts.Source]
	g.mu.Lock()
	var save []int32
	for _, p := range ps {
		if g.owned[p] {
			save = append(save, p)
		}
	}
	failed := g.failed
	g.mu.Unlock()
	if !failed && len(save) > 0 {
		// The group consumer commits right after this returns; the
		// checkpoint must be durable first. The client's context may be
		// ending (Close), the checkpoint still has to be written.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		err := g.checkpoint(cctx, save)
		cancel()
		if err != nil {
			g.n.log.Error("uns normaliser: sparkplug state not saved on handover; the next owner resumes from the previous checkpoint and may ask edge nodes to rebirth", "partitions", save, "error", err)
		}
	}
	g.forget(ps)
}

func (g *groupRun) onLost(_ context.Context, parts map[string][]int32) {
	g.forget(parts[g.n.opts.Source])
}

// forget drops the host state of partitions that moved away.
func (g *groupRun) forget(ps []int32) {
	if len(ps) == 0 {
		return
	}
	g.mu.Lock()
	for _, p := range ps {
		delete(g.toLoad, p)
		delete(g.owned, p)
		g.gone[p] = true
	}
	g.mu.Unlock()
	g.dropNodes(ps)
}

func (g *groupRun) dropNodes(ps []int32) {
	n := g.n
	n.hostMu.Lock()
	n.host.DropNodes(func(group, node string) bool {
		return slices.Contains(ps, SparkplugPartition(group, node, g.stateParts))
	})
	n.hostMu.Unlock()
}

// settle brings the loop's state up to the partitions owned now: it
// forgets the skip state of partitions that went away and loads the state
// of new ones before any of their records is processed.
func (g *groupRun) settle(ctx context.Context, w *writer) error {
	g.mu.Lock()
	gone := slices.Collect(maps.Keys(g.gone))
	clear(g.gone)
	load := slices.Sorted(maps.Keys(g.toLoad))
	g.mu.Unlock()
	for _, p := range gone {
		delete(w.seen, p)
		delete(w.skipBelow, p)
		delete(w.dirty, p)
		delete(g.pending, p)
		delete(g.bookmarked, p)
		g.dropDone(w, p)
	}
	if len(load) == 0 {
		return nil
	}
	if err := g.load(ctx, w, load); err != nil {
		return err
	}
	g.mu.Lock()
	for _, p := range load {
		delete(g.toLoad, p)
		g.owned[p] = true
	}
	g.mu.Unlock()
	return nil
}

// load reads the Sparkplug checkpoints of ps and the points their
// previous owners wrote but did not commit.
func (g *groupRun) load(ctx context.Context, w *writer, ps []int32) error {
	n := g.n
	from := map[int32]int64{} // per ingress partition, the first offset not yet processed
	merged := 0
	for _, p := range ps {
		committed, ok, err := n.l.CommittedOffset(ctx, NormalizerGroup, n.opts.Source, p)
		if err != nil {
			return fmt.Errorf("uns normaliser: %w", err)
		}
		if !ok {
			committed = 0
		}
		pos, nodes, err := g.loadState(ctx, p)
		if err != nil {
			return err
		}
		merged += nodes
		if pos > committed {
			// Stopped between checkpoint and commit: the records
			// before pos are in the state and their points durable.
			w.skipBelow[p] = pos
			committed = pos
		}
		from[p] = committed
	}
	if merged > 0 {
		n.log.Info("sparkplug host state loaded for assigned partitions", "partitions", ps, "edge_nodes", merged)
	}

	// One pass over uns.points from the oldest bookmark of ps.
	info, err := n.l.Topic(ctx, PointsTopic)
	if err != nil {
		return fmt.Errorf("uns normaliser: %w", err)
	}
	starts := map[int32]int64{}
	for _, pp := range info.Partitions {
		start := int64(-1)
		for _, p := range ps {
			off, ok, err := n.l.CommittedOffset(ctx, BookmarkGroup(p), PointsTopic, pp.Partition)
			if err == nil && !ok {
				// Bookmarked by a single normaliser before it became a
				// group member.
				off, ok, err = n.l.CommittedOffset(ctx, NormalizerGroup, PointsTopic, pp.Partition)
			}
			if err != nil {
				return fmt.Errorf("uns normaliser: %w", err)
			}
			if !ok {
				off = pp.Start
			}
			if start < 0 || off < start {
				start = off
			}
		}
		starts[pp.Partition] = start
	}
	found, err := log.HeaderValues(ctx, n.l, PointsTopic, HeaderSource, starts, func(src []byte) bool {
		p, o, ok := parseSource(src)
		f, mine := from[p]
		return ok && mine && o >= f
	})
	if err != nil {
		return fmt.Errorf("uns normaliser: %w", err)
	}
	for src := range found {
		p, o, _ := parseSource([]byte(src))
		w.done[src] = true
		if cur, ok := g.pending[p]; !ok || o > cur {
			g.pending[p] = o
		}
	}
	if len(found) > 0 {
		n.log.Info("uns normaliser: taking over partitions after an interrupted batch; skipping points already written", "partitions", ps, "points", len(found))
	}
	return nil
}

// loadState merges the last Sparkplug checkpoint of ingress partition p
// into the host and returns the position it belongs to (0 if none).
func (g *groupRun) loadState(ctx context.Context, p int32) (int64, int, error) {
	n := g.n
	info, err := n.l.Topic(ctx, HostStateTopic)
	if err != nil {
		return 0, 0, fmt.Errorf("uns normaliser: %w", err)
	}
	pi := info.Partitions[p]
	if pi.End == pi.Start {
		return 0, 0, nil
	}
	recs, err := n.l.Fetch(ctx, HostStateTopic, p, pi.End-1, log.FetchOptions{MaxRecords: 1})
	if err != nil || len(recs) == 0 {
		return 0, 0, fmt.Errorf("uns normaliser: read sparkplug state of partition %d: %v", p, err)
	}
	var pos int64
	hv, _ := recs[0].HeaderValue(headerPositions)
	if _, err := fmt.Sscanf(string(hv), "%d:%d", new(int32), &pos); err != nil {
		n.log.Error("uns normaliser: sparkplug state checkpoint without its position; edge nodes will be asked to rebirth", "partition", p)
		return 0, 0, nil
	}
	// Whatever the host knew of these nodes (nothing, unless a
	// revocation failed half-way) is replaced.
	g.dropNodes([]int32{p})
	n.hostMu.Lock()
	nodes, err := n.host.MergeState(recs[0].Value)
	n.hostMu.Unlock()
	if err != nil {
		n.log.Error("uns normaliser: sparkplug state checkpoint unreadable; edge nodes will be asked to rebirth", "partition", p, "error", err)
		return 0, 0, nil
	}
	return pos, nodes, nil
}

// checkpoint writes, for each owned partition of ps that has a position,
// the state of its edge nodes to its partition of HostStateTopic, and
// deletes the older checkpoints there.
func (g *groupRun) checkpoint(ctx context.Context, ps []int32) error {
	n := g.n
	positions := g.gc.Positions()[n.opts.Source]
	var recs []*log.Record
	for _, p := range ps {
		pos, ok := positions[p]
		if !ok {
			continue // nothing read since the state was loaded: it stands
		}
		n.hostMu.Lock()
		state, err := n.host.MarshalStateFunc(func(group, node string) bool {
			return SparkplugPartition(group, node, g.stateParts) == p
		})
		n.hostMu.Unlock()
		if err != nil {
			return fmt.Errorf("uns normaliser: sparkplug state: %w", err)
		}
		recs = append(recs, &log.Record{Topic: HostStateTopic, Partition: p, PartitionSet: true, Timestamp: time.Now(), Value: state,
			Headers: []log.Header{{Key: headerPositions, Value: []byte(strconv.Itoa(int(p)) + ":" + strconv.FormatInt(pos, 10))}}})
	}
	if len(recs) == 0 {
		return nil
	}
	if err := n.l.ProduceSync(ctx, recs...); err != nil {
		return fmt.Errorf("uns normaliser: write sparkplug state: %w", err)
	}
	for _, r := range recs {
		if r.Offset > 0 {
			if err := n.l.DeleteRecordsBefore(ctx, HostStateTopic, r.Partition, r.Offset); err != nil {
				n.log.Warn("uns normaliser: could not delete older sparkplug checkpoints", "partition", r.Partition, "error", err)
			}
		}
	}
	return nil
}

// passed forgets the points to skip of partitions the consumer has read
// past: none of them can come again.
func (g *groupRun) passed(w *writer) {
	for p, o := range g.pending {
		if s, ok := w.seen[p]; ok && s >= o {
			delete(g.pending, p)
			g.dropDone(w, p)
		}
	}
}

func (g *groupRun) dropDone(w *writer, p int32) {
	prefix := strconv.Itoa(int(p)) + ":"
	for src := range w.done {
		if strings.HasPrefix(src, prefix) {
			delete(w.done, src)
		}
	}
}

// bookmark commits the end offsets of uns.points under the bookmark group
// of every owned partition that has no points to skip ahead (those keep
// their bookmark before them, so that another stop finds them again).
// Everything written so far is committed, so every point of an owned
// partition not yet committed will be after these ends.
func (g *groupRun) bookmark(ctx context.Context) error {
	n := g.n
	g.mu.Lock()
	owned := slices.Sorted(maps.Keys(g.owned))
	g.mu.Unlock()
	var todo []int32
	for _, p := range owned {
		if _, skipping := g.pending[p]; !skipping {
			todo = append(todo, p)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	info, err := n.l.Topic(ctx, PointsTopic)
	if err != nil {
		return fmt.Errorf("uns normaliser: bookmark: %w", err)
	}
	ends := make([]int64, len(info.Partitions))
	for i, pp := range info.Partitions {
		ends[i] = pp.End
	}
	// A failed commit leaves that partition's bookmark where it was
	// (earlier, which is safe); the next bookmark retries it.
	var errs []error
	for _, p := range todo {
		if slices.Equal(g.bookmarked[p], ends) {
			continue // nothing written since: the bookmark stands
		}
		offs := make([]log.TopicPartitionOffset, len(ends))
		for i, end := range ends {
			offs[i] = log.TopicPartitionOffset{Topic: PointsTopic, Partition: info.Partitions[i].Partition, Offset: end}
		}
		if err := log.CommitOffsets(ctx, n.l, BookmarkGroup(p), offs); err != nil {
			errs = append(errs, err)
			continue
		}
		g.bookmarked[p] = ends
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("uns normaliser: bookmark: %w", err)
	}
	return nil
}
