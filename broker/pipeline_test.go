package broker

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/millstream/millstream/log"
	"github.com/millstream/millstream/log/embedded"
)

// openPartitionedLog opens a log whose topics (the ingress topic among them)
// have n partitions, so appends of one client complete out of order.
func openPartitionedLog(t *testing.T, n int32) *testLog {
	t.Helper()
	el, err := embedded.Open(t.TempDir(), embedded.Options{
		Fsync:         "group",
		FsyncInterval: time.Millisecond,
		Defaults:      log.TopicConfig{Partitions: n, RetentionAge: -1, RetentionBytes: -1},
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("open log: %v", err)
	}
	l := &testLog{Log: el}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// mqttString is an MQTT UTF-8 string: two-byte length, then the bytes.
func mqttString(s string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(s))), s...)
}

// mqttPacket frames a control packet: fixed header byte, remaining length.
func mqttPacket(first byte, body []byte) []byte {
	out := []byte{first}
	n := len(body)
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		out = append(out, b)
		if n == 0 {
			break
		}
	}
	return append(out, body...)
}

// rawConnect opens an MQTT 3.1.1 connection (clean session, keepalive 60 s)
// and reads the CONNACK.
func rawConnect(t *testing.T, addr, id string) net.Conn {
	t.Helper()
	return connectKeepalive(t, addr, id, 60)
}

// connectKeepalive opens an MQTT 3.1.1 connection with the given keepalive
// (seconds) and reads the CONNACK.
func connectKeepalive(t *testing.T, addr, id string, keepalive uint16) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(testTimeout))
	connect := append(append(mqttString("MQTT"), 4, 0x02), byte(keepalive>>8), byte(keepalive))
	connect = append(connect, mqttString(id)...)
	if _, err := conn.Write(mqttPacket(0x10, connect)); err != nil {
		t.Fatal(err)
	}
	connack := make([]byte, 4)
	if _, err := io.ReadFull(conn, connack); err != nil || connack[0] != 0x20 || connack[3] != 0 {
		t.Fatalf("CONNACK %x: %v", connack, err)
	}
	return conn
}

// readPacket reads one control packet: its first byte and its body.
func readPacket(r *bufio.Reader) (byte, []byte, error) {
	typ, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for {
		b, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(b&0x7f) * mul
		if b&0x80 == 0 {
			break
		}
		mul *= 128
	}
	body := make([]byte, n)
	_, err = io.ReadFull(r, body)
	return typ, body, err
}

// rawSubscriber is a raw MQTT 3.1.1 subscriber: the order it observes is the
// order the broker wrote, with no client library in between.
type rawSubscriber struct {
	conn net.Conn
	r    *bufio.Reader
}

func rawSubscribe(t *testing.T, addr, id, filter string) *rawSubscriber {
	t.Helper()
	conn := rawConnect(t, addr, id)
	subscribe := append(binary.BigEndian.AppendUint16(nil, 1), mqttString(filter)...)
	if _, err := conn.Write(mqttPacket(0x82, append(subscribe, 1))); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	if typ, _, err := readPacket(r); err != nil || typ>>4 != 9 {
		t.Fatalf("SUBACK: type %x, %v", typ, err)
	}
	return &rawSubscriber{conn: conn, r: r}
}

// next returns the next PUBLISH (acknowledging QoS 1): topic, QoS and the
// payload as an integer.
func (s *rawSubscriber) next() (topic string, qos byte, n int, err error) {
	for {
		typ, body, err := readPacket(s.r)
		if err != nil {
			return "", 0, 0, err
		}
		if typ>>4 != 3 {
			continue
		}
		qos = (typ >> 1) & 3
		tl := int(binary.BigEndian.Uint16(body))
		topic, rest := string(body[2:2+tl]), body[2+tl:]
		if qos > 0 {
			if _, err := s.conn.Write(mqttPacket(0x40, rest[:2])); err != nil {
				return "", 0, 0, err
			}
			rest = rest[2:]
		}
		n, _ = strconv.Atoi(string(rest))
		return topic, qos, n, nil
	}
}

