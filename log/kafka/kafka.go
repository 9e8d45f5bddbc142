package kafka

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	mlog "github.com/millstream/millstream/log"
)

// Log is the Kafka log. It implements log.Log on an Apache Kafka cluster (or
// any engine speaking the Kafka protocol).
type Log struct {
	opts Options
	// cl produces, runs admin requests and immediate fetches.
	cl  *kgo.Client
	adm *kadm.Client
	// waitCl carries only the long polls of Fetch with Wait, so they never
	// hold up immediate fetches queued on the same broker connection.
	waitCl *kgo.Client

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	closed atomic.Bool

	metaMu sync.RWMutex
	meta   map[string]*topicMeta

	pollMu  sync.Mutex
	pollers map[int32]*poller

	decompressor kgo.Decompressor
	m            *metrics
}

var _ mlog.Log = (*Log)(nil)

// topicMeta is what the log caches of a topic: its ID (Fetch v13+ names
// topics by ID) and each partition's leader.
type topicMeta struct {
	id      [16]byte
	leaders []int32 // index = partition; -1 while leaderless
}

// Open connects to the cluster and checks that at least one broker answers
// (with TLS and SASL as configured).
func Open(ctx context.Context, opts Options) (*Log, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	common, err := opts.clientOpts()
	if err != nil {
		return nil, err
	}
	prodOpts := append(append([]kgo.Opt{}, common...),
		// acks=all with idempotence: a record is acknowledged once every
		// in-sync replica has it, and retries never duplicate or reorder.
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(partitioner{}),
		kgo.MaxBufferedRecords(opts.MaxBufferedRecords),
		kgo.MaxBufferedBytes(opts.MaxBufferedBytes),
		kgo.ProducerBatchMaxBytes(int32(opts.MaxRecordBytes)),
		kgo.ProducerLinger(opts.Linger),
	)
	prodOpts = append(prodOpts, opts.ClientOptions...)
	cl, err := kgo.NewClient(prodOpts...)
	if err != nil {
		return nil, fmt.Errorf("kafka log: %w", err)
	}
	waitOpts := append(append([]kgo.Opt{}, common...), opts.ClientOptions...)
	waitCl, err := kgo.NewClient(waitOpts...)
	if err != nil {
		cl.Close()
		return nil, fmt.Errorf("kafka log: %w", err)
	}
	if err := cl.Ping(ctx); err != nil {
		cl.Close()
		waitCl.Close()
		return nil, fmt.Errorf("kafka log: no broker of %v answered: %w (check log.kafka.brokers, that the brokers' advertised listeners are reachable from here, and the TLS/SASL settings)", opts.Brokers, err)
	}
	l := &Log{
		opts: opts, cl: cl, adm: kadm.NewClient(cl), waitCl: waitCl,
		meta: map[string]*topicMeta{}, pollers: map[int32]*poller{},
		decompressor: kgo.DefaultDecompressor(),
		m:            newMetrics(),
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	return l, nil
}

// Client returns the log's franz-go client, for components that need Kafka
// features beyond log.Log. Do not close it.
func (l *Log) Client() *kgo.Client { return l.cl }

// Close flushes what was produced (waiting up to Options.CloseTimeout for
// Kafka's acknowledgements; what is not acknowledged by then fails with
// ErrClosed, never silently), ends pending fetches with ErrClosed and
// disconnects.
func (l *Log) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	l.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.CloseTimeout)
	ferr := l.cl.Flush(ctx)
	cancel()
	l.cl.Close()
	l.waitCl.Close()
	if ferr != nil {
		return fmt.Errorf("kafka log: close: records still unacknowledged after %v (they failed with ErrClosed): %w", l.opts.CloseTimeout, ferr)
	}
	return nil
}

// opCtx derives a context that ends with ctx or when the log closes.
func (l *Log) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	c, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(l.ctx, cancel)
	return c, func() { stop(); cancel() }
}

// ctxErr explains why an operation's context ended: the caller's context,
// or Close.
func (l *Log) ctxErr(caller context.Context, op string) error {
	if err := caller.Err(); err != nil {
		return fmt.Errorf("kafka log: %s: %w", op, err)
	}
	return fmt.Errorf("kafka log: %s: %w", op, mlog.ErrClosed)
}

func (l *Log) checkOpen(op string) error {
	if l.closed.Load() {
		return fmt.Errorf("kafka log: %s: %w", op, mlog.ErrClosed)
	}
	return nil
}

