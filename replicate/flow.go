package replicate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	mlog "github.com/millstream/millstream/log"
)

// flow replicates one Flow. It runs sessions: a session is one remote
// producer client (one idempotent producer id) from a resume point to a
// failure or the end of Run.
type flow struct {
	r      *Replicator
	cfg    *Flow
	filter *filter
	log    *slog.Logger
	// group is the local consumer group holding the checkpoint;
	// remoteGroup the group on the remote cluster holding where the resume
	// scan starts.
	group, remoteGroup string

	alerted bool // backlog warning logged (stats goroutine only)
}

func newFlow(r *Replicator, cfg *Flow) *flow {
	return &flow{r: r, cfg: cfg, filter: newFilter(cfg), log: r.log.With("flow", cfg.Name),
		group: "replicate." + cfg.Name, remoteGroup: "millstream.replicate." + r.opts.Site + "." + cfg.Name}
}

func (f *flow) run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		f.statsLoop(ctx)
	}()
	defer wg.Wait()
	rl := retryLog{log: f.log, msg: "replication session ended; retrying"}
	for {
		began := time.Now()
		err := f.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		f.r.m.sessions.WithLabelValues(f.cfg.Name).Inc()
		rl.failed(err, time.Since(began), f.r.opts.RetryBackoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(f.r.opts.RetryBackoff):
		}
	}
}

// session state shared by readers, promises and the checkpointer.
type session struct {
	f     *flow
	cl    *kgo.Client
	adm   *kadm.Client
	tr    *tracker
	found map[srcPart]map[int64]location // on the remote already (resume scan)
	// foundLeft counts found records readers have not reached yet; while
	// any are left the remote scan start is not moved (it would pass them).
	foundLeft atomic.Int64
	cancel    context.CancelFunc
	closing   atomic.Bool
	errOnce   sync.Once
	err       error
	// committed checkpoints, to commit only changes.
	localDone  map[srcPart]int64
	remoteDone map[dstPart]int64
}

type location struct {
	dst  dstPart
	doff int64
}

func (s *session) fail(err error) {
	s.errOnce.Do(func() {
		s.err = err
		s.cancel()
	})
}

func (f *flow) session(ctx context.Context) error {
	l := f.r.l
	// Source partitions and the checkpoint.
	starts := map[srcPart]int64{}
	fresh := map[srcPart]bool{}
	partsOf := map[string]int32{}
	for _, t := range f.cfg.Topics {
		info, err := l.Topic(ctx, t)
		if errors.Is(err, mlog.ErrUnknownTopic) {
			// Create it as anyone appending would: the flow is ready when
			// data arrives.
			if err = l.CreateTopic(ctx, t, mlog.TopicConfig{}); err == nil || errors.Is(err, mlog.ErrTopicExists) {
				info, err = l.Topic(ctx, t)
			}
		}
		if err != nil {
			return fmt.Errorf("source topic %s: %w", t, err)
		}
		partsOf[t] = int32(len(info.Partitions))
		for _, p := range info.Partitions {
			sp := srcPart{t, p.Partition}
			off, ok, err := l.CommittedOffset(ctx, f.group, t, p.Partition)
			if err != nil {
				return fmt.Errorf("checkpoint of %s/%d: %w", t, p.Partition, err)
			}
			if !ok {
				fresh[sp] = true
				off = p.Start
				if f.cfg.StartAtLatest {
					off = p.End
				}
			}
			starts[sp] = off
		}
	}

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := &session{f: f, cancel: cancel, localDone: map[srcPart]int64{}, remoteDone: map[dstPart]int64{}}
	codec, _ := compression(f.r.opts.Remote.Compression)
	cl, err := f.r.newClient("replicate-"+f.cfg.Name,
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchCompression(codec),
		kgo.ProducerLinger(f.r.opts.Remote.Linger),
		kgo.MaxBufferedBytes(f.r.opts.Remote.MaxBufferedBytes),
		kgo.ProducerBatchMaxBytes(int32(f.r.opts.Remote.MaxRecordBytes)),
		kgo.RecordPartitioner(kgo.BasicConsistentPartitioner(func(string) func(*kgo.Record, int) int {
			// Kafka's default murmur2, as on the local log: a key maps to the
			// same partition here as anywhere else, and unkeyed records
			// keep one order in partition 0.
			return func(r *kgo.Record, n int) int { return int(mlog.PartitionForKey(r.Key, int32(n))) }
		})),
		// A WAN outage must never fail records: they wait in the client
		// (and behind it in the local log) until the link is back.
		kgo.UnknownTopicRetries(-1),
	)
	if err != nil {
		return err
	}
	s.cl, s.adm = cl, kadm.NewClient(cl)
	defer cl.Close()

	remoteTopics := map[string]bool{}
	for _, t := range f.cfg.Topics {
		remoteTopics[f.cfg.remoteTopic(t)] = true
	}
	for rt := range remoteTopics {
		if err := s.ensureRemoteTopic(sctx, rt, partsOf); err != nil {
			return err
		}
	}
	ends, err := s.resumeScan(sctx, remoteTopics, starts, fresh)
	if err != nil {
		return err
	}
	s.tr = newTracker(starts)
	for dp, end := range ends {
		// Records this session produces land at or after the current end.
		s.tr.landed(dp, end-1)
	}
	if len(fresh) > 0 {
		// A flow's first start: record where the resume scan starts (the
		// remote ends, nothing of ours is beyond) and then the checkpoint, so
		// that "no checkpoint" always means "never sent anything".
		s.commit(sctx)
	}

	var wg sync.WaitGroup
	for sp, off := range starts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.read(sctx, sp, off); err != nil && sctx.Err() == nil {
				s.fail(err)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(f.r.opts.CommitInterval)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-t.C:
				s.commit(sctx)
			}
		}
	}()
	wg.Wait()

	if f.r.crash.Load() {
		// Tests: stop as a killed process would, without flushing or a
		// final checkpoint.
		s.closing.Store(true)
		cl.Close()
		return s.err
	}
	// Stop: wait for what is in flight, checkpoint what was acknowledged.
	// Whatever the remote has not acknowledged by then is either resent
	// next time or found there by the resume scan.
	fctx, fcancel := context.WithTimeout(context.Background(), f.r.opts.CloseTimeout)
	defer fcancel()
	if err := cl.Flush(fctx); err != nil {
		f.log.Warn("stopping with records unacknowledged by the remote; they are resolved at the next start", "pending", s.tr.pendingCount())
	}
	s.closing.Store(true)
	s.commit(fctx)
	cl.Close()
	return s.err
}

