package replicate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	mlog "github.com/millstream/millstream/log"
	"github.com/millstream/millstream/uns"
)

// HeaderOrigin marks a local commands record that came from the remote
// cluster: "<remote topic>/<partition>/<offset>" of the remote command.
// Audit records answering such a request are published back to the remote.
const HeaderOrigin = "replicate.origin"

// resultsGroup is the local consumer group forwarding audit records.
const resultsGroup = "replicate.commands.results"

// recentIDs bounds the request ids remembered for deduplication.
const recentIDs = 100000

// idSet is a bounded set of request ids (the oldest are forgotten first).
type idSet struct {
	mu    sync.Mutex
	ids   map[string]struct{}
	order []string
}

func newIDSet() *idSet { return &idSet{ids: map[string]struct{}{}} }

func (s *idSet) has(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.ids[id]
	return ok
}

func (s *idSet) add(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.ids[id]; ok {
		return
	}
	s.ids[id] = struct{}{}
	s.order = append(s.order, id)
	if len(s.order) > recentIDs {
		delete(s.ids, s.order[0])
		s.order = s.order[1:]
	}
}

// runCommands runs cloud-to-edge commands, retrying failed sessions.
func (r *Replicator) runCommands(ctx context.Context) error {
	rl := retryLog{log: r.log.With("part", "commands"), msg: "remote commands session ended; retrying"}
	for {
		began := time.Now()
		err := r.commandsSession(ctx)
		if ctx.Err() != nil {
			return nil
		}
		rl.failed(err, time.Since(began), r.opts.RetryBackoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(r.opts.RetryBackoff):
		}
	}
}

// commandsSession consumes the remote commands topic with a consumer group
// on the remote cluster and appends each command to the local commands
// topic; the remote offset is committed only after the local append is
// durable, and commands are deduplicated by request id (a crash between the
// two, or a command sent twice by the cloud, routes it once). Alongside, it
// forwards the audit records of those commands to the remote results topic.
func (r *Replicator) commandsSession(ctx context.Context) error {
	c := r.opts.Commands
	for _, t := range []string{uns.CommandsTopic, uns.AuditTopic} {
		if err := r.l.CreateTopic(ctx, t, mlog.TopicConfig{}); err != nil && !errors.Is(err, mlog.ErrTopicExists) {
			return fmt.Errorf("local topic %s: %w", t, err)
		}
	}
	seen, err := r.routedBefore(ctx)
	if err != nil {
		return err
	}
	cl, err := r.newClient("commands",
		kgo.ConsumerGroup(c.Group), kgo.ConsumeTopics(c.Topic), kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.UnknownTopicRetries(-1),
		kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		return err
	}
	defer cl.Close()
	if r.opts.Remote.CreateTopics {
		adm := kadm.NewClient(cl)
		for _, t := range []string{c.Topic, c.ResultsTopic} {
			resp, err := adm.CreateTopic(ctx, 1, -1, nil, t)
			if err == nil {
				err = resp.Err
			}
			if err != nil && !errors.Is(err, kerrTopicExists) {
				return fmt.Errorf("create remote topic %s: %w", t, err)
			}
		}
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var resErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := r.forwardResults(sctx, cl); err != nil && sctx.Err() == nil {
			resErr = err
			cancel()
		}
	}()
	err = r.routeCommands(sctx, cl, seen)
	cancel()
	wg.Wait()
	if err == nil {
		err = resErr
	}
	return err
}

// routedBefore reads the recent cloud-routed request ids from the local
// commands topic, so that a restart does not route a command again whose
// remote offset was not committed.
func (r *Replicator) routedBefore(ctx context.Context) (*idSet, error) {
	seen := newIDSet()
	info, err := r.l.Topic(ctx, uns.CommandsTopic)
	if err != nil {
		return nil, err
	}
	for _, p := range info.Partitions {
		off := max(p.Start, p.End-recentIDs/int64(max(len(info.Partitions), 1)))
		for off < p.End {
			recs, err := r.l.Fetch(ctx, uns.CommandsTopic, p.Partition, off, mlog.FetchOptions{MaxBytes: 1 << 20})
			if errors.Is(err, mlog.ErrOffsetOutOfRange) {
				break // retention moved the start meanwhile
			}
			if err != nil {
				return nil, fmt.Errorf("read %s/%d: %w", uns.CommandsTopic, p.Partition, err)
			}
			if len(recs) == 0 {
				break
			}
			for i := range recs {
				if _, ok := recs[i].HeaderValue(HeaderOrigin); !ok {
					continue
				}
				var req uns.CommandRequest
				if json.Unmarshal(recs[i].Value, &req) == nil && req.ID != "" {
					seen.add(req.ID)
				}
			}
			off = recs[len(recs)-1].Offset + 1
		}
	}
	return seen, nil
}

func (r *Replicator) routeCommands(ctx context.Context, cl *kgo.Client, seen *idSet) error {
	c := r.opts.Commands
	paths := compilePatterns(c.Paths)
	// Polling blocks rebalances until AllowRebalance: a partition is not
	// handed to another member between routing its records and committing
	// them. Every way out allows them again, or Close would wait forever
	// to leave the group.
	defer cl.AllowRebalance()
	for {
		fs := cl.PollRecords(ctx, 500)
		if ctx.Err() != nil {
			return nil
		}
		if err := fs.Err0(); err != nil && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("remote commands topic: %w", err)
		}
		recs := fs.Records()
		for _, kr := range recs {
			if err := r.routeOne(ctx, kr, paths, seen); err != nil {
				return err
			}
		}
		if len(recs) > 0 {
			if err := cl.CommitRecords(ctx, recs...); err != nil {
				// Routed but not committed: the next session reads them
				// again and drops them as duplicates.
				return fmt.Errorf("commit remote commands offsets: %w", err)
			}
		}
		cl.AllowRebalance()
	}
}

