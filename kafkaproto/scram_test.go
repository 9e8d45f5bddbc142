package kafkaproto

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

func scramEnv(t *testing.T) *testEnv {
	t.Helper()
	creds := map[string]SCRAMCredential{}
	for _, mech := range []string{MechSCRAMSHA256, MechSCRAMSHA512} {
		c, err := NewSCRAMCredential(mech, "s3cret", 4096)
		if err != nil {
			t.Fatal(err)
		}
		// Through the text form, as the configuration stores it.
		if c, err = ParseSCRAMCredential(c.String()); err != nil {
			t.Fatal(err)
		}
		creds[mech+"/bob"] = c
	}
	env := startEnv(t, Options{
		Authenticator: func(u, p string) bool { return false },
		SCRAM: func(mech, user string) (SCRAMCredential, bool) {
			c, ok := creds[mech+"/"+user]
			return c, ok
		},
	})
	env.createTopic(t, "scram", 1)
	return env
}

// TestSASLSCRAM: franz-go's SCRAM client authenticates with both hashes;
// a wrong password and an unknown user are refused alike.
func TestSASLSCRAM(t *testing.T) {
	env := scramEnv(t)
	ctx := testCtx(t, 30*time.Second)
	for _, m := range []struct {
		name string
		mech func(scram.Auth) kgo.Opt
	}{
		{"sha256", func(a scram.Auth) kgo.Opt { return kgo.SASL(a.AsSha256Mechanism()) }},
		{"sha512", func(a scram.Auth) kgo.Opt { return kgo.SASL(a.AsSha512Mechanism()) }},
	} {
		good := newClient(t, env.addr, m.mech(scram.Auth{User: "bob", Pass: "s3cret"}))
		if err := good.ProduceSync(ctx, &kgo.Record{Topic: "scram", Value: []byte(m.name)}).FirstErr(); err != nil {
			t.Fatalf("%s: produce after SCRAM: %v", m.name, err)
		}
		good.Close()
		for _, bad := range []scram.Auth{{User: "bob", Pass: "wrong"}, {User: "eve", Pass: "s3cret"}} {
			cl := newClient(t, env.addr, m.mech(bad), kgo.RetryTimeout(time.Second))
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := kmsg.NewPtrMetadataRequest().RequestWith(pctx, cl)
			cancel()
			cl.Close()
			if !errors.Is(err, kerr.SaslAuthenticationFailed) {
				t.Errorf("%s %s/%s: %v, want SASL_AUTHENTICATION_FAILED", m.name, bad.User, bad.Pass, err)
			}
		}
	}
}

// TestSASLSCRAMWithKcat: librdkafka's SCRAM implementation against ours.
func TestSASLSCRAMWithKcat(t *testing.T) {
	bin, err := exec.LookPath("kcat")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("kcat is required under CI=true (apt-get install kcat)")
		}
		t.Skip("kcat not installed")
	}
	env := scramEnv(t)
	ctx := testCtx(t, 30*time.Second)
	for _, mech := range []string{MechSCRAMSHA256, MechSCRAMSHA512} {
		args := []string{"-b", env.addr, "-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=" + mech,
			"-X", "sasl.username=bob", "-X", "sasl.password=s3cret", "-P", "-t", "scram"}
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Stdin = strings.NewReader("from kcat " + mech + "\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("kcat %s: %v\n%s", mech, err, out)
		}
	}
	recs := env.readAll(t, "scram")
	if len(recs) != 2 || !strings.HasPrefix(string(recs[0].Value), "from kcat SCRAM-SHA-") {
		t.Fatalf("records produced by kcat: %d", len(recs))
	}
	bad := exec.CommandContext(ctx, bin, "-b", env.addr, "-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms="+MechSCRAMSHA256,
		"-X", "sasl.username=bob", "-X", "sasl.password=nope", "-L", "-m", "5")
	if out, err := bad.CombinedOutput(); err == nil {
		t.Fatalf("kcat with a wrong password succeeded:\n%s", out)
	}
}

func TestSCRAMCredentialText(t *testing.T) {
	for _, s := range []string{"", "SCRAM-SHA-256:4096:x", "SCRAM-SHA-1:4096:AA==:AA==:AA==", "SCRAM-SHA-256:100:AA==:AA==:AA==", "SCRAM-SHA-256:4096:AA==:AA==:AA=="} {
		if _, err := ParseSCRAMCredential(s); err == nil {
			t.Errorf("ParseSCRAMCredential(%q) accepted", s)
		}
	}
}

func FuzzSCRAMFirst(f *testing.F) {
	f.Add([]byte("n,,n=bob,r=abcdef"))
	f.Add([]byte("n,,n=b=2Cob,r=x,tokenauth=true"))
	cred, err := NewSCRAMCredential(MechSCRAMSHA256, "pw", 4096)
	if err != nil {
		f.Fatal(err)
	}
	lookup := func(string, string) (SCRAMCredential, bool) { return cred, true }
	f.Fuzz(func(t *testing.T, msg []byte) {
		x := &scramExchange{}
		if _, err := x.first(msg, lookup, MechSCRAMSHA256); err != nil {
			return
		}
		// Any client-final message but a correct one fails cleanly.
		if _, err := x.final(msg); err == nil {
			t.Fatalf("final accepted %q", msg)
		}
	})
}
