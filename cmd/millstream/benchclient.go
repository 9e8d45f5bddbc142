package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// benchConn is the MQTT 3.1.1 client of `millstream bench ingest`.
//
// It is deliberately lean. The load generator shares the machine with the
// broker under test, and the paho client it used before spent more CPU per
// message than either broker (about 60 µs at 64 publishers on 2 cores,
// against 30-65 µs for Millstream and 30-45 µs for mosquitto), so on a small
// machine it, not the broker, set the peak and the latency at half load.
// Packets are encoded and decoded with mochi's codec (the packets package),
// not by hand. Each PUBLISH is its own write, as a device sends it; reads are
// buffered.
type benchConn struct {
	conn net.Conn
	r    *bufio.Reader
	rx   *rxReader // under r when the kernel gives receive timestamps, else nil

	wmu  sync.Mutex
	wbuf bytes.Buffer // under wmu

	body []byte // read scratch: only the reading goroutine uses it
}

// benchKeepalive is the keepalive the bench connects with; a PINGREQ goes
// every half of it, so even a 10-minute phase keeps its connections.
const benchKeepalive = 60 * time.Second

// dialBench connects and logs in with a clean session. Broker URLs are
// tcp://host:port (or mqtt://) and tls://host:port (or ssl://, mqtts://).
func dialBench(ctx context.Context, broker, id, username, password string) (*benchConn, error) {
	u, err := url.Parse(broker)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("%w: --broker %q: use tcp://host:port or tls://host:port", errUsage, broker)
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	var c net.Conn
	switch u.Scheme {
	case "tcp", "mqtt":
		c, err = d.DialContext(ctx, "tcp", u.Host)
	case "tls", "ssl", "mqtts":
		td := &tls.Dialer{NetDialer: d, Config: &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12}}
		c, err = td.DialContext(ctx, "tcp", u.Host)
	default:
		return nil, fmt.Errorf("%w: --broker %q: scheme %q is not supported; use tcp://host:port or tls://host:port", errUsage, broker, u.Scheme)
	}
	if err != nil {
		return nil, fmt.Errorf("connect %s to %s: %w", id, broker, err)
	}
	bc := &benchConn{conn: c}
	if rx, ok := newRxReader(c); ok {
		bc.rx, bc.r = rx, bufio.NewReaderSize(rx, 64<<10)
	} else {
		bc.r = bufio.NewReaderSize(c, 64<<10)
	}
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 4,
		Connect: packets.ConnectParams{
			ProtocolName:     []byte("MQTT"),
			Clean:            true,
			Keepalive:        uint16(benchKeepalive / time.Second),
			ClientIdentifier: id,
		},
	}
	if username != "" {
		pk.Connect.UsernameFlag, pk.Connect.Username = true, []byte(username)
		pk.Connect.PasswordFlag, pk.Connect.Password = true, []byte(password)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := bc.write(&pk); err != nil {
		c.Close()
		return nil, fmt.Errorf("connect %s to %s: %w", id, broker, err)
	}
	ack, err := bc.read()
	if err == nil && ack.FixedHeader.Type != packets.Connack {
		err = fmt.Errorf("expected CONNACK, got packet type %d", ack.FixedHeader.Type)
	}
	if err == nil && ack.ReasonCode != 0 {
		err = fmt.Errorf("connection refused with return code %d (4: bad user name or password, 5: not authorized)", ack.ReasonCode)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("connect %s to %s: %w", id, broker, err)
	}
	_ = c.SetDeadline(time.Time{})
	return bc, nil
}

// encode appends pk to the write buffer; the caller holds wmu.
func (bc *benchConn) encode(pk *packets.Packet) error {
	pk.ProtocolVersion = 4
	switch pk.FixedHeader.Type {
	case packets.Connect:
		return pk.ConnectEncode(&bc.wbuf)
	case packets.Publish:
		return pk.PublishEncode(&bc.wbuf)
	case packets.Puback:
		return pk.PubackEncode(&bc.wbuf)
	case packets.Subscribe:
		pk.FixedHeader.Qos = 1 // [MQTT-3.8.1-1]: flags 0010
		return pk.SubscribeEncode(&bc.wbuf)
	case packets.Pingreq:
		return pk.PingreqEncode(&bc.wbuf)
	case packets.Disconnect:
		return pk.DisconnectEncode(&bc.wbuf)
	}
	return fmt.Errorf("bench client cannot send packet type %d", pk.FixedHeader.Type)
}

