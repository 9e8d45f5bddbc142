package embedded

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/millstream/millstream/log"
)

const crashChildEnv = "MILLSTREAM_LOG_CRASH_CHILD_DIR"

// TestCrashChild is the child half of TestKill9: it appends from several
// goroutines until it is killed and prints every acknowledged record.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Skip("child process of TestKill9 only")
	}
	opts := Options{SegmentBytes: 64 << 10, Logger: quietLogger()}
	if os.Getenv(crashChildEnv+"_SPACED") != "" {
		// Kills land while records are written and wait for a spaced fsync.
		opts.FsyncMinInterval = 5 * time.Millisecond
	}
	l, err := Open(dir, opts)
	if err != nil {
		fmt.Println("open failed:", err)
		os.Exit(2)
	}
	if err := l.CreateTopic(context.Background(), "crash", log.TopicConfig{Partitions: 3}); err != nil && !strings.Contains(err.Error(), log.ErrTopicExists.Error()) {
		fmt.Println("create failed:", err)
		os.Exit(2)
	}
	run := os.Getenv(crashChildEnv + "_RUN")
	// With _LARGE set, two of the appenders write records of 300-800 KB, so
	// the writer takes its direct I/O path (direct.go) while it is killed.
	large := os.Getenv(crashChildEnv+"_LARGE") != ""
	var mu sync.Mutex
	var wg sync.WaitGroup
	// Committers, one per partition, each committing its next offset as
	// soon as the previous commit returned; compaction runs every few
	// hundred commits, so kills land in it too.
	journalCompactBytes = 4 << 10
	for p := int32(0); p < 3; p++ {
		go func() {
			off, _, _ := l.CommittedOffset(context.Background(), "crash-group", "crash", p)
			for {
				off++
				if err := l.CommitOffset(context.Background(), "crash-group", "crash", p, off); err != nil {
					fmt.Println("commit failed:", err)
					os.Exit(2)
				}
				mu.Lock()
				os.Stdout.WriteString(fmt.Sprintf("commit %d %d\n", p, off))
				mu.Unlock()
			}
		}()
	}
	sawDirect := false // under mu
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; ; i++ {
				n := 1 + i%3 // mix single records and small batches
				rs := make([]*log.Record, n)
				ids := make([]string, n)
				for j := range rs {
					ids[j] = fmt.Sprintf("r%s-g%d-%08d-%d", run, g, i, j)
					v := ids[j]
					if large && g < 2 {
						v += ":" + strings.Repeat("x", 300_000+(i*7919+j*104729)%500_000)
					}
					rs[j] = &log.Record{Topic: "crash", Key: []byte(fmt.Sprintf("r%s-g%d", run, g)), Value: []byte(v)}
				}
				if err := l.ProduceSync(context.Background(), rs...); err != nil {
					fmt.Println("produce failed:", err)
					os.Exit(2)
				}
				// One write per line: a SIGKILL can cut only the last line,
				// which the parent ignores as it lacks its newline.
				mu.Lock()
				for j, r := range rs {
					os.Stdout.WriteString(fmt.Sprintf("ack %d %d %s\n", r.Partition, r.Offset, ids[j]))
				}
				if large && l.m.directWrites.Load() > 0 && !sawDirect {
					sawDirect = true
					os.Stdout.WriteString("direct\n")
				}
				mu.Unlock()
			}
		}(g)
	}
	wg.Wait()
}

type ack struct {
	partition int32
	offset    int64
	value     string
}

// TestKill9 SIGKILLs a process appending under load, three times, and checks
// that every acknowledged record survives exactly once, in order: with
// small records, written through the page cache, with large ones mixed
// in, written with direct I/O, and with fsyncs spaced by FsyncMinInterval.
func TestKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns child processes")
	}
	t.Run("buffered", func(t *testing.T) { kill9(t, false, false) })
	t.Run("spaced", func(t *testing.T) { kill9(t, false, true) })
	t.Run("direct", func(t *testing.T) {
		if !directSupported(t, t.TempDir()) {
			return
		}
		kill9(t, true, false)
	})
}

// directSupported reports whether dir's filesystem takes O_DIRECT. Under
// CI=true it must: the test machines' disks do.
func directSupported(t *testing.T, dir string) bool {
	t.Helper()
	path := dir + "/probe"
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	fd, err := openDirect(path)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("O_DIRECT is not available in %s (%v); the CI machine's disk must support it", dir, err)
		}
		t.Skipf("O_DIRECT is not available in %s: %v", dir, err)
		return false
	}
	closeDirect(fd)
	return true
}

