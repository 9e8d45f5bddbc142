package replicate

import (
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	mlog "github.com/millstream/millstream/log"
	"github.com/millstream/millstream/log/kafka"
)

func TestOptionsErrors(t *testing.T) {
	l := openLocal(t, t.TempDir(), 1)
	defer l.Close()
	ok := func() Options {
		return Options{Site: "s", Remote: Remote{Brokers: []string{"127.0.0.1:9"}}, Flows: []Flow{{Name: "f", Topics: []string{"t"}}}}
	}
	for _, c := range []struct {
		name, want string
		mod        func(*Options)
	}{
		{"no site", "site", func(o *Options) { o.Site = "" }},
		{"slash in site", "site", func(o *Options) { o.Site = "a/b" }},
		{"no brokers", "brokers", func(o *Options) { o.Remote.Brokers = nil }},
		{"bad broker", "host:port", func(o *Options) { o.Remote.Brokers = []string{"kafka"} }},
		{"compression", "compression", func(o *Options) { o.Remote.Compression = "brotli" }},
		{"bandwidth", "bandwidth", func(o *Options) { o.Remote.BandwidthBytesPerSec = -1 }},
		{"flow name", "flow name", func(o *Options) { o.Flows[0].Name = "a b" }},
		{"duplicate flow", "two flows", func(o *Options) { o.Flows = append(o.Flows, o.Flows[0]) }},
		{"no topics", "no source topics", func(o *Options) { o.Flows[0].Topics = nil }},
		{"same pair", "both replicate", func(o *Options) {
			o.Flows = append(o.Flows, Flow{Name: "g", Topics: []string{"t"}})
		}},
		{"bad include", "pattern", func(o *Options) { o.Flows[0].Include = []string{"a/#/b"} }},
		{"bad deny", "pattern", func(o *Options) { o.Flows[0].Deny = []string{"a/b+"} }},
		{"nothing to do", "nothing to do", func(o *Options) { o.Flows = nil }},
		{"tls files without tls", "not enabled", func(o *Options) { o.Remote.TLS.CAFile = "/x.pem" }},
		{"missing CA", "CA file", func(o *Options) { o.Remote.TLS = kafka.TLSOptions{Enabled: true, CAFile: "/nonexistent.pem"} }},
		{"sasl mechanism", "mechanism", func(o *Options) { o.Remote.SASL = kafka.SASLOptions{Mechanism: "GSSAPI", User: "u"} }},
		{"sasl user", "needs a user", func(o *Options) { o.Remote.SASL = kafka.SASLOptions{Mechanism: "PLAIN"} }},
		{"commands pattern", "commands paths", func(o *Options) { o.Commands = Commands{Enabled: true, Paths: []string{""}} }},
	} {
		o := ok()
		c.mod(&o)
		_, err := New(l, o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one mentioning %q", c.name, err, c.want)
		}
	}
	if _, err := New(l, ok()); err != nil {
		t.Errorf("valid options: %v", err)
	}
}

// TestSASL replicates to a cluster that requires SCRAM, and fails to start
// a session (WAN state down with the reason) with a wrong password.
func TestSASL(t *testing.T) {
	c, _ := newRemote(t, kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "plant", "secret"))
	l := openLocal(t, t.TempDir(), 1)
	defer l.Close()
	if err := l.CreateTopic(t.Context(), "t", mlog.TopicConfig{}); err != nil {
		t.Fatal(err)
	}
	produceLocal(t, l, "t", &mlog.Record{Key: []byte("k"), Value: []byte("v")})

	bad := testOptions(c, Flow{Name: "f", Topics: []string{"t"}})
	bad.Remote.SASL = kafka.SASLOptions{Mechanism: "SCRAM-SHA-256", User: "plant", Password: "wrong"}
	run := start(t, l, bad)
	deadline := time.Now().Add(10 * time.Second)
	for st := run.r.Status(); st.LastError == "" || st.WANUp; st = run.r.Status() {
		if time.Now().After(deadline) {
			t.Fatalf("status %+v with a wrong password", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := counterValue(t, run.r.m.sentRecords.WithLabelValues("f")); n != 0 {
		t.Errorf("%v records sent with a wrong password", n)
	}
	run.stop(t)

	good := bad
	good.Remote.SASL.Password = "secret"
	run = start(t, l, good)
	waitCaughtUp(t, run.r, 20*time.Second)
	run.stop(t)
	got := readRemote(t, c, "t", kgo.SASL(scram.Auth{User: "plant", Pass: "secret"}.AsSha256Mechanism()))
	if len(got) != 1 || string(got[0].Value) != "v" {
		t.Errorf("remote holds %d records", len(got))
	}
}
