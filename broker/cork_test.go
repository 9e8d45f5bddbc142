package broker

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// tcpPair returns the server side of a loopback TCP connection wrapped as
// the listener wraps it, and the client side.
func tcpPair(t *testing.T) (*corkConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	cc := newCorkConn(&countingConn{Conn: server, st: &listenerStats{}, total: &atomic.Int64{}})
	if cc.raw == nil {
		t.Fatal("a plain TCP connection has no raw socket for tryWrite")
	}
	return cc, client
}

// TestTryWriteNeverWaits fills a connection whose peer does not read, with
// tryWrite only: every call returns (the socket's refusal starts the
// catch-up writer instead of waiting), a Write that follows waits for the
// catch-up, and the peer then reads every byte in the order written.
func TestTryWriteNeverWaits(t *testing.T) {
	cc, client := tcpPair(t)
	_ = cc.Conn.(*countingConn).Conn.(*net.TCPConn).SetWriteBuffer(4096)
	_ = client.(*net.TCPConn).SetReadBuffer(4096)

	var want bytes.Buffer
	chunk := make([]byte, 1024)
	behind := false
	for i := 0; !behind; i++ {
		if i == 64<<10 {
			t.Fatal("64 MiB written to a peer that reads nothing and the socket never refused: the test's buffers are too big")
		}
		for j := range chunk {
			chunk[j] = byte(i + j)
		}
		done := make(chan bool, 1)
		go func() { done <- cc.tryWrite(chunk) }()
		select {
		case ok := <-done:
			if !ok {
				t.Fatalf("tryWrite %d refused with no other writer", i)
			}
		case <-time.After(testTimeout):
			t.Fatalf("tryWrite %d waited for a peer that does not read", i)
		}
		want.Write(chunk)
		cc.mu.Lock()
		behind = cc.behind
		cc.mu.Unlock()
	}
	// Still behind: more tryWrites queue behind the catch-up, up to
	// maxBehind; beyond it they are refused, so that a client that never
	// reads is slowed down by its caller instead of growing the buffer.
	more := []byte("queued behind the catch-up")
	if !cc.tryWrite(more) {
		t.Fatal("tryWrite refused while the catch-up runs")
	}
	want.Write(more)
	// The catch-up goroutine holds at most one taken buffer while it waits
	// for the peer, so 1 KiB chunks are refused within 2 x maxBehind.
	refused := false
	for i := 0; i < 2*maxBehind/len(chunk)+2 && !refused; i++ {
		if cc.tryWrite(chunk) {
			want.Write(chunk)
		} else {
			refused = true
		}
	}
	if !refused {
		t.Fatalf("tryWrite queued %d KiB behind the catch-up; the bound is %d KiB", 2*maxBehind/1024+2, maxBehind/1024)
	}
	last := []byte("written with Write after everything else")
	wrote := make(chan error, 1)
	go func() { _, err := cc.Write(last); wrote <- err }()
	want.Write(last)

	got := make([]byte, want.Len())
	_ = client.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := io.ReadFull(client, got); err != nil {
		t.Fatalf("reading %d bytes: %v", want.Len(), err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		i := 0
		for i < len(got) && got[i] == want.Bytes()[i] {
			i++
		}
		t.Fatalf("the peer read the bytes out of order: first difference at byte %d of %d", i, len(got))
	}
	st := cc.Conn.(*countingConn).st
	if n := st.bytesOut.Load(); n != uint64(want.Len()) {
		t.Errorf("bytes out counted %d, want %d", n, want.Len())
	}
	if n := st.writeStalls.Load(); n != 1 {
		t.Errorf("write stalls counted %d, want 1 (one catch-up)", n)
	}
}

// TestTryWriteDefersWhenItCannotTry: another writer holding the connection
// (mochi writing a delivery, perhaps blocked on a full socket) and a
// connection that is not plain TCP both make tryWrite refuse, writing
// nothing, so its caller can hand the write to a goroutine that may wait.
func TestTryWriteDefersWhenItCannotTry(t *testing.T) {
	cc, _ := tcpPair(t)
	cc.mu.Lock()
	ok := cc.tryWrite([]byte{1})
	cc.mu.Unlock()
	if ok {
		t.Error("tryWrite wrote while another writer held the connection")
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if newCorkConn(a).tryWrite([]byte{1}) {
		t.Error("tryWrite wrote to a connection that is not plain TCP")
	}
}

// TestStalledClientHoldsUpNoOtherPublisher: a client subscribed to what it
// publishes stops reading, so its deliveries fill its socket and mochi's
// writer blocks on it holding the connection. Its PUBACKs cannot be written
// without waiting, and another client's QoS 1 publishes, also delivered to
// the stalled one, must still be acknowledged: the goroutine that
// acknowledges and fans out for both (their fanner) must not wait for the
// stalled one. (mochi's NextPacketID waited for the stalled writer: patch
// 12 in third_party/mochi-mqtt-server/PATCHES.md.)
func TestStalledClientHoldsUpNoOtherPublisher(t *testing.T) {
	l := openLog(t, t.TempDir())
	b := startBroker(t, testConfig(), l, Options{})

	stalled := rawSubscribe(t, b.addr("tcp"), "stalled", "bulk/#")
	_ = stalled.conn.(*net.TCPConn).SetReadBuffer(4096)
	payload := bytes.Repeat([]byte("x"), 32<<10)
	go func() {
		for i := 1; i <= 400; i++ {
			body := append(mqttString("bulk/x"), byte(i>>8), byte(i))
			if _, err := stalled.conn.Write(mqttPacket(0x32, append(body, payload...))); err != nil {
				return // the broker stopped reading it or the test ended
			}
		}
	}()
	// Wait until the stalled client's socket is full: the broker's bytes
	// out stop growing (12 MiB of deliveries cannot all fit in a socket
	// whose reader takes nothing).
	deadline := time.Now().Add(testTimeout)
	tcp := map[string]string{"listener": "tcp"}
	for last := -1.0; ; {
		time.Sleep(200 * time.Millisecond)
		n := b.metric(t, "millstream_mqtt_sent_bytes_total", tcp)
		if n == last && n > 64<<10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stalled client's socket never filled up (%v bytes sent to it)", n)
		}
		last = n
	}

	// The healthy client publishes where the stalled one subscribes: each
	// message is also queued for the stalled client (or dropped for it),
	// never waited for.
	c := mustPaho(t, "tcp://"+b.addr("tcp"), "healthy", func(o *paho.ClientOptions) { o.SetWriteTimeout(testTimeout) })
	for i := range 200 {
		if err := publish(t, c, "bulk/healthy", 1, false, fmt.Sprint(i)); err != nil {
			t.Fatalf("publish %d of a healthy client while another is stalled: %v", i, err)
		}
	}
}