func kill9(t *testing.T, large, spaced bool) {
	dir := t.TempDir()
	var acks []ack
	lastCommit := map[int32]int64{}
	for run := 0; run < 3; run++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, fmt.Sprintf("%s_RUN=%d", crashChildEnv, run))
		if large {
			cmd.Env = append(cmd.Env, crashChildEnv+"_LARGE=1")
		}
		if spaced {
			cmd.Env = append(cmd.Env, crashChildEnv+"_SPACED=1")
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		rd := bufio.NewReader(stdout)
		n, killed, direct := 0, false, false
		target := 3000 + run*1000
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				break // EOF; a partial last line was never fully acknowledged
			}
			line = strings.TrimSuffix(line, "\n")
			if line == "direct" {
				direct = true
				continue
			}
			var cp int32
			var co int64
			if _, err := fmt.Sscanf(line, "commit %d %d", &cp, &co); err == nil {
				if co <= lastCommit[cp] {
					t.Fatalf("run %d: partition %d committed %d after %d: a restart lost an acknowledged commit", run, cp, co, lastCommit[cp])
				}
				lastCommit[cp] = co
				continue
			}
			var a ack
			if _, err := fmt.Sscanf(line, "ack %d %d %s", &a.partition, &a.offset, &a.value); err != nil {
				if !killed {
					cmd.Process.Kill()
				}
				t.Fatalf("child: %s", line)
			}
			acks = append(acks, a)
			n++
			if large && !direct && n > 3*target {
				cmd.Process.Kill()
				t.Fatalf("run %d: no direct write in %d acknowledged records", run, n)
			}
			if n >= target && !killed && (direct || !large) {
				// Kill mid-load: the child keeps appending until the signal lands.
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				killed = true
			}
		}
		err = cmd.Wait()
		if !killed {
			t.Fatalf("child exited before it was killed (%v) after %d acks", err, n)
		}
		t.Logf("run %d: %d acknowledged records before SIGKILL (direct writes seen: %v)", run, n, direct)
	}

	l := openT(t, dir, Options{SegmentBytes: 64 << 10})
	for _, r := range l.Recovered() {
		t.Logf("recovered: %+v", r)
	}
	byPart := map[int32][]log.Record{}
	for p := int32(0); p < 3; p++ {
		byPart[p] = readAll(t, l, "crash", p)
	}
	for _, a := range acks {
		rs := byPart[a.partition]
		if a.offset >= int64(len(rs)) || storedID(rs[a.offset]) != a.value {
			t.Fatalf("acknowledged record %s at %d/%d is missing", a.value, a.partition, a.offset)
		}
	}
	// Exactly once and per-key order, over everything in the log.
	for p, rs := range byPart {
		seen := map[string]bool{}
		last := map[string]string{}
		for i, r := range rs {
			if r.Offset != int64(i) {
				t.Fatalf("partition %d: offset %d at index %d", p, r.Offset, i)
			}
			v := storedID(r)
			if seen[v] {
				t.Fatalf("partition %d: %s stored twice", p, v)
			}
			seen[v] = true
			if prev, ok := last[string(r.Key)]; ok && prev >= v {
				t.Fatalf("partition %d: %s after %s (out of order)", p, v, prev)
			}
			last[string(r.Key)] = v
		}
	}
	// Every acknowledged commit survived; at most the one in flight when
	// the signal landed got further.
	for p := int32(0); p < 3; p++ {
		got, _, err := l.CommittedOffset(bg, "crash-group", "crash", p)
		if err != nil || got < lastCommit[p] || got > lastCommit[p]+1 {
			t.Fatalf("partition %d: committed offset %d (%v) after the crash, last acknowledged %d", p, got, err, lastCommit[p])
		}
	}
	t.Logf("acknowledged commits per partition: %v", lastCommit)
	// And the log still takes appends at the right offsets.
	r := &log.Record{Topic: "crash", Partition: 1, PartitionSet: true, Value: []byte("after")}
	if err := l.ProduceSync(bg, r); err != nil || r.Offset != int64(len(byPart[1])) {
		t.Fatalf("append after crashes: offset %d (%v), want %d", r.Offset, err, len(byPart[1]))
	}
}

// storedID is the identifier a crash child acknowledged for a record: its
// value up to the padding of large records.
func storedID(r log.Record) string {
	id, pad, large := strings.Cut(string(r.Value), ":")
	if large && strings.Trim(pad, "x") != "" {
		return "corrupt padding in " + id
	}
	return id
}
