package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	mlog "github.com/millstream/millstream/log"
)

// SASL mechanisms accepted in SASLOptions.Mechanism (case-insensitive).
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

// Options configures the Kafka log. Zero values take the defaults noted.
type Options struct {
	// Brokers are the seed brokers, host:port. At least one is required;
	// the rest of the cluster is discovered from them.
	Brokers []string
	// ClientID is sent to the brokers (it shows up in their logs and
	// quotas). Empty means "millstream".
	ClientID string
	// TLS encrypts connections when Enabled.
	TLS TLSOptions
	// SASL authenticates connections when Mechanism is set.
	SASL SASLOptions

	// Defaults fills in zero fields of a TopicConfig at CreateTopic. Zero
	// Partitions means 1. Zero RetentionAge or RetentionBytes leaves the
	// broker's default (log.retention.ms, log.retention.bytes) in force;
	// negative means keep forever / no size limit.
	Defaults mlog.TopicConfig
	// ReplicationFactor of created topics. Zero means the broker's
	// default.replication.factor (needs Kafka 2.4+). Use 3 on a production
	// cluster: acks=all is only as durable as the replicas behind it.
	ReplicationFactor int16

	// MaxBufferedRecords and MaxBufferedBytes bound the records produced
	// but not yet acknowledged by Kafka; Produce blocks beyond them
	// (backpressure). Zero means 10000 records and 64 MiB.
	MaxBufferedRecords int
	MaxBufferedBytes   int
	// MaxRecordBytes rejects larger records with ErrRecordTooLarge before
	// they are sent. It is also the largest batch the producer builds, so
	// it must not exceed the topics' max.message.bytes. Zero means 1000012
	// bytes, Kafka's default.
	MaxRecordBytes int
	// Linger is how long the producer waits to fill a batch. Zero means
	// none: a batch is sent as soon as the previous one is acknowledged.
	Linger time.Duration
	// DialTimeout bounds connecting to one broker. Zero means 10 s.
	DialTimeout time.Duration
	// FetchWait is the longest a Fetch with Wait keeps one long poll open on
	// a broker before re-polling. It also bounds how late a newly waiting
	// Fetch joins the poll that is already in flight. Zero means 200 ms.
	FetchWait time.Duration

	// CloseTimeout bounds how long Close waits for Kafka to acknowledge
	// what is still buffered; records not acknowledged by then fail with
	// ErrClosed (their promises say so). Zero means 30 s.
	CloseTimeout time.Duration

	// Group tunes GroupConsumer membership. Zero values take Kafka's
	// defaults (session 45 s, heartbeat 3 s, rebalance 60 s). A shorter
	// heartbeat makes a surviving member notice a rebalance sooner.
	GroupSessionTimeout    time.Duration
	GroupHeartbeatInterval time.Duration
	GroupRebalanceTimeout  time.Duration

	// Logger receives the Kafka client's warnings and errors. Nil means
	// slog.Default().
	Logger *slog.Logger
	// ClientOptions are extra franz-go options appended last, for settings
	// this struct does not cover (they can override the ones above, which
	// may break the log's guarantees: do not change acks or idempotence).
	ClientOptions []kgo.Opt
}

// TLSOptions configures TLS to the brokers.
type TLSOptions struct {
	Enabled bool
	// CAFile is a PEM bundle of CAs to trust instead of the system pool.
	CAFile string
	// CertFile and KeyFile are a PEM client certificate and key for mutual
	// TLS; both or neither.
	CertFile string
	KeyFile  string
	// ServerName overrides the name checked against the broker's
	// certificate. Empty means the host of the broker address.
	ServerName string
	// InsecureSkipVerify disables certificate verification. For tests only.
	InsecureSkipVerify bool
}

// SASLOptions configures SASL authentication.
type SASLOptions struct {
	// Mechanism is SASLPlain, SASLScramSHA256 or SASLScramSHA512; empty
	// disables SASL.
	Mechanism string
	User      string
	Password  string
}

