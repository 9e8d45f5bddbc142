// Package node builds Millstream's components from a configuration and runs
// them as one process: the log first (everything depends on it), then the
// producers and consumers of the log, then the HTTP API that observes them.
// Shutdown runs in reverse so that nothing is acknowledged after the log has
// been closed, and the log's Close flushes and fsyncs what was appended.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millstream/millstream/api"
	"github.com/millstream/millstream/broker"
	"github.com/millstream/millstream/config"
	"github.com/millstream/millstream/historian"
	"github.com/millstream/millstream/kafkaproto"
	mlog "github.com/millstream/millstream/log"
	"github.com/millstream/millstream/log/embedded"
	"github.com/millstream/millstream/log/kafka"
	"github.com/millstream/millstream/pipeline"
	"github.com/millstream/millstream/replicate"
	"github.com/millstream/millstream/uns"
)

// Version is set by the build (-ldflags "-X .../node.Version=...").
var Version = "dev"

// Node is a running Millstream process.
type Node struct {
	cfg    config.Config
	logger *slog.Logger

	log    backend
	broker *broker.Broker
	norm   *uns.Normalizer
	cmds   *uns.Commander
	api    *api.Server
	kafka  *kafkaproto.Server    // nil unless kafka_endpoint.enabled
	repl   *replicate.Replicator // nil unless replicate.enabled
	hist   *historian.DB         // nil unless historian.enabled
	ingest *historian.Ingester
	rolls  pipeline.Rollups

	httpLn  net.Listener
	httpErr chan error
	normErr chan error
	cmdsErr chan error
	kafkaLn net.Listener
	replErr chan error
	histErr chan error
	pipeErr chan error
	cancel  context.CancelFunc
	ready   atomic.Bool

	closeOnce sync.Once
	closeErr  error
}

// backend is the log as the node needs it: the Log interface and metrics.
type backend interface {
	mlog.Log
	Register(prometheus.Registerer) error
}

// replicateOptions maps the configuration onto the replicator's options.
func replicateOptions(r config.Replicate, logger *slog.Logger) replicate.Options {
	o := replicate.Options{
		Site: r.Site,
		Remote: replicate.Remote{
			Brokers:  r.Remote.Brokers,
			ClientID: r.Remote.ClientID,
			TLS: kafka.TLSOptions{Enabled: r.Remote.TLS.Enabled, CAFile: r.Remote.TLS.CAFile, CertFile: r.Remote.TLS.CertFile,
				KeyFile: r.Remote.TLS.KeyFile, ServerName: r.Remote.TLS.ServerName, InsecureSkipVerify: r.Remote.TLS.InsecureSkipVerify},
			SASL:                 kafka.SASLOptions{Mechanism: r.Remote.SASL.Mechanism, User: r.Remote.SASL.Username, Password: r.Remote.SASL.Password},
			Compression:          r.Remote.Compression,
			BandwidthBytesPerSec: int64(r.Remote.Bandwidth),
			CreateTopics:         r.Remote.CreateTopics,
			ReplicationFactor:    r.Remote.ReplicationFactor,
		},
		Commands: replicate.Commands{Enabled: r.Commands.Enabled, Topic: r.Commands.Topic,
			ResultsTopic: r.Commands.ResultsTopic, Paths: r.Commands.Paths},
		BacklogAlertRatio: r.BacklogAlertRatio,
		Logger:            logger,
	}
	for _, f := range r.Flows {
		o.Flows = append(o.Flows, replicate.Flow{Name: f.Name, Topics: f.Topics, Include: f.Include, Deny: f.Deny,
			RemoteTopic: f.RemoteTopic, StartAtLatest: f.StartAtLatest})
	}
	return o
}