// write sends one packet in one write.
func (bc *benchConn) write(pk *packets.Packet) error {
	bc.wmu.Lock()
	defer bc.wmu.Unlock()
	if err := bc.encode(pk); err != nil {
		bc.wbuf.Reset()
		return err
	}
	return bc.flushLocked()
}

func (bc *benchConn) flushLocked() error {
	_, err := bc.conn.Write(bc.wbuf.Bytes())
	bc.wbuf.Reset()
	return err
}

// read reads the next packet. Its payload (for a PUBLISH) is valid only
// until the next read.
func (bc *benchConn) read() (packets.Packet, error) {
	var pk packets.Packet
	pk.ProtocolVersion = 4
	hb, err := bc.r.ReadByte()
	if err != nil {
		return pk, err
	}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		return pk, err
	}
	n, _, err := packets.DecodeLength(bc.r)
	if err != nil {
		return pk, err
	}
	if cap(bc.body) < n {
		bc.body = make([]byte, n)
	}
	body := bc.body[:n]
	if _, err := io.ReadFull(bc.r, body); err != nil {
		return pk, err
	}
	pk.FixedHeader.Remaining = n
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Pingresp:
	default:
		err = fmt.Errorf("unexpected packet type %d", pk.FixedHeader.Type)
	}
	return pk, err
}

// received is when the kernel received the newest bytes the last read
// returned, or zero when it does not say (see rxReader). Only the reading
// goroutine may call it.
func (bc *benchConn) received() time.Time {
	if bc.rx == nil {
		return time.Time{}
	}
	return bc.rx.lastRx()
}

// keepAlive sends a PINGREQ every half keepalive until ctx ends.
func (bc *benchConn) keepAlive(ctx context.Context) {
	t := time.NewTicker(benchKeepalive / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if bc.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}}) != nil {
				return
			}
		}
	}
}

// close disconnects politely and closes the connection.
func (bc *benchConn) close() {
	_ = bc.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_ = bc.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	_ = bc.conn.Close()
}

// subscribe subscribes to filter and waits for the SUBACK. Nothing else may
// be read from the connection before it returns.
func (bc *benchConn) subscribe(filter string, qos byte) error {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe},
		PacketID:    1,
		Filters:     packets.Subscriptions{{Filter: filter, Qos: qos}},
	}
	_ = bc.conn.SetDeadline(time.Now().Add(5 * time.Second))
	defer func() { _ = bc.conn.SetDeadline(time.Time{}) }()
	if err := bc.write(&pk); err != nil {
		return fmt.Errorf("subscribe %s: %w", filter, err)
	}
	ack, err := bc.read()
	switch {
	case err != nil:
		return fmt.Errorf("subscribe %s: %w", filter, err)
	case ack.FixedHeader.Type != packets.Suback || ack.PacketID != 1 || len(ack.ReasonCodes) != 1:
		return fmt.Errorf("subscribe %s: unexpected answer (packet type %d)", filter, ack.FixedHeader.Type)
	case ack.ReasonCodes[0] >= 0x80:
		return fmt.Errorf("subscribe %s: refused by the broker (code 0x%02x)", filter, ack.ReasonCodes[0])
	}
	return nil
}

// receive counts the PUBLISH packets that arrive until the connection is
// closed, acknowledging each QoS 1 one at once, in its own write, as paho
// and libmosquitto do. (Writing the PUBACKs of one read together costs the
// bench less, but a broker that sends only up to its inflight limit, as
// mosquitto does with 20, then waits for the whole batch, which halved
// mosquitto's delivery rate.)
func (bc *benchConn) receive(count func(payload []byte)) error {
	for {
		pk, err := bc.read()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if pk.FixedHeader.Type != packets.Publish {
			continue // PINGRESP
		}
		count(pk.Payload)
		if pk.FixedHeader.Qos == 0 {
			continue
		}
		if err := bc.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID}); err != nil {
			return err
		}
	}
}
