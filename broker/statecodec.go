package broker

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Records of the session state topic.
//
// Key: one kind byte, then
//
//	'C' client id                                   a session (storage.Client)
//	'S' uvarint(len(client id)) client id filter    a subscription (storage.Subscription)
//	'I' uvarint(len(client id)) client id uint16be  an outbound QoS 1/2 message in flight or queued (storage.Message)
//	'R' topic                                       a retained message (storage.Message)
//	'M'                                             snapshot marker (see compact); no value
//
// Value: empty deletes the key; otherwise one format byte (stateFormatJSON)
// followed by the JSON of mochi's storage type, so the records stay readable
// with `millstream replay` and a new format can be added beside it.
const (
	kindClient   byte = 'C'
	kindSub      byte = 'S'
	kindInflight byte = 'I'
	kindRetained byte = 'R'
	kindMarker   byte = 'M'

	stateFormatJSON byte = 1
)

// stateKey is a decoded state record key.
type stateKey struct {
	kind     byte
	client   string // C, S, I
	name     string // S: filter, R: topic
	packetID uint16 // I
}

var errStateKey = errors.New("malformed MQTT state record key")

func (k stateKey) encode() []byte {
	switch k.kind {
	case kindClient:
		return append([]byte{kindClient}, k.client...)
	case kindRetained:
		return append([]byte{kindRetained}, k.name...)
	case kindSub, kindInflight:
		b := make([]byte, 0, 1+binary.MaxVarintLen64+len(k.client)+len(k.name)+2)
		b = append(b, k.kind)
		b = binary.AppendUvarint(b, uint64(len(k.client)))
		b = append(b, k.client...)
		if k.kind == kindSub {
			return append(b, k.name...)
		}
		return binary.BigEndian.AppendUint16(b, k.packetID)
	default:
		return []byte{kindMarker}
	}
}

// decodeStateKey parses a key read from the state topic. Keys are canonical:
// decodeStateKey(b).encode() equals b for every accepted b.
func decodeStateKey(b []byte) (stateKey, error) {
	if len(b) == 0 {
		return stateKey{}, fmt.Errorf("%w: empty", errStateKey)
	}
	k := stateKey{kind: b[0]}
	rest := b[1:]
	switch k.kind {
	case kindMarker:
		if len(rest) != 0 {
			return stateKey{}, fmt.Errorf("%w: marker with %d trailing bytes", errStateKey, len(rest))
		}
		return k, nil
	case kindClient:
		k.client = string(rest)
		return k, validClientID(k.client)
	case kindRetained:
		if len(rest) == 0 || !utf8.Valid(rest) {
			return stateKey{}, fmt.Errorf("%w: retained topic empty or not UTF-8", errStateKey)
		}
		k.name = string(rest)
		return k, nil
	case kindSub, kindInflight:
		n, w := binary.Uvarint(rest)
		if w <= 0 || w != len(binary.AppendUvarint(nil, n)) || n > uint64(len(rest)-w) {
			return stateKey{}, fmt.Errorf("%w: bad client id length", errStateKey)
		}
		k.client = string(rest[w : w+int(n)])
		if err := validClientID(k.client); err != nil {
			return stateKey{}, err
		}
		tail := rest[w+int(n):]
		if k.kind == kindSub {
			if len(tail) == 0 || !utf8.Valid(tail) {
				return stateKey{}, fmt.Errorf("%w: subscription filter empty or not UTF-8", errStateKey)
			}
			k.name = string(tail)
			return k, nil
		}
		if len(tail) != 2 {
			return stateKey{}, fmt.Errorf("%w: inflight packet id must be 2 bytes, got %d", errStateKey, len(tail))
		}
		k.packetID = binary.BigEndian.Uint16(tail)
		return k, nil
	default:
		return stateKey{}, fmt.Errorf("%w: unknown kind 0x%02x", errStateKey, k.kind)
	}
}

func validClientID(id string) error {
	if len(id) > 65535 || !utf8.ValidString(id) {
		return fmt.Errorf("%w: client id longer than 65535 bytes or not UTF-8", errStateKey)
	}
	return nil
}

// encodeStateValue encodes a mochi storage value.
func encodeStateValue(v any) ([]byte, error) {
	j, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append([]byte{stateFormatJSON}, j...), nil
}

// decodeStateValue decodes the value of a non-empty record of kind k.kind and
// checks that it describes the entity its key names. It returns
// *storage.Client, *storage.Subscription or *storage.Message.
func decodeStateValue(k stateKey, b []byte) (any, error) {
	if len(b) == 0 {
		return nil, errors.New("MQTT state record: empty value is a delete, not an entity")
	}
	if b[0] != stateFormatJSON {
		return nil, fmt.Errorf("MQTT state record: unknown value format %d (written by a newer Millstream?)", b[0])
	}
	b = b[1:]
	mismatch := func(what string) error {
		return fmt.Errorf("MQTT state record: value %s does not match its key", what)
	}
	switch k.kind {
	case kindClient:
		var c storage.Client
		if err := json.Unmarshal(b, &c); err != nil {
			return nil, fmt.Errorf("MQTT state record: client: %w", err)
		}
		if c.ID != k.client {
			return nil, mismatch("client id")
		}
		return &c, nil
	case kindSub:
		var s storage.Subscription
		if err := json.Unmarshal(b, &s); err != nil {
			return nil, fmt.Errorf("MQTT state record: subscription: %w", err)
		}
		if s.Client != k.client || s.Filter != k.name {
			return nil, mismatch("client id or filter")
		}
		if s.Qos > 2 {
			return nil, fmt.Errorf("MQTT state record: subscription QoS %d out of range", s.Qos)
		}
		return &s, nil
	case kindInflight, kindRetained:
		var m storage.Message
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, fmt.Errorf("MQTT state record: message: %w", err)
		}
		if m.FixedHeader.Type != packets.Publish || m.FixedHeader.Qos > 2 {
			return nil, fmt.Errorf("MQTT state record: message is not a PUBLISH with QoS 0-2")
		}
		if k.kind == kindInflight && (m.Client != k.client || m.PacketID != k.packetID) {
			return nil, mismatch("client id or packet id")
		}
		if k.kind == kindRetained && m.TopicName != k.name {
			return nil, mismatch("topic")
		}
		return &m, nil
	default:
		return nil, fmt.Errorf("MQTT state record: kind 0x%02x has no value", k.kind)
	}
}
