package kafka

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	mlog "github.com/millstream/millstream/log"
	"github.com/millstream/millstream/log/logtest"
)

// newCluster starts an in-process Kafka cluster on 127.0.0.1 (kfake stands
// in for Kafka; nothing in the package knows about it).
func newCluster(t testing.TB, brokers int, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(brokers)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func testOptions(c *kfake.Cluster) Options {
	return Options{
		Brokers:                c.ListenAddrs(),
		GroupHeartbeatInterval: 100 * time.Millisecond,
		GroupSessionTimeout:    6 * time.Second, // Kafka's (and kfake's) group.min.session.timeout.ms
		GroupRebalanceTimeout:  5 * time.Second,
	}
}

func open(t testing.TB, opts Options) *Log {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestConformance runs the shared log suite on a three-broker cluster, so
// partition leaders are spread and fetches go to different brokers.
func TestConformance(t *testing.T) {
	c := newCluster(t, 3)
	logtest.Run(t, func(t *testing.T) mlog.Log {
		return open(t, testOptions(c))
	})
}

func TestConformanceOneBroker(t *testing.T) {
	c := newCluster(t, 1)
	logtest.Run(t, func(t *testing.T) mlog.Log {
		return open(t, testOptions(c))
	})
}

// TestTopicCreatedElsewhereIsSeenAtOnce: a topic another node (or another
// goroutine's Log) created a moment after this Log was told it did not exist
// is described at once. The client's metadata cache keeps the "unknown" for
// seconds; a normaliser that asked for uns.points just after another
// component created it stopped with "unknown topic".
func TestTopicCreatedElsewhereIsSeenAtOnce(t *testing.T) {
	c := newCluster(t, 1)
	a, b := open(t, testOptions(c)), open(t, testOptions(c))
	ctx := ctxT(t)
	if _, err := a.Topic(ctx, "late"); !errors.Is(err, mlog.ErrUnknownTopic) {
		t.Fatalf("before creation: %v, want ErrUnknownTopic", err)
	}
	if err := b.CreateTopic(ctx, "late", mlog.TopicConfig{Partitions: 3}); err != nil {
		t.Fatal(err)
	}
	info, err := a.Topic(ctx, "late")
	if err != nil {
		t.Fatalf("right after another Log created it: %v", err)
	}
	if len(info.Partitions) != 3 {
		t.Errorf("%d partitions, want 3", len(info.Partitions))
	}
}
