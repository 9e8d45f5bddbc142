package broker

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/crypto/bcrypt"
)

// accessHook authenticates CONNECTs, enforces the connection limit, checks
// the ACL and advertises the server's limits to MQTT 5 clients.
//
// Everything that can refuse a CONNECT is decided in OnConnect, which writes
// the CONNACK itself: mochi's own failure path always answers "bad username
// or password" (and maps it to v3 "not authorized"), while a client needs to
// tell wrong credentials from a refused identity or a full server.
type accessHook struct {
	mqtt.HookBase
	b         *Broker
	users     map[string][]byte // username -> bcrypt hash
	acl       *acl
	anonymous atomic.Bool // decided in Start from the bound addresses
	maxConns  int64       // <= 0: unlimited
	maxPacket uint32      // advertised in CONNACK
	inflight  uint16      // send quota per client
	warnLimit rateLimit
}

// dummyHash is compared against for unknown users, so that a failed login
// takes as long whether or not the user exists. Computed on first use: it
// costs as much as a login.
var dummyHash = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("millstream-no-such-user"), bcrypt.DefaultCost)
	return h
})

func (h *accessHook) ID() string { return "millstream-access" }

func (h *accessHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPacketEncode, mqtt.OnDisconnect, mqtt.OnPacketRead:
		return true
	}
	return false
}

// OnPacketRead accepts a CONNECT whose password flag is set with an empty
// password. The password field is then present with length zero, which
// MQTT allows; mochi refuses it as a protocol error, and common clients send
// it (Eclipse Tahu's Sparkplug client always sends a password, empty when
// none is configured). An empty password is treated as no password.
func (h *accessHook) OnPacketRead(_ *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type == packets.Connect && pk.Connect.PasswordFlag && len(pk.Connect.Password) == 0 {
		pk.Connect.PasswordFlag = false
	}
	return pk, nil
}

// v3 CONNACK return codes (MQTT 3.1.1 table 3.1).
const (
	v3ServerUnavailable  = 0x03
	v3BadUsernameOrPass  = 0x04
	v3NotAuthorizedCode  = 0x05
	errConnectRefusedMsg = "connect refused"
)

var errConnectRefused = errors.New(errConnectRefusedMsg)

// refuse writes a failing CONNACK with the right code for the client's
// protocol version and returns the error that makes mochi drop the connection.
func (h *accessHook) refuse(cl *mqtt.Client, v5 packets.Code, v3 byte) error {
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ReasonCode: v3}
	if cl.Properties.ProtocolVersion == 5 {
		ack.ReasonCode = v5.Code
		ack.Properties.ReasonString = v5.Reason
	}
	_ = cl.WritePacket(ack)
	return fmt.Errorf("%w: %s", errConnectRefused, v5.Reason)
}

func (h *accessHook) authFailed(cl *mqtt.Client, reason int, username []byte, why string) {
	h.b.metrics.authFailures[reason].Add(1)
	h.b.logger.Warn("MQTT authentication failed", "client", cl.ID, "remote", cl.Net.Remote,
		"listener", cl.Net.Listener, "username", string(username), "reason", why)
}

