package broker

import (
	"bytes"
	"testing"

	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
)

func TestStateKeyRoundTrip(t *testing.T) {
	keys := []stateKey{
		{kind: kindClient, client: "dev-1"},
		{kind: kindClient, client: ""},
		{kind: kindSub, client: "dev/1", name: "plant/+/temp"},
		{kind: kindInflight, client: "c", packetID: 65535},
		{kind: kindRetained, name: "a/b"},
		{kind: kindMarker},
	}
	for _, k := range keys {
		got, err := decodeStateKey(k.encode())
		if err != nil {
			t.Fatalf("%+v: %v", k, err)
		}
		if got != k {
			t.Errorf("round trip: got %+v, want %+v", got, k)
		}
	}
	for _, b := range [][]byte{nil, {'X'}, {'S', 5, 'a'}, {'I', 1, 'a', 1}, {'R'}, {'M', 0}, {'S', 0x80, 0x00, 'a', 'b'}} {
		if _, err := decodeStateKey(b); err == nil {
			t.Errorf("decodeStateKey(%q): expected an error", b)
		}
	}
}

func TestStateValueChecksKey(t *testing.T) {
	v, err := encodeStateValue(storage.Subscription{Client: "c", Filter: "a/#", Qos: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeStateValue(stateKey{kind: kindSub, client: "c", name: "a/#"}, v); err != nil {
		t.Fatal(err)
	}
	if _, err := decodeStateValue(stateKey{kind: kindSub, client: "d", name: "a/#"}, v); err == nil {
		t.Error("a subscription stored under another client's key must be rejected")
	}
	m := encodeMessage(storage.InflightKey, "c", packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 7, TopicName: "t", Payload: []byte("x")})
	if _, err := decodeStateValue(stateKey{kind: kindInflight, client: "c", packetID: 7}, m); err != nil {
		t.Fatal(err)
	}
	if _, err := decodeStateValue(stateKey{kind: kindInflight, client: "c", packetID: 8}, m); err == nil {
		t.Error("packet id mismatch must be rejected")
	}
	if _, err := decodeStateValue(stateKey{kind: kindClient, client: "c"}, []byte{9, '{', '}'}); err == nil {
		t.Error("unknown format must be rejected")
	}
}

// FuzzStateRecord feeds arbitrary bytes to the decoders of the state topic,
// which reads what an earlier run (or a damaged disk) left: they must never
// panic, accepted keys must be canonical, and accepted values must re-encode
// to something that decodes to the same entity.
func FuzzStateRecord(f *testing.F) {
	f.Add(stateKey{kind: kindClient, client: "c"}.encode(), []byte("\x01{\"id\":\"c\"}"))
	f.Add(stateKey{kind: kindSub, client: "c", name: "a/#"}.encode(), []byte("\x01{\"client\":\"c\",\"filter\":\"a/#\",\"qos\":1}"))
	f.Add(stateKey{kind: kindInflight, client: "c", packetID: 1}.encode(), []byte("\x01{\"client\":\"c\",\"packet_id\":1,\"fixedheader\":{\"type\":3,\"qos\":1}}"))
	f.Add(stateKey{kind: kindRetained, name: "t"}.encode(), []byte("\x01{\"topic_name\":\"t\",\"fixedheader\":{\"type\":3}}"))
	f.Add([]byte{'M'}, []byte{})
	f.Fuzz(func(t *testing.T, key, value []byte) {
		k, err := decodeStateKey(key)
		if err != nil {
			return
		}
		if !bytes.Equal(k.encode(), key) {
			t.Fatalf("key %q decodes to %+v which encodes to %q", key, k, k.encode())
		}
		v, err := decodeStateValue(k, value)
		if err != nil {
			return
		}
		re, err := encodeStateValue(v)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if _, err := decodeStateValue(k, re); err != nil {
			t.Fatalf("re-encoded value does not decode: %v", err)
		}
	})
}
