package broker

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// TestReceiveMaximumKeepsOrderAndNeverDeadlocks: MQTT 5 subscribers with a
// small receive maximum get their messages through mochi's send quota
// (parked beyond the quota, resent as acknowledgements free it) while
// several publishers fan out to them concurrently. Upstream mochi v2.7.9
// deadlocked here (a recursive read lock in Inflight.NextImmediate) and
// resent parked messages out of order; third_party/mochi-mqtt-server fixes
// both (PATCHES.md). Every message must arrive, in per-topic order.
func TestReceiveMaximumKeepsOrderAndNeverDeadlocks(t *testing.T) {
	b := startBroker(t, testConfig(), openLog(t, t.TempDir()), Options{})
	const publishers, perPublisher, subscribers = 4, 300, 2

	type sub struct {
		mu   sync.Mutex
		last map[string]int
		n    int
		bad  []string
		done chan struct{}
	}
	var subs []*sub
	for i := range subscribers {
		s := &sub{last: map[string]int{}, done: make(chan struct{})}
		subs = append(subs, s)
		conn, err := net.Dial("tcp", b.addr("tcp"))
		if err != nil {
			t.Fatal(err)
		}
		c := paho5.NewClient(paho5.ClientConfig{Conn: conn, PacketTimeout: testTimeout,
			OnPublishReceived: []func(paho5.PublishReceived) (bool, error){func(r paho5.PublishReceived) (bool, error) {
				s.mu.Lock()
				defer s.mu.Unlock()
				seq, _ := strconv.Atoi(string(r.Packet.Payload))
				if prev, ok := s.last[r.Packet.Topic]; ok && seq != prev+1 {
					s.bad = append(s.bad, fmt.Sprintf("%s: %d after %d", r.Packet.Topic, seq, prev))
				}
				s.last[r.Packet.Topic] = seq
				if s.n++; s.n == publishers*perPublisher {
					close(s.done)
				}
				return true, nil
			}}})
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		rm := uint16(2)
		if _, err := c.Connect(ctx, &paho5.Connect{ClientID: fmt.Sprintf("rm-sub-%d", i), CleanStart: true, KeepAlive: 30,
			Properties: &paho5.ConnectProperties{ReceiveMaximum: &rm}}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Subscribe(ctx, &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{{Topic: "rm/#", QoS: 1}}}); err != nil {
			t.Fatal(err)
		}
		cancel()
		t.Cleanup(func() { _ = c.Disconnect(&paho5.Disconnect{}) })
	}

	var wg sync.WaitGroup
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pub := rawConnect(t, b.addr("tcp"), fmt.Sprintf("rm-pub-%d", p))
			defer pub.Close()
			var burst []byte
			for i := 1; i <= perPublisher; i++ {
				body := mqttString(fmt.Sprintf("rm/t%d", p))
				body = binary.BigEndian.AppendUint16(body, uint16(i))
				burst = append(burst, mqttPacket(0x32, append(body, strconv.Itoa(i)...))...)
			}
			if _, err := pub.Write(burst); err != nil {
				t.Error(err)
			}
			// Stay connected until the subscribers have everything, so
			// the publisher's acknowledgements are read.
			for _, s := range subs {
				select {
				case <-s.done:
				case <-time.After(testTimeout):
				}
			}
		}()
	}
	for i, s := range subs {
		select {
		case <-s.done:
		case <-time.After(testTimeout):
			s.mu.Lock()
			n := s.n
			s.mu.Unlock() // the client's callback needs it to shut down
			t.Fatalf("subscriber %d received %d of %d messages (deadlocked or lost)", i, n, publishers*perPublisher)
		}
		s.mu.Lock()
		if len(s.bad) > 0 {
			t.Errorf("subscriber %d received out of order: %s", i, strings.Join(s.bad[:min(5, len(s.bad))], "; "))
		}
		s.mu.Unlock()
	}
	wg.Wait()
}

// TestMochiSubscriberCache checks the patched TopicsIndex's subscriber
// cache: every subscribe and unsubscribe is seen by the next lookup, and a
// result with shared subscriptions (which the fan-out narrows down in
// place) is never shared between lookups.
func TestMochiSubscriberCache(t *testing.T) {
	x := mqtt.NewTopicsIndex()
	has := func(topic, client string) bool {
		_, ok := x.Subscribers(topic).Subscriptions[client]
		return ok
	}
	if has("plant/line1/temp", "c1") {
		t.Fatal("subscriber before any subscription")
	}
	x.Subscribe("c1", packets.Subscription{Filter: "plant/#", Qos: 1})
	if !has("plant/line1/temp", "c1") {
		t.Fatal("cached lookup missed a new subscription")
	}
	x.Subscribe("c2", packets.Subscription{Filter: "plant/+/temp"})
	if !has("plant/line1/temp", "c2") || !has("plant/line1/temp", "c1") {
		t.Fatal("second subscription not seen")
	}
	x.Unsubscribe("plant/#", "c1")
	if has("plant/line1/temp", "c1") {
		t.Fatal("cached lookup still has an unsubscribed client")
	}
	x.InlineSubscribe(mqtt.InlineSubscription{Subscription: packets.Subscription{Filter: "plant/line1/temp", Identifier: 7}, Handler: func(*mqtt.Client, packets.Subscription, packets.Packet) {}})
	if len(x.Subscribers("plant/line1/temp").InlineSubscriptions) != 1 {
		t.Fatal("inline subscription not seen")
	}
	x.Subscribe("c3", packets.Subscription{Filter: "$share/g/plant/#"})
	a, b := x.Subscribers("plant/line1/temp"), x.Subscribers("plant/line1/temp")
	if len(a.Shared) != 1 || a == b {
		t.Fatalf("shared subscriptions: %d groups, same result twice: %v", len(a.Shared), a == b)
	}
}
