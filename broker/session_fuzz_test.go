package broker

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"
)

// FuzzSession sends arbitrary bytes after a valid CONNECT (MQTT 3.1.1 or 5)
// to a running broker, and then a PINGREQ. Whatever the bytes, the broker
// must not panic (the test binary would die), must answer or close the
// connection, and must keep serving: a new client still gets its QoS 1
// PUBLISH acknowledged. It drives mochi's decoders and packet handling and
// the event loop's framing and hand-overs.
func FuzzSession(f *testing.F) {
	f.Add(false, publishPacket("a/b", 1, 1, "x"))
	f.Add(true, mqttPacket(0x82, append([]byte{0, 1, 0}, mqttString("a/b")...)))
	f.Add(false, mqttPacket(0x82, append([]byte{0, 1}, append(mqttString("a/#"), 1)...)))
	f.Add(true, append(publishPacket("c", 2, 9, "q2"), mqttPacket(0x62, []byte{0, 9})...))
	f.Add(false, mqttPacket(0xa2, append([]byte{0, 2}, mqttString("a/#")...)))
	f.Add(true, []byte{0xe0, 0})
	l := openLog(f, f.TempDir())
	cfg := testConfig()
	cfg.Limits.MaxPacketSize = 4096
	b := startBroker(f, cfg, l, Options{})
	addr := b.addr("tcp")
	f.Fuzz(func(t *testing.T, v5 bool, data []byte) {
		conn, err := net.DialTimeout("tcp", addr, testTimeout)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(testTimeout))
		connect := append(mqttString("MQTT"), 4, 0x02, 0, 30)
		if v5 {
			connect = append(mqttString("MQTT"), 5, 0x02, 0, 30, 0)
		}
		if _, err := conn.Write(mqttPacket(0x10, append(connect, mqttString("fuzz")...))); err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(conn)
		if typ, _, err := readPacket(r); err != nil || typ != 0x20 {
			t.Fatalf("CONNACK: %x %v", typ, err)
		}
		_, _ = conn.Write(append(append([]byte(nil), data...), 0xc0, 0))
		// Until the PINGRESP or the end of the connection; a PINGREQ
		// swallowed by an unfinished packet leaves both waiting, bounded.
		_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		for {
			typ, _, err := readPacket(r)
			if err != nil || typ == 0xd0 {
				break
			}
		}
		_ = conn.Close()

		check, err := net.DialTimeout("tcp", addr, testTimeout)
		if err != nil {
			t.Fatalf("broker stopped accepting: %v", err)
		}
		defer check.Close()
		_ = check.SetDeadline(time.Now().Add(testTimeout))
		if _, err := check.Write(mqttPacket(0x10, append(append(mqttString("MQTT"), 4, 0x02, 0, 30), mqttString("fuzz-check")...))); err != nil {
			t.Fatal(err)
		}
		cr := bufio.NewReader(check)
		if typ, _, err := readPacket(cr); err != nil || typ != 0x20 {
			t.Fatalf("broker no longer connects clients: %x %v", typ, err)
		}
		if _, err := check.Write(publishPacket("fuzz/check", 1, 1, "ok")); err != nil {
			t.Fatal(err)
		}
		for {
			typ, _, err := readPacket(cr)
			if err == io.EOF || err != nil {
				t.Fatalf("broker no longer acknowledges: %v", err)
			}
			if typ == 0x40 {
				break
			}
		}
	})
}
