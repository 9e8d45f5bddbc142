package config

import (
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

const (
	docPath     = "../docs/configuration.md"
	examplePath = "../docs/millstream.example.yaml"
)

func readDoc(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Every key of the schema, with the notation of KeyPaths, and every
// environment variable is documented.
func TestDocsCoverEveryKey(t *testing.T) {
	doc := readDoc(t, docPath)
	paths := KeyPaths()
	for _, want := range []string{"mqtt.limits.max_inflight", "mqtt.listeners[].tls.cert_file", "log.topics[<name>].retention_age"} {
		if !contains(paths, want) {
			t.Fatalf("KeyPaths lacks %s (the notation changed?): %v", want, paths)
		}
	}
	for _, p := range paths {
		if !strings.Contains(doc, "`"+p+"`") {
			t.Errorf("%s does not document `%s`", docPath, p)
		}
	}
	for _, e := range EnvVars() {
		if !strings.Contains(doc, "`"+e.Name+"`") {
			t.Errorf("%s does not list `%s`", docPath, e.Name)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// The default column of every single-valued top-level or section key says
// what Default() holds, so the tables cannot drift from the code.
func TestDocsDefaults(t *testing.T) {
	doc := readDoc(t, docPath)
	rows := map[string][]string{}
	for line := range strings.SplitSeq(doc, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		// The key tables come first; later tables (broker limits) have
		// fewer columns and must not replace their rows.
		cols := strings.Split(line, " | ")
		if key := strings.Trim(cols[0], "| `"); len(rows[key]) < 5 {
			rows[key] = cols
		}
	}
	def := reflect.ValueOf(Default())
	checked := 0
	for _, e := range EnvVars() {
		v := def.FieldByIndex(e.index)
		want := "unset"
		if v.Kind() != reflect.Pointer {
			want = "`" + fmt.Sprint(v.Interface()) + "`"
		} else if !v.IsNil() {
			want = "`" + fmt.Sprint(v.Elem().Interface()) + "`"
		}
		cols, ok := rows[e.Path]
		if !ok || len(cols) < 5 {
			t.Errorf("%s: no table row | `%s` | type | default | allowed | meaning |", docPath, e.Path)
			continue
		}
		if got := cols[2]; got != want {
			t.Errorf("%s: default of %s is %s, want %s", docPath, e.Path, got, want)
		}
		checked++
	}
	if checked < 20 {
		t.Fatalf("checked only %d defaults", checked)
	}
}

func TestExampleFile(t *testing.T) {
	c, err := Load(examplePath)
	if err != nil {
		t.Fatalf("Load(%s): %v", examplePath, err)
	}
	if err := Validate(c); err != nil {
		t.Fatalf("Validate(%s): %v", examplePath, err)
	}
	// Spot checks that the file is read as documented.
	if c.Log.Topics["mqtt.ingress"].RetentionBytes != 200<<30 || c.MQTT.AllowAnonymous == nil || *c.MQTT.AllowAnonymous ||
		len(c.MQTT.ACL) != 3 || c.MQTT.ACL[1].Allow[0] != "#" || time.Duration(c.Log.RetentionAge) != 30*Day {
		t.Fatalf("example read as %+v", c)
	}
	// Every single-valued key appears in the complete example.
	ex := readDoc(t, examplePath)
	for _, e := range EnvVars() {
		name := e.Path[strings.LastIndexByte(e.Path, '.')+1:]
		if !strings.Contains(ex, name+":") {
			t.Errorf("%s does not set %s", examplePath, e.Path)
		}
	}

	// The doc shows the file verbatim.
	doc := readDoc(t, docPath)
	if !strings.Contains(doc, "```yaml\n"+ex+"```\n") {
		t.Errorf("%s's complete example differs from %s; copy the file into the doc", docPath, examplePath)
	}
}

// Dump writes what Parse reads back to the same configuration.
func TestDumpRoundTrip(t *testing.T) {
	example, err := Load(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	full := Default()
	full.DataDir = "/var/lib/millstream with spaces"
	full.Log.FsyncInterval = Duration(1500 * time.Microsecond)
	full.Log.RetentionAge = -1
	full.Log.RetentionBytes = 1500
	full.Log.Topics = map[string]Topic{"a": {Partitions: 2}, "b.c": {RetentionAge: Duration(Week), RetentionBytes: -1}}
	full.MQTT.Listeners = append(full.MQTT.Listeners, Listener{Name: "tls", Type: "tcp", Address: "[::]:8883",
		TLS: TLS{CertFile: "c.pem", KeyFile: "k.pem", ClientCAFile: "ca.pem", RequireClientCert: true}})
	full.MQTT.AllowAnonymous = boolPtr(true)
	full.MQTT.Users = []User{{Username: "yes", PasswordHash: "$2a$10$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234"}}
	full.MQTT.ACL = []ACL{{User: "*", Action: "", Allow: []string{"#"}}, {User: "u", Action: "publish", Deny: []string{"+/x", "a/#"}}}
	full.MQTT.Limits = Limits{MaxPacketSize: -1, MaxConnections: 0, MaxInflight: 65535, MaxSessionExpiry: Duration(Day + time.Second), MaxQueuedMessages: -1}
	full.Logging.Level = "true" // a string that looks like a bool stays a string

	for name, c := range map[string]Config{"default": Default(), "example": example, "full": full} {
		t.Run(name, func(t *testing.T) {
			out, err := Dump(c)
			if err != nil {
				t.Fatal(err)
			}
			back, err := Parse("dump.yaml", out)
			if err != nil {
				t.Fatalf("Parse(Dump): %v\n%s", err, out)
			}
			if !sameConfig(back, c) {
				t.Fatalf("Parse(Dump(c)) differs:\n got %+v\nwant %+v\n%s", back, c, out)
			}
		})
	}

	out, err := Dump(Default())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"segment_age: 1d\n", "retention_age: 7d\n", "segment_bytes: 128MiB\n", "retention_bytes: -1\n",
		"allow_anonymous: null # unset: anonymous clients are allowed only while every listener is bound to a loopback address\n"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("Dump(Default()) lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "tls:") {
		t.Errorf("Dump(Default()) shows empty tls sections:\n%s", out)
	}
}