func (h *accessHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	// The current connection is counted already (at accept), hence ">".
	if h.maxConns > 0 && h.b.conns.Load() > h.maxConns {
		h.b.metrics.connRejected.Add(1)
		if h.warnLimit.allow() {
			h.b.logger.Warn("MQTT connection refused: mqtt.limits.max_connections reached (raise it, or find the clients that do not disconnect)",
				"limit", h.maxConns, "client", cl.ID, "remote", cl.Net.Remote, "listener", cl.Net.Listener)
		}
		return h.refuse(cl, packets.ErrServerBusy, v3ServerUnavailable)
	}

	username := pk.Connect.Username
	if cert := peerCertificate(cl.Net.Conn); cert != nil {
		cn := cert.Subject.CommonName
		switch {
		case cn == "":
			h.authFailed(cl, authBadCredentials, username, "client certificate has no common name")
			return h.refuse(cl, packets.ErrBadUsernameOrPassword, v3BadUsernameOrPass)
		case len(username) > 0 && string(username) != cn:
			h.authFailed(cl, authBadCredentials, username, "username differs from the client certificate's common name "+cn)
			return h.refuse(cl, packets.ErrBadUsernameOrPassword, v3BadUsernameOrPass)
		}
		// A verified certificate authenticates: its CN is the username.
		cl.Properties.Username = []byte(cn)
	} else if len(username) == 0 {
		if !h.anonymous.Load() {
			h.authFailed(cl, authNotAuthorized, nil, "anonymous access is off (set mqtt.allow_anonymous, or connect with a username)")
			return h.refuse(cl, packets.ErrNotAuthorized, v3NotAuthorizedCode)
		}
	} else {
		hash, ok := h.users[string(username)]
		if !ok {
			_ = bcrypt.CompareHashAndPassword(dummyHash(), pk.Connect.Password)
			h.authFailed(cl, authBadCredentials, username, "unknown user")
			return h.refuse(cl, packets.ErrBadUsernameOrPassword, v3BadUsernameOrPass)
		}
		if err := bcrypt.CompareHashAndPassword(hash, pk.Connect.Password); err != nil {
			h.authFailed(cl, authBadCredentials, username, "wrong password")
			return h.refuse(cl, packets.ErrBadUsernameOrPassword, v3BadUsernameOrPass)
		}
	}

	// mochi publishes wills without an ACL check: check the will topic here,
	// or a client could publish anywhere by disconnecting.
	if pk.Connect.WillFlag && !h.acl.allowPublish(cl.Properties.Username, pk.Connect.WillTopic) {
		h.b.metrics.aclDenials[aclPublish].Add(1)
		h.authFailed(cl, authNotAuthorized, cl.Properties.Username, "the ACL denies publishing to the will topic "+pk.Connect.WillTopic)
		return h.refuse(cl, packets.ErrNotAuthorized, v3NotAuthorizedCode)
	}

	// MQTT 5 clients state a receive maximum, which the server must honour;
	// it is capped at max_inflight. Messages beyond it are parked and sent
	// as acknowledgements free the quota: the path third_party/mochi-mqtt-server
	// patches (PATCHES.md: upstream deadlocked, stalled and reordered there).
	// MQTT 3.1.1 has no receive maximum: those clients get no send quota at
	// all (mochi's default for them), so their messages go straight to the
	// outbound queue, in order, bounded by max_queued_messages.
	var sq uint16
	if cl.Properties.ProtocolVersion == 5 {
		sq = cl.Properties.Props.ReceiveMaximum
		if sq == 0 || sq > h.inflight {
			sq = h.inflight
		}
	}
	cl.State.Inflight.ResetSendQuota(int32(sq))
	return nil
}

// OnConnectAuthenticate accepts: OnConnect has refused everything else.
func (h *accessHook) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

func (h *accessHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if h.acl == nil {
		return true
	}
	if write {
		if h.acl.allowPublish(cl.Properties.Username, topic) {
			return true
		}
		h.b.metrics.aclDenials[aclPublish].Add(1)
		if h.b.aclLog.allow() {
			h.b.logger.Warn("MQTT publish denied by ACL; the message is not stored", "client", cl.ID,
				"username", string(cl.Properties.Username), "topic", topic)
		}
		return false
	}
	if h.acl.allowRead(cl.Properties.Username, topic) {
		return true
	}
	h.b.metrics.aclDenials[aclSubscribe].Add(1)
	return false
}

// OnPacketEncode advertises the maximum packet size in the CONNACK, so MQTT 5
// clients do not send what would get them disconnected.
func (h *accessHook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Connack && pk.ReasonCode < 0x80 && h.maxPacket > 0 {
		pk.Properties.MaximumPacketSize = h.maxPacket
	}
	return pk
}

// OnDisconnect explains the one disconnect mochi does not log.
func (h *accessHook) OnDisconnect(cl *mqtt.Client, err error, _ bool) {
	if errors.Is(err, packets.ErrPacketTooLarge) {
		h.b.logger.Warn("MQTT client disconnected: it sent a packet larger than mqtt.limits.max_packet_size",
			"client", cl.ID, "remote", cl.Net.Remote, "limit", h.maxPacket)
	}
}

// rateLimit lets one event through per interval (10 s), for log lines a
// misbehaving client could otherwise repeat thousands of times a second.
type rateLimit struct{ last atomic.Int64 }

func (r *rateLimit) allow() bool {
	now := time.Now().UnixNano()
	last := r.last.Load()
	return now-last >= int64(10*time.Second) && r.last.CompareAndSwap(last, now)
}

// Authenticate checks a username and password against mqtt.users, for
// other protocols that share the MQTT user model (the Kafka endpoint's SASL
// PLAIN). Unknown users cost as much as known ones.
func (b *Broker) Authenticate(username, password string) bool {
	hash, ok := b.access.users[username]
	if !ok {
		_ = bcrypt.CompareHashAndPassword(dummyHash(), []byte(password))
		return false
	}
	return bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil
}

// Authorize applies mqtt.acl to another protocol's topic names: write is
// checked as an MQTT publish, read as an MQTT subscription to the name.
// A Kafka topic name has no "/", so it is one topic level ("#" and exact
// names match it).
func (b *Broker) Authorize(username, topic string, write bool) bool {
	if write {
		return b.access.acl.allowPublish([]byte(username), topic)
	}
	return b.access.acl.allowRead([]byte(username), topic)
}

// AnonymousAllowed reports whether clients without credentials are let in
// (mqtt.allow_anonymous, or its loopback default), as decided at Start.
func (b *Broker) AnonymousAllowed() bool { return b.access.anonymous.Load() }
