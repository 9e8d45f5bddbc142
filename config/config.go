// Package config holds Millstream's configuration schema: one YAML file whose
// every key has a default (Default), is validated with file:line in errors, and
// is documented in docs/configuration.md. Precedence, lowest to highest:
// defaults, the YAML file, MILLSTREAM_<SECTION>_<KEY> environment variables,
// command-line flags.
package config

import (
	"errors"
	"slices"
	"time"
)

// Config is the whole configuration file.
type Config struct {
	// DataDir holds the embedded log and all derived state.
	DataDir   string    `yaml:"data_dir"`
	Log       Log       `yaml:"log"`
	MQTT      MQTT      `yaml:"mqtt"`
	HTTP      HTTP      `yaml:"http"`
	Logging   Logging   `yaml:"logging"`
	Sparkplug Sparkplug `yaml:"sparkplug"`
	UNS       UNS       `yaml:"uns"`
	Commands  Commands  `yaml:"commands"`
	// KafkaEndpoint serves the embedded log over the Kafka protocol.
	KafkaEndpoint KafkaEndpoint `yaml:"kafka_endpoint"`
	// Replicate copies selected topics to a remote Kafka cluster.
	Replicate Replicate `yaml:"replicate"`
	// Historian stores the history of every point for fast queries.
	Historian Historian `yaml:"historian"`
	// Pipeline configures stream processing steps over the log.
	Pipeline Pipeline `yaml:"pipeline"`

	// src maps key paths ("log.fsync", "mqtt.listeners[0].address") to where
	// Parse or Load found them, so Validate can point at the line to fix.
	// Nil for a Config built in code.
	src map[string]origin
}

// Sparkplug configures Millstream's Sparkplug B host application.
type Sparkplug struct {
	// HostID names the host application: its state is published on
	// spBv1.0/STATE/<host_id>.
	HostID string `yaml:"host_id"`
	// ReorderWindow is how many sequence numbers a message may arrive early
	// or late before it counts as a gap (0: strict order).
	ReorderWindow int `yaml:"reorder_window"`
	// CheckpointInterval bounds how often the host state is checkpointed.
	CheckpointInterval Duration `yaml:"checkpoint_interval"`
}

// UNS configures the Unified Namespace.
type UNS struct {
	// TreeWindow is how far back the live namespace is loaded from
	// uns.points at start.
	TreeWindow Duration `yaml:"tree_window"`
	// Format of uns.points record values: "json" or "protobuf".
	Format string `yaml:"format"`
	// BatchWait is the least time between two reads of the ingress topic
	// by the normaliser while messages keep coming (0 reads at once).
	BatchWait Duration `yaml:"batch_wait"`
	// Mappings put brownfield MQTT topic trees into the namespace; the
	// first rule whose topic pattern matches applies.
	Mappings []Mapping `yaml:"mappings"`
}

// Mapping is one brownfield mapping rule (uns.MappingRule).
type Mapping struct {
	Topic     string  `yaml:"topic"`
	Path      string  `yaml:"path"`
	Tag       string  `yaml:"tag"`
	Value     string  `yaml:"value"`
	Timestamp string  `yaml:"timestamp"`
	Quality   string  `yaml:"quality"`
	Unit      string  `yaml:"unit"`
	Scale     float64 `yaml:"scale"`
	Offset    float64 `yaml:"offset"`
}

// KafkaEndpoint configures the Kafka wire-protocol endpoint over the
// embedded log, so that Kafka tools (kcat, Kafka Connect) read and write it.
type KafkaEndpoint struct {
	Enabled bool   `yaml:"enabled"`
	Address string `yaml:"address"`
	// AdvertisedAddress is the host:port clients are told to connect to
	// (behind NAT or a proxy); empty means the address they connected to.
	AdvertisedAddress string `yaml:"advertised_address"`
}

