package kafkaproto

import (
	"bytes"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// SASL: PLAIN against the Authenticator (the MQTT users' bcrypt hashes), and
// SCRAM-SHA-256/512 against credentials derived at enrolment (Options.SCRAM,
// scram.go), which bcrypt hashes cannot provide. Use TLS (Options.TLSConfig)
// so PLAIN does not send passwords in the clear. Re-authentication (KIP-368)
// is not offered: the session lifetime is reported as 0 (unbounded).

const mechPlain = "PLAIN"

func (c *conn) handleSASLHandshake(req *kmsg.SASLHandshakeRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.SASLHandshakeResponse)
	if c.s.opts.Authenticator == nil {
		resp.ErrorCode = codeUnsupportedSASL
		resp.SupportedMechanisms = []string{}
		return resp
	}
	resp.SupportedMechanisms = []string{mechPlain}
	if c.s.opts.SCRAM != nil {
		resp.SupportedMechanisms = append(resp.SupportedMechanisms, MechSCRAMSHA256, MechSCRAMSHA512)
	}
	if c.authenticated || c.saslMechanism != "" {
		resp.ErrorCode = codeIllegalSASLState
		return resp
	}
	if req.Version == 0 {
		// v0 sends the SASL tokens unframed after the handshake; only the
		// SaslAuthenticate framing (v1) is implemented.
		resp.ErrorCode = kerr.UnsupportedVersion.Code
		return resp
	}
	switch {
	case req.Mechanism == mechPlain:
	case c.s.opts.SCRAM != nil && (req.Mechanism == MechSCRAMSHA256 || req.Mechanism == MechSCRAMSHA512):
		c.scram = nil
	default:
		resp.ErrorCode = codeUnsupportedSASL
		return resp
	}
	c.saslMechanism = req.Mechanism
	return resp
}

func (c *conn) handleSASLAuthenticate(req *kmsg.SASLAuthenticateRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
	if (c.saslMechanism == MechSCRAMSHA256 || c.saslMechanism == MechSCRAMSHA512) && !c.authenticated {
		return c.scramStep(req, resp)
	}
	if c.saslMechanism != mechPlain || c.authenticated {
		resp.ErrorCode = codeIllegalSASLState
		resp.ErrorMessage = strPtr("SaslAuthenticate without a SaslHandshake for PLAIN")
		return resp
	}
	// PLAIN (RFC 4616): authzid NUL authcid NUL password.
	parts := bytes.Split(req.SASLAuthBytes, []byte{0})
	if len(parts) != 3 || len(parts[1]) == 0 || len(parts[0]) > 0 && !bytes.Equal(parts[0], parts[1]) {
		c.s.m.authFailures.Inc()
		c.saslMechanism = ""
		resp.ErrorCode = codeSASLAuthFailed
		resp.ErrorMessage = strPtr("malformed PLAIN message (or an authorization id different from the user)")
		return resp
	}
	user, pass := string(parts[1]), string(parts[2])
	if !c.s.opts.Authenticator(user, pass) {
		c.s.m.authFailures.Inc()
		c.saslMechanism = ""
		c.s.logger.Warn("Kafka SASL authentication failed", "remote", c.remote, "user", user)
		resp.ErrorCode = codeSASLAuthFailed
		resp.ErrorMessage = strPtr("authentication failed: invalid username or password")
		return resp
	}
	c.user, c.authenticated = user, true
	return resp
}

// scramStep runs one round trip of a SCRAM exchange.
func (c *conn) scramStep(req *kmsg.SASLAuthenticateRequest, resp *kmsg.SASLAuthenticateResponse) kmsg.Response {
	fail := func(err error) kmsg.Response {
		c.s.m.authFailures.Inc()
		user := ""
		if c.scram != nil {
			user = c.scram.user
		}
		c.s.logger.Warn("Kafka SASL authentication failed", "remote", c.remote, "mechanism", c.saslMechanism, "user", user, "error", err)
		c.saslMechanism, c.scram = "", nil
		resp.ErrorCode = codeSASLAuthFailed
		resp.ErrorMessage = strPtr(err.Error())
		return resp
	}
	if c.scram == nil {
		x := &scramExchange{}
		out, err := x.first(req.SASLAuthBytes, c.s.opts.SCRAM, c.saslMechanism)
		if err != nil {
			return fail(err)
		}
		c.scram = x
		resp.SASLAuthBytes = out
		return resp
	}
	out, err := c.scram.final(req.SASLAuthBytes)
	if err != nil {
		return fail(err)
	}
	c.user, c.authenticated, c.scram = c.scram.user, true, nil
	resp.SASLAuthBytes = out
	return resp
}
