package broker

import (
	"context"
	"errors"
	"sync"
	"syscall"
	"time"
	"unsafe"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/millstream/millstream/log"
)

// Header names of ingress records. See doc.go.
const (
	// HeaderQoS is the QoS the message was published with: "0", "1" or "2".
	HeaderQoS = "mqtt.qos"
	// HeaderRetain is "true" when the retain flag was set, else "false".
	HeaderRetain = "mqtt.retain"
	// HeaderClientID is the publishing client's id.
	HeaderClientID = "mqtt.client_id"
	// HeaderReceivedAt is when the broker received the PUBLISH, RFC 3339 in
	// UTC with nanoseconds. The record timestamp is the same instant in ms.
	HeaderReceivedAt = "mqtt.received_at"
	// HeaderContentType is the MQTT 5 content type, present only when set.
	HeaderContentType = "mqtt.content_type"
	// HeaderUserPropertyPrefix prefixes each MQTT 5 user property: property
	// k=v becomes header "mqtt.user.k" with value v, in the order sent, keys
	// repeated as often as sent.
	HeaderUserPropertyPrefix = "mqtt.user."
	// HeaderWill is "true" on records of will messages (published by the
	// broker when a client disconnected ungracefully), absent otherwise.
	HeaderWill = "mqtt.will"
)

var (
	qosValues  = [3][]byte{[]byte("0"), []byte("1"), []byte("2")}
	valueTrue  = []byte("true")
	valueFalse = []byte("false")
)

// ingestHook appends every PUBLISH to the ingress topic before mochi
// acknowledges it and fans it out (mochi runs OnPublish synchronously in the
// client's read loop, before writing the PUBACK/PUBREC).
//
//   - QoS 1/2: wait until the append is durable. Waiting here also throttles
//     the client: its next packet is read only after this one is durable, and
//     the log's group commit batches the waits of concurrent clients into one
//     fsync.
//   - QoS 0: Produce without waiting. Produce still blocks while the log's
//     buffers are full, which slows the publisher instead of dropping;
//     failures are counted in qos0_dropped_total.
//   - Append failed: no acknowledgement. MQTT 5 clients get PUBACK/PUBREC with
//     a reason code >= 0x80; MQTT 3.1.1 has no negative acknowledgement, so
//     the connection is closed and the client resends after reconnecting.
type ingestHook struct {
	mqtt.HookBase
	b       *Broker
	topic   string
	pool    sync.Pool
	pending sync.WaitGroup // asynchronous appends not yet reported
	dropLog rateLimit
	failLog rateLimit
}

func (h *ingestHook) ID() string { return "millstream-ingest" }

func (h *ingestHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnPublish, mqtt.OnWillSent, mqtt.OnPacketSent, mqtt.OnPublishDropped:
		return true
	}
	return false
}

// ingressRecord is a record with room for its usual headers, allocated once
// and reused through a pool, so OnPublish does not allocate in the common
// case. It is returned to the pool only after the log reported success: a
// record whose append failed may still be referenced by the log.
type ingressRecord struct {
	rec  log.Record
	hdrs [6]log.Header
	ts   [40]byte
	h    *ingestHook
	done func(*log.Record, error) // promise for asynchronous appends, bound once
}

func (h *ingestHook) get() *ingressRecord {
	if ir, ok := h.pool.Get().(*ingressRecord); ok {
		return ir
	}
	ir := &ingressRecord{h: h}
	ir.done = ir.asyncDone
	return ir
}

func (h *ingestHook) put(ir *ingressRecord) {
	ir.rec = log.Record{}
	clear(ir.hdrs[:])
	h.pool.Put(ir)
}

