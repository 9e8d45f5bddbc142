package replicate

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	mlog "github.com/millstream/millstream/log"
	"github.com/millstream/millstream/log/kafka"
	"github.com/millstream/millstream/uns"
)

// Options configures a Replicator. Zero values take the defaults noted.
type Options struct {
	// Site names this Millstream node on the remote cluster. It is part of
	// every replicated record's millstream.src header, which is how a
	// restarted replicator finds what the remote already has, so it must be
	// unique among the sites writing to one remote cluster and must not
	// change. Required; no "/".
	Site string
	// Remote is the cloud Kafka cluster. All connections are outbound.
	Remote Remote
	// Flows are the streams to replicate. Flows may be empty when only
	// Commands is used.
	Flows []Flow
	// Commands, when Enabled, consumes a remote commands topic and routes
	// each command to the local commands topic (cloud-to-edge).
	Commands Commands

	// BacklogAlertRatio is the backlog_retention_ratio above which a flow
	// logs a warning that unreplicated data is close to being deleted by
	// local retention. Zero means 0.8.
	BacklogAlertRatio float64
	// CommitInterval is how often a flow commits its checkpoint (local and
	// remote). Zero means 1 s.
	CommitInterval time.Duration
	// StatsInterval is how often backlog, lag and retention ratio are
	// computed. Zero means 5 s.
	StatsInterval time.Duration
	// ProbeInterval is how often the WAN link is probed (a metadata request)
	// when nothing else shows its state. Zero means 5 s.
	ProbeInterval time.Duration
	// RetryBackoff is the pause before a flow retries after its session
	// failed (remote unreachable at start, a record refused). Zero means 2 s.
	RetryBackoff time.Duration
	// CloseTimeout bounds how long stopping waits for the remote to
	// acknowledge records in flight. Unacknowledged records are resent (or
	// found on the remote) at the next start. Zero means 10 s.
	CloseTimeout time.Duration
	// MaxPending bounds the records of one flow that are read but not yet
	// checkpointed; reading pauses beyond it. Zero means 100000.
	MaxPending int

	// Logger receives warnings and state changes. Nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock for lag and backlog age (tests). Nil means time.Now.
	Now func() time.Time
}

// Remote is the connection to the remote (cloud) Kafka cluster, or to
// another Millstream's Kafka endpoint. TLS and SASL are log/kafka's types and
// mean the same as for `log.backend: kafka`.
type Remote struct {
	// Brokers are the seed brokers, host:port. Required.
	Brokers []string
	// ClientID prefix. Empty means "millstream-<site>".
	ClientID string
	TLS      kafka.TLSOptions
	SASL     kafka.SASLOptions
	// DialTimeout bounds connecting to one broker. Zero means 10 s.
	DialTimeout time.Duration

	// Compression of produced batches: "zstd" (default), "lz4", "snappy",
	// "gzip" or "none".
	Compression string
	// BandwidthBytesPerSec caps the bytes produced to the remote per second
	// across all flows (a token bucket on the records' uncompressed size:
	// key, value and headers, so the link carries at most this much). Zero
	// means no cap.
	BandwidthBytesPerSec int64
	// BandwidthBurstBytes is the bucket size. Zero means one second of
	// BandwidthBytesPerSec (at least 1 MiB, so that one large record can pass).
	BandwidthBurstBytes int64
	// Linger is how long the producer waits to fill a batch. Zero means 5 ms.
	Linger time.Duration
	// MaxBufferedBytes bounds records produced but not yet acknowledged by
	// the remote, per flow. Zero means 16 MiB.
	MaxBufferedBytes int
	// MaxRecordBytes is the largest batch produced; it must not exceed the
	// remote topics' max.message.bytes. Zero means 1000012.
	MaxRecordBytes int

	// CreateTopics creates a missing remote topic with the partitions of
	// the flow (RemotePartitions, else the source topic's) and
	// ReplicationFactor (0: the cluster's default).
	CreateTopics      bool
	ReplicationFactor int16

	// ClientOptions are extra franz-go options appended last (tests, or
	// settings not covered here). Do not change acks or idempotence.
	ClientOptions []kgo.Opt
}

