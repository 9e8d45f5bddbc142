package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

func TestValidateDefault(t *testing.T) {
	if err := Validate(Default()); err != nil {
		t.Fatalf("Validate(Default()) = %v", err)
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	cert := filepath.Join(dir, "server.crt")
	key := filepath.Join(dir, "server.key")
	ca := filepath.Join(dir, "ca.crt")
	for _, f := range []string{cert, key, ca} {
		if err := os.WriteFile(f, []byte("PEM"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	missing := filepath.Join(dir, "missing.pem")
	hash, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	good := string(hash)

	tests := []struct {
		name   string
		change func(*Config)
		want   []string // one per error, in order; nil means valid
	}{
		{"data_dir empty", func(c *Config) { c.DataDir = " " }, []string{`data_dir: is empty; give the directory for the log and derived state, e.g. ./data`}},
		{"backend", func(c *Config) { c.Log.Backend = "cassandra" }, []string{`log.backend: "cassandra" is not allowed; use embedded or kafka`}},
		{"kafka without brokers", func(c *Config) { c.Log.Backend = "kafka" }, []string{`log.kafka.brokers: is empty`}},
		{"kafka", func(c *Config) {
			c.Log.Backend = "kafka"
			c.Log.Kafka.Brokers = []string{"k1:9092", "k2"}
			c.Log.Kafka.SASL.Mechanism = "scram"
			c.Log.Kafka.TLS.CAFile = missing
		}, []string{
			`log.kafka.brokers[1]: "k2" is not host:port`,
			`log.kafka.sasl.mechanism: "scram" is not allowed; use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512`,
			`log.kafka.sasl.username: is empty`,
			`log.kafka.tls.enabled: is false but TLS files are set`,
			`log.kafka.tls.ca_file: cannot read the PEM file`,
		}},
		{"kafka endpoint port taken", func(c *Config) { c.SetKafkaAddr("127.0.0.1:8080") }, []string{`kafka_endpoint.address: "127.0.0.1:8080" and http.address ("127.0.0.1:8080") both listen on port 8080`}},
		{"kafka endpoint over kafka", func(c *Config) {
			c.SetKafkaAddr("127.0.0.1:9092")
			c.Log.Backend = "kafka"
			c.Log.Kafka.Brokers = []string{"k1:9092"}
		}, []string{`kafka_endpoint.enabled: the Kafka endpoint serves the embedded log`}},
		{"replicate", func(c *Config) {
			c.Replicate.Enabled = true
			c.Replicate.Remote.Brokers = []string{"cloud"}
			c.Replicate.Remote.Compression = "brotli"
			c.Replicate.Flows = []ReplicateFlow{{Name: "a", Topics: []string{"uns.points"}, Deny: []string{"a/#/b"}}, {Name: "a"}}
		}, []string{
			`replicate.site: is empty`,
			`replicate.remote.brokers[0]: "cloud" is not host:port`,
			`replicate.remote.compression: "brotli" is not allowed; use zstd, lz4, snappy, gzip or none`,
			`replicate.flows[0].deny[0]: pattern "a/#/b": # must be the last segment`,
			`replicate.flows[1].name: "a" is also replicate.flows[0]`,
			`replicate.flows[1].topics: is empty`,
		}},
		{"replicate good", func(c *Config) {
			c.Replicate.Enabled = true
			c.Replicate.Site = "plant1"
			c.Replicate.Remote.Brokers = []string{"cloud:9093"}
			c.Replicate.Flows = []ReplicateFlow{{Name: "points", Topics: []string{"uns.points"}, Include: []string{"acme/#"}}}
		}, nil},
		{"deadband", func(c *Config) {
			c.Historian.Deadband = []HistorianDeadband{{Pattern: "a/#/b", MaxDeviation: 1}, {Pattern: "a/#", MaxDeviation: 0}}
		}, []string{
			`historian.deadband[0].pattern: pattern "a/#/b": # must be the last segment`,
			`historian.deadband[1].max_deviation: 0 is out of range`,
		}},
		{"kafka good", func(c *Config) {
			c.Log.Backend = "kafka"
			c.Log.Kafka.Brokers = []string{"k1:9092"}
			c.Log.Kafka.SASL = KafkaSASL{Mechanism: "SCRAM-SHA-512", Username: "u", Password: "p"}
			c.Log.Kafka.TLS = KafkaTLS{Enabled: true, CAFile: ca}
		}, nil},
		{"fsync", func(c *Config) { c.Log.Fsync = "" }, []string{`log.fsync: is empty; use group or always`}},
		{"fsync_interval zero", func(c *Config) { c.Log.FsyncInterval = 0 }, []string{`log.fsync_interval: 0 is out of range; use a duration above 0 and at most 10s, e.g. 1ms`}},
		{"fsync_interval long", func(c *Config) { c.Log.FsyncInterval = Duration(11 * time.Second) }, []string{`log.fsync_interval: 11s is out of range`}},
		{"fsync_interval 10s", func(c *Config) { c.Log.FsyncInterval = Duration(10 * time.Second) }, nil},
		{"fsync_min_interval negative", func(c *Config) { c.Log.FsyncMinInterval = Duration(-time.Millisecond) }, []string{`log.fsync_min_interval: -1ms is out of range; use 0 (no spacing) or a duration of at most 10s, e.g. 10ms`}},
		{"fsync_min_interval long", func(c *Config) { c.Log.FsyncMinInterval = Duration(11 * time.Second) }, []string{`log.fsync_min_interval: 11s is out of range`}},
		{"fsync_min_interval 10ms", func(c *Config) { c.Log.FsyncMinInterval = Duration(10 * time.Millisecond) }, nil},
		{"fsync_bytes", func(c *Config) { c.Log.FsyncBytes = -1 }, []string{`log.fsync_bytes: -1 is out of range; use a size above 0, e.g. 4MiB`}},
		{"segment_bytes small", func(c *Config) { c.Log.SegmentBytes = 4095 }, []string{`log.segment_bytes: 4095B is out of range; use 4KiB to 1GiB, e.g. 128MiB`}},
		{"segment_bytes large", func(c *Config) { c.Log.SegmentBytes = 1<<30 + 1 }, []string{`log.segment_bytes: 1073741825B is out of range`}},
		{"segment_bytes bounds", func(c *Config) { c.Log.SegmentBytes = 4 << 10; c.Log.Topics = nil }, nil},
		{"segment_age", func(c *Config) { c.Log.SegmentAge = -1 }, []string{`log.segment_age: -1 is out of range; use a duration above 0, e.g. 1d`}},
		{"partitions", func(c *Config) { c.Log.Partitions = 1025 }, []string{`log.partitions: 1025 is out of range; use 1 to 1024`}},
		{"retention unlimited", func(c *Config) { c.Log.RetentionAge, c.Log.RetentionBytes = -1, -1 }, nil},
		{"retention zero", func(c *Config) { c.Log.RetentionAge, c.Log.RetentionBytes = 0, 0 }, []string{
			`log.retention_age: 0 is out of range; use a duration above 0, e.g. 7d, or -1 to keep records forever`,
			`log.retention_bytes: 0 is out of range; use a size above 0, e.g. 10GiB, or -1 for no size limit`,
		}},
		{"retention negative", func(c *Config) { c.Log.RetentionAge = Duration(-time.Hour) }, []string{`log.retention_age: -1h is out of range`}},
		{"topics", func(c *Config) {
			c.Log.Topics = map[string]Topic{
				"ok":         {},
				"bad name":   {},
				"big":        {Partitions: 2000, RetentionAge: -2, RetentionBytes: -3},
				"unlimited":  {RetentionAge: -1, RetentionBytes: -1, Partitions: 1024},
				"mqtt.state": {},
			}
		}, []string{
			`log.topics[bad name]: invalid topic name "bad name": character ' ' not allowed (use a-z A-Z 0-9 . _ -)`,
			`log.topics[big].partitions: 2000 is out of range; use 1 to 1024, or 0 (or leave it out) for log.partitions`,
			`log.topics[big].retention_age: -2ns is out of range`,
			`log.topics[big].retention_bytes: -3 is out of range`,
		}},
		{"state topic fine", func(c *Config) {
			c.Log.Topics = map[string]Topic{"__mqtt.state": {Partitions: 1, RetentionAge: -1, RetentionBytes: -1}}
		}, nil},
		{"state topic inherits", func(c *Config) {
			c.Log.Partitions = 4
			c.Log.Topics = map[string]Topic{"__mqtt.state": {}}
		}, []string{
			`log.topics[__mqtt.state].partitions: the broker keeps sessions and retained messages in __mqtt.state, which needs exactly 1 partition; set partitions: 1 or remove the entry`,
			`log.topics[__mqtt.state].retention_age: __mqtt.state holds the broker's live state, which must not expire; set retention_age: -1 or remove the entry`,
		}},
		{"no listeners", func(c *Config) { c.MQTT.Listeners = nil }, []string{`mqtt.listeners: no listeners; configure at least one`}},
		{"listeners", func(c *Config) {
			c.MQTT.Listeners = []Listener{
				{Name: "", Type: "tcp", Address: "127.0.0.1:1"},
				{Name: "a", Type: "udp", Address: "127.0.0.1"},
				{Name: "a", Type: "websocket", Address: "127.0.0.1:99999"},
				{Name: "b", Type: "tcp", Address: ""},
				{Name: "c", Type: "tcp", Address: "plant\r:1"},
				{Name: "d", Type: "tcp", Address: "[fe80::1%eth0]:1"},
				{Name: "e", Type: "tcp", Address: "broker-1.plant_a.local:1"},
			}
		}, []string{
			`mqtt.listeners[0].name: is empty; give every listener a unique name`,
			`mqtt.listeners[1].type: "udp" is not allowed; use tcp or websocket`,
			`mqtt.listeners[1].address: "127.0.0.1" is not host:port (missing port in address); use e.g. 127.0.0.1:1883, or :1883 for every interface`,
			`mqtt.listeners[2].name: "a" is also the name of mqtt.listeners[1]; names must be unique`,
			`mqtt.listeners[2].address: "127.0.0.1:99999" has port "99999"; use a number from 0 to 65535 (0 picks a free port)`,
			`mqtt.listeners[3].address: is empty; use host:port, e.g. 127.0.0.1:1883 (or :1883 for every interface)`,
			`mqtt.listeners[4].address: "plant\r:1" has host "plant\r", which is neither an IP address nor a host name`,
		}},
		{"address collisions", func(c *Config) {
			c.MQTT.Listeners = []Listener{
				{Name: "a", Type: "tcp", Address: "0.0.0.0:1883"},
				{Name: "b", Type: "tcp", Address: "127.0.0.1:1883"},
				{Name: "c", Type: "tcp", Address: "127.0.0.1:0"},
				{Name: "d", Type: "tcp", Address: "127.0.0.1:0"},
				{Name: "e", Type: "tcp", Address: "10.0.0.1:8080"},
				{Name: "f", Type: "tcp", Address: "10.0.0.2:8080"},
			}
			c.HTTP.Address = ":8080"
		}, []string{
			`mqtt.listeners[1].address: "127.0.0.1:1883" and mqtt.listeners[0].address ("0.0.0.0:1883") both listen on port 1883; give each its own port`,
			`http.address: ":8080" and mqtt.listeners[4].address ("10.0.0.1:8080") both listen on port 8080`,
			`http.address: ":8080" and mqtt.listeners[5].address ("10.0.0.2:8080") both listen on port 8080`,
		}},
		{"tls complete", func(c *Config) {
			c.MQTT.Listeners[0].TLS = TLS{CertFile: cert, KeyFile: key, ClientCAFile: ca, RequireClientCert: true}
		}, nil},
		{"tls halves", func(c *Config) {
			c.MQTT.Listeners[0].TLS = TLS{CertFile: cert}
			c.MQTT.Listeners[1].TLS = TLS{KeyFile: key, RequireClientCert: true}
		}, []string{
			`mqtt.listeners[0].tls.key_file: is empty but tls.cert_file is set; set both to enable TLS`,
			`mqtt.listeners[1].tls.cert_file: is empty but tls.key_file is set; set both to enable TLS, or remove key_file`,
			`mqtt.listeners[1].tls.require_client_cert: needs tls.client_ca_file (the CA that signs the client certificates)`,
		}},
		{"tls files", func(c *Config) {
			c.MQTT.Listeners[0].TLS = TLS{CertFile: missing, KeyFile: dir, ClientCAFile: ca}
			c.MQTT.Listeners[1].TLS = TLS{ClientCAFile: ca}
		}, []string{
			`mqtt.listeners[0].tls.cert_file: cannot read "` + missing + `": no such file or directory (a relative path starts from the working directory)`,
			`mqtt.listeners[0].tls.key_file: "` + dir + `" is a directory; give the PEM file`,
			`mqtt.listeners[1].tls.client_ca_file: needs tls.cert_file and tls.key_file: client certificates are checked only on a TLS listener`,
		}},
		{"users", func(c *Config) {
			c.MQTT.Users = []User{
				{Username: "a", PasswordHash: good},
				{Username: "", PasswordHash: good},
				{Username: "a", PasswordHash: "hunter2"},
				{Username: "b", PasswordHash: ""},
				{Username: "c", PasswordHash: good[:59]},
				{Username: "d", PasswordHash: "$2a$99" + good[6:]},
				{Username: "e", PasswordHash: "$2y$" + good[4:]},
			}
		}, []string{
			`mqtt.users[1].username: is empty; every user needs a username`,
			`mqtt.users[2].username: "a" is also mqtt.users[0]; usernames must be unique`,
			`mqtt.users[2].password_hash: is not a bcrypt hash (one starts with $2a$, $2b$ or $2y$; never put the password itself here); generate one with: millstream passwd`,
			`mqtt.users[3].password_hash: is empty; generate one with: millstream passwd`,
			`mqtt.users[4].password_hash: is 59 characters long, but a bcrypt hash has 60 (cut off when copied?); generate one with: millstream passwd`,
			`mqtt.users[5].password_hash: is not a valid bcrypt hash (crypto/bcrypt: cost 99 is outside allowed inclusive range 4..31); generate one with: millstream passwd`,
		}},
		{"acl", func(c *Config) {
			c.MQTT.ACL = []ACL{
				{User: "*", Allow: []string{"#", "a/+/b", "+", "a/#", "/"}},
				{User: "", Action: "read", Deny: []string{"a/#/b"}},
				{User: "u", Action: "publish"},
				{User: "u", Action: "subscribe", Allow: []string{"", "a+/b", "$share/g/a", "a\x00b"}},
				{User: "u", Action: "all", Deny: []string{"a#"}},
			}
		}, []string{
			`mqtt.acl[1].user: is empty; use a username, or "*" for everyone`,
			`mqtt.acl[1].action: "read" is not allowed; use publish, subscribe or all (empty also means all)`,
			`mqtt.acl[1].deny[0]: "a/#/b" is not a valid MQTT topic filter: # must be the whole last level`,
			`mqtt.acl[2]: the rule has neither allow nor deny filters, so it matches nothing; add at least one`,
			`mqtt.acl[3].allow[0]: is empty; use a topic filter such as plant/# or plant/+/temperature`,
			`mqtt.acl[3].allow[1]: "a+/b" is not a valid MQTT topic filter: + must be a whole level`,
			`mqtt.acl[3].allow[2]: "$share/g/a" is not a valid MQTT topic filter: shared-subscription filters`,
			`mqtt.acl[3].allow[3]: "a\x00b" is not a valid MQTT topic filter: it contains a NUL character`,
			`mqtt.acl[4].deny[0]: "a#" is not a valid MQTT topic filter: # must be the whole last level`,
		}},
		{"anonymous on the network is allowed when explicit", func(c *Config) {
			c.MQTT.AllowAnonymous = boolPtr(true)
			c.MQTT.Listeners[0].Address = "0.0.0.0:1883"
		}, nil},
		{"limits at their edges", func(c *Config) {
			c.MQTT.Limits = Limits{MaxPacketSize: 16, MaxConnections: -1, MaxInflight: 65535, MaxSessionExpiry: -1, MaxQueuedMessages: 65535}
		}, nil},
		{"limits zero means default", func(c *Config) { c.MQTT.Limits = Limits{} }, nil},
		{"limits unlimited", func(c *Config) {
			c.MQTT.Limits = Limits{MaxPacketSize: -1, MaxConnections: -1, MaxSessionExpiry: -1, MaxQueuedMessages: -1}
		}, nil},
		{"limits out of range", func(c *Config) {
			c.MQTT.Limits = Limits{MaxPacketSize: 15, MaxConnections: -2, MaxSessionExpiry: Duration(500 * time.Millisecond), MaxQueuedMessages: 65536}
		}, []string{
			`mqtt.limits.max_packet_size: 15B is out of range; use 16B to 256MiB, 0 for the default (1MiB), or -1 for the protocol maximum`,
			`mqtt.limits.max_connections: -2 is out of range; use a number above 0, 0 for the default (10000), or -1 for unlimited`,
			`mqtt.limits.max_session_expiry: 500ms is below 1s; MQTT counts session expiry in whole seconds`,
			`mqtt.limits.max_queued_messages: 65536 is out of range; use 1 to 65535, 0 for the default (8192), or -1 for the maximum (65535)`,
		}},
		{"limits negative", func(c *Config) {
			c.MQTT.Limits = Limits{MaxPacketSize: 256<<20 + 1, MaxSessionExpiry: -2, MaxQueuedMessages: -2}
		}, []string{
			`mqtt.limits.max_packet_size: 268435457B is out of range`,
			`mqtt.limits.max_session_expiry: -2ns is out of range; use a duration of 1s or more, 0 for the default (7d), or -1 for the protocol maximum`,
			`mqtt.limits.max_queued_messages: -2 is out of range`,
		}},
		{"ingress topic", func(c *Config) { c.MQTT.IngressTopic = "" }, []string{`mqtt.ingress_topic: invalid topic name "": must be 1-249 characters`}},
		{"ingress topic is the state topic", func(c *Config) { c.MQTT.IngressTopic = "__mqtt.state" }, []string{`mqtt.ingress_topic: "__mqtt.state" is the broker's own state topic; choose another name, e.g. mqtt.ingress`}},
		{"http", func(c *Config) { c.HTTP.Address = "localhost" }, []string{`http.address: "localhost" is not host:port (missing port in address); use e.g. 127.0.0.1:8080, or :8080 for every interface`}},
		{"logging", func(c *Config) { c.Logging = Logging{Level: "trace", Format: "xml"} }, []string{
			`logging.level: "trace" is not allowed; use debug, info, warn or error`,
			`logging.format: "xml" is not allowed; use text or json`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.change(&c)
			err := Validate(c)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate accepted the configuration")
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Fatalf("got %d errors, want %d:\n%s", len(lines), len(tt.want), err)
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(lines[i], w) {
					t.Errorf("error %d:\n  %s\nwant it to start with:\n  %s", i, lines[i], w)
				}
			}
		})
	}
}

// Validate points at the line of the file, including for keys that are
// missing from it (the enclosing item's line) and for combinations.
func TestValidateLocations(t *testing.T) {
	yaml := "" +
		"mqtt:\n" + // 1
		"  listeners:\n" + // 2
		"    - name: a\n" + // 3
		"      type: tcp\n" + // 4
		"      address: ':1883'\n" + // 5
		"      tls:\n" + // 6
		"        cert_file: /no/such.crt\n" + // 7
		"    - name: b\n" + // 8
		"      address: ':1883'\n" + // 9
		"  users:\n" + // 10
		"    - username: u\n" + // 11
		"      password_hash: secret\n" + // 12
		"log:\n" + // 13
		"  topics:\n" + // 14
		"    __mqtt.state: {partitions: 2}\n" // 15
	c, err := Parse("f.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	err = Validate(c)
	want := []string{
		"f.yaml:6: mqtt.listeners[0].tls.key_file: is empty but tls.cert_file is set",
		"f.yaml:7: mqtt.listeners[0].tls.cert_file: cannot read \"/no/such.crt\"",
		"f.yaml:8: mqtt.listeners[1].type: is empty; use tcp or websocket",
		"f.yaml:9: mqtt.listeners[1].address: \":1883\" and mqtt.listeners[0].address (\":1883\") both listen on port 1883",
		"f.yaml:12: mqtt.users[0].password_hash: is not a bcrypt hash",
		"f.yaml:15: log.topics[__mqtt.state].partitions: the broker keeps sessions",
		"f.yaml:15: log.topics[__mqtt.state].retention_age: __mqtt.state holds the broker's live state",
	}
	if err == nil {
		t.Fatal("Validate accepted the configuration")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%s", len(lines), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("error %d:\n  %s\nwant it to start with:\n  %s", i, lines[i], w)
		}
	}
	if strings.Contains(err.Error(), "secret") {
		t.Error("an error message quotes the password_hash value")
	}
}