// Pipeline configures stream processing steps.
type Pipeline struct {
	// RollupIntervals writes, for each interval, one record per tag and
	// window to uns.rollups.<interval> (e.g. 1m).
	RollupIntervals []Duration `yaml:"rollup_intervals"`
	// RollupGrace is how long after a window's end it is closed without a
	// newer point.
	RollupGrace Duration `yaml:"rollup_grace"`
}

// Historian configures the time-series store derived from uns.points.
type Historian struct {
	Enabled bool `yaml:"enabled"`
	// Retention of raw points; -1 keeps them forever.
	Retention Duration `yaml:"retention"`
	// RollupRetention1m and RollupRetention1h keep the 1-minute and 1-hour
	// rollups; -1 keeps them forever.
	RollupRetention1m Duration `yaml:"rollup_retention_1m"`
	RollupRetention1h Duration `yaml:"rollup_retention_1h"`
	// OutOfOrderWindow is how late a point may be and still go to the
	// in-memory head (later points take the late path; all are kept).
	OutOfOrderWindow Duration `yaml:"out_of_order_window"`
	// FlushInterval bounds how long points stay in memory only.
	FlushInterval Duration `yaml:"flush_interval"`
	// Partition is the time span of one partition file.
	Partition Duration `yaml:"partition"`
	// Tier moves old partitions to Parquet files in a directory or an
	// S3-compatible bucket.
	Tier HistorianTier `yaml:"tier"`
	// Deadband stores a numeric point of a matching series only when it
	// moved more than MaxDeviation from the last stored one; the first
	// matching rule applies. Lossy; none by default.
	Deadband []HistorianDeadband `yaml:"deadband"`
}

// HistorianDeadband is one deadband rule.
type HistorianDeadband struct {
	Pattern      string  `yaml:"pattern"`
	MaxDeviation float64 `yaml:"max_deviation"`
}

// HistorianTier configures tiering to Parquet.
type HistorianTier struct {
	// After is the age at which partitions move; 0 turns tiering off.
	After Duration `yaml:"after"`
	// Interval is how often partitions old enough are looked for.
	Interval Duration `yaml:"interval"`
	// Dir is a local (or mounted) directory; S3 a bucket. One of them.
	Dir string      `yaml:"dir"`
	S3  HistorianS3 `yaml:"s3,omitempty"`
}

// HistorianS3 is an S3-compatible bucket.
type HistorianS3 struct {
	Endpoint     string `yaml:"endpoint"`
	Bucket       string `yaml:"bucket"`
	Prefix       string `yaml:"prefix"`
	AccessKey    string `yaml:"access_key"`
	SecretKey    string `yaml:"secret_key"`
	Region       string `yaml:"region"`
	UseTLS       bool   `yaml:"use_tls"`
	CreateBucket bool   `yaml:"create_bucket"`
}

// Replicate configures edge-to-cloud replication (package replicate).
type Replicate struct {
	Enabled bool `yaml:"enabled"`
	// Site names this plant on the remote; it must never change.
	Site              string            `yaml:"site"`
	Remote            ReplicateRemote   `yaml:"remote"`
	BacklogAlertRatio float64           `yaml:"backlog_alert_ratio"`
	Flows             []ReplicateFlow   `yaml:"flows"`
	Commands          ReplicateCommands `yaml:"commands"`
}

// ReplicateRemote is the remote Kafka cluster, reached by outbound
// connections only.
type ReplicateRemote struct {
	Brokers           []string  `yaml:"brokers"`
	ClientID          string    `yaml:"client_id"`
	TLS               KafkaTLS  `yaml:"tls,omitempty"`
	SASL              KafkaSASL `yaml:"sasl,omitempty"`
	Compression       string    `yaml:"compression"`
	Bandwidth         ByteSize  `yaml:"bandwidth"`
	CreateTopics      bool      `yaml:"create_topics"`
	ReplicationFactor int16     `yaml:"replication_factor"`
}

