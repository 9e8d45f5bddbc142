package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// sameConfig compares configurations without their origins.
func sameConfig(a, b Config) bool {
	a.src, b.src = nil, nil
	return reflect.DeepEqual(a, b)
}

func boolPtr(b bool) *bool { return &b }

// The CLI's contract: a file with a bad value on line 2 and an unknown key on
// line 3 is reported with both lines in one go.
func TestParseReportsValueAndUnknownKeyTogether(t *testing.T) {
	_, err := Parse("bad.yaml", []byte("log:\n  fsync: sometimes\n  fsyncc: 1ms\n"))
	if err == nil {
		t.Fatal("Parse accepted a bad file")
	}
	want := "bad.yaml:2: log.fsync: \"sometimes\" is not allowed; use group or always\n" +
		"bad.yaml:3: log.fsyncc: unknown key (did you mean fsync?); allowed keys in log: backend, fsync, fsync_interval, fsync_min_interval, fsync_bytes, direct_io, segment_bytes, segment_age, partitions, retention_age, retention_bytes, topics, kafka"
	if err.Error() != want {
		t.Fatalf("error:\n%s\nwant:\n%s", err, want)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // substrings, each on its own line of the error, in order
	}{
		{
			name: "unknown top-level key with suggestion",
			yaml: "data_dri: /x\n",
			want: []string{"f.yaml:1: data_dri: unknown key (did you mean data_dir?); allowed keys at the top level: data_dir, log, mqtt, http, logging"},
		},
		{
			name: "key in the wrong section",
			yaml: "mqtt:\n  address: 0.0.0.0:1\n",
			want: []string{"f.yaml:2: mqtt.address: unknown key here (it exists as mqtt.listeners[].address, http.address and kafka_endpoint.address; check the indentation); allowed keys in mqtt: listeners, allow_anonymous, users, acl, limits, ingress_topic"},
		},
		{
			name: "unknown key with no close match",
			yaml: "http:\n  frobnicate: 1\n",
			want: []string{"f.yaml:2: http.frobnicate: unknown key; allowed keys in http: address"},
		},
		{
			name: "unknown key in a list item",
			yaml: "mqtt:\n  listeners:\n    - name: a\n      type: tcp\n      adress: :1\n",
			want: []string{
				"f.yaml:3: mqtt.listeners[0].address: is empty", // from Validate: the address was not read
				"f.yaml:5: mqtt.listeners[0].adress: unknown key (did you mean address?); allowed keys in mqtt.listeners[0]: name, type, address, tls",
			},
		},
		{
			name: "unknown key in a topic",
			yaml: "log:\n  topics:\n    a.b:\n      partition: 2\n",
			want: []string{"f.yaml:4: log.topics[a.b].partition: unknown key (did you mean partitions?)"},
		},
		{
			name: "mapping rule and commands",
			yaml: "uns:\n  mappings:\n    - topic: f/{line}/x\n      path: acme/{line}/{cell}\n    - topic: g/#\n      path: a\n      scale: lots\ncommands:\n  allow: [a/#/b]\n",
			want: []string{
				"f.yaml:4: uns.mappings[0].path: {cell} is not captured by the topic pattern",
				"f.yaml:7: uns.mappings[1].scale: \"lots\" is not a finite number",
				"f.yaml:9: commands.allow[0]: pattern \"a/#/b\": # must be the last segment",
			},
		},
		{
			name: "duration without unit",
			yaml: "log:\n  fsync_interval: 30\n",
			want: []string{`f.yaml:2: log.fsync_interval: "30" has no unit; use a unit, e.g. 500ms, 30s, 7d`},
		},
		{
			name: "bad size",
			yaml: "log:\n\n  segment_bytes: 12 parsecs\n",
			want: []string{`f.yaml:3: log.segment_bytes: "12 parsecs": unknown unit "parsecs"`},
		},
		{
			name: "integer out of range",
			yaml: "mqtt:\n  limits:\n    max_inflight: 70000\n",
			want: []string{"f.yaml:3: mqtt.limits.max_inflight: 70000 is out of range; use a whole number from 0 to 65535"},
		},
		{
			name: "negative for unsigned",
			yaml: "mqtt:\n  limits:\n    max_inflight: -1\n",
			want: []string{"f.yaml:3: mqtt.limits.max_inflight: -1 is out of range"},
		},
		{
			name: "not a number",
			yaml: "log:\n  partitions: many\n",
			want: []string{`f.yaml:2: log.partitions: "many" is not a whole number`},
		},
		{
			name: "not a boolean",
			yaml: "mqtt:\n  allow_anonymous: maybe\n",
			want: []string{`f.yaml:2: mqtt.allow_anonymous: "maybe" is not a boolean; use true or false`},
		},
		{
			name: "null for a single value",
			yaml: "log:\n  fsync:\n",
			want: []string{"f.yaml:2: log.fsync: has no value; give one, or remove the key to use the default"},
		},
		{
			name: "list where a value belongs",
			yaml: "http:\n  address: [a, b]\n",
			want: []string{"f.yaml:2: http.address: must be a single value, not a list"},
		},
		{
			name: "value where a section belongs",
			yaml: "log: fast\n",
			want: []string{"f.yaml:1: log: must be a mapping of keys (backend, fsync,"},
		},
		{
			name: "mapping where a list belongs",
			yaml: "mqtt:\n  users:\n    username: a\n",
			want: []string{"f.yaml:3: mqtt.users: must be a list"},
		},
		{
			name: "file is not a mapping",
			yaml: "- a\n- b\n",
			want: []string{"f.yaml:1: the file must be a mapping of sections (data_dir, log, mqtt, http, logging, sparkplug, uns, commands, kafka_endpoint, replicate, historian, pipeline), not a list"},
		},
		{
			name: "duplicate key",
			yaml: "log:\n  fsync: group\n  fsync: always\n",
			want: []string{"f.yaml:3: log.fsync: given twice (first on line 2); keep one"},
		},
		{
			name: "duplicate topic",
			yaml: "log:\n  topics:\n    a: {}\n    a: {}\n",
			want: []string{"f.yaml:4: log.topics[a]: given twice (first on line 3)"},
		},
		{
			name: "YAML syntax",
			yaml: "a: 1\nb: 2\n  c: 3\n",
			want: []string{"f.yaml:3: YAML syntax: mapping values are not allowed in this context (on this line or a later one)"},
		},
		{
			name: "YAML syntax on the first line",
			yaml: "a: b: c\n",
			want: []string{"f.yaml:1: YAML syntax: mapping values are not allowed in this context"},
		},
		{
			name: "tab indentation",
			yaml: "log:\n\tfsync: group\n",
			want: []string{"f.yaml:2: YAML syntax: found character that cannot start any token (on this line or a later one); line 2 is indented with a tab, and YAML allows spaces only"},
		},
		{
			name: "two documents",
			yaml: "log: {}\n---\nhttp: {}\n",
			want: []string{"f.yaml:3: a second YAML document starts here (after ---); put the whole configuration in one document"},
		},
		{
			// The schema is finite, so a recursive alias meets a type
			// mismatch before it can recurse (merge keys can; see below).
			name: "alias of the wrong type",
			yaml: "mqtt:\n  acl: &x\n    - user: a\n      allow: *x\n",
			want: []string{"f.yaml:3: mqtt.acl[0].allow[0]: must be a single value, not a mapping"},
		},
		{
			name: "recursive merge",
			yaml: "log: &x\n  <<: *x\n",
			want: []string{"f.yaml:2: log: alias *x is used inside the value it names"},
		},
		{
			name: "merge of a scalar",
			yaml: "log:\n  <<: 5\n",
			want: []string{"f.yaml:2: log: << (merge) takes a mapping or a list of mappings, not a single value"},
		},
		{
			name: "non-scalar key",
			yaml: "log:\n  [a]: 1\n",
			want: []string{"f.yaml:2: log: a key must be a plain name, not a list"},
		},
		{
			name: "many errors joined, in file order, with Validate's",
			yaml: "" +
				"fsync: always\n" + // 1 unknown here
				"log:\n" +
				"  partitions: 0\n" + // 3 Validate
				"  retention_age: 30\n" + // 4 no unit
				"mqtt:\n" +
				"  listeners:\n" +
				"    - name: a\n" +
				"      type: tcpp\n" + // 8 Validate
				"      address: nowhere\n" + // 9 Validate
				"  limitz: {}\n", // 10 unknown
			want: []string{
				"f.yaml:1: fsync: unknown key here (it exists as log.fsync; check the indentation)",
				"f.yaml:3: log.partitions: 0 is out of range; use 1 to 1024",
				`f.yaml:4: log.retention_age: "30" has no unit`,
				`f.yaml:8: mqtt.listeners[0].type: "tcpp" is not allowed; use tcp or websocket`,
				`f.yaml:9: mqtt.listeners[0].address: "nowhere" is not host:port (missing port in address)`,
				"f.yaml:10: mqtt.limitz: unknown key (did you mean limits?)",
			},
		},
		{
			name: "no Validate noise where the value could not be read",
			yaml: "log:\n  fsync_interval: 30\n  segment_bytes: 1\n  segment_bytes: 2\n",
			want: []string{
				`f.yaml:2: log.fsync_interval: "30" has no unit`,
				// Not also "1B is out of range": the key is in error already.
				"f.yaml:4: log.segment_bytes: given twice",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatalf("Parse accepted:\n%s", tt.yaml)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Fatalf("got %d errors, want %d:\n%s", len(lines), len(tt.want), err)
			}
			for i, w := range tt.want {
				if !strings.Contains(lines[i], w) {
					t.Errorf("error %d:\n  %s\nwant it to contain:\n  %s", i, lines[i], w)
				}
			}
		})
	}
}