// topicMeta returns the cached metadata of topic, loading it when absent or
// when fresh is set. A topic the cluster does not know is ErrUnknownTopic.
func (l *Log) topicMeta(ctx context.Context, topic string, fresh bool) (*topicMeta, error) {
	if !fresh {
		l.metaMu.RLock()
		m := l.meta[topic]
		l.metaMu.RUnlock()
		if m != nil {
			return m, nil
		}
	}
	// A plain MetadataRequest, not kadm's: kadm answers from the client's
	// metadata cache, which may be seconds old right after a leader moved.
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	kresp, err := req.RequestWith(ctx, l.cl)
	if err != nil {
		return nil, fmt.Errorf("kafka log: metadata of topic %s: %w", topic, mapErr(err))
	}
	var td *kmsg.MetadataResponseTopic
	for i := range kresp.Topics {
		if t := &kresp.Topics[i]; t.Topic != nil && *t.Topic == topic {
			td = t
		}
	}
	var terr error
	if td != nil {
		terr = kerr.ErrorForCode(td.ErrorCode)
	}
	if td == nil || errors.Is(terr, kerr.UnknownTopicOrPartition) {
		l.forget(topic)
		return nil, fmt.Errorf("kafka log: topic %s: %w", topic, mlog.ErrUnknownTopic)
	}
	if terr != nil {
		return nil, fmt.Errorf("kafka log: metadata of topic %s: %w", topic, mapErr(terr))
	}
	m := &topicMeta{id: td.TopicID, leaders: make([]int32, len(td.Partitions))}
	for i := range m.leaders {
		m.leaders[i] = -1
	}
	for _, pd := range td.Partitions {
		if pd.Partition >= 0 && int(pd.Partition) < len(m.leaders) && pd.ErrorCode == 0 {
			m.leaders[pd.Partition] = pd.Leader
		}
	}
	l.metaMu.Lock()
	l.meta[topic] = m
	l.metaMu.Unlock()
	return m, nil
}

func (l *Log) forget(topic string) {
	l.metaMu.Lock()
	delete(l.meta, topic)
	l.metaMu.Unlock()
}

// checkPartition returns the topic's metadata, or ErrUnknownTopic /
// ErrUnknownPartition. A partition beyond the cached count is re-checked
// against the cluster, as partitions may have been added.
func (l *Log) checkPartition(ctx context.Context, topic string, partition int32) (*topicMeta, error) {
	m, err := l.topicMeta(ctx, topic, false)
	if err != nil {
		return nil, err
	}
	if partition >= 0 && int(partition) >= len(m.leaders) {
		if m, err = l.topicMeta(ctx, topic, true); err != nil {
			return nil, err
		}
	}
	if partition < 0 || int(partition) >= len(m.leaders) {
		return nil, fmt.Errorf("kafka log: %w: %s/%d (topic has %d partitions)", mlog.ErrUnknownPartition, topic, partition, len(m.leaders))
	}
	return m, nil
}

