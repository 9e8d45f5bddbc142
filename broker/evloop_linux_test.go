//go:build linux

package broker

import (
	"bufio"
	"encoding/binary"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// waitRegistered waits until the event loop reads n connections (a
// connection is registered just after its CONNACK).
func waitRegistered(t *testing.T, b *testBroker, n int) {
	t.Helper()
	for deadline := time.Now().Add(testTimeout); ; time.Sleep(time.Millisecond) {
		b.evloop.mu.Lock()
		registered := len(b.evloop.conns)
		b.evloop.mu.Unlock()
		if registered == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("event loop has %d connections, want %d", registered, n)
		}
	}
}

// TestEventLoopSplitPacketsAndHandOver sends, a few bytes at a time, a mix of
// packets the event loop handles itself (QoS 0/1 PUBLISH) and packets it
// hands to the connection's goroutine (SUBSCRIBE, PINGREQ, QoS 2 PUBLISH,
// PUBREL), with max_inflight 2 so that QoS 1 bursts also wait for free
// slots in the goroutine. Every answer must come back in order and every
// message be stored once, in order.
func TestEventLoopSplitPacketsAndHandOver(t *testing.T) {
	l := openLog(t, t.TempDir())
	cfg := testConfig()
	cfg.Limits.MaxInflight = 2
	b := startBroker(t, cfg, l, Options{})
	conn := rawConnect(t, b.addr("tcp"), "split")

	waitRegistered(t, b, 1)

	var stream []byte
	want := []byte{} // expected answer types, in order
	n := 0
	next := func() string { n++; return strconv.Itoa(n) }
	for i := 0; i < 6; i++ { // a QoS 1 burst beyond the in-flight window
		stream = append(stream, publishPacket("split/a", 1, uint16(n+1), next())...)
		want = append(want, 0x40)
	}
	stream = append(stream, publishPacket("split/a", 0, 0, next())...)
	stream = append(stream, mqttPacket(0x82, append(binary.BigEndian.AppendUint16(nil, 100), append(mqttString("nothing/#"), 1)...))...)
	want = append(want, 0x90)
	stream = append(stream, mqttPacket(0xc0, nil)...) // PINGREQ
	want = append(want, 0xd0)
	qos2 := uint16(n + 1)
	stream = append(stream, publishPacket("split/a", 2, qos2, next())...)
	want = append(want, 0x50)
	stream = append(stream, publishPacket("split/a", 1, uint16(n+1), next())...)
	want = append(want, 0x40)

	written := make(chan error, 1)
	go func() {
		for i := 0; i < len(stream); {
			j := min(len(stream), i+1+i%5)
			if _, err := conn.Write(stream[i:j]); err != nil {
				written <- err
				return
			}
			i = j
			time.Sleep(200 * time.Microsecond)
		}
		written <- nil
	}()
	r := bufio.NewReader(conn)
	for i, w := range want {
		typ, body, err := readPacket(r)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		if typ&0xf0 != w {
			t.Fatalf("answer %d is packet %x, want %x", i, typ, w)
		}
		if w == 0x50 {
			if id := binary.BigEndian.Uint16(body); id != qos2 {
				t.Fatalf("PUBREC for %d, want %d", id, qos2)
			}
			// The PUBREL goes after the rest of the stream (the last
			// PUBLISH's PUBACK and the PUBCOMP may then come in either
			// order).
			if err := <-written; err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Write(mqttPacket(0x62, body[:2])); err != nil {
				t.Fatal(err)
			}
			typ, _, err := readPacket(r)
			if err != nil {
				t.Fatal(err)
			}
			if typ&0xf0 == 0x70 {
				continue // PUBCOMP first; the PUBACK is next in want
			}
			if typ&0xf0 != 0x40 {
				t.Fatalf("after PUBREL: packet %x, want PUBACK or PUBCOMP", typ)
			}
			if typ, _, err := readPacket(r); err != nil || typ&0xf0 != 0x70 {
				t.Fatalf("PUBCOMP: %x %v", typ, err)
			}
			break
		}
	}
	recs := readTopic(t, l, "mqtt.ingress", n)
	for i, rec := range recs {
		if got, want := string(rec.Value), strconv.Itoa(i+1); got != want {
			t.Fatalf("record %d holds %q, want %q", i, got, want)
		}
	}
}

// TestEventLoopKeepalive: a silent client is disconnected after one and a
// half times its keepalive [MQTT-3.1.2-22]; one that pings stays.
func TestEventLoopKeepalive(t *testing.T) {
	l := openLog(t, t.TempDir())
	b := startBroker(t, testConfig(), l, Options{})
	silent := connectKeepalive(t, b.addr("tcp"), "silent", 1)
	pinging := connectKeepalive(t, b.addr("tcp"), "pinging", 1)

	start := time.Now()
	stop := make(chan struct{})
	pinged := make(chan error, 1)
	go func() {
		r := bufio.NewReader(pinging)
		for {
			select {
			case <-stop:
				pinged <- nil
				return
			case <-time.After(400 * time.Millisecond):
			}
			if _, err := pinging.Write(mqttPacket(0xc0, nil)); err != nil {
				pinged <- err
				return
			}
			if typ, _, err := readPacket(r); err != nil || typ != 0xd0 {
				pinged <- errors.Join(err, errors.New("no PINGRESP"))
				return
			}
		}
	}()

	_ = silent.SetReadDeadline(time.Now().Add(15 * time.Second))
	_, err := silent.Read(make([]byte, 1))
	gone := time.Since(start)
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("silent client: read %v after %s, want the broker to close the connection", err, gone)
	}
	if gone < 1400*time.Millisecond || gone > 10*time.Second { // late only on a starved machine
		t.Errorf("silent client closed after %s, want about 1.5 s", gone)
	}
	time.Sleep(time.Second) // the pinging client outlives the silent one's limit twice over
	close(stop)
	if err := <-pinged; err != nil {
		t.Fatalf("pinging client: %v", err)
	}
}

// TestEventLoopFailureFallsBack: if the loop's epoll stops working, its
// clients are disconnected (they reconnect) and new connections are read by
// mochi's goroutine per connection.
func TestEventLoopFailureFallsBack(t *testing.T) {
	l := openLog(t, t.TempDir())
	b := startBroker(t, testConfig(), l, Options{})
	before := rawConnect(t, b.addr("tcp"), "before")
	waitRegistered(t, b, 1)
	_ = b.evloop.epfd.Close() // what the loop cannot recover from

	_ = before.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := before.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("client of the failed loop: read %v, want the connection closed", err)
	}
	if !strings.Contains(b.logs.String(), "MQTT event loop stopped") {
		t.Errorf("no error logged:\n%s", b.logs.String())
	}
	after := rawConnect(t, b.addr("tcp"), "after")
	if _, err := after.Write(publishPacket("fallback/a", 1, 1, "1")); err != nil {
		t.Fatal(err)
	}
	if typ, _, err := readPacket(bufio.NewReader(after)); err != nil || typ != 0x40 {
		t.Fatalf("PUBACK through mochi's reader: %x %v", typ, err)
	}
	b.evloop.mu.Lock()
	n := len(b.evloop.conns)
	b.evloop.mu.Unlock()
	if n != 0 {
		t.Errorf("%d connections registered with the failed loop", n)
	}
}