// ReplicateFlow is one replication flow.
type ReplicateFlow struct {
	Name          string   `yaml:"name"`
	Topics        []string `yaml:"topics"`
	Include       []string `yaml:"include"`
	Deny          []string `yaml:"deny"`
	RemoteTopic   string   `yaml:"remote_topic"`
	StartAtLatest bool     `yaml:"start_at_latest"`
}

// ReplicateCommands configures cloud-to-edge commands.
type ReplicateCommands struct {
	Enabled      bool     `yaml:"enabled"`
	Topic        string   `yaml:"topic"`
	ResultsTopic string   `yaml:"results_topic"`
	Paths        []string `yaml:"paths"`
}

// Commands configures writes to devices (Sparkplug NCMD/DCMD), which are
// off unless a pattern allows them.
type Commands struct {
	// Allow are namespace patterns (+, #) commands may write to.
	Allow []string `yaml:"allow"`
	// MaxAge refuses requests older than this when they are handled.
	MaxAge Duration `yaml:"max_age"`
}

// Log configures the event log.
type Log struct {
	// Backend is "embedded" (segment files under data_dir/log) or "kafka"
	// (an Apache Kafka cluster, configured under Kafka).
	Backend string `yaml:"backend"`
	// Fsync is "group" (appends that arrive together share one fsync, see
	// log/embedded) or "always" (every append is written and fsynced on its
	// own). With group, FsyncInterval bounds how long a group keeps taking
	// new appends before its fsync, FsyncBytes how much it holds unsynced,
	// and FsyncMinInterval spaces a partition's fsyncs out (0: none).
	Fsync            string   `yaml:"fsync"`
	FsyncInterval    Duration `yaml:"fsync_interval"`
	FsyncMinInterval Duration `yaml:"fsync_min_interval"`
	FsyncBytes       ByteSize `yaml:"fsync_bytes"`
	// DirectIO writes large appends (1 MiB or more queued) with O_DIRECT, past
	// the page cache, where the filesystem supports it.
	DirectIO bool `yaml:"direct_io"`
	// SegmentBytes and SegmentAge roll the active segment.
	SegmentBytes ByteSize `yaml:"segment_bytes"`
	SegmentAge   Duration `yaml:"segment_age"`
	// Defaults for topics without an entry in Topics.
	Partitions     int32    `yaml:"partitions"`
	RetentionAge   Duration `yaml:"retention_age"`
	RetentionBytes ByteSize `yaml:"retention_bytes"`
	// Topics overrides partitions and retention per topic name.
	Topics map[string]Topic `yaml:"topics"`
	// Kafka is the cluster of log.backend kafka.
	Kafka Kafka `yaml:"kafka"`
}

// Kafka configures the connection to a Kafka cluster (log.backend: kafka).
type Kafka struct {
	// Brokers are seed brokers, host:port.
	Brokers  []string `yaml:"brokers"`
	ClientID string   `yaml:"client_id"`
	// ReplicationFactor of topics Millstream creates; 0 means the
	// cluster's default.
	ReplicationFactor int16     `yaml:"replication_factor"`
	TLS               KafkaTLS  `yaml:"tls,omitempty"`
	SASL              KafkaSASL `yaml:"sasl,omitempty"`
	// GroupSessionTimeout is how long the cluster waits for a node that
	// stopped heartbeating before it moves that node's partitions to the
	// others (consumer groups of scaled-out components).
	GroupSessionTimeout Duration `yaml:"group_session_timeout"`
}

// KafkaTLS configures TLS to the Kafka brokers.
type KafkaTLS struct {
	Enabled            bool   `yaml:"enabled"`
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// KafkaSASL configures SASL authentication to the Kafka brokers.
type KafkaSASL struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty means none.
	Mechanism string `yaml:"mechanism"`
	Username  string `yaml:"username"`
	Password  string `yaml:"password"`
}