// CreateTopic creates a topic with the configured replication factor and
// retention.ms / retention.bytes from cfg (or Options.Defaults). It returns
// once the topic's metadata shows a leader for every partition, so the topic
// can be used at once.
func (l *Log) CreateTopic(ctx context.Context, name string, cfg mlog.TopicConfig) error {
	if err := mlog.ValidateTopicName(name); err != nil {
		return fmt.Errorf("kafka log: create topic: %w", err)
	}
	if err := l.checkOpen("create topic " + name); err != nil {
		return err
	}
	if cfg.Partitions < 0 {
		return fmt.Errorf("kafka log: create topic %s: %w: %d", name, mlog.ErrInvalidPartitions, cfg.Partitions)
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = l.opts.Defaults.Partitions
	}
	if cfg.RetentionAge == 0 {
		cfg.RetentionAge = l.opts.Defaults.RetentionAge
	}
	if cfg.RetentionBytes == 0 {
		cfg.RetentionBytes = l.opts.Defaults.RetentionBytes
	}
	configs := map[string]*string{}
	switch {
	case cfg.RetentionAge < 0:
		configs["retention.ms"] = kadm.StringPtr("-1")
	case cfg.RetentionAge > 0:
		configs["retention.ms"] = kadm.StringPtr(strconv.FormatInt(max(cfg.RetentionAge.Milliseconds(), 1), 10))
	}
	switch {
	case cfg.RetentionBytes < 0:
		configs["retention.bytes"] = kadm.StringPtr("-1")
	case cfg.RetentionBytes > 0:
		configs["retention.bytes"] = kadm.StringPtr(strconv.FormatInt(cfg.RetentionBytes, 10))
	}
	rf := l.opts.ReplicationFactor
	if rf == 0 {
		rf = -1
	}
	if _, err := l.adm.CreateTopic(ctx, cfg.Partitions, rf, configs, name); err != nil {
		if errors.Is(err, kerr.InvalidReplicationFactor) {
			return fmt.Errorf("kafka log: create topic %s: replication factor %d: %w (the cluster has fewer brokers; lower log.kafka.replication_factor)", name, rf, err)
		}
		return fmt.Errorf("kafka log: create topic %s: %w", name, mapErr(err))
	}
	// Metadata reaches the other brokers asynchronously; wait until the
	// topic is complete so a Produce right after does not fail.
	for {
		m, err := l.topicMeta(ctx, name, true)
		if err == nil && len(m.leaders) == int(cfg.Partitions) && allLed(m) {
			return nil
		}
		if err != nil && !errors.Is(err, mlog.ErrUnknownTopic) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka log: create topic %s: created, but waiting for its metadata: %w", name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func allLed(m *topicMeta) bool {
	for _, ld := range m.leaders {
		if ld < 0 {
			return false
		}
	}
	return true
}

// Topics lists all topics except Kafka's internal ones, sorted by name.
func (l *Log) Topics(ctx context.Context) ([]mlog.TopicInfo, error) {
	if err := l.checkOpen("topics"); err != nil {
		return nil, err
	}
	tds, err := l.adm.ListTopics(ctx)
	if err != nil {
		return nil, fmt.Errorf("kafka log: list topics: %w", mapErr(err))
	}
	return l.describe(ctx, tds)
}

// Topic describes one topic.
func (l *Log) Topic(ctx context.Context, name string) (mlog.TopicInfo, error) {
	if err := l.checkOpen("topic " + name); err != nil {
		return mlog.TopicInfo{}, err
	}
	tds, err := l.adm.ListTopics(ctx, name)
	if err != nil {
		return mlog.TopicInfo{}, fmt.Errorf("kafka log: describe topic %s: %w", name, mapErr(err))
	}
	if td, ok := tds[name]; !ok || errors.Is(td.Err, kerr.UnknownTopicOrPartition) {
		// kadm answers from the client's metadata cache, which keeps an
		// "unknown" for seconds, also when another node or component
		// created the topic a moment later. Ask the cluster before saying
		// so; the answer also refreshes the cache for the offsets below.
		m, err := l.topicMeta(ctx, name, true)
		if err != nil {
			return mlog.TopicInfo{}, err
		}
		parts := make(kadm.PartitionDetails, len(m.leaders))
		for p, leader := range m.leaders {
			parts[int32(p)] = kadm.PartitionDetail{Topic: name, Partition: int32(p), Leader: leader}
		}
		tds = kadm.TopicDetails{name: {Topic: name, ID: m.id, Partitions: parts}}
	}
	infos, err := l.describe(ctx, tds)
	if err != nil {
		return mlog.TopicInfo{}, err
	}
	return infos[0], nil
}

// describe fills in offsets and retention of the listed topics. Bytes and
// Segments stay 0: they would need DescribeLogDirs on every broker, and
// the brokers report them better themselves.
func (l *Log) describe(ctx context.Context, tds kadm.TopicDetails) ([]mlog.TopicInfo, error) {
	for name, td := range tds {
		if td.Err != nil {
			return nil, fmt.Errorf("kafka log: describe topic %s: %w", name, mapErr(td.Err))
		}
	}
	names := tds.Names()
	if len(names) == 0 {
		return nil, nil
	}
	starts, err := l.adm.ListStartOffsets(ctx, names...)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("kafka log: start offsets of %d topics: %w", len(names), mapErr(err))
	}
	ends, err := l.adm.ListEndOffsets(ctx, names...)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("kafka log: end offsets of %d topics: %w", len(names), mapErr(err))
	}
	rcs, err := l.adm.DescribeTopicConfigs(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("kafka log: configs of %d topics: %w", len(names), mapErr(err))
	}
	cfgs := map[string]mlog.TopicConfig{}
	for _, rc := range rcs {
		var c mlog.TopicConfig
		for _, kv := range rc.Configs {
			v, err := strconv.ParseInt(kv.MaybeValue(), 10, 64)
			if err != nil {
				continue
			}
			switch kv.Key {
			case "retention.ms":
				if v < 0 {
					c.RetentionAge = -1
				} else {
					c.RetentionAge = time.Duration(v) * time.Millisecond
				}
			case "retention.bytes":
				c.RetentionBytes = max(v, -1)
			}
		}
		cfgs[rc.Name] = c
	}
	out := make([]mlog.TopicInfo, 0, len(names))
	for _, name := range names {
		td := tds[name]
		info := mlog.TopicInfo{Name: name, Config: cfgs[name]}
		info.Config.Partitions = int32(len(td.Partitions))
		for p := int32(0); p < int32(len(td.Partitions)); p++ {
			pi := mlog.PartitionInfo{Partition: p}
			if s, ok := starts.Lookup(name, p); ok {
				pi.Start = s.Offset
			}
			if e, ok := ends.Lookup(name, p); ok {
				pi.End = e.Offset
			}
			info.Partitions = append(info.Partitions, pi)
		}
		out = append(out, info)
	}
	return out, nil
}