// ensureRemoteTopic checks the remote topic exists, creating it if allowed.
func (s *session) ensureRemoteTopic(ctx context.Context, rt string, partsOf map[string]int32) error {
	tds, err := s.adm.ListTopics(ctx, rt)
	if err != nil {
		return fmt.Errorf("remote topic %s: %w", rt, err)
	}
	if td, ok := tds[rt]; ok && td.Err == nil {
		return nil
	}
	if !s.f.r.opts.Remote.CreateTopics {
		return fmt.Errorf("remote topic %s does not exist (create it on the remote cluster, or set replicate.remote.create_topics)", rt)
	}
	parts := s.f.cfg.RemotePartitions
	if parts <= 0 {
		for _, t := range s.f.cfg.Topics {
			if s.f.cfg.remoteTopic(t) == rt {
				parts = max(parts, partsOf[t])
			}
		}
	}
	rf := s.f.r.opts.Remote.ReplicationFactor
	if rf <= 0 {
		rf = -1
	}
	resp, err := s.adm.CreateTopic(ctx, parts, rf, nil, rt)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerrTopicExists) {
		return fmt.Errorf("create remote topic %s: %w", rt, err)
	}
	return nil
}

// read replicates one source partition from off on.
func (s *session) read(ctx context.Context, sp srcPart, off int64) error {
	f := s.f
	l := f.r.l
	rt := f.cfg.remoteTopic(sp.topic)
	site := f.r.opts.Site
	prefix := site + "/" + sp.topic + "/" + strconv.Itoa(int(sp.partition)) + "/"
	found := s.found[sp]
	m := f.r.m
	name := f.cfg.Name
	for {
		for s.tr.pendingCount() >= f.r.opts.MaxPending {
			select {
			case <-ctx.Done():
				return nil
			case <-s.tr.room:
			case <-time.After(100 * time.Millisecond):
			}
		}
		recs, err := l.Fetch(ctx, sp.topic, sp.partition, off, mlog.FetchOptions{MaxBytes: 1 << 20, Wait: true})
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, mlog.ErrOffsetOutOfRange) {
			info, ierr := l.Topic(ctx, sp.topic)
			if ierr != nil {
				return ierr
			}
			start := info.Partitions[sp.partition].Start
			if off < start {
				m.lost.WithLabelValues(name).Add(float64(start - off))
				f.log.Error("local retention deleted records before they were replicated", "topic", sp.topic, "partition", sp.partition,
					"records", start-off, "from", off, "to", start)
				s.tr.skipTo(sp, start)
				off = start
				continue
			}
			return err
		}
		if err != nil {
			return fmt.Errorf("read %s/%d at %d: %w", sp.topic, sp.partition, off, err)
		}
		for i := range recs {
			rec := &recs[i]
			o := rec.Offset
			s.tr.add(sp, o)
			switch f.filter.decide(rec) {
			case excluded:
				m.filtered.WithLabelValues(name).Inc()
				s.tr.done(sp, o, dstPart{}, 0)
				continue
			case denied:
				m.denied.WithLabelValues(name).Inc()
				s.tr.done(sp, o, dstPart{}, 0)
				continue
			}
			if loc, ok := found[o]; ok {
				m.resumed.WithLabelValues(name).Inc()
				s.tr.done(sp, o, loc.dst, loc.doff)
				delete(found, o)
				s.foundLeft.Add(-1)
				continue
			}
			kr := &kgo.Record{Topic: rt, Key: rec.Key, Value: rec.Value, Timestamp: rec.Timestamp}
			size := len(rec.Key) + len(rec.Value)
			kr.Headers = make([]kgo.RecordHeader, 0, len(rec.Headers)+1)
			for _, h := range rec.Headers {
				if h.Key == HeaderSource {
					// Chained replication: this hop's source replaces the
					// previous one, so the resume scan reads its own.
					continue
				}
				kr.Headers = append(kr.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
				size += len(h.Key) + len(h.Value)
			}
			src := prefix + strconv.FormatInt(o, 10)
			kr.Headers = append(kr.Headers, kgo.RecordHeader{Key: HeaderSource, Value: []byte(src)})
			size += len(HeaderSource) + len(src)
			if b := f.r.bucket; b != nil {
				t0 := time.Now()
				if err := b.wait(ctx, size); err != nil {
					return nil
				}
				if d := time.Since(t0); d > time.Millisecond {
					m.throttled.Add(d.Seconds())
				}
			}
			s.cl.Produce(ctx, kr, func(kr *kgo.Record, err error) {
				if err != nil {
					if !s.closing.Load() && ctx.Err() == nil {
						s.fail(fmt.Errorf("remote refused %s: %w", src, err))
					}
					return
				}
				s.tr.done(sp, o, dstPart{kr.Topic, kr.Partition}, kr.Offset)
				m.sentRecords.WithLabelValues(name).Inc()
				m.sentBytes.WithLabelValues(name).Add(float64(size))
			})
		}
		if len(recs) > 0 {
			off = recs[len(recs)-1].Offset + 1
		}
	}
}