// Flow is one replicated stream: local source topics to one remote topic.
type Flow struct {
	// Name identifies the flow in metrics and logs; its checkpoint is the
	// local consumer group "replicate.<name>". Required, [a-zA-Z0-9._-].
	Name string
	// Topics are the local source topics. Required.
	Topics []string
	// Include are UNS patterns ("+" one segment, "#" the rest) selecting
	// records: for uns.points the point's path (from the value), for other
	// topics the key. Empty selects everything.
	Include []string
	// Deny are patterns of data that must stay on site, whatever Include
	// says. They are checked last and always win: a uns.points record is
	// kept if its point path or its key (asset path) matches, another
	// topic's record if its key matches. A uns.points record that cannot be
	// parsed stays on site when the flow has Include or Deny patterns.
	Deny []string
	// RemoteTopic is the topic on the remote cluster. Empty means the same
	// name as the source topic (then each source topic goes to its own
	// remote topic).
	RemoteTopic string
	// RemotePartitions are the partitions of a remote topic created by
	// CreateTopics. Zero means as many as the source topic has.
	RemotePartitions int32
	// StartAtLatest makes a flow that has never run start at the end of its
	// topics instead of replicating what they already hold.
	StartAtLatest bool
}

// Commands configures cloud-to-edge commands.
type Commands struct {
	Enabled bool
	// Topic is the remote topic commands come from (values are JSON
	// uns.CommandRequest, as on the local commands topic). Default
	// "commands".
	Topic string
	// ResultsTopic is the remote topic the audit records of routed commands
	// are published to (values are JSON uns.AuditRecord). Default
	// "commands.results".
	ResultsTopic string
	// Group is the consumer group on the remote cluster. Default
	// "millstream.<site>.commands".
	Group string
	// Paths are UNS patterns of the command paths this site takes; commands
	// for other paths are skipped (they are another site's). Empty means
	// every command. Whether a command may be executed is still decided by
	// the local Commander (commands.allow).
	Paths []string
}