// scramCredentials reads the users' SCRAM credentials, keyed by mechanism
// and user.
func scramCredentials(users []config.User) (map[string]kafkaproto.SCRAMCredential, error) {
	out := map[string]kafkaproto.SCRAMCredential{}
	for i, u := range users {
		for _, sc := range []struct{ key, val, mech string }{{"scram_sha256", u.ScramSHA256, kafkaproto.MechSCRAMSHA256}, {"scram_sha512", u.ScramSHA512, kafkaproto.MechSCRAMSHA512}} {
			if sc.val == "" {
				continue
			}
			c, err := kafkaproto.ParseSCRAMCredential(sc.val)
			if err == nil && c.Mechanism != sc.mech {
				err = fmt.Errorf("is a %s credential", c.Mechanism)
			}
			if err != nil {
				return nil, fmt.Errorf("mqtt.users[%d].%s: %v (generate it with: echo -n 'the password' | millstream passwd --scram)", i, sc.key, err)
			}
			out[sc.mech+"\x00"+u.Username] = c
		}
	}
	return out, nil
}

// kafkaAnonymous applies the MQTT rule for clients without credentials to
// the Kafka endpoint: mqtt.allow_anonymous if set, else only while every
// listener, the Kafka endpoint's included, is bound to loopback.
func kafkaAnonymous(cfg config.Config) bool {
	if cfg.MQTT.AllowAnonymous != nil {
		return *cfg.MQTT.AllowAnonymous
	}
	loopback := func(addr string) bool {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return false
		}
		if host == "localhost" {
			return true
		}
		ip := net.ParseIP(host)
		return ip != nil && ip.IsLoopback()
	}
	for _, l := range cfg.MQTT.Listeners {
		if !loopback(l.Address) {
			return false
		}
	}
	return loopback(cfg.KafkaEndpoint.Address)
}

// OpenLog opens the configured log backend: the embedded log under
// data_dir/log, or a Kafka cluster.
func OpenLog(ctx context.Context, cfg config.Config, logger *slog.Logger) (backend, error) {
	switch cfg.Log.Backend {
	case "kafka":
		k := cfg.Log.Kafka
		l, err := kafka.Open(ctx, kafka.Options{
			Brokers:           k.Brokers,
			ClientID:          k.ClientID,
			ReplicationFactor: k.ReplicationFactor,
			TLS: kafka.TLSOptions{Enabled: k.TLS.Enabled, CAFile: k.TLS.CAFile, CertFile: k.TLS.CertFile, KeyFile: k.TLS.KeyFile,
				ServerName: k.TLS.ServerName, InsecureSkipVerify: k.TLS.InsecureSkipVerify},
			SASL: kafka.SASLOptions{Mechanism: k.SASL.Mechanism, User: k.SASL.Username, Password: k.SASL.Password},
			// Heartbeats a tenth of the session timeout apart (Kafka's
			// default ratio is 3 s to 45 s): a few may be lost before the
			// node counts as gone.
			GroupSessionTimeout:    time.Duration(k.GroupSessionTimeout),
			GroupHeartbeatInterval: time.Duration(k.GroupSessionTimeout) / 10,
			// The same topic defaults as the embedded log, so that a
			// plant keeps its retention when it moves to Kafka.
			Defaults: mlog.TopicConfig{
				Partitions:     cfg.Log.Partitions,
				RetentionAge:   time.Duration(cfg.Log.RetentionAge),
				RetentionBytes: int64(cfg.Log.RetentionBytes),
			},
			Logger: logger.With("component", "log"),
		})
		if err != nil {
			return nil, fmt.Errorf("open the Kafka log (log.kafka.brokers %v): %w", k.Brokers, err)
		}
		return l, nil
	default:
		l, err := embedded.Open(filepath.Join(cfg.DataDir, "log"), LogOptions(cfg, logger))
		if err != nil {
			return nil, fmt.Errorf("open log in %s: %w", cfg.DataDir, err)
		}
		return l, nil
	}
}