// TestPipelinedAcksInOrder writes many QoS 1 PUBLISH packets to the broker in
// one burst, over a raw MQTT 3.1.1 connection, to topics spread over four
// partitions (whose appends finish in any order), and checks that the
// PUBACKs come back in exactly the order the PUBLISHes were sent
// ([MQTT-4.6.0-2]) and that every message is in the log once.
func TestPipelinedAcksInOrder(t *testing.T) {
	l := openPartitionedLog(t, 4)
	b := startBroker(t, testConfig(), l, Options{})

	conn := rawConnect(t, b.addr("tcp"), "raw-pipeline")
	r := bufio.NewReader(conn)

	// 600 messages stay under the default receive maximum (1024), so the
	// whole burst is in flight at once.
	const n = 600
	var burst []byte
	for i := 1; i <= n; i++ {
		body := mqttString(fmt.Sprintf("plant/line%d/seq", i%16))
		body = binary.BigEndian.AppendUint16(body, uint16(i))
		body = append(body, strconv.Itoa(i)...)
		burst = append(burst, mqttPacket(0x32, body)...)
	}
	if _, err := conn.Write(burst); err != nil {
		t.Fatal(err)
	}
	for want := 1; want <= n; want++ {
		ack := make([]byte, 4)
		if _, err := io.ReadFull(r, ack); err != nil {
			t.Fatalf("reading PUBACK %d of %d: %v", want, n, err)
		}
		if ack[0] != 0x40 || ack[1] != 2 {
			t.Fatalf("expected PUBACK, got %x", ack)
		}
		if got := int(binary.BigEndian.Uint16(ack[2:])); got != want {
			t.Fatalf("PUBACK %d acknowledges packet %d: acknowledgements out of order", want, got)
		}
	}

	// Every message is in the log exactly once, in per-topic order.
	ingressOnceInOrder(t, l, n)
}

// ingressOnceInOrder checks that the ingress topic holds messages 1..n or
// 0..n-1 (payloads are the numbers) exactly once each, in increasing order
// per MQTT topic, and returns them by number.
func ingressOnceInOrder(t *testing.T, l log.Log, n int) map[int]log.Record {
	t.Helper()
	info, err := l.Topic(context.Background(), "mqtt.ingress")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]log.Record{}
	last := map[string]int{}
	for _, p := range info.Partitions {
		recs, err := l.Fetch(context.Background(), "mqtt.ingress", p.Partition, 0, log.FetchOptions{MaxRecords: n})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			i, _ := strconv.Atoi(string(r.Value))
			if _, dup := seen[i]; dup {
				t.Errorf("message %d appended twice", i)
			}
			seen[i] = r
			if prev, ok := last[string(r.Key)]; ok && i <= prev {
				t.Errorf("topic %s: message %d appended after %d", r.Key, i, prev)
			}
			last[string(r.Key)] = i
		}
	}
	if len(seen) != n {
		t.Errorf("log holds %d of %d messages", len(seen), n)
	}
	return seen
}

