package broker

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// bytesConn is a net.Conn that reads from a byte slice, for mochi's own
// read path.
type bytesConn struct {
	net.Conn
	r *bytes.Reader
}

func (c *bytesConn) Read(p []byte) (int, error)         { return c.r.Read(p) }
func (c *bytesConn) RemoteAddr() net.Addr               { return &net.TCPAddr{} }
func (c *bytesConn) SetDeadline(time.Time) error        { return nil }
func (c *bytesConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *bytesConn) SetWriteDeadline(t time.Time) error { return nil }

func fuzzClient(srv *mqtt.Server, data []byte, version byte) *mqtt.Client {
	cl := srv.NewClient(&bytesConn{r: bytes.NewReader(data)}, "fuzz", "fuzz", false)
	cl.Properties.ProtocolVersion = version
	return cl
}

// FuzzParsePacket checks the event loop's decoder (mochi's ParsePacket, a
// Millstream patch) against mochi's own reader on the same bytes: the same
// packets, the same sizes, an error where the reader has one, never a
// packet from bytes that do not hold all of it, and no panic.
func FuzzParsePacket(f *testing.F) {
	f.Add(publishPacket("a/b", 1, 7, "hello"), byte(4))
	f.Add(append(publishPacket("a", 0, 0, "x"), mqttPacket(0xc0, nil)...), byte(4))
	f.Add(mqttPacket(0x82, append([]byte{0, 1}, append(mqttString("t/#"), 1)...)), byte(4))
	f.Add(mqttPacket(0x40, []byte{0, 9}), byte(5))
	f.Add([]byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x7f}, byte(4))
	f.Add([]byte{0x32, 0x80}, byte(5))
	f.Add(mqttPacket(0x32, append(mqttString("big"), make([]byte, 300)...)), byte(5))
	srv := mqtt.New(&mqtt.Options{Capabilities: func() *mqtt.Capabilities {
		c := mqtt.NewDefaultServerCapabilities()
		c.MaximumPacketSize = 256
		return c
	}()})
	f.Fuzz(func(t *testing.T, data []byte, version byte) {
		version = 3 + version%3
		parsed := fuzzClient(srv, nil, version)
		reader := fuzzClient(srv, data, version)
		rest := data
		for len(rest) > 0 {
			pk, n, err := parsed.ParsePacket(rest)
			var fh packets.FixedHeader
			rerr := reader.ReadFixedHeader(&fh)
			var rpk packets.Packet
			if rerr == nil {
				rpk, rerr = reader.ReadPacket(&fh)
			}
			if err != nil {
				if rerr == nil {
					t.Fatalf("ParsePacket: %v; mochi's reader decoded packet type %d", err, rpk.FixedHeader.Type)
				}
				return
			}
			if n == 0 {
				// Not a whole packet yet: the reader runs out of bytes (or
				// stops at the same error ParsePacket would report with more).
				if rerr == nil {
					t.Fatalf("ParsePacket wants more bytes; the reader decoded packet type %d from %d bytes", rpk.FixedHeader.Type, len(rest))
				}
				if rerr != io.EOF && rerr != io.ErrUnexpectedEOF {
					return // the reader failed on the body before its end
				}
				return
			}
			if n > len(rest) {
				t.Fatalf("ParsePacket took %d bytes of %d", n, len(rest))
			}
			if rerr != nil {
				t.Fatalf("ParsePacket decoded packet type %d from %d bytes; the reader: %v", pk.FixedHeader.Type, n, rerr)
			}
			if pk.FixedHeader != rpk.FixedHeader || pk.PacketID != rpk.PacketID || pk.TopicName != rpk.TopicName || !bytes.Equal(pk.Payload, rpk.Payload) {
				t.Fatalf("ParsePacket %+v, reader %+v", pk.FixedHeader, rpk.FixedHeader)
			}
			// The packet must not share the caller's buffer.
			if len(pk.Payload) > 0 {
				for i := range rest[:n] {
					rest[i] ^= 0xff
				}
				if !bytes.Equal(pk.Payload, rpk.Payload) {
					t.Fatal("the packet's payload changed with the input buffer")
				}
			}
			rest = rest[n:]
		}
	})
}

// publishPacket frames a PUBLISH.
func publishPacket(topic string, qos byte, id uint16, payload string) []byte {
	body := mqttString(topic)
	if qos > 0 {
		body = binary.BigEndian.AppendUint16(body, id)
	}
	return mqttPacket(0x30|qos<<1, append(body, payload...))
}

// TestMalformedSubscribeV5 sends an MQTT 5 SUBSCRIBE whose filter lacks its
// options byte, which made mochi index past the packet and panic (found by
// FuzzParsePacket): the client is disconnected and the broker serves on.
func TestMalformedSubscribeV5(t *testing.T) {
	l := openLog(t, t.TempDir())
	b := startBroker(t, testConfig(), l, Options{})
	conn, err := net.DialTimeout("tcp", b.addr("tcp"), testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(testTimeout))
	connect := append(append(mqttString("MQTT"), 5, 0x02, 0, 60, 0), mqttString("bad-sub")...)
	if _, err := conn.Write(mqttPacket(0x10, connect)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	if typ, _, err := readPacket(r); err != nil || typ != 0x20 {
		t.Fatalf("CONNACK: %x %v", typ, err)
	}
	sub := append([]byte{0, 1, 0}, mqttString("a/b")...) // id, no properties, filter, no options
	if _, err := conn.Write(mqttPacket(0x82, sub)); err != nil {
		t.Fatal(err)
	}
	for {
		if _, _, err := readPacket(r); err != nil {
			break // closed, after a DISCONNECT if any
		}
	}
	// Still serving.
	c := rawConnect(t, b.addr("tcp"), "after")
	if _, err := c.Write(publishPacket("a/b", 1, 1, "x")); err != nil {
		t.Fatal(err)
	}
	if typ, _, err := readPacket(bufio.NewReader(c)); err != nil || typ != 0x40 {
		t.Fatalf("PUBACK after the malformed SUBSCRIBE: %x %v", typ, err)
	}
}
