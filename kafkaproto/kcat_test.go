package kafkaproto

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	mlog "github.com/millstream/millstream/log"
)

// kcatPath finds kcat (librdkafka's command-line client). Without it the
// test skips naming the tool, except under CI=true where it fails.
func kcatPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"kcat", "kafkacat"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("kcat not found (Debian package kcat); required under CI=true")
	}
	t.Skip("kcat not found (install the Debian package kcat)")
	return ""
}

func runKcat(t *testing.T, ctx context.Context, bin string, stdin string, args ...string) string {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kcat %s: %v\nstderr:\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// TestKcat produces with kcat -P and checks the log, then consumes with a
// kcat consumer group (balanced consumer, auto-commit on close), adds records
// and checks a second kcat run continues where the first committed.
func TestKcat(t *testing.T) {
	bin := kcatPath(t)
	env := startEnv(t, Options{GroupPrefix: "kafka."})
	env.createTopic(t, "plant", 2)
	ctx := testCtx(t, 80*time.Second)
	common := []string{"-b", env.addr, "-q"}

	// Produce: key:value lines, one header on every record.
	var in strings.Builder
	for i := 0; i < 20; i++ {
		fmt.Fprintf(&in, "line-%d:reading %d\n", i%4, i)
	}
	runKcat(t, ctx, bin, in.String(), append(common, "-P", "-t", "plant", "-K:", "-H", "site=north", "-X", "acks=all", "-X", "enable.idempotence=true",
		// librdkafka's default partitioner hashes with CRC32; murmur2_random
		// is the Java client's and the log's.
		"-X", "partitioner=murmur2_random")...)
	recs := env.readAll(t, "plant")
	if len(recs) != 20 {
		t.Fatalf("log has %d records after kcat -P, want 20", len(recs))
	}
	values := map[string]bool{}
	for _, r := range recs {
		values[string(r.Value)] = true
		if v, ok := r.HeaderValue("site"); !ok || string(v) != "north" {
			t.Fatalf("record %q headers %v, want site=north", r.Value, r.Headers)
		}
		if want := fmt.Sprintf("line-%d", 0); len(r.Key) == 0 {
			t.Fatalf("record %q has no key (want like %s)", r.Value, want)
		}
		if want := mlog.PartitionForKey(r.Key, 2); r.Partition != want {
			t.Fatalf("librdkafka put key %s on partition %d, the log's partitioner on %d", r.Key, r.Partition, want)
		}
	}
	if len(values) != 20 {
		t.Fatalf("distinct values %d, want 20", len(values))
	}

	// Metadata: kcat -L lists the topic with its partitions.
	meta := runKcat(t, ctx, bin, "", append(common, "-L", "-t", "plant")...)
	if !strings.Contains(meta, `topic "plant" with 2 partitions`) {
		t.Fatalf("kcat -L output:\n%s", meta)
	}

	consume := func() []string {
		out := runKcat(t, ctx, bin, "", append(common, "-G", "kc", "-X", "auto.offset.reset=earliest",
			"-X", "fetch.wait.max.ms=100", "-e", "-f", "%p:%o:%s\n", "plant")...)
		var lines []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if l != "" {
				lines = append(lines, l)
			}
		}
		sort.Strings(lines)
		return lines
	}
	first := consume()
	if len(first) != 20 {
		t.Fatalf("first kcat -G run got %d records, want 20:\n%s", len(first), strings.Join(first, "\n"))
	}
	// kcat committed on close: the log has the group's offsets at the end.
	info, err := env.l.Topic(ctx, "plant")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range info.Partitions {
		off, ok, err := env.l.CommittedOffset(ctx, "kafka.kc", "plant", p.Partition)
		if err != nil || !ok || off != p.End {
			t.Fatalf("partition %d: committed %d, %v, %v; want %d", p.Partition, off, ok, err, p.End)
		}
	}
	// New records, written by Millstream itself.
	var more []*mlog.Record
	for i := 0; i < 6; i++ {
		more = append(more, &mlog.Record{Topic: "plant", Key: []byte(fmt.Sprintf("line-%d", i)), Value: []byte(fmt.Sprintf("later %d", i))})
	}
	if err := env.l.ProduceSync(ctx, more...); err != nil {
		t.Fatal(err)
	}
	second := consume()
	if len(second) != 6 {
		t.Fatalf("second kcat -G run got %d records, want the 6 new ones:\n%s", len(second), strings.Join(second, "\n"))
	}
	for _, l := range second {
		if !strings.Contains(l, ":later ") {
			t.Fatalf("second run re-read an old record: %s", l)
		}
	}

	// Simple consumer of one partition from the beginning.
	simple := runKcat(t, ctx, bin, "", append(common, "-C", "-t", "plant", "-p", "0", "-o", "beginning", "-e", "-f", "%o\n")...)
	if got, want := len(strings.Fields(simple)), int(info.Partitions[0].End)+countPartition(more, 0); got != want {
		t.Fatalf("kcat -C -p 0 read %d records, want %d", got, want)
	}
}

func countPartition(rs []*mlog.Record, p int32) int {
	n := 0
	for _, r := range rs {
		if r.Partition == p {
			n++
		}
	}
	return n
}
