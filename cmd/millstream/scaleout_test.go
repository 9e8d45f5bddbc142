package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestTwoNodesOnOneKafka: two `millstream run` processes share one Kafka
// cluster (kfake). Both take MQTT traffic; their normalisers split the
// partitions of mqtt.ingress and their rollup steps the partitions of
// uns.points. When one node stops, the other takes its partitions over:
// uns.points holds every point exactly once and uns.rollups.1m every
// window exactly once, with every point in it.
func TestTwoNodesOnOneKafka(t *testing.T) {
	pub := needTool(t, "mosquitto_pub")
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(4))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	extra := "log:\n  backend: kafka\n  partitions: 4\n  kafka:\n    brokers: [" + cluster.ListenAddrs()[0] + "]\n    group_session_timeout: 6s\n" +
		"pipeline:\n  rollup_intervals: [1m]\n  rollup_grace: 1s\nhistorian:\n  enabled: false\n"
	n1 := startServer(t, writeConfig(t, t.TempDir(), extra))
	n2 := startServer(t, writeConfig(t, t.TempDir(), extra))

	const tags = 8
	base := time.Now().Add(-time.Hour).Truncate(time.Minute)
	publish := func(s *server, fromMin, toMin int) {
		for k := range tags {
			var lines []string
			for m := fromMin; m < toMin; m++ {
				for sec := 0; sec < 60; sec += 15 {
					lines = append(lines, fmt.Sprintf(`{"value": %d, "timestamp": %d}`, m*100+sec, base.Add(time.Duration(m)*time.Minute+time.Duration(sec)*time.Second).UnixMilli()))
				}
			}
			cmd := exec.Command(pub, "-h", "127.0.0.1", "-p", s.port(), "-q", "1", "-t", fmt.Sprintf("acme/l1/m%d/speed", k), "-l")
			cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("mosquitto_pub: %v\n%s", err, out)
			}
		}
	}
	time.Sleep(2 * time.Second) // both nodes have joined the groups
	publish(n1, 0, 2)
	publish(n2, 2, 3)
	time.Sleep(2 * time.Second)
	n1.stop(t, syscall.SIGTERM)
	publish(n2, 3, 5)

	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ConsumeTopics("uns.points", "uns.rollups.1m"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	points := map[string]int{}
	windows := map[string]int{}
	counts := map[string]float64{}
	wantPoints, wantWindows := tags*5*4, tags*5
	deadline := time.Now().Add(40 * time.Second)
	for len(points) < wantPoints || len(windows) < wantWindows {
		if time.Now().After(deadline) {
			t.Fatalf("after 40 s: %d of %d points, %d of %d windows", len(points), wantPoints, len(windows), wantWindows)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			var v map[string]any
			if err := json.Unmarshal(r.Value, &v); err != nil {
				t.Fatalf("%s record %s: %v", r.Topic, r.Value, err)
			}
			if r.Topic == "uns.points" {
				points[fmt.Sprint(v["path"], "|", v["time"])]++
				return
			}
			k := fmt.Sprint(v["path"], "|", v["start"])
			windows[k]++
			counts[k] = v["count"].(float64)
		})
	}
	time.Sleep(time.Second) // duplicates would come after
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { t.Errorf("a record beyond the expected: %s %s", r.Topic, r.Value) })
	cancel()
	for k, n := range points {
		if n != 1 {
			t.Errorf("point %s written %d times", k, n)
		}
	}
	for k, n := range windows {
		if n != 1 || counts[k] != 4 {
			t.Errorf("window %s written %d times, count %v (want once, 4 points)", k, n, counts[k])
		}
	}
}
