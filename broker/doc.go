// Package broker is Millstream's MQTT broker: MQTT 3.1.1 and 5 over TCP and
// WebSocket (each optionally with TLS), built on the mochi-mqtt v2 library,
// with every message appended to the log before it is acknowledged.
//
// # Durable acknowledgement
//
// Every PUBLISH a client sends is appended to the log topic
// config.MQTT.IngressTopic ("mqtt.ingress" by default, created when absent
// with the log's default partitions and retention). The record key is the
// MQTT topic, so one topic's messages stay in order in one partition; the
// value is the payload exactly as received; the timestamp is the receive time.
//
//   - QoS 1 and 2: the PUBACK (PUBREC) is written only after the append is
//     durable under the log's fsync policy. Appends are pipelined: a client
//     may have up to mqtt.limits.max_inflight appends in flight (its receive
//     maximum), so one busy publisher fills a group commit by itself and many
//     publishers share one fsync. Acknowledgements and fan-out to subscribers
//     follow the order the client sent in, whatever order the appends finish
//     in. A client at its limit is not read from until an append finishes:
//     the log's pace throttles publishers.
//   - If the append fails the message is not acknowledged: an MQTT 5 client
//     gets PUBACK/PUBREC with reason 0x97 (quota exceeded: disk full, record
//     too large) or 0x80 (anything else) and a reason string; an MQTT 3.1.1
//     client, which has no negative acknowledgement, is disconnected and
//     resends after reconnecting. Nothing acknowledged is lost.
//   - QoS 0 is appended without waiting for durability, but the append still
//     blocks while the log's buffers are full, slowing the publisher rather
//     than dropping. An append that fails is counted in
//     millstream_mqtt_qos0_dropped_total.
//   - Will messages the broker publishes for a client that went away are
//     appended too (without waiting), marked with the mqtt.will header.
//
// QoS 2 is exactly-once while the broker runs (a resent PUBLISH whose PUBREC
// is pending is recognised); across a broker restart it is at-least-once: a
// client that did not receive the PUBREC before the restart resends, and the
// message is appended again.
//
// # Reading connections
//
// On Linux, plain TCP connections are read by one event loop (eventLoop: an
// epoll instance of its own, registered with Go's network poller) instead of
// a goroutine each: one wake-up serves every connection with data, and each
// is read only when epoll says it has some, which halves the read system
// calls of small, steady publishes. The loop handles the packets that cannot
// block (valid QoS 0/1 PUBLISHes with a free in-flight slot that the ACL
// allows, PUBACKs) and hands any other packet, and the connection with it, to
// the connection's own goroutine until that packet is handled, so packets are
// always handled in the order sent. TLS and WebSocket connections, and other
// systems, are read by mochi's goroutine per connection.
//
// # Record headers
//
//	mqtt.qos          "0", "1" or "2"
//	mqtt.retain       "true" or "false"
//	mqtt.client_id    the publishing client's id
//	mqtt.received_at  receive time, RFC 3339, UTC, nanoseconds
//	mqtt.content_type MQTT 5 content type (only when set)
//	mqtt.user.<key>   one header per MQTT 5 user property, in order, repeated keys kept
//	mqtt.will         "true" on will messages (absent otherwise)
//
// The names are the Header* constants.
//
// # Sessions and retained messages
//
// Persistent sessions (MQTT 3.1.1 clean session false, MQTT 5 session expiry
// > 0: the client, its subscriptions and the QoS 1/2 messages in flight to it
// or queued while it is offline) and retained messages are kept in the log
// topic "__mqtt.state" (one partition, unlimited retention). Each record's key
// names one entity and its value is the entity's state (the JSON of mochi's
// storage types behind a format byte) or empty for a deletion. On Start the
// topic is replayed and handed to mochi, so sessions and retained messages
// survive a restart. When the topic has grown well beyond the live state, a
// snapshot of the live state is appended after a marker record and
// everything before the marker is deleted (log.DeleteRecordsBefore).
//
// State writes do not wait for fsync, so fan-out to subscribers never waits
// for bookkeeping; a crash can lose the last moments of session changes, never
// a message acknowledged to a publisher (that lives in the ingress topic).
// Sessions that end with their connection (clean sessions) are not written at
// all. Inbound acknowledgement state is not stored either. A QoS 1/2 message
// to a persistent session costs two small state records (stored, then deleted
// on acknowledgement), whether the client is online or not; clean-session
// subscribers cost none. The expiry of a session restored at start counts
// from the restart (mochi keeps no disconnect time).
//
// # Authentication and authorization
//
// Users are config.MQTT.Users with bcrypt password hashes. Clients without a
// username are allowed only when config.MQTT.AllowAnonymous is true or, when
// it is unset, when every listener is bound to a loopback address. On a TLS
// listener with a client CA, a verified client certificate authenticates its
// client and its common name is the username. A refused CONNECT gets CONNACK
// "bad username or password" (v5 0x86, v3 4) for wrong credentials and "not
// authorized" (v5 0x87, v3 5) for anonymous clients or a will topic the ACL
// denies; it is logged at warn with client id, remote address and username
// (never the password).
//
// config.MQTT.ACL rules are evaluated in order; the first rule whose user and
// topic filters match decides, deny winning over allow within a rule; without
// a matching rule access is denied, and without any rules everything is
// allowed. A subscription is granted only when every topic it can match is
// allowed (see acl for the exact semantics), and every delivery is checked
// again. A denied PUBLISH is not appended: QoS 0 is dropped, an MQTT 5 client
// gets PUBACK/PUBREC 0x87, an MQTT 3.1.1 client is disconnected (mochi's
// behaviour). Denied subscriptions get SUBACK 0x87 (v3: 0x80).
//
// # Limits
//
// config.MQTT.Limits map onto mochi: MaxPacketSize (larger packets disconnect
// their client, and MQTT 5 clients are told the limit in the CONNACK),
// MaxConnections (network connections over all listeners; beyond it CONNACK
// "server unavailable" (v3) / "server busy" (v5)), MaxInflight (receive
// maximum, and the send quota per client), MaxSessionExpiry and
// MaxQueuedMessages (at most 65535). Zero values take config.Default's.
//
// # Metrics
//
// Per listener (labels listener, type): millstream_mqtt_messages_received_total,
// millstream_mqtt_messages_sent_total, millstream_mqtt_received_bytes_total,
// millstream_mqtt_sent_bytes_total, millstream_mqtt_connections. Totals:
// millstream_mqtt_publishes_appended_total, millstream_mqtt_append_errors_total,
// millstream_mqtt_qos0_dropped_total, millstream_mqtt_delivery_dropped_total,
// millstream_mqtt_auth_failures_total{reason}, millstream_mqtt_acl_denials_total{action},
// millstream_mqtt_connections_rejected_total, millstream_mqtt_inflight_messages,
// millstream_mqtt_append_wait_seconds (histogram: from reading a QoS 1/2 PUBLISH to
// acknowledging it), millstream_mqtt_ack_handoff_seconds (histogram: the part of that
// after the append was durable), millstream_mqtt_state_records_written_total,
// millstream_mqtt_state_write_errors_total, millstream_mqtt_state_compactions_total,
// millstream_mqtt_persistent_sessions, millstream_mqtt_retained_messages.
package broker