func (r *Replicator) routeOne(ctx context.Context, kr *kgo.Record, paths []pattern, seen *idSet) error {
	origin := kr.Topic + "/" + strconv.Itoa(int(kr.Partition)) + "/" + strconv.FormatInt(kr.Offset, 10)
	var req uns.CommandRequest
	perr := json.Unmarshal(kr.Value, &req)
	if perr != nil || req.Path == "" {
		if len(paths) > 0 {
			// Whose command it is cannot be told: leave it to the sites.
			r.m.cmdSkipped.WithLabelValues("malformed").Inc()
			r.log.Warn("remote command skipped: not a JSON command with a path", "origin", origin)
			return nil
		}
	} else if len(paths) > 0 && !matchAny(paths, req.Path) {
		r.m.cmdSkipped.WithLabelValues("other_site").Inc()
		return nil
	}
	if req.ID != "" && seen.has(req.ID) {
		r.m.cmdSkipped.WithLabelValues("duplicate").Inc()
		return nil
	}
	value, key := kr.Value, kr.Key
	if perr == nil {
		if req.RequestedBy == "" {
			req.RequestedBy = "cloud"
		}
		if b, err := json.Marshal(req); err == nil {
			value = b
		}
		key = []byte(req.Path)
	}
	// A malformed request still goes to the Commander, which audits it as
	// rejected with the reason; that audit record goes back to the cloud.
	rec := &mlog.Record{Topic: uns.CommandsTopic, Key: key, Value: value, Timestamp: kr.Timestamp,
		Headers: []mlog.Header{{Key: HeaderOrigin, Value: []byte(origin)}, {Key: uns.HeaderContentType, Value: []byte("application/json")}}}
	// The remote record's timestamp is when the cloud asked: a command that
	// waited out a WAN outage is refused as expired by the Commander
	// (commands.max_age), not executed late.
	if err := r.l.ProduceSync(ctx, rec); err != nil {
		return fmt.Errorf("append remote command %s to %s: %w", origin, uns.CommandsTopic, err)
	}
	if req.ID != "" {
		seen.add(req.ID)
	}
	r.m.cmdRouted.Inc()
	r.log.Info("remote command routed", "id", req.ID, "path", req.Path, "origin", origin)
	return nil
}

// forwardResults reads the local audit topic and publishes the audit
// records of cloud-routed requests to the remote results topic, committing
// its local position after the remote acknowledged them. Whether a request
// came from the cloud is read from the request record itself (the audit
// record names it), so it survives restarts. Delivery is at least once: a
// crash between the acknowledgement and the commit publishes a result
// again; results carry the request id to deduplicate on.
func (r *Replicator) forwardResults(ctx context.Context, cl *kgo.Client) error {
	c := r.opts.Commands
	cons, err := mlog.NewConsumer(r.l, resultsGroup, uns.AuditTopic, mlog.ConsumerOptions{})
	if err != nil {
		return err
	}
	defer cons.Close()
	for {
		recs, err := cons.Poll(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		var out []*kgo.Record
		for i := range recs {
			var a uns.AuditRecord
			if json.Unmarshal(recs[i].Value, &a) != nil {
				continue
			}
			origin, err := r.requestOrigin(ctx, a.Command)
			if err != nil {
				return err
			}
			if origin == "" {
				continue
			}
			out = append(out, &kgo.Record{Topic: c.ResultsTopic, Key: []byte(a.Path), Value: recs[i].Value, Timestamp: recs[i].Timestamp,
				Headers: []kgo.RecordHeader{{Key: HeaderOrigin, Value: []byte(origin)}, {Key: "millstream.site", Value: []byte(r.opts.Site)},
					{Key: uns.HeaderContentType, Value: []byte("application/json")}}})
		}
		if len(out) > 0 {
			// Waits through a WAN outage: the client retries until the
			// remote acknowledges.
			if err := cl.ProduceSync(ctx, out...).FirstErr(); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("publish command results: %w", err)
			}
			r.m.cmdResults.Add(float64(len(out)))
		}
		if err := cons.Commit(ctx); err != nil {
			return err
		}
	}
}

// requestOrigin returns the HeaderOrigin of the request record an audit
// record answers ("<topic>/<partition>/<offset>"), or "" if it has none.
func (r *Replicator) requestOrigin(ctx context.Context, command string) (string, error) {
	i := strings.LastIndexByte(command, '/')
	j := strings.LastIndexByte(command[:max(i, 0)], '/')
	if i < 0 || j < 0 || command[:j] != uns.CommandsTopic {
		return "", nil
	}
	p, err1 := strconv.ParseInt(command[j+1:i], 10, 32)
	o, err2 := strconv.ParseInt(command[i+1:], 10, 64)
	if err1 != nil || err2 != nil {
		return "", nil
	}
	recs, err := r.l.Fetch(ctx, uns.CommandsTopic, int32(p), o, mlog.FetchOptions{MaxRecords: 1, MaxBytes: 1})
	if errors.Is(err, mlog.ErrOffsetOutOfRange) || errors.Is(err, mlog.ErrUnknownPartition) {
		return "", nil // deleted by retention: too old to matter
	}
	if err != nil {
		return "", fmt.Errorf("read command %s: %w", command, err)
	}
	if len(recs) == 0 || recs[0].Offset != o {
		return "", nil
	}
	v, _ := recs[0].HeaderValue(HeaderOrigin)
	return string(v), nil
}
