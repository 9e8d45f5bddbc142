package kafkaproto

import (
	"bytes"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// SASL: PLAIN only. SCRAM needs keys derived from the password with a salt
// and iteration count chosen at enrolment, which the bcrypt hashes of the
// MQTT user store cannot provide; use TLS (Options.TLSConfig) so PLAIN does
// not send passwords in the clear. Re-authentication (KIP-368) is not
// offered: the session lifetime is reported as 0 (unbounded).

const mechPlain = "PLAIN"

func (c *conn) handleSASLHandshake(req *kmsg.SASLHandshakeRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.SASLHandshakeResponse)
	if c.s.opts.Authenticator == nil {
		resp.ErrorCode = codeUnsupportedSASL
		resp.SupportedMechanisms = []string{}
		return resp
	}
	resp.SupportedMechanisms = []string{mechPlain}
	if c.authenticated || c.saslMechanism != "" {
		resp.ErrorCode = codeIllegalSASLState
		return resp
	}
	if req.Mechanism != mechPlain {
		resp.ErrorCode = codeUnsupportedSASL
		return resp
	}
	c.saslMechanism = req.Mechanism
	return resp
}

func (c *conn) handleSASLAuthenticate(req *kmsg.SASLAuthenticateRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
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