// CommitOffset commits offset for group on one partition as an admin
// (generation -1) commit: the way a simple, non-member consumer commits.
// Kafka rejects it while the group has live members (a GroupConsumer);
// those commit through the GroupConsumer.
func (l *Log) CommitOffset(ctx context.Context, group, topic string, partition int32, offset int64) error {
	return l.CommitOffsets(ctx, group, []mlog.TopicPartitionOffset{{Topic: topic, Partition: partition, Offset: offset}})
}

// CommitOffsets implements log.OffsetsCommitter: one OffsetCommit request
// for all of offsets.
func (l *Log) CommitOffsets(ctx context.Context, group string, offsets []mlog.TopicPartitionOffset) error {
	if err := l.checkOpen("commit offset"); err != nil {
		return err
	}
	var os kadm.Offsets
	for _, o := range offsets {
		if _, err := l.checkPartition(ctx, o.Topic, o.Partition); err != nil {
			return fmt.Errorf("kafka log: commit %s %s/%d: %w", group, o.Topic, o.Partition, err)
		}
		os.AddOffset(o.Topic, o.Partition, o.Offset, -1)
	}
	if len(offsets) == 0 {
		return nil
	}
	resps, err := l.adm.CommitOffsets(ctx, group, os)
	if err == nil {
		err = resps.Error()
	}
	if err != nil {
		o := offsets[0]
		return fmt.Errorf("kafka log: commit %s %s/%d at %d (%d offsets): %w", group, o.Topic, o.Partition, o.Offset, len(offsets), mapErr(err))
	}
	return nil
}

// CommittedOffset returns group's committed offset of one partition.
func (l *Log) CommittedOffset(ctx context.Context, group, topic string, partition int32) (int64, bool, error) {
	if err := l.checkOpen("committed offset"); err != nil {
		return 0, false, err
	}
	if _, err := l.checkPartition(ctx, topic, partition); err != nil {
		return 0, false, fmt.Errorf("kafka log: committed offset of %s %s/%d: %w", group, topic, partition, err)
	}
	resps, err := l.adm.FetchOffsets(ctx, group)
	if err != nil {
		if errors.Is(err, kerr.GroupIDNotFound) {
			return 0, false, nil
		}
		return 0, false, fmt.Errorf("kafka log: committed offset of %s %s/%d: %w", group, topic, partition, mapErr(err))
	}
	r, ok := resps.Lookup(topic, partition)
	if !ok {
		return 0, false, nil
	}
	if r.Err != nil {
		return 0, false, fmt.Errorf("kafka log: committed offset of %s %s/%d: %w", group, topic, partition, mapErr(r.Err))
	}
	if r.At < 0 {
		return 0, false, nil
	}
	return r.At, true, nil
}

// Groups lists every consumer group with its committed offsets, sorted by
// group, topic and partition.
func (l *Log) Groups(ctx context.Context) ([]mlog.GroupOffsets, error) {
	if err := l.checkOpen("groups"); err != nil {
		return nil, err
	}
	lg, err := l.adm.ListGroups(ctx)
	if err != nil {
		return nil, fmt.Errorf("kafka log: list groups: %w", mapErr(err))
	}
	names := lg.Groups()
	if len(names) == 0 {
		return nil, nil
	}
	sort.Strings(names)
	fetched := l.adm.FetchManyOffsets(ctx, names...)
	out := make([]mlog.GroupOffsets, 0, len(names))
	for _, g := range names {
		r, ok := fetched[g]
		if !ok {
			continue
		}
		if r.Err != nil {
			if errors.Is(r.Err, kerr.GroupIDNotFound) {
				continue
			}
			return nil, fmt.Errorf("kafka log: offsets of group %s: %w", g, mapErr(r.Err))
		}
		gos := mlog.GroupOffsets{Group: g}
		for _, o := range r.Fetched.Sorted() {
			if o.Err == nil && o.At >= 0 {
				gos.Offsets = append(gos.Offsets, mlog.TopicPartitionOffset{Topic: o.Topic, Partition: o.Partition, Offset: o.At})
			}
		}
		out = append(out, gos)
	}
	return out, nil
}