// bytesOf views a string as bytes without copying. The log never modifies
// record bytes, and strings are immutable, so sharing is safe.
func bytesOf(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

func (ir *ingressRecord) fill(topic string, clientID string, pk *packets.Packet, now time.Time, will bool) {
	ir.rec = log.Record{
		Topic:     topic,
		Timestamp: now,
		Key:       bytesOf(pk.TopicName),
		Value:     pk.Payload,
	}
	hs := ir.hdrs[:0]
	hs = append(hs,
		log.Header{Key: HeaderQoS, Value: qosValues[pk.FixedHeader.Qos%3]},
		log.Header{Key: HeaderRetain, Value: valueFalse},
		log.Header{Key: HeaderClientID, Value: bytesOf(clientID)},
		log.Header{Key: HeaderReceivedAt, Value: now.UTC().AppendFormat(ir.ts[:0], time.RFC3339Nano)},
	)
	if pk.FixedHeader.Retain {
		hs[1].Value = valueTrue
	}
	if ct := pk.Properties.ContentType; ct != "" {
		hs = append(hs, log.Header{Key: HeaderContentType, Value: bytesOf(ct)})
	}
	for _, up := range pk.Properties.User {
		hs = append(hs, log.Header{Key: HeaderUserPropertyPrefix + up.Key, Value: bytesOf(up.Val)})
	}
	if will {
		hs = append(hs, log.Header{Key: HeaderWill, Value: valueTrue})
	}
	ir.rec.Headers = hs
}

func (ir *ingressRecord) asyncDone(_ *log.Record, err error) {
	h := ir.h
	if err != nil {
		h.b.metrics.qos0Dropped.Add(1)
		if h.dropLog.allow() {
			h.b.logger.Warn("QoS 0 message not stored: append to the log failed (counted in millstream_mqtt_qos0_dropped_total)",
				"topic", h.topic, "error", err)
		}
	} else {
		h.b.metrics.appended.Add(1)
		h.put(ir)
	}
	h.pending.Done()
}

func (h *ingestHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	now := time.Now()
	if ls := h.b.metrics.byName[cl.Net.Listener]; ls != nil {
		ls.msgsIn.Add(1)
	}
	ir := h.get()
	ir.fill(h.topic, cl.ID, &pk, now, false)
	if pk.FixedHeader.Qos == 0 {
		h.pending.Add(1)
		h.b.log.Produce(h.b.ctx, &ir.rec, ir.done)
		return pk, nil
	}

	err := h.b.log.ProduceSync(h.b.ctx, &ir.rec)
	h.b.metrics.appendWait.Observe(time.Since(now).Seconds())
	if err == nil {
		h.b.metrics.appended.Add(1)
		h.put(ir)
		return pk, nil
	}
	h.b.metrics.appendErrors.Add(1)
	if h.failLog.allow() {
		h.b.logger.Error("MQTT PUBLISH not acknowledged: append to the log failed",
			"client", cl.ID, "topic", pk.TopicName, "qos", pk.FixedHeader.Qos, "protocol", cl.Properties.ProtocolVersion, "error", err)
	}
	if cl.Properties.ProtocolVersion == 5 {
		code := appendFailureCode(err)
		ack := packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Puback},
			PacketID:    pk.PacketID,
			ReasonCode:  code.Code,
			Properties:  packets.Properties{ReasonString: "message not stored: " + code.Reason},
		}
		if pk.FixedHeader.Qos == 2 {
			ack.FixedHeader.Type = packets.Pubrec
		}
		_ = cl.WritePacket(ack)
	} else {
		// MQTT 3.1.1 cannot refuse a PUBLISH: closing the connection leaves
		// the message unacknowledged, so the client sends it again.
		cl.Stop(errors.New("append to log failed; connection closed so the client resends"))
	}
	return pk, packets.ErrRejectPacket // mochi then neither acks nor fans out
}

// appendFailureCode picks the MQTT 5 reason code for a failed append.
func appendFailureCode(err error) packets.Code {
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, log.ErrRecordTooLarge):
		return packets.ErrQuotaExceeded
	case errors.Is(err, context.Canceled), errors.Is(err, log.ErrClosed):
		// 0x8B is not allowed in a PUBACK: unspecified, with the reason.
		return packets.Code{Code: packets.ErrUnspecifiedError.Code, Reason: "server shutting down"}
	}
	return packets.ErrUnspecifiedError
}

// OnWillSent appends a will message the broker published for a client that
// disconnected ungracefully (Sparkplug NDEATH is one). Nobody waits for an
// acknowledgement, so it is appended without waiting, as QoS 0 is.
func (h *ingestHook) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	id := pk.Origin
	if cl != nil {
		id = cl.ID
	}
	ir := h.get()
	ir.fill(h.topic, id, &pk, time.Now(), true)
	h.pending.Add(1)
	h.b.log.Produce(h.b.ctx, &ir.rec, ir.done)
}

func (h *ingestHook) OnPacketSent(cl *mqtt.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type == packets.Publish {
		if ls := h.b.metrics.byName[cl.Net.Listener]; ls != nil {
			ls.msgsOut.Add(1)
		}
	}
}

func (h *ingestHook) OnPublishDropped(*mqtt.Client, packets.Packet) {
	h.b.metrics.deliveryDropped.Add(1)
}