// TestPipelinedFanOutKeepsPublisherOrder publishes QoS 1 and QoS 0 messages
// without waiting for acknowledgements and checks that a subscriber receives
// each topic's messages of each QoS in the order they were sent
// ([MQTT-4.6.0-6]), although appends to different partitions finish in any
// order.
func TestPipelinedFanOutKeepsPublisherOrder(t *testing.T) {
	l := openPartitionedLog(t, 4)
	b := startBroker(t, testConfig(), l, Options{})
	url := "tcp://" + b.addr("tcp")

	const n = 2000
	var mu sync.Mutex
	got := map[string][]int{}
	done := make(chan struct{})
	total := 0
	sub := rawSubscribe(t, b.addr("tcp"), "order-sub", "order/#")
	go func() {
		for {
			topic, qos, i, err := sub.next()
			if err != nil {
				return
			}
			mu.Lock()
			k := fmt.Sprintf("%s qos %d", topic, qos)
			got[k] = append(got[k], i)
			if total++; total == n {
				close(done)
			}
			mu.Unlock()
		}
	}()

	pub := mustPaho(t, url, "order-pub", func(o *paho.ClientOptions) {
		o.SetOrderMatters(false).SetMaxResumePubInFlight(512)
	})
	var toks []paho.Token
	for i := 0; i < n; i++ {
		qos := byte(1)
		if i%5 == 0 {
			qos = 0
		}
		toks = append(toks, pub.Publish(fmt.Sprintf("order/t%d", i%7), qos, false, strconv.Itoa(i)))
	}
	for i, tk := range toks {
		if !tk.WaitTimeout(testTimeout) || tk.Error() != nil {
			t.Fatalf("publish %d: %v", i, tk.Error())
		}
	}
	select {
	case <-done:
	case <-time.After(testTimeout):
		mu.Lock()
		t.Fatalf("subscriber got %d of %d messages", total, n)
	}
	mu.Lock()
	defer mu.Unlock()
	for topic, seq := range got {
		for k := 1; k < len(seq); k++ {
			if seq[k] <= seq[k-1] {
				t.Fatalf("%s: message %d delivered after %d (%s)", topic, seq[k], seq[k-1], strings.Trim(fmt.Sprint(seq[max(0, k-3):min(len(seq), k+3)]), "[]"))
			}
		}
	}
	if v := b.metric(t, "millstream_mqtt_publishes_appended_total", nil); v != n {
		t.Errorf("publishes_appended_total = %v, want %d", v, n)
	}
}

// TestPublisherGoneBeforeAcks sends a burst of QoS 1 messages and closes the
// connection at once, before any PUBACK can arrive. Whatever the broker read
// before it noticed is appended and still reaches subscribers (it is durable,
// and QoS 1 is at least once; what it did not read was never its
// responsibility), and the broker stays healthy and closes cleanly.
func TestPublisherGoneBeforeAcks(t *testing.T) {
	l := openPartitionedLog(t, 4)
	b := startBroker(t, testConfig(), l, Options{})

	sub := rawSubscribe(t, b.addr("tcp"), "gone-sub", "gone/#")

	const n = 300
	pub := rawConnect(t, b.addr("tcp"), "gone-pub")
	var burst []byte
	for i := 1; i <= n; i++ {
		body := mqttString(fmt.Sprintf("gone/t%d", i%5))
		body = binary.BigEndian.AppendUint16(body, uint16(i))
		burst = append(burst, mqttPacket(0x32, append(body, strconv.Itoa(i)...))...)
	}
	if _, err := pub.Write(burst); err != nil {
		t.Fatal(err)
	}
	pub.Close()
	b.waitMetric(t, "millstream_mqtt_connections", map[string]string{"listener": "tcp"}, 1)

	inLog := func() int {
		info, err := l.Topic(context.Background(), "mqtt.ingress")
		if err != nil {
			t.Fatal(err)
		}
		total := 0
		for _, p := range info.Partitions {
			total += int(p.End - p.Start)
		}
		return total
	}
	seen := map[int]bool{}
	for {
		appended := int(b.metric(t, "millstream_mqtt_publishes_appended_total", nil))
		if appended > 0 && len(seen) == appended && inLog() == appended {
			break
		}
		_, _, i, err := sub.next()
		if err != nil {
			t.Fatalf("subscriber got %d messages, %d appended, %d in the log: %v", len(seen), appended, inLog(), err)
		}
		if seen[i] {
			t.Errorf("message %d delivered twice", i)
		}
		seen[i] = true
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close after the publisher left mid-flight: %v", err)
	}
}