// Topic overrides the log defaults for one topic. Zero fields inherit.
type Topic struct {
	Partitions     int32    `yaml:"partitions"`
	RetentionAge   Duration `yaml:"retention_age"`
	RetentionBytes ByteSize `yaml:"retention_bytes"`
}

// MQTT configures the broker.
type MQTT struct {
	Listeners []Listener `yaml:"listeners"`
	// AllowAnonymous lets clients connect without credentials. Unset means:
	// allowed only when every listener is bound to a loopback address.
	AllowAnonymous *bool  `yaml:"allow_anonymous"`
	Users          []User `yaml:"users"`
	ACL            []ACL  `yaml:"acl"`
	Limits         Limits `yaml:"limits"`
	// IngressTopic is the log topic every PUBLISH is appended to.
	IngressTopic string `yaml:"ingress_topic"`
}

// Listener is one MQTT listener.
type Listener struct {
	Name string `yaml:"name"`
	// Type is "tcp" or "websocket".
	Type    string `yaml:"type"`
	Address string `yaml:"address"`
	// TLS is left out of Dump's output when unset (omitempty), as most
	// listeners have none.
	TLS TLS `yaml:"tls,omitempty"`
}

// TLS enables TLS on a listener when CertFile is set.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile enables client certificates, verified against this CA.
	ClientCAFile string `yaml:"client_ca_file"`
	// RequireClientCert rejects clients without a valid certificate; the
	// certificate's common name then is the username for ACLs.
	RequireClientCert bool `yaml:"require_client_cert"`
}

// User is one MQTT user. PasswordHash is a bcrypt hash ("millstream passwd"
// prints one).
type User struct {
	Username     string `yaml:"username"`
	PasswordHash string `yaml:"password_hash"`
	// ScramSHA256 and ScramSHA512 are SCRAM credentials for Kafka clients
	// of the Kafka endpoint ("millstream passwd --scram" prints them).
	ScramSHA256 string `yaml:"scram_sha256,omitempty"`
	ScramSHA512 string `yaml:"scram_sha512,omitempty"`
}

// ACL is one access rule. Rules are evaluated in order; the first rule whose
// user and filter match decides. With no matching rule: allow when no ACL is
// configured, deny otherwise.
type ACL struct {
	// User is a username, or "*" for everyone (anonymous included).
	User string `yaml:"user"`
	// Action is "publish", "subscribe" or "all".
	Action string `yaml:"action"`
	// Allow and Deny are MQTT topic filters (+ and # wildcards). Deny wins
	// over Allow within one rule.
	Allow []string `yaml:"allow"`
	Deny  []string `yaml:"deny"`
}

// Limits bound what clients may do.
type Limits struct {
	MaxPacketSize  ByteSize `yaml:"max_packet_size"`
	MaxConnections int64    `yaml:"max_connections"`
	// MaxInflight is the MQTT receive maximum: QoS 1/2 messages a client may
	// have unacknowledged, in each direction.
	MaxInflight uint16 `yaml:"max_inflight"`
	// MaxSessionExpiry caps the session expiry interval clients may ask for.
	MaxSessionExpiry Duration `yaml:"max_session_expiry"`
	// MaxQueuedMessages bounds the messages queued for one client.
	MaxQueuedMessages int32 `yaml:"max_queued_messages"`
}

// HTTP configures the HTTP API, UI and /metrics.
type HTTP struct {
	Address string `yaml:"address"`
}

// Logging configures Millstream's own logs.
type Logging struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is text or json.
	Format string `yaml:"format"`
}