func (o *Options) setDefaults() error {
	if len(o.Brokers) == 0 {
		return errors.New("kafka log: no brokers configured (set log.kafka.brokers to host:port of at least one broker)")
	}
	for _, b := range o.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			return fmt.Errorf("kafka log: broker address %q: %v (want host:port, e.g. kafka-1:9092)", b, err)
		}
	}
	if o.ClientID == "" {
		o.ClientID = "millstream"
	}
	if o.Defaults.Partitions <= 0 {
		o.Defaults.Partitions = 1
	}
	if o.ReplicationFactor < 0 {
		return fmt.Errorf("kafka log: replication factor %d is negative (use 0 for the broker default)", o.ReplicationFactor)
	}
	if o.MaxBufferedRecords <= 0 {
		o.MaxBufferedRecords = 10000
	}
	if o.MaxBufferedBytes <= 0 {
		o.MaxBufferedBytes = 64 << 20
	}
	if o.MaxRecordBytes <= 0 {
		o.MaxRecordBytes = 1000012
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.FetchWait <= 0 {
		o.FetchWait = 200 * time.Millisecond
	}
	if o.CloseTimeout <= 0 {
		o.CloseTimeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// clientOpts are the franz-go options shared by every client the log
// creates: connection, security and logging.
func (o *Options) clientOpts() ([]kgo.Opt, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(o.Brokers...),
		kgo.ClientID(o.ClientID),
		kgo.DialTimeout(o.DialTimeout),
		kgo.WithLogger(slogLogger{o.Logger}),
	}
	if o.TLS.Enabled {
		cfg, err := o.TLS.Config()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(cfg))
	} else if o.TLS.CAFile != "" || o.TLS.CertFile != "" || o.TLS.KeyFile != "" {
		return nil, errors.New("kafka log: TLS files are set but TLS is not enabled (set log.kafka.tls.enabled: true)")
	}
	if o.SASL.Mechanism != "" {
		m, err := o.SASL.SASLMechanism()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.SASL(m))
	}
	return opts, nil
}

// Config builds the TLS client configuration (also used by the replicator
// for its remote cluster).
func (t TLSOptions) Config() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("kafka TLS CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kafka TLS CA file %s holds no PEM certificate", t.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, errors.New("kafka TLS client certificate needs both cert_file and key_file")
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("kafka TLS client certificate %s / %s: %w", t.CertFile, t.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// SASLMechanism builds the SASL mechanism (also used by the replicator).
func (s SASLOptions) SASLMechanism() (sasl.Mechanism, error) {
	if s.User == "" {
		return nil, fmt.Errorf("kafka SASL %s needs a user", s.Mechanism)
	}
	switch strings.ToUpper(s.Mechanism) {
	case SASLPlain:
		return plain.Auth{User: s.User, Pass: s.Password}.AsMechanism(), nil
	case SASLScramSHA256:
		return scram.Auth{User: s.User, Pass: s.Password}.AsSha256Mechanism(), nil
	case SASLScramSHA512:
		return scram.Auth{User: s.User, Pass: s.Password}.AsSha512Mechanism(), nil
	}
	return nil, fmt.Errorf("kafka SASL mechanism %q unknown (use %s, %s or %s)", s.Mechanism, SASLPlain, SASLScramSHA256, SASLScramSHA512)
}

// slogLogger adapts slog to franz-go's logger. Only warnings and errors are
// passed on: the client's info and debug output is per request.
type slogLogger struct{ l *slog.Logger }

func (s slogLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (s slogLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	lvl := slog.LevelWarn
	if level == kgo.LogLevelError {
		lvl = slog.LevelError
	} else if level != kgo.LogLevelWarn {
		return
	}
	s.l.Log(context.Background(), lvl, "kafka: "+msg, keyvals...)
}