func TestParseValues(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want func(*Config) // applied to Default()
	}{
		{"empty file", "", func(*Config) {}},
		{"comments only", "# nothing yet\n", func(*Config) {}},
		{"null document", "~\n", func(*Config) {}},
		{"null section keeps defaults", "log:\nmqtt:\n  # listeners: commented out\n", func(*Config) {}},
		{
			name: "scalars of every type",
			yaml: "data_dir: /srv/ms\nlog:\n  fsync: always\n  fsync_interval: 5ms\n  segment_bytes: 64 MiB\n  partitions: 3\n  retention_age: -1\n  retention_bytes: 10GB\n" +
				"mqtt:\n  allow_anonymous: false\n  limits:\n    max_connections: -1\n    max_inflight: 10\n    max_session_expiry: 1h\n" +
				"http:\n  address: ':9090'\nlogging:\n  level: debug\n  format: json\n",
			want: func(c *Config) {
				c.DataDir = "/srv/ms"
				c.Log.Fsync = "always"
				c.Log.FsyncInterval = Duration(5 * time.Millisecond)
				c.Log.SegmentBytes = 64 << 20
				c.Log.Partitions = 3
				c.Log.RetentionAge = -1
				c.Log.RetentionBytes = 10e9
				c.MQTT.AllowAnonymous = boolPtr(false)
				c.MQTT.Limits.MaxConnections = -1
				c.MQTT.Limits.MaxInflight = 10
				c.MQTT.Limits.MaxSessionExpiry = Duration(time.Hour)
				c.HTTP.Address = ":9090"
				c.Logging.Level, c.Logging.Format = "debug", "json"
			},
		},
		{
			name: "a list replaces the default list",
			yaml: "mqtt:\n  listeners:\n    - name: only\n      type: websocket\n      address: 0.0.0.0:80\n",
			want: func(c *Config) {
				c.MQTT.Listeners = []Listener{{Name: "only", Type: "websocket", Address: "0.0.0.0:80"}}
			},
		},
		{
			name: "an empty list is empty",
			yaml: "mqtt:\n  listeners: []\n",
			want: func(c *Config) { c.MQTT.Listeners = nil },
		},
		{
			name: "explicit null unsets allow_anonymous",
			yaml: "mqtt:\n  allow_anonymous: ~\n",
			want: func(c *Config) {},
		},
		{
			name: "topics, users, acl",
			yaml: "log:\n  topics:\n    mqtt.ingress: {partitions: 4}\n    uns.points:\n" +
				"mqtt:\n  users:\n    - {username: u, password_hash: h}\n  acl:\n    - user: '*'\n      allow: ['#']\n      deny: [a/+/b]\n",
			want: func(c *Config) {
				c.Log.Topics = map[string]Topic{"mqtt.ingress": {Partitions: 4}, "uns.points": {}}
				c.MQTT.Users = []User{{Username: "u", PasswordHash: "h"}}
				c.MQTT.ACL = []ACL{{User: "*", Allow: []string{"#"}, Deny: []string{"a/+/b"}}}
			},
		},
		{
			name: "anchors, aliases and merge keys",
			yaml: "" +
				"mqtt:\n" +
				"  listeners:\n" +
				"    - &base {name: a, type: tcp, address: ':1', tls: &tls {cert_file: c, key_file: k}}\n" +
				"    - <<: *base\n" +
				"      name: b\n" +
				"      address: ':2'\n" +
				"    - <<: [{name: c, type: websocket}, *base]\n" +
				"      address: ':3'\n" +
				"      tls: {<<: *tls, key_file: k2}\n",
			want: func(c *Config) {
				tls := TLS{CertFile: "c", KeyFile: "k"}
				c.MQTT.Listeners = []Listener{
					{Name: "a", Type: "tcp", Address: ":1", TLS: tls},
					{Name: "b", Type: "tcp", Address: ":2", TLS: tls},
					{Name: "c", Type: "websocket", Address: ":3", TLS: TLS{CertFile: "c", KeyFile: "k2"}},
				}
			},
		},
		{
			name: "quoted numbers and text that looks like other types",
			yaml: "data_dir: 123\nlog:\n  partitions: '2'\n  fsync_bytes: \"1024\"\nlogging:\n  level: true\n",
			want: func(c *Config) {
				c.DataDir = "123"
				c.Log.Partitions = 2
				c.Log.FsyncBytes = 1024
				c.Logging.Level = "true"
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse("f.yaml", []byte(tt.yaml))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			want := Default()
			tt.want(&want)
			if !sameConfig(got, want) {
				t.Fatalf("Parse:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

// With no file and no environment, Load is exactly Default (no origins).
func TestLoadDefaults(t *testing.T) {
	got, err := load("", func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, Default()) {
		t.Fatalf("load(\"\") = %+v, want Default()", got)
	}
	if got, err := Parse("x", nil); err != nil || !reflect.DeepEqual(got, Default()) {
		t.Fatalf("Parse(empty) = %+v, %v; want Default()", got, err)
	}
}

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "millstream.yaml")
	if err := os.WriteFile(p, []byte("log:\n  fsync: always\n  partitions: 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Log.Fsync != "always" {
		t.Fatalf("log.fsync = %q, want always", c.Log.Fsync)
	}
	// Load leaves semantic checks to Validate, which knows the file and line.
	err = Validate(c)
	if err == nil || err.Error() != p+":3: log.partitions: 0 is out of range; use 1 to 1024" {
		t.Fatalf("Validate = %v", err)
	}

	_, err = Load(filepath.Join(dir, "missing.yaml"))
	if err == nil || !strings.Contains(err.Error(), "missing.yaml") || !os.IsNotExist(errorsUnwrapAll(err)) {
		t.Fatalf("Load(missing) = %v", err)
	}
}

func errorsUnwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok || u.Unwrap() == nil {
			return err
		}
		err = u.Unwrap()
	}
}

func TestEnvOverrides(t *testing.T) {
	file := "log:\n  fsync: always\nhttp:\n  address: 127.0.0.1:1\n"
	tests := []struct {
		name    string
		env     map[string]string
		want    func(*Config)
		wantErr []string
	}{
		{
			name: "file values stay without environment",
			want: func(c *Config) {},
		},
		{
			name: "environment beats file and defaults",
			env: map[string]string{
				"MILLSTREAM_DATA_DIR":                  "/srv/env",
				"MILLSTREAM_LOG_FSYNC":                 "group",
				"MILLSTREAM_LOG_FSYNC_INTERVAL":        "3ms",
				"MILLSTREAM_LOG_RETENTION_BYTES":       "1GiB",
				"MILLSTREAM_HTTP_ADDRESS":              "0.0.0.0:8081",
				"MILLSTREAM_LOGGING_LEVEL":             "warn",
				"MILLSTREAM_MQTT_LIMITS_MAX_INFLIGHT":  "77",
				"MILLSTREAM_MQTT_ALLOW_ANONYMOUS":      "true",
				"MILLSTREAM_MQTT_INGRESS_TOPIC":        "raw",
				"MILLSTREAM_LOG_CRASH_CHILD_DIR":       "not ours: ignored",
				"MILLSTREAM_MQTT_LIMITS_MAX_QUEUED_MS": "typo: ignored",
			},
			want: func(c *Config) {
				c.DataDir = "/srv/env"
				c.Log.Fsync = "group"
				c.Log.FsyncInterval = Duration(3 * time.Millisecond)
				c.Log.RetentionBytes = 1 << 30
				c.HTTP.Address = "0.0.0.0:8081"
				c.Logging.Level = "warn"
				c.MQTT.Limits.MaxInflight = 77
				c.MQTT.AllowAnonymous = boolPtr(true)
				c.MQTT.IngressTopic = "raw"
			},
		},
		{
			name: "empty variables count as unset",
			env:  map[string]string{"MILLSTREAM_LOG_FSYNC": "", "MILLSTREAM_DATA_DIR": "  "},
			want: func(c *Config) {},
		},
		{
			name: "bad values name the variable",
			env: map[string]string{
				"MILLSTREAM_LOG_FSYNC_INTERVAL":       "30",
				"MILLSTREAM_MQTT_LIMITS_MAX_INFLIGHT": "lots",
				"MILLSTREAM_MQTT_ALLOW_ANONYMOUS":     "perhaps",
				"MILLSTREAM_LOGGING_FORMAT":           "xml",
			},
			wantErr: []string{
				`environment MILLSTREAM_LOG_FSYNC_INTERVAL: log.fsync_interval: "30" has no unit; use a unit, e.g. 500ms, 30s, 7d`,
				`environment MILLSTREAM_MQTT_ALLOW_ANONYMOUS: mqtt.allow_anonymous: "perhaps" is not a boolean; use true or false`,
				`environment MILLSTREAM_MQTT_LIMITS_MAX_INFLIGHT: mqtt.limits.max_inflight: "lots" is not a whole number`,
				// Reported by the Validate pass that errors trigger.
				`environment MILLSTREAM_LOGGING_FORMAT: logging.format: "xml" is not allowed; use text or json`,
			},
		},
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "f.yaml")
	if err := os.WriteFile(p, []byte(file), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lookup := func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }
			got, err := load(p, lookup)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatal("load accepted bad environment values")
				}
				lines := strings.Split(err.Error(), "\n")
				ok := len(lines) == len(tt.wantErr)
				for i := 0; ok && i < len(lines); i++ {
					ok = strings.HasPrefix(lines[i], tt.wantErr[i])
				}
				if !ok {
					t.Fatalf("errors:\n%s\nwant lines starting with:\n%s", err, strings.Join(tt.wantErr, "\n"))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := Default()
			want.Log.Fsync = "always"
			want.HTTP.Address = "127.0.0.1:1"
			tt.want(&want)
			if !sameConfig(got, want) {
				t.Fatalf("load:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

// Load reads the real environment.
func TestLoadEnvironment(t *testing.T) {
	t.Setenv("MILLSTREAM_LOG_PARTITIONS", "0")
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if c.Log.Partitions != 0 {
		t.Fatalf("log.partitions = %d, want 0 from the environment", c.Log.Partitions)
	}
	err = Validate(c)
	if want := "environment MILLSTREAM_LOG_PARTITIONS: log.partitions: 0 is out of range; use 1 to 1024"; err == nil || err.Error() != want {
		t.Fatalf("Validate = %v, want %s", err, want)
	}
}

func TestEnvVarNames(t *testing.T) {
	seen := map[string]bool{}
	for _, e := range EnvVars() {
		if seen[e.Name] {
			t.Errorf("two keys share the environment variable %s", e.Name)
		}
		seen[e.Name] = true
	}
	for _, name := range []string{"MILLSTREAM_DATA_DIR", "MILLSTREAM_LOG_FSYNC", "MILLSTREAM_HTTP_ADDRESS", "MILLSTREAM_LOGGING_LEVEL", "MILLSTREAM_MQTT_LIMITS_MAX_INFLIGHT"} {
		if !seen[name] {
			t.Errorf("no environment variable %s", name)
		}
	}
	for name := range seen {
		if strings.HasPrefix(name, "MILLSTREAM_MQTT_LISTENERS") || strings.HasPrefix(name, "MILLSTREAM_LOG_TOPICS") || strings.HasPrefix(name, "MILLSTREAM_MQTT_USERS") ||
			strings.HasPrefix(name, "MILLSTREAM_MQTT_ACL") || strings.HasPrefix(name, "MILLSTREAM_REPLICATE_FLOWS") || strings.HasPrefix(name, "MILLSTREAM_UNS_MAPPINGS") {
			t.Errorf("%s: lists and maps have no environment variables", name)
		}
	}
}

func TestSetters(t *testing.T) {
	c := Default()
	orig := Default()
	shared := c // shares the listeners slice with c
	c.SetDataDir("/d")
	c.SetHTTPAddr("0.0.0.0:1")
	if err := c.SetMQTTAddr("0.0.0.0:2"); err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/d" || c.HTTP.Address != "0.0.0.0:1" || c.MQTT.Listeners[0].Address != "0.0.0.0:2" || c.MQTT.Listeners[1].Address != orig.MQTT.Listeners[1].Address {
		t.Fatalf("setters: %+v", c)
	}
	if shared.MQTT.Listeners[0].Address != orig.MQTT.Listeners[0].Address {
		t.Fatal("SetMQTTAddr changed a copy of the configuration")
	}

	// The first listener of type tcp, wherever it is.
	c.MQTT.Listeners = []Listener{{Name: "ws", Type: "websocket", Address: ":1"}, {Name: "t1", Type: "tcp", Address: ":2"}, {Name: "t2", Type: "tcp", Address: ":3"}}
	if err := c.SetMQTTAddr(":9"); err != nil || c.MQTT.Listeners[1].Address != ":9" || c.MQTT.Listeners[2].Address != ":3" {
		t.Fatalf("SetMQTTAddr: %v, %+v", err, c.MQTT.Listeners)
	}

	for _, bad := range []struct{ addr, want string }{
		{"1883", `"1883" is not host:port (missing port in address)`},
		{"host:http", `has port "http"; use a number from 0 to 65535`},
		{"", "is empty; use host:port"},
	} {
		if err := c.SetMQTTAddr(bad.addr); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("SetMQTTAddr(%q) = %v, want error containing %q", bad.addr, err, bad.want)
		}
	}
	c.MQTT.Listeners = []Listener{{Name: "ws", Type: "websocket", Address: ":1"}}
	if err := c.SetMQTTAddr(":9"); err == nil || !strings.Contains(err.Error(), "no listener of type tcp") {
		t.Fatalf("SetMQTTAddr without a tcp listener = %v", err)
	}
}

// A value replaced after loading (by a flag) is not blamed on the file.
func TestValidateOriginFollowsTheValue(t *testing.T) {
	c, err := Parse("f.yaml", []byte("http:\n  address: nowhere\nlogging:\n  format: xml\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = Validate(c)
	before := `f.yaml:2: http.address: "nowhere" is not host:port` // before the flag
	if err == nil || !strings.HasPrefix(err.Error(), before) {
		t.Fatalf("Validate = %v, want it to start with %s", err, before)
	}
	c.SetHTTPAddr("also-nowhere")
	c.Logging.Format = "yaml"
	err = Validate(c)
	want := `http.address: "also-nowhere" is not host:port (missing port in address); use e.g. 127.0.0.1:8080, or :8080 for every interface` + "\n" +
		`logging.format: "yaml" is not allowed; use text or json`
	if err == nil || err.Error() != want {
		t.Fatalf("Validate:\n%v\nwant:\n%s", err, want)
	}
}

// FuzzParse: no input makes Parse panic, every error names the file, and a
// configuration that parses and validates survives Dump and Parse unchanged.
func FuzzParse(f *testing.F) {
	seeds := []string{
		"",
		"log:\n  fsync: sometimes\n  fsyncc: 1ms\n",
		"mqtt:\n  listeners:\n    - &a {name: a, type: tcp, address: ':1'}\n    - <<: *a\n      name: b\n      address: ':2'\n",
		"a: &a [*a]\n",
		"log: &x\n  <<: *x\n",
		"log:\n  topics:\n    x: {partitions: 2, retention_age: 1d, retention_bytes: 1GiB}\n",
		"mqtt:\n  acl:\n    - {user: '*', allow: ['#'], deny: [a/+]}\n  limits: {max_inflight: 65535}\n",
		"---\n---\n",
		"x: !!binary aGVsbG8=\n",
		"data_dir: [\n",
		"{0\n\n0}", // a key with a newline must not split its error message
		"mqtt:\n listeners:\n    - !0 {name: 0,type: tcp,address: '\r\r:0'}", // yaml.v3 cannot re-read its own plain "\r"
	}
	if ex, err := os.ReadFile("../docs/millstream.example.yaml"); err == nil {
		seeds = append(seeds, string(ex))
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data)
		if err != nil {
			// Defaults are valid, so whatever is wrong came from the file,
			// and every message must say where.
			for line := range strings.SplitSeq(err.Error(), "\n") {
				if !strings.HasPrefix(line, "fuzz.yaml:") {
					t.Errorf("error without file:line: %s", line)
				}
			}
			return
		}
		if Validate(c) != nil {
			return
		}
		out, err := Dump(c)
		if err != nil {
			t.Fatalf("Dump: %v", err)
		}
		back, err := Parse("dump.yaml", out)
		if err != nil {
			t.Fatalf("Parse(Dump) failed: %v\n%s", err, out)
		}
		if !sameConfig(back, c) {
			t.Fatalf("Parse(Dump(c)) != c\n%s", out)
		}
	})
}