func (o *Options) setDefaults() error {
	if o.Site == "" || strings.Contains(o.Site, "/") {
		return fmt.Errorf("replicate: site %q: set a unique, stable site name without \"/\" (replicate.site)", o.Site)
	}
	if len(o.Remote.Brokers) == 0 {
		return errors.New("replicate: no remote brokers configured (replicate.remote.brokers)")
	}
	for _, b := range o.Remote.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			return fmt.Errorf("replicate: remote broker %q: %v (want host:port)", b, err)
		}
	}
	if o.Remote.ClientID == "" {
		o.Remote.ClientID = "millstream-" + o.Site
	}
	if o.Remote.DialTimeout <= 0 {
		o.Remote.DialTimeout = 10 * time.Second
	}
	if _, err := compression(o.Remote.Compression); err != nil {
		return err
	}
	if o.Remote.BandwidthBytesPerSec < 0 {
		return fmt.Errorf("replicate: bandwidth %d bytes/s is negative (0 means no cap)", o.Remote.BandwidthBytesPerSec)
	}
	if o.Remote.BandwidthBurstBytes <= 0 {
		o.Remote.BandwidthBurstBytes = max(o.Remote.BandwidthBytesPerSec, 1<<20)
	}
	if o.Remote.Linger <= 0 {
		o.Remote.Linger = 5 * time.Millisecond
	}
	if o.Remote.MaxBufferedBytes <= 0 {
		o.Remote.MaxBufferedBytes = 16 << 20
	}
	if o.Remote.MaxRecordBytes <= 0 {
		o.Remote.MaxRecordBytes = 1000012
	}
	if o.BacklogAlertRatio <= 0 {
		o.BacklogAlertRatio = 0.8
	}
	if o.CommitInterval <= 0 {
		o.CommitInterval = time.Second
	}
	if o.StatsInterval <= 0 {
		o.StatsInterval = 5 * time.Second
	}
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = 5 * time.Second
	}
	if o.RetryBackoff <= 0 {
		o.RetryBackoff = 2 * time.Second
	}
	if o.CloseTimeout <= 0 {
		o.CloseTimeout = 10 * time.Second
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 100000
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	names := map[string]bool{}
	// A (source topic, remote topic) pair belongs to one flow: the
	// millstream.src header names site, topic, partition and offset, so two
	// flows writing the same source to the same remote topic could not tell
	// their records apart when they resume.
	pairs := map[[2]string]string{}
	for i := range o.Flows {
		f := &o.Flows[i]
		if err := mlog.ValidateTopicName(f.Name); err != nil {
			return fmt.Errorf("replicate: flow name: %w", err)
		}
		if names[f.Name] {
			return fmt.Errorf("replicate: two flows are named %q", f.Name)
		}
		names[f.Name] = true
		if len(f.Topics) == 0 {
			return fmt.Errorf("replicate: flow %s has no source topics", f.Name)
		}
		for _, t := range f.Topics {
			if err := mlog.ValidateTopicName(t); err != nil {
				return fmt.Errorf("replicate: flow %s: %w", f.Name, err)
			}
			rt := f.remoteTopic(t)
			if err := mlog.ValidateTopicName(rt); err != nil {
				return fmt.Errorf("replicate: flow %s remote topic: %w", f.Name, err)
			}
			if other, ok := pairs[[2]string{t, rt}]; ok {
				return fmt.Errorf("replicate: flows %s and %s both replicate %s to remote topic %s (merge them, or use different remote topics)", other, f.Name, t, rt)
			}
			pairs[[2]string{t, rt}] = f.Name
		}
		for _, p := range append(append([]string(nil), f.Include...), f.Deny...) {
			if err := uns.ValidatePattern(p); err != nil {
				return fmt.Errorf("replicate: flow %s: %w", f.Name, err)
			}
		}
	}
	c := &o.Commands
	if c.Enabled {
		if c.Topic == "" {
			c.Topic = "commands"
		}
		if c.ResultsTopic == "" {
			c.ResultsTopic = "commands.results"
		}
		if c.Group == "" {
			c.Group = "millstream." + o.Site + ".commands"
		}
		for _, t := range []string{c.Topic, c.ResultsTopic} {
			if err := mlog.ValidateTopicName(t); err != nil {
				return fmt.Errorf("replicate: commands: %w", err)
			}
		}
		for _, p := range c.Paths {
			if err := uns.ValidatePattern(p); err != nil {
				return fmt.Errorf("replicate: commands paths: %w", err)
			}
		}
	}
	if len(o.Flows) == 0 && !c.Enabled {
		return errors.New("replicate: no flows and commands disabled: nothing to do")
	}
	// Check TLS and SASL now, so a bad file or mechanism fails at start.
	if _, err := o.Remote.clientOpts("check"); err != nil {
		return err
	}
	return nil
}

func (f *Flow) remoteTopic(source string) string {
	if f.RemoteTopic != "" {
		return f.RemoteTopic
	}
	return source
}

func compression(name string) (kgo.CompressionCodec, error) {
	switch strings.ToLower(name) {
	case "", "zstd":
		return kgo.ZstdCompression(), nil
	case "lz4":
		return kgo.Lz4Compression(), nil
	case "snappy":
		return kgo.SnappyCompression(), nil
	case "gzip":
		return kgo.GzipCompression(), nil
	case "none":
		return kgo.NoCompression(), nil
	}
	return kgo.CompressionCodec{}, fmt.Errorf("replicate: compression %q unknown (use zstd, lz4, snappy, gzip or none)", name)
}

// clientOpts are the franz-go options shared by every client to the remote:
// connection, security, logging. Each client gets its own client id suffix
// so the remote's logs tell flows apart.
func (r *Remote) clientOpts(suffix string) ([]kgo.Opt, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(r.Brokers...),
		kgo.ClientID(r.ClientID + "-" + suffix),
		kgo.DialTimeout(r.DialTimeout),
	}
	if r.TLS.Enabled {
		cfg, err := r.TLS.Config()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(cfg))
	} else if r.TLS.CAFile != "" || r.TLS.CertFile != "" || r.TLS.KeyFile != "" {
		return nil, errors.New("replicate: remote TLS files are set but TLS is not enabled (set replicate.remote.tls.enabled: true)")
	}
	if r.SASL.Mechanism != "" {
		m, err := r.SASL.SASLMechanism()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.SASL(m))
	}
	return opts, nil
}