// New opens the log and builds every component. Nothing listens yet.
func New(cfg config.Config, logger *slog.Logger) (*Node, error) {
	if logger == nil {
		logger = slog.Default()
	}
	n := &Node{cfg: cfg, logger: logger}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := OpenLog(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	n.log = l
	if err := n.createTopics(context.Background()); err != nil {
		l.Close()
		return nil, err
	}

	b, err := broker.New(cfg.MQTT, l, broker.Options{Logger: logger.With("component", "broker")})
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("mqtt broker: %w", err)
	}
	n.broker = b

	var rules []uns.MappingRule
	for _, m := range cfg.UNS.Mappings {
		rules = append(rules, uns.MappingRule(m))
	}
	mapper, err := uns.NewMapper(rules)
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("uns.mappings: %w", err)
	}
	tree, live := uns.NewTree(), uns.NewLive()
	// On Kafka the normaliser is a consumer group member, so that several
	// Millstream nodes split the ingress partitions (docs/kafka.md).
	var normGroup uns.GroupConsumerFactory
	if kl, ok := l.(*kafka.Log); ok && cfg.Log.Backend == "kafka" {
		normGroup = func(ctx context.Context, group string, topics []string, cb uns.GroupCallbacks) (uns.GroupConsumer, error) {
			gc, err := kl.GroupConsumer(ctx, group, topics, kafka.GroupOptions{OnAssigned: cb.OnAssigned, OnRevoked: cb.OnRevoked, OnLost: cb.OnLost})
			if err != nil {
				return nil, err // not a typed nil in the interface
			}
			return gc, nil
		}
	}
	n.norm = uns.NewNormalizer(l, uns.NormalizerOptions{
		GroupConsumer:      normGroup,
		Source:             cfg.MQTT.IngressTopic,
		Logger:             logger.With("component", "uns"),
		Tree:               tree,
		TreeWindow:         time.Duration(cfg.UNS.TreeWindow),
		BatchWait:          orNever(time.Duration(cfg.UNS.BatchWait)),
		Live:               live,
		Publish:            b.Publish,
		Mapper:             mapper,
		Format:             cfg.UNS.Format,
		ReorderWindow:      cfg.Sparkplug.ReorderWindow,
		CheckpointInterval: time.Duration(cfg.Sparkplug.CheckpointInterval),
	})

	n.cmds, err = uns.NewCommander(l, n.norm, uns.CommanderOptions{
		Allow:   cfg.Commands.Allow,
		MaxAge:  time.Duration(cfg.Commands.MaxAge),
		Publish: b.Publish,
		Logger:  logger.With("component", "commands"),
		// On Kafka, nodes split the command partitions: none is sent twice.
		GroupConsumer: normGroup,
	})
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("commands: %w", err)
	}

	reg := api.NewRegistry()
	if err := l.Register(reg); err != nil {
		l.Close()
		return nil, fmt.Errorf("register log metrics: %w", err)
	}
	if err := b.Register(reg); err != nil {
		l.Close()
		return nil, fmt.Errorf("register broker metrics: %w", err)
	}
	if err := reg.Register(n.norm); err != nil {
		l.Close()
		return nil, fmt.Errorf("register namespace metrics: %w", err)
	}
	if err := reg.Register(n.cmds); err != nil {
		l.Close()
		return nil, fmt.Errorf("register command metrics: %w", err)
	}
	if cfg.KafkaEndpoint.Enabled {
		scram, err := scramCredentials(cfg.MQTT.Users)
		if err != nil {
			l.Close()
			return nil, err
		}
		n.kafka, err = kafkaproto.New(l, kafkaproto.Options{
			Authenticator: b.Authenticate,
			SCRAM: func(mech, user string) (kafkaproto.SCRAMCredential, bool) {
				c, ok := scram[mech+"\x00"+user]
				return c, ok
			},
			Authorizer: func(user, topic string, a kafkaproto.Action) bool {
				return b.Authorize(user, topic, a == kafkaproto.ActionWrite)
			},
			// Kafka clients' groups live beside Millstream's own consumers
			// in the log; the prefix keeps a client's group "historian"
			// from moving the historian's offsets.
			GroupPrefix:    "kafka.",
			AdvertisedAddr: cfg.KafkaEndpoint.AdvertisedAddress,
			AllowAnonymous: kafkaAnonymous(cfg),
			// As Kafka's auto.create.topics.enable defaults to true: a
			// producer's first write creates the topic with the log's
			// defaults (mqtt.acl decides who may write).
			AutoCreateTopics: true,
			Logger:           logger.With("component", "kafka"),
		})
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("kafka endpoint: %w", err)
		}
		if err := n.kafka.Register(reg); err != nil {
			l.Close()
			return nil, fmt.Errorf("register kafka endpoint metrics: %w", err)
		}
	}
	if cfg.Replicate.Enabled {
		n.repl, err = replicate.New(l, replicateOptions(cfg.Replicate, logger.With("component", "replicate")))
		if err != nil {
			l.Close()
			return nil, err
		}
		if err := n.repl.Register(reg); err != nil {
			l.Close()
			return nil, fmt.Errorf("register replication metrics: %w", err)
		}
	}
	for _, iv := range cfg.Pipeline.RollupIntervals {
		r, err := pipeline.NewRollup(l, pipeline.RollupOptions{Interval: time.Duration(iv), Grace: time.Duration(cfg.Pipeline.RollupGrace),
			Logger: logger.With("component", "pipeline"), GroupConsumer: normGroup})
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("pipeline.rollup_intervals: %w", err)
		}
		n.rolls = append(n.rolls, r)
	}
	if len(n.rolls) > 0 {
		if err := reg.Register(n.rolls); err != nil {
			l.Close()
			return nil, fmt.Errorf("register pipeline metrics: %w", err)
		}
	}
	var history api.History
	if h := cfg.Historian; h.Enabled {
		n.hist, err = historian.Open(HistorianOptions(cfg))
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("historian in %s: %w", filepath.Join(cfg.DataDir, "historian"), err)
		}
		n.ingest = historian.NewIngester(l, n.hist, historian.IngestOptions{
			FlushInterval: time.Duration(h.FlushInterval),
			Logger:        logger.With("component", "historian"),
		})
		if err := reg.Register(historianCollector{n.ingest}); err != nil {
			n.hist.Close()
			l.Close()
			return nil, fmt.Errorf("register historian metrics: %w", err)
		}
		history = n.hist
	}
	n.api = api.New(api.Options{
		Log:       l,
		Gatherer:  reg,
		Ready:     n.readiness,
		Logger:    logger.With("component", "api"),
		Version:   Version,
		Namespace: tree,
		Live:      live,
		Sparkplug: n.norm,
		Commands:  n.cmds,
		History:   history,
	})
	return n, nil
}