// TestQoS2AmongPipelinedQoS1 mixes QoS 2 and QoS 1 publishes without waiting
// for acknowledgements: QoS 2 takes its turn behind the QoS 1 appends in
// flight, every message is appended once and every token completes.
func TestQoS2AmongPipelinedQoS1(t *testing.T) {
	l := openPartitionedLog(t, 4)
	b := startBroker(t, testConfig(), l, Options{})
	pub := mustPaho(t, "tcp://"+b.addr("tcp"), "mixed-pub", func(o *paho.ClientOptions) { o.SetOrderMatters(false) })

	const n = 400
	var toks []paho.Token
	for i := 0; i < n; i++ {
		qos := byte(1)
		if i%3 == 0 {
			qos = 2
		}
		toks = append(toks, pub.Publish(fmt.Sprintf("mixed/t%d", i%4), qos, false, strconv.Itoa(i)))
	}
	for i, tk := range toks {
		if !tk.WaitTimeout(testTimeout) || tk.Error() != nil {
			t.Fatalf("publish %d (QoS %d): %v", i, 1+btoi(i%3 == 0), tk.Error())
		}
	}
	for i, r := range ingressOnceInOrder(t, l, n) {
		if want := strconv.Itoa(1 + btoi(i%3 == 0)); header(r, HeaderQoS) != want {
			t.Errorf("message %d: mqtt.qos %s, want %s", i, header(r, HeaderQoS), want)
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestPublishFromInside: Broker.Publish reaches subscribers, is retained
// when asked and is appended to the ingress topic like any client's message.
func TestPublishFromInside(t *testing.T) {
	l := openLog(t, t.TempDir())
	b := startBroker(t, testConfig(), l, Options{})
	if err := b.Publish("spBv1.0/STATE/millstream", []byte(`{"online":true}`), true, 1); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	sub := mustPaho(t, "tcp://"+b.addr("tcp"), "inside-sub", nil)
	tok := sub.Subscribe("spBv1.0/STATE/#", 1, func(_ paho.Client, m paho.Message) {
		if m.Retained() {
			got <- string(m.Payload())
		}
	})
	if !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	select {
	case p := <-got:
		if p != `{"online":true}` {
			t.Errorf("retained payload %q", p)
		}
	case <-time.After(testTimeout):
		t.Fatal("retained message not delivered")
	}
	recs := readTopic(t, l, "mqtt.ingress", 1)
	if string(recs[0].Key) != "spBv1.0/STATE/millstream" || header(recs[0], HeaderRetain) != "true" {
		t.Errorf("ingress record %q retain=%s", recs[0].Key, header(recs[0], HeaderRetain))
	}
}

// TestEmptyPasswordIsNoPassword: a CONNECT with the password flag and a
// zero-length password (what Eclipse Tahu's client sends without
// credentials) connects anonymously where anonymous clients are allowed.
func TestEmptyPasswordIsNoPassword(t *testing.T) {
	b := startBroker(t, testConfig(), openLog(t, t.TempDir()), Options{})
	conn, err := net.DialTimeout("tcp", b.addr("tcp"), testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(testTimeout))
	// Flags: username, password, clean session; username "" and password "".
	connect := append(append(mqttString("MQTT"), 4, 0xC2, 0, 60), mqttString("empty-pass")...)
	connect = append(append(connect, mqttString("")...), mqttString("")...)
	if _, err := conn.Write(mqttPacket(0x10, connect)); err != nil {
		t.Fatal(err)
	}
	connack := make([]byte, 4)
	if _, err := io.ReadFull(conn, connack); err != nil || connack[0] != 0x20 || connack[3] != 0 {
		t.Fatalf("CONNACK %x: %v", connack, err)
	}
}

// TestNoLocalAfterPipelinedAck: a message fanned out after its durable append
// keeps its publisher as origin, so an MQTT 5 no-local subscription of the
// publisher does not get its own message back.
func TestNoLocalAfterPipelinedAck(t *testing.T) {
	b := startBroker(t, testConfig(), openLog(t, t.TempDir()), Options{})
	conn, err := net.Dial("tcp", b.addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 10)
	s := paho5.NewClient(paho5.ClientConfig{Conn: conn, PacketTimeout: testTimeout,
		OnPublishReceived: []func(paho5.PublishReceived) (bool, error){func(r paho5.PublishReceived) (bool, error) {
			got <- string(r.Packet.Payload)
			return true, nil
		}}})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, err := s.Connect(ctx, &paho5.Connect{ClientID: "nolocal-self", CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	defer s.Disconnect(&paho5.Disconnect{})
	if _, err := s.Subscribe(ctx, &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{{Topic: "nolocal/#", QoS: 1, NoLocal: true}}}); err != nil {
		t.Fatal(err)
	}
	other := dialV5(t, b.addr("tcp"), "nolocal-other", "", "")
	if _, err := s.Publish(ctx, &paho5.Publish{Topic: "nolocal/own", QoS: 1, Payload: []byte("own")}); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Publish(ctx, &paho5.Publish{Topic: "nolocal/other", QoS: 1, Payload: []byte("other")}); err != nil {
		t.Fatal(err)
	}
	// Deliveries to one client are in order: had its own message been sent
	// to it, it would arrive before the other's.
	select {
	case p := <-got:
		if p != "other" {
			t.Fatalf("the no-local subscriber received %q", p)
		}
	case <-ctx.Done():
		t.Fatal("the other client's message did not arrive")
	}
}

// TestSparkplugMessagesShareTheirNodePartition: with a partitioned ingress
// topic, every message of one Sparkplug edge node (node and device births,
// data, deaths) lands in one partition, in publish order, so that the host
// application reads NBIRTH before DBIRTH and sequence numbers in order.
func TestSparkplugMessagesShareTheirNodePartition(t *testing.T) {
	for topic, want := range map[string]string{
		"spBv1.0/acme/NBIRTH/press7":       "spBv1.0/acme/press7",
		"spBv1.0/acme/DDATA/press7/mold1":  "spBv1.0/acme/press7",
		"spBv1.0/acme/DCMD/press7/mold1/x": "spBv1.0/acme/press7",
		"spBv1.0/STATE/host":               "spBv1.0/STATE/host",
		"spBv1.0/acme":                     "spBv1.0/acme",
		"plant/line1/temp":                 "plant/line1/temp",
	} {
		if got := IngressPartitionKey(topic); got != want {
			t.Errorf("IngressPartitionKey(%q) = %q, want %q", topic, got, want)
		}
	}

	l := openPartitionedLog(t, 8)
	b := startBroker(t, testConfig(), l, Options{})
	topics := []string{"spBv1.0/g/NBIRTH/n1", "spBv1.0/g/DBIRTH/n1/d1", "spBv1.0/g/DBIRTH/n1/d2", "spBv1.0/g/DDATA/n1/d2", "spBv1.0/g/NDATA/n1", "spBv1.0/g/DDATA/n1/d1", "spBv1.0/g/NDEATH/n1"}
	for i, topic := range topics {
		if err := b.Publish(topic, []byte{byte(i)}, false, 1); err != nil {
			t.Fatal(err)
		}
	}
	want := log.PartitionForKey([]byte("spBv1.0/g/n1"), 8)
	recs := readTopicPartition(t, l, "mqtt.ingress", want, len(topics))
	for i, r := range recs {
		if string(r.Key) != topics[i] || r.Value[0] != byte(i) {
			t.Errorf("record %d of partition %d: %s %v, want %s", i, want, r.Key, r.Value, topics[i])
		}
	}
}

// TestManyPublishersAllAcknowledged has 32 publishers, each keeping 16
// messages in flight over a raw MQTT 3.1.1 connection (one in five QoS 0),
// and one subscriber on "#". Every QoS 1 message must be acknowledged, every
// message delivered, each publisher's in order. Acknowledgements of many
// clients finish together here and are fanned out while their records are
// recycled: a lost drain wake-up leaves a publisher waiting for a PUBACK.
func TestManyPublishersAllAcknowledged(t *testing.T) {
	l := openPartitionedLog(t, 2)
	b := startBroker(t, testConfig(), l, Options{})
	const pubs, per, window = 32, 400, 16

	sub := rawSubscribe(t, b.addr("tcp"), "many-sub", "many/#")
	delivered := make(chan error, 1)
	go func() {
		last := map[string]int{}
		for got := 0; got < pubs*per; got++ {
			topic, _, n, err := sub.next()
			if err != nil {
				delivered <- fmt.Errorf("after %d messages: %w", got, err)
				return
			}
			if prev, ok := last[topic]; ok && n <= prev {
				delivered <- fmt.Errorf("%s: message %d delivered after %d", topic, n, prev)
				return
			}
			last[topic] = n
		}
		delivered <- nil
	}()

	var wg sync.WaitGroup
	errs := make(chan error, pubs)
	for p := range pubs {
		conn := rawConnect(t, b.addr("tcp"), fmt.Sprintf("many-pub-%d", p))
		wg.Add(1)
		go func() {
			defer wg.Done()
			topic := mqttString(fmt.Sprintf("many/%d", p))
			r := bufio.NewReader(conn)
			var inflight []uint16 // packet ids awaiting their PUBACK, oldest first
			for i := 0; i < per || len(inflight) > 0; {
				if i < per && len(inflight) < window {
					payload := []byte(strconv.Itoa(i))
					var pk []byte
					if i%5 == 0 {
						pk = mqttPacket(0x30, append(append([]byte{}, topic...), payload...))
					} else {
						id := uint16(i + 1)
						body := append(binary.BigEndian.AppendUint16(append([]byte{}, topic...), id), payload...)
						pk = mqttPacket(0x32, body)
						inflight = append(inflight, id)
					}
					if _, err := conn.Write(pk); err != nil {
						errs <- err
						return
					}
					i++
					continue
				}
				typ, body, err := readPacket(r)
				if err != nil {
					errs <- fmt.Errorf("publisher %d waiting for the PUBACK of %d (%d of %d sent): %w", p, inflight[0], i, per, err)
					return
				}
				if id := binary.BigEndian.Uint16(body); typ != 0x40 || id != inflight[0] {
					errs <- fmt.Errorf("publisher %d: packet %x id %d, want the PUBACK of %d", p, typ, id, inflight[0])
					return
				}
				inflight = inflight[1:]
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := <-delivered; err != nil {
		t.Fatal(err)
	}
}

// slowRead holds one PUBLISH, picked by payload, in the connection's read
// loop for a while: the window in which a reconnecting client's new session
// used to overtake its old connection's last message.
type slowRead struct {
	mqtt.HookBase
	payload string
	d       time.Duration
}

func (h *slowRead) ID() string           { return "test-slow-read" }
func (h *slowRead) Provides(b byte) bool { return b == mqtt.OnPacketRead }
func (h *slowRead) OnPacketRead(_ *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type == packets.Publish && string(pk.Payload) == h.payload {
		time.Sleep(h.d)
	}
	return pk, nil
}

// TestTakeoverKeepsOrder: a client drops its connection and reconnects with
// the same id at once (as a Sparkplug edge node does). Its new session's
// messages are stored after the old connection's last one, although the old
// connection was still processing it when the new one connected. (Under load
// the host saw "seq gap: got 42, want 1" and asked for a rebirth.)
func TestTakeoverKeepsOrder(t *testing.T) {
	l := openLog(t, t.TempDir())
	b := startBroker(t, testConfig(), l, Options{})
	if err := b.srv.AddHook(&slowRead{payload: "old-last", d: 300 * time.Millisecond}, nil); err != nil {
		t.Fatal(err)
	}
	old := rawConnect(t, b.addr("tcp"), "edge")
	if _, err := old.Write(mqttPacket(0x30, append(mqttString("plant/edge"), "old-last"...))); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the old read loop is now holding it
	old.Close()

	// The CONNACK comes once the old connection is done.
	cur := rawConnect(t, b.addr("tcp"), "edge")
	publish := append(binary.BigEndian.AppendUint16(mqttString("plant/edge"), 1), "new-first"...)
	if _, err := cur.Write(mqttPacket(0x32, publish)); err != nil {
		t.Fatal(err)
	}
	if typ, _, err := readPacket(bufio.NewReader(cur)); err != nil || typ>>4 != 4 {
		t.Fatalf("PUBACK: type %x, %v", typ, err)
	}
	var got []string
	for _, r := range readTopic(t, l, "mqtt.ingress", 2) {
		got = append(got, string(r.Value))
	}
	if len(got) < 2 || got[len(got)-2] != "old-last" || got[len(got)-1] != "new-first" {
		t.Errorf("mqtt.ingress holds %q, want old-last before new-first", got)
	}
}