// commit writes the checkpoint: first the local one (the source offsets all
// of whose records the remote acknowledged), then, on the remote, where the
// next resume scan starts. The order matters: the scan start is computed for
// this checkpoint and is only ever older (lower) than the one that matches
// the committed checkpoint, never newer.
func (s *session) commit(ctx context.Context) {
	local, remote := s.tr.checkpoint()
	l := s.f.r.l
	for sp, off := range local {
		if cur, ok := s.localDone[sp]; ok && cur == off {
			continue
		}
		if err := l.CommitOffset(ctx, s.f.group, sp.topic, sp.partition, off); err != nil {
			if ctx.Err() == nil {
				s.f.log.Warn("checkpoint not committed", "topic", sp.topic, "partition", sp.partition, "error", err)
			}
			return
		}
		s.localDone[sp] = off
	}
	if s.foundLeft.Load() > 0 {
		return
	}
	var os kadm.Offsets
	for dp, off := range remote {
		if cur, ok := s.remoteDone[dp]; ok && cur == off {
			continue
		}
		os.Add(kadm.Offset{Topic: dp.topic, Partition: dp.partition, At: off, LeaderEpoch: -1})
	}
	if len(os) == 0 {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, max(s.f.r.opts.CommitInterval, time.Second))
	defer cancel()
	// Best effort: while the WAN is down this fails, and the next scan
	// merely starts earlier.
	resp, err := s.adm.CommitOffsets(cctx, s.f.remoteGroup, os)
	if err != nil {
		return
	}
	resp.Each(func(o kadm.OffsetResponse) {
		if o.Err == nil {
			s.remoteDone[dstPart{o.Topic, o.Partition}] = o.At
		}
	})
}