// HistorianOptions maps the configuration onto the historian's options. The
// CLI's offline query uses it too, so it finds the Parquet tier.
func HistorianOptions(cfg config.Config) historian.Options {
	h := cfg.Historian
	forever := func(d config.Duration) time.Duration { return time.Duration(max(d, 0)) }
	o := historian.Options{
		Dir:               filepath.Join(cfg.DataDir, "historian"),
		Partition:         time.Duration(h.Partition),
		OutOfOrderWindow:  time.Duration(h.OutOfOrderWindow),
		Retention:         forever(h.Retention),
		RollupRetention1m: forever(h.RollupRetention1m),
		RollupRetention1h: forever(h.RollupRetention1h),
		Tier:              historian.TierOptions{After: time.Duration(h.Tier.After), Interval: time.Duration(h.Tier.Interval), Dir: h.Tier.Dir},
	}
	if len(h.Deadband) > 0 {
		rules := h.Deadband
		o.Deadband = func(series string) float64 {
			for _, r := range rules {
				if uns.MatchPattern(r.Pattern, series) {
					return r.MaxDeviation
				}
			}
			return 0
		}
	}
	if s3 := h.Tier.S3; s3.Bucket != "" {
		o.Tier.S3 = &historian.S3Options{Endpoint: s3.Endpoint, Bucket: s3.Bucket, Prefix: s3.Prefix, AccessKey: s3.AccessKey,
			SecretKey: s3.SecretKey, Region: s3.Region, UseTLS: s3.UseTLS, CreateBucket: s3.CreateBucket}
	}
	return o
}

// LogOptions maps the configuration onto the embedded log's options. The CLI's
// offline commands (replay) use it too, so they open the log the same way.
func LogOptions(cfg config.Config, logger *slog.Logger) embedded.Options {
	return embedded.Options{
		Fsync:            cfg.Log.Fsync,
		FsyncInterval:    time.Duration(cfg.Log.FsyncInterval),
		FsyncMinInterval: time.Duration(cfg.Log.FsyncMinInterval),
		FsyncBytes:       int64(cfg.Log.FsyncBytes),
		NoDirectIO:       !cfg.Log.DirectIO,
		SegmentBytes:     int64(cfg.Log.SegmentBytes),
		SegmentAge:       time.Duration(cfg.Log.SegmentAge),
		Defaults: mlog.TopicConfig{
			Partitions:     cfg.Log.Partitions,
			RetentionAge:   time.Duration(cfg.Log.RetentionAge),
			RetentionBytes: int64(cfg.Log.RetentionBytes),
		},
		Logger: logger.With("component", "log"),
	}
}