// Default returns the configuration used when no file is given.
func Default() Config {
	return Config{
		DataDir: "./data",
		Log: Log{
			Backend:        "embedded",
			Kafka:          Kafka{ClientID: "millstream", GroupSessionTimeout: Duration(45 * time.Second)},
			Fsync:          "group",
			FsyncInterval:  Duration(time.Millisecond),
			FsyncBytes:     ByteSize(4 << 20),
			DirectIO:       true,
			SegmentBytes:   ByteSize(128 << 20),
			SegmentAge:     Duration(24 * time.Hour),
			Partitions:     1,
			RetentionAge:   Duration(7 * 24 * time.Hour),
			RetentionBytes: -1,
		},
		MQTT: MQTT{
			Listeners: []Listener{
				{Name: "tcp", Type: "tcp", Address: "127.0.0.1:1883"},
				{Name: "ws", Type: "websocket", Address: "127.0.0.1:8083"},
			},
			IngressTopic: "mqtt.ingress",
			Limits: Limits{
				MaxPacketSize:     ByteSize(1 << 20),
				MaxConnections:    10000,
				MaxInflight:       1024,
				MaxSessionExpiry:  Duration(7 * 24 * time.Hour),
				MaxQueuedMessages: 8192,
			},
		},
		HTTP:          HTTP{Address: "127.0.0.1:8080"},
		Logging:       Logging{Level: "info", Format: "text"},
		Sparkplug:     Sparkplug{HostID: "millstream", CheckpointInterval: Duration(time.Second)},
		UNS:           UNS{TreeWindow: Duration(24 * time.Hour), Format: "json", BatchWait: Duration(5 * time.Millisecond)},
		Commands:      Commands{MaxAge: Duration(time.Minute)},
		KafkaEndpoint: KafkaEndpoint{Address: "127.0.0.1:9092"},
		Pipeline:      Pipeline{RollupGrace: Duration(10 * time.Second)},
		Historian: Historian{
			Enabled:           true,
			Retention:         -1,
			RollupRetention1m: -1,
			RollupRetention1h: -1,
			OutOfOrderWindow:  Duration(time.Minute),
			FlushInterval:     Duration(10 * time.Second),
			Partition:         Duration(2 * time.Hour),
			Tier:              HistorianTier{Interval: Duration(time.Minute)},
		},
		Replicate: Replicate{
			Remote:            ReplicateRemote{Compression: "zstd", CreateTopics: true},
			BacklogAlertRatio: 0.8,
			Commands:          ReplicateCommands{Topic: "commands", ResultsTopic: "commands.results"},
		},
	}
}

// Duration is a time.Duration written as "250ms", "7d" or "1h30m" in YAML.
type Duration time.Duration

// ByteSize is a size in bytes written as 1048576, "512KiB", "128MiB", "1GB".
// -1 means unlimited where the option says so.
type ByteSize int64

// SetDataDir sets data_dir (the --data-dir flag).
func (c *Config) SetDataDir(dir string) {
	c.DataDir = dir
}

// SetMQTTAddr sets the address of the first tcp listener (the --mqtt-addr
// flag). It fails when addr is not host:port or when no tcp listener is
// configured: a flag that silently did nothing would leave the broker on an
// address the operator did not ask for.
func (c *Config) SetMQTTAddr(addr string) error {
	if msg := addrProblem(addr, "127.0.0.1:1883"); msg != "" {
		return errors.New(msg)
	}
	for i, l := range c.MQTT.Listeners {
		if l.Type == "tcp" {
			// Copy the list first: Config values share their slices, and
			// the caller's copies must not change behind its back.
			c.MQTT.Listeners = slices.Clone(c.MQTT.Listeners)
			c.MQTT.Listeners[i].Address = addr
			return nil
		}
	}
	return errors.New("no listener of type tcp in mqtt.listeners to set the address of; add one to the configuration file")
}

// SetKafkaAddr enables the Kafka endpoint on addr (the --kafka-addr flag).
func (c *Config) SetKafkaAddr(addr string) {
	c.KafkaEndpoint.Enabled, c.KafkaEndpoint.Address = true, addr
}

// SetHTTPAddr sets http.address (the --http-addr flag).
func (c *Config) SetHTTPAddr(addr string) {
	c.HTTP.Address = addr
}