// DeleteRecordsBefore moves the partition's start offset up to offset with
// Kafka's DeleteRecords. An offset at or below the current start is a no-op.
func (l *Log) DeleteRecordsBefore(ctx context.Context, topic string, partition int32, offset int64) error {
	if err := l.checkOpen("delete records"); err != nil {
		return err
	}
	if _, err := l.checkPartition(ctx, topic, partition); err != nil {
		return fmt.Errorf("kafka log: delete records of %s/%d: %w", topic, partition, err)
	}
	if offset < 0 {
		return fmt.Errorf("kafka log: delete records of %s/%d before %d: %w", topic, partition, offset, mlog.ErrOffsetOutOfRange)
	}
	var os kadm.Offsets
	os.AddOffset(topic, partition, offset, -1)
	resps, err := l.adm.DeleteRecords(ctx, os)
	if err == nil {
		if r, ok := resps.Lookup(topic, partition); ok {
			err = r.Err
		} else {
			err = errors.New("no answer for the partition")
		}
	}
	if err == nil {
		return nil
	}
	if errors.Is(err, kerr.OffsetOutOfRange) {
		// Kafka itself treats an offset below the start as a no-op, but
		// not every engine does; decide by the start offset.
		if start, serr := l.listOffset(ctx, topic, partition, -2); serr == nil && offset <= start {
			return nil
		}
		end, _ := l.listOffset(ctx, topic, partition, -1)
		return fmt.Errorf("kafka log: delete records of %s/%d before %d (end offset %d): %w", topic, partition, offset, end, mapErr(err))
	}
	return fmt.Errorf("kafka log: delete records of %s/%d before %d: %w", topic, partition, offset, mapErr(err))
}

// listOffset lists one partition's offset for a ListOffsets timestamp:
// -2 start, -1 end, or a millisecond time.
func (l *Log) listOffset(ctx context.Context, topic string, partition int32, ts int64) (int64, error) {
	var (
		lo  kadm.ListedOffsets
		err error
	)
	switch ts {
	case -2:
		lo, err = l.adm.ListStartOffsets(ctx, topic)
	case -1:
		lo, err = l.adm.ListEndOffsets(ctx, topic)
	default:
		lo, err = l.adm.ListOffsetsAfterMilli(ctx, ts, topic)
	}
	if err != nil {
		return 0, mapErr(err)
	}
	o, ok := lo.Lookup(topic, partition)
	if !ok {
		if _, err := l.checkPartition(ctx, topic, partition); err != nil {
			return 0, err
		}
		return 0, fmt.Errorf("no offset listed for %s/%d", topic, partition)
	}
	if o.Err != nil {
		return 0, mapErr(o.Err)
	}
	return o.Offset, nil
}

// OffsetForTime returns the first offset with a timestamp at or after t
// (ListOffsets by timestamp), or the end offset if there is none.
func (l *Log) OffsetForTime(ctx context.Context, topic string, partition int32, t time.Time) (int64, error) {
	if err := l.checkOpen("offset for time"); err != nil {
		return 0, err
	}
	if _, err := l.checkPartition(ctx, topic, partition); err != nil {
		return 0, fmt.Errorf("kafka log: offset for time in %s/%d: %w", topic, partition, err)
	}
	// Negative timestamps are ListOffsets' special values (-1 end, -2
	// start): a time before 1970 means "from the start", which 0 gives.
	ms := max(t.UnixMilli(), 0)
	off, err := l.listOffset(ctx, topic, partition, ms)
	if err != nil {
		return 0, fmt.Errorf("kafka log: offset for %s in %s/%d: %w", t.Format(time.RFC3339Nano), topic, partition, err)
	}
	if off < 0 {
		// No record at or after t: the end, as the interface promises.
		if off, err = l.listOffset(ctx, topic, partition, -1); err != nil {
			return 0, fmt.Errorf("kafka log: end offset of %s/%d: %w", topic, partition, err)
		}
	}
	return off, nil
}
