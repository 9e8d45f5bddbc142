package replicate

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	mlog "github.com/millstream/millstream/log"
)

// checkExactlyOnce checks that the remote records are exactly the expected
// values per key, once each, in order, each key in the partition its
// murmur2 hash picks.
func checkExactlyOnce(t *testing.T, got []*kgo.Record, want map[string][]string, partitions int32) {
	t.Helper()
	per := map[string][]string{}
	for _, r := range got {
		k := string(r.Key)
		if p := mlog.PartitionForKey(r.Key, partitions); p != r.Partition {
			t.Errorf("key %s on remote partition %d, want %d", k, r.Partition, p)
		}
		per[k] = append(per[k], string(r.Value))
		srcOf(t, r)
	}
	for k, vs := range want {
		g := per[k]
		if len(g) != len(vs) {
			seen := map[string]int{}
			for _, v := range g {
				seen[v]++
			}
			var missing, dups []string
			for _, v := range vs {
				if seen[v] == 0 {
					missing = append(missing, v)
				}
				if seen[v] > 1 {
					dups = append(dups, v)
				}
			}
			t.Errorf("key %s: remote has %d records, want %d (missing %d, e.g. %v; duplicated %d, e.g. %v)", k, len(g), len(vs), len(missing), missing[:min(3, len(missing))], len(dups), dups[:min(3, len(dups))])
			continue
		}
		for i := range vs {
			if g[i] != vs[i] {
				t.Errorf("key %s: record %d is %s, want %s (order or duplicate)", k, i, g[i], vs[i])
				break
			}
		}
	}
	for k := range per {
		if _, ok := want[k]; !ok {
			t.Errorf("remote has %d records of key %s, which must not leave the site", len(per[k]), k)
		}
	}
}

// TestWANCut is the check: a steady stream of records with many
// keys is replicated while the link is cut and restored several times and
// the replicator restarts once mid-stream (during a cut, so records are in
// flight with unknown fate); at the end the remote holds every selected
// record exactly once, in per-key order, and denied data never arrived.
func TestWANCut(t *testing.T) {
	c, link := newRemote(t)
	l := openLocal(t, t.TempDir(), 4)
	defer l.Close()
	flow := Flow{Name: "events", Topics: []string{"line.events"}, Include: []string{"acme/#"}, Deny: []string{"acme/secret/#"},
		RemoteTopic: "cloud.events", RemotePartitions: 3}
	opts := testOptions(c, flow)
	if err := l.CreateTopic(context.Background(), "line.events", mlog.TopicConfig{Partitions: 4}); err != nil {
		t.Fatal(err)
	}

	const (
		keys    = 40
		rounds  = 120 // of one record per key
		secrets = 5
	)
	want := map[string][]string{}
	var prodErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		// About 4 s of steady ingest: 40 keys + 5 denied keys every 30 ms.
		defer wg.Done()
		for i := 0; i < rounds; i++ {
			var batch []*mlog.Record
			for k := 0; k < keys; k++ {
				key := fmt.Sprintf("acme/p1/asset%02d", k)
				v := fmt.Sprintf("%s#%06d", key, i)
				want[key] = append(want[key], v)
				batch = append(batch, &mlog.Record{Topic: "line.events", Key: []byte(key), Value: []byte(v)})
			}
			for k := 0; k < secrets; k++ {
				key := fmt.Sprintf("acme/secret/asset%d", k)
				batch = append(batch, &mlog.Record{Topic: "line.events", Key: []byte(key), Value: []byte(fmt.Sprintf("%s#%06d", key, i))})
			}
			// Not selected by Include: stays too.
			batch = append(batch, &mlog.Record{Topic: "line.events", Key: []byte("other/x"), Value: []byte("x")})
			if err := l.ProduceSync(context.Background(), batch...); err != nil {
				prodErr = err
				return
			}
			time.Sleep(30 * time.Millisecond)
		}
	}()

	// The first replicator never commits a checkpoint after its start and
	// is stopped as if killed: everything it sent must be found on the
	// remote by the next one.
	crashOpts := opts
	crashOpts.CommitInterval = time.Minute
	run := start(t, l, crashOpts)
	reconnects := 0
	resumed := 0.0
	// Cut and restore: up 350 ms, down 250 ms, six times. The replicator
	// is killed while the link is up (between the second and third cut)
	// and stopped cleanly while it is down (during the fourth cut).
	for i := 0; i < 6; i++ {
		time.Sleep(350 * time.Millisecond)
		if i == 2 {
			run.r.crash.Store(true)
			run.stop(t)
			reconnects += run.r.Status().Reconnects
			run = start(t, l, opts)
			// The first replicator committed nothing since its start, so
			// the resume scan must find what it sent. The scan reads the
			// remote before anything is sent; under the race detector it
			// can take longer than the 200 ms the link stays up here.
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				if resumed = counterValue(t, run.r.m.resumed.WithLabelValues("events")); resumed > 0 || time.Now().After(deadline) {
					break
				}
			}
		}
		link.Cut()
		if i == 3 {
			run.stop(t)
			reconnects += run.r.Status().Reconnects
			run = start(t, l, opts)
		}
		time.Sleep(250 * time.Millisecond)
		link.Restore()
	}
	wg.Wait()
	if prodErr != nil {
		t.Fatal(prodErr)
	}
	waitCaughtUp(t, run.r, 30*time.Second)
	reconnects += run.r.Status().Reconnects
	run.stop(t)

	got := readRemote(t, c, "cloud.events")
	checkExactlyOnce(t, got, want, 3)
	if len(got) != keys*rounds {
		t.Errorf("remote holds %d records, want %d", len(got), keys*rounds)
	}
	if link.cuts != 6 {
		t.Errorf("link cut %d times, want 6", link.cuts)
	}
	if reconnects < 3 {
		t.Errorf("replicator saw %d reconnects over 6 cuts; the cuts did not reach it", reconnects)
	}
	if resumed == 0 {
		t.Error("after the kill, the resume scan found nothing on the remote: the restart did not test deduplication")
	}
	t.Logf("remote records %d, reconnects seen %d, found on the remote after the kill %v", len(got), reconnects, resumed)
}