// createTopics creates the topics named in the configuration that do not exist
// yet. Existing topics keep their partition count: changing it would move keys
// to other partitions and break per-asset order.
func (n *Node) createTopics(ctx context.Context) error {
	for name, t := range n.cfg.Log.Topics {
		tc := mlog.TopicConfig{
			Partitions:     t.Partitions,
			RetentionAge:   time.Duration(t.RetentionAge),
			RetentionBytes: int64(t.RetentionBytes),
		}
		if tc.Partitions == 0 {
			tc.Partitions = n.cfg.Log.Partitions
		}
		if tc.RetentionAge == 0 {
			tc.RetentionAge = time.Duration(n.cfg.Log.RetentionAge)
		}
		if tc.RetentionBytes == 0 {
			tc.RetentionBytes = int64(n.cfg.Log.RetentionBytes)
		}
		err := n.log.CreateTopic(ctx, name, tc)
		if errors.Is(err, mlog.ErrTopicExists) {
			info, ierr := n.log.Topic(ctx, name)
			if ierr == nil && len(info.Partitions) != int(tc.Partitions) {
				n.logger.Warn("topic keeps its partition count; the configured count applies only to new topics",
					"topic", name, "partitions", len(info.Partitions), "configured", tc.Partitions)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("create topic %s: %w", name, err)
		}
	}
	return nil
}

// Start opens the listeners and returns once everything accepts connections.
func (n *Node) Start(ctx context.Context) error {
	ctx, n.cancel = context.WithCancel(ctx)
	if err := n.broker.Start(ctx); err != nil {
		return fmt.Errorf("mqtt broker: %w", err)
	}
	ln, err := net.Listen("tcp", n.cfg.HTTP.Address)
	if err != nil {
		return fmt.Errorf("http: listen on %s: %w (set http.address or --http-addr to a free address)", n.cfg.HTTP.Address, err)
	}
	// The normaliser follows the ingress topic from its committed offset;
	// if it fails (the log refuses writes), ingest goes on and the error is
	// logged: it resumes where it stopped at the next start.
	n.normErr = make(chan error, 1)
	go func() {
		err := n.norm.Run(ctx)
		if err != nil {
			n.logger.Error("namespace normaliser stopped; MQTT ingest continues, normalisation resumes from its committed offset at the next start", "error", err)
		}
		n.normErr <- err
	}()

	n.cmdsErr = make(chan error, 1)
	go func() {
		err := n.cmds.Run(ctx)
		if err != nil {
			n.logger.Error("command handling stopped; requests stay in the commands topic and are handled (or expire) at the next start", "error", err)
		}
		n.cmdsErr <- err
	}()

	if n.kafka != nil {
		kl, err := net.Listen("tcp", n.cfg.KafkaEndpoint.Address)
		if err != nil {
			ln.Close()
			return fmt.Errorf("kafka endpoint: listen on %s: %w (set kafka_endpoint.address or --kafka-addr to a free address)", n.cfg.KafkaEndpoint.Address, err)
		}
		n.kafkaLn = kl
		go func() {
			if err := n.kafka.Serve(kl); err != nil && !errors.Is(err, kafkaproto.ErrServerClosed) {
				n.logger.Error("kafka endpoint stopped", "error", err)
			}
		}()
	}

	n.pipeErr = make(chan error, len(n.rolls))
	for _, r := range n.rolls {
		go func() {
			err := r.Run(ctx)
			if err != nil {
				n.logger.Error("rollup stopped; it resumes from its checkpoint at the next start", "topic", r.Output(), "error", err)
			}
			n.pipeErr <- err
		}()
	}
	if n.ingest != nil {
		n.histErr = make(chan error, 1)
		go func() {
			err := n.ingest.Run(ctx)
			if err != nil {
				n.logger.Error("historian stopped; it resumes from its checkpoint at the next start", "error", err)
			}
			n.histErr <- err
		}()
	}
	if n.repl != nil {
		n.replErr = make(chan error, 1)
		go func() {
			err := n.repl.Run(ctx)
			if err != nil {
				n.logger.Error("replication stopped; records stay in the local log and are sent after the next start", "error", err)
			}
			n.replErr <- err
		}()
	}

	n.httpLn = ln
	n.httpErr = make(chan error, 1)
	go func() { n.httpErr <- n.api.Serve(ctx, ln) }()

	n.publishHostState(true)

	attrs := []any{"log", n.cfg.Log.Backend, "data_dir", n.cfg.DataDir, "http", ln.Addr().String()}
	for name, a := range n.broker.Addrs() {
		attrs = append(attrs, "mqtt_"+name, a.String())
	}
	if n.kafkaLn != nil {
		attrs = append(attrs, "kafka", n.kafkaLn.Addr().String())
	}
	n.logger.Info("millstream started", attrs...)
	n.ready.Store(true)
	return nil
}

func (n *Node) readiness() error {
	if !n.ready.Load() {
		return errors.New("starting")
	}
	// A log partition that stopped after a write error (a full disk)
	// refuses every append until restart: the node cannot take data.
	if f, ok := n.log.(interface{ Failure() error }); ok {
		if err := f.Failure(); err != nil {
			return fmt.Errorf("log: %w", err)
		}
	}
	if n.ingest != nil {
		// A rebuild from the log says how far it is.
		if err := n.ingest.Ready(); err != nil {
			return fmt.Errorf("historian: %w", err)
		}
	}
	return nil
}

// HTTPAddr is the bound HTTP address (useful with port 0).
func (n *Node) HTTPAddr() net.Addr { return n.httpLn.Addr() }

// MQTTAddrs are the bound MQTT listener addresses by listener name.
func (n *Node) MQTTAddrs() map[string]net.Addr { return n.broker.Addrs() }

// Log is the node's log.
func (n *Node) Log() mlog.Log { return n.log }

// Close stops accepting work, then closes the log, which flushes and fsyncs.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.ready.Store(false)
		var errs []error
		if n.httpLn != nil { // started
			n.publishHostState(false)
		}
		if n.kafka != nil {
			if err := n.kafka.Close(); err != nil {
				errs = append(errs, fmt.Errorf("kafka endpoint: %w", err))
			}
		}
		if n.broker != nil {
			if err := n.broker.Close(); err != nil {
				errs = append(errs, fmt.Errorf("mqtt broker: %w", err))
			}
		}
		if n.cancel != nil {
			n.cancel()
		}
		if n.httpErr != nil {
			if err := <-n.httpErr; err != nil {
				errs = append(errs, fmt.Errorf("http: %w", err))
			}
		}
		if n.normErr != nil {
			<-n.normErr // logged where it happened
		}
		if n.cmdsErr != nil {
			<-n.cmdsErr
		}
		if n.replErr != nil {
			<-n.replErr
		}
		if n.histErr != nil {
			<-n.histErr
		}
		for range n.rolls {
			<-n.pipeErr
		}
		if n.hist != nil {
			if err := n.hist.Close(); err != nil {
				errs = append(errs, fmt.Errorf("historian: %w", err))
			}
		}
		if err := n.log.Close(); err != nil {
			errs = append(errs, fmt.Errorf("log: %w", err))
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

// publishHostState publishes the Sparkplug 3.0 host application state
// message, retained, so that edge nodes configured for this primary host
// know whether it is online. Offline is published on a graceful stop; after
// a crash the broker, which runs in this process, is gone too, and the next
// start publishes online with a new timestamp.
func (n *Node) publishHostState(online bool) {
	payload := fmt.Sprintf(`{"online":%t,"timestamp":%d}`, online, time.Now().UnixMilli())
	if err := n.broker.Publish("spBv1.0/STATE/"+n.cfg.Sparkplug.HostID, []byte(payload), true, 1); err != nil {
		n.logger.Warn("sparkplug host state not published", "online", online, "error", err)
	}
}

// orNever maps a configured 0 ("do not wait") to the negative duration the
// components read as never, where their zero means their default.
func orNever(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