// TestRestartFindsWhatRemoteHas simulates the crash the resume scan is for:
// the remote acknowledged records but neither checkpoint was committed. The
// restarted replicator must find them on the remote and not send them again.
func TestRestartFindsWhatRemoteHas(t *testing.T) {
	c, _ := newRemote(t)
	l := openLocal(t, t.TempDir(), 2)
	defer l.Close()
	opts := testOptions(c, Flow{Name: "f", Topics: []string{"t"}, RemotePartitions: 2})
	want := map[string][]string{}
	batch := func(from, n int) {
		var rs []*mlog.Record
		for i := from; i < from+n; i++ {
			key := "k" + strconv.Itoa(i%7)
			v := key + "#" + strconv.Itoa(i)
			want[key] = append(want[key], v)
			rs = append(rs, &mlog.Record{Key: []byte(key), Value: []byte(v)})
		}
		produceLocal(t, l, "t", rs...)
	}
	if err := l.CreateTopic(context.Background(), "t", mlog.TopicConfig{Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	batch(0, 300)
	run := start(t, l, opts)
	waitCaughtUp(t, run.r, 20*time.Second)
	run.stop(t)

	// Roll both checkpoints back to the beginning.
	ctx := context.Background()
	for p := int32(0); p < 2; p++ {
		if err := l.CommitOffset(ctx, "replicate.f", "t", p, 0); err != nil {
			t.Fatal(err)
		}
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var os kadm.Offsets
	os.Add(kadm.Offset{Topic: "t", Partition: 0, At: 0, LeaderEpoch: -1})
	os.Add(kadm.Offset{Topic: "t", Partition: 1, At: 0, LeaderEpoch: -1})
	if err := kadm.NewClient(cl).CommitAllOffsets(ctx, "millstream.replicate.plant1.f", os); err != nil {
		t.Fatal(err)
	}

	batch(300, 100)
	run = start(t, l, opts)
	waitCaughtUp(t, run.r, 20*time.Second)
	skipped := counterValue(t, run.r.m.resumed.WithLabelValues("f"))
	run.stop(t)
	checkExactlyOnce(t, readRemote(t, c, "t"), want, 2)
	if skipped != 300 {
		t.Errorf("resume scan skipped %v records, want 300", skipped)
	}
	for _, r := range readRemote(t, c, "t") {
		src := srcOf(t, r)
		if !strings.HasPrefix(src, "plant1/t/") {
			t.Errorf("%s header %q", HeaderSource, src)
		}
	}
}
