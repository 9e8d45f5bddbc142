package kafkaproto

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
)

// SCRAM (RFC 5802, RFC 7677) lets Kafka clients prove they know a password
// without sending it. The server keeps per user and mechanism only the
// salt, the iteration count and two keys derived from the password (a
// SCRAMCredential), never the password itself; `millstream passwd --scram`
// derives them at enrolment, as Kafka's kafka-configs.sh does.

// SCRAM mechanism names.
const (
	MechSCRAMSHA256 = "SCRAM-SHA-256"
	MechSCRAMSHA512 = "SCRAM-SHA-512"
)

// SCRAMCredential is what the server stores for one user and mechanism.
type SCRAMCredential struct {
	Mechanism  string
	Salt       []byte
	Iterations int
	StoredKey  []byte
	ServerKey  []byte
}

// minSCRAMIterations is Kafka's minimum (RFC 7677 recommends 4096).
const minSCRAMIterations = 4096

func scramHash(mechanism string) (func() hash.Hash, error) {
	switch mechanism {
	case MechSCRAMSHA256:
		return sha256.New, nil
	case MechSCRAMSHA512:
		return sha512.New, nil
	}
	return nil, fmt.Errorf("SCRAM mechanism %q: use %s or %s", mechanism, MechSCRAMSHA256, MechSCRAMSHA512)
}

// NewSCRAMCredential derives a credential from password with a random salt.
// iterations below 4096 are raised to 4096.
func NewSCRAMCredential(mechanism, password string, iterations int) (SCRAMCredential, error) {
	h, err := scramHash(mechanism)
	if err != nil {
		return SCRAMCredential{}, err
	}
	iterations = max(iterations, minSCRAMIterations)
	salt := make([]byte, 24)
	if _, err := rand.Read(salt); err != nil {
		return SCRAMCredential{}, err
	}
	salted, err := pbkdf2.Key(h, password, salt, iterations, h().Size())
	if err != nil {
		return SCRAMCredential{}, err
	}
	clientKey := hmacSum(h, salted, []byte("Client Key"))
	stored := h()
	stored.Write(clientKey)
	return SCRAMCredential{Mechanism: mechanism, Salt: salt, Iterations: iterations,
		StoredKey: stored.Sum(nil), ServerKey: hmacSum(h, salted, []byte("Server Key"))}, nil
}

// String is the text form ParseSCRAMCredential reads:
// "MECHANISM:ITERATIONS:SALT:STOREDKEY:SERVERKEY", binary parts in standard
// base64.
func (c SCRAMCredential) String() string {
	b := base64.StdEncoding
	return c.Mechanism + ":" + strconv.Itoa(c.Iterations) + ":" + b.EncodeToString(c.Salt) + ":" +
		b.EncodeToString(c.StoredKey) + ":" + b.EncodeToString(c.ServerKey)
}

// ParseSCRAMCredential reads what SCRAMCredential.String writes.
func ParseSCRAMCredential(s string) (SCRAMCredential, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 5 {
		return SCRAMCredential{}, errors.New("SCRAM credential: want MECHANISM:ITERATIONS:SALT:STOREDKEY:SERVERKEY (as millstream passwd --scram prints)")
	}
	h, err := scramHash(parts[0])
	if err != nil {
		return SCRAMCredential{}, err
	}
	c := SCRAMCredential{Mechanism: parts[0]}
	if c.Iterations, err = strconv.Atoi(parts[1]); err != nil || c.Iterations < minSCRAMIterations {
		return SCRAMCredential{}, fmt.Errorf("SCRAM credential: iterations %q: want a whole number of at least %d", parts[1], minSCRAMIterations)
	}
	for i, dst := range []*[]byte{&c.Salt, &c.StoredKey, &c.ServerKey} {
		if *dst, err = base64.StdEncoding.DecodeString(parts[2+i]); err != nil {
			return SCRAMCredential{}, fmt.Errorf("SCRAM credential: part %d is not base64: %v", 3+i, err)
		}
	}
	if len(c.Salt) == 0 || len(c.StoredKey) != h().Size() || len(c.ServerKey) != h().Size() {
		return SCRAMCredential{}, fmt.Errorf("SCRAM credential: keys must be %d bytes for %s and the salt not empty", h().Size(), c.Mechanism)
	}
	return c, nil
}

func hmacSum(h func() hash.Hash, key, msg []byte) []byte {
	m := hmac.New(h, key)
	m.Write(msg)
	return m.Sum(nil)
}

// scramExchange is the server side of one SCRAM authentication: two
// SaslAuthenticate round trips.
type scramExchange struct {
	h               func() hash.Hash
	user            string
	cred            SCRAMCredential
	known           bool   // the user has a credential; if not, the exchange runs on a decoy and fails at the end
	nonce           string // client nonce + server nonce
	clientFirstBare string
	serverFirst     string
}

// first reads client-first-message ("n,,n=user,r=nonce") and returns
// server-first-message ("r=nonce,s=salt,i=iterations").
func (x *scramExchange) first(msg []byte, lookup func(mechanism, user string) (SCRAMCredential, bool), mechanism string) ([]byte, error) {
	m := string(msg)
	// GS2 header: no channel binding ("n" or "y"), no authzid.
	if !strings.HasPrefix(m, "n,,") && !strings.HasPrefix(m, "y,,") {
		return nil, errors.New("SCRAM: client-first-message must start with n,, (no channel binding, no authorization id)")
	}
	x.clientFirstBare = m[3:]
	attrs := strings.Split(x.clientFirstBare, ",")
	if len(attrs) < 2 || !strings.HasPrefix(attrs[0], "n=") || !strings.HasPrefix(attrs[1], "r=") || len(attrs[1]) < 3 {
		return nil, errors.New("SCRAM: malformed client-first-message")
	}
	for _, a := range attrs[2:] {
		if a == "tokenauth=true" {
			return nil, errors.New("SCRAM: delegation tokens are not supported")
		}
	}
	user, err := scramUnescape(attrs[0][2:])
	if err != nil {
		return nil, err
	}
	x.user = user
	if x.h, err = scramHash(mechanism); err != nil {
		return nil, err
	}
	x.cred, x.known = lookup(mechanism, user)
	if !x.known {
		// A decoy with a salt that does not reveal whether the user exists.
		x.cred = SCRAMCredential{Mechanism: mechanism, Salt: hmacSum(x.h, decoyKey[:], []byte(user))[:24], Iterations: minSCRAMIterations}
	}
	var sn [18]byte
	if _, err := rand.Read(sn[:]); err != nil {
		return nil, err
	}
	x.nonce = attrs[1][2:] + base64.RawStdEncoding.EncodeToString(sn[:])
	x.serverFirst = "r=" + x.nonce + ",s=" + base64.StdEncoding.EncodeToString(x.cred.Salt) + ",i=" + strconv.Itoa(x.cred.Iterations)
	return []byte(x.serverFirst), nil
}

// decoyKey salts decoy credentials; random per process.
var decoyKey = func() (k [32]byte) { _, _ = rand.Read(k[:]); return }()

// final reads client-final-message ("c=biws,r=nonce,p=proof"), checks the
// proof and returns server-final-message ("v=signature").
func (x *scramExchange) final(msg []byte) ([]byte, error) {
	m := string(msg)
	i := strings.LastIndex(m, ",p=")
	if i < 0 {
		return nil, errors.New("SCRAM: client-final-message without proof")
	}
	withoutProof, proofB64 := m[:i], m[i+3:]
	attrs := strings.Split(withoutProof, ",")
	// The nonce must end with the one the server sent, as Apache Kafka
	// checks it: librdkafka sends the client nonce once more in front.
	// The proof covers the message as sent, so this weakens nothing.
	if len(attrs) < 2 || !strings.HasPrefix(attrs[0], "c=") || !strings.HasPrefix(attrs[1], "r=") || !strings.HasSuffix(attrs[1], x.nonce) {
		return nil, errors.New("SCRAM: malformed client-final-message or wrong nonce")
	}
	if cb, err := base64.StdEncoding.DecodeString(attrs[0][2:]); err != nil || (string(cb) != "n,," && string(cb) != "y,,") {
		return nil, errors.New("SCRAM: unexpected channel binding")
	}
	proof, err := base64.StdEncoding.DecodeString(proofB64)
	if err != nil || len(proof) != x.h().Size() {
		return nil, errors.New("SCRAM: malformed proof")
	}
	authMessage := []byte(x.clientFirstBare + "," + x.serverFirst + "," + withoutProof)
	signature := hmacSum(x.h, x.cred.StoredKey, authMessage)
	clientKey := make([]byte, len(proof))
	for i := range proof {
		clientKey[i] = proof[i] ^ signature[i]
	}
	stored := x.h()
	stored.Write(clientKey)
	if !x.known || subtle.ConstantTimeCompare(stored.Sum(nil), x.cred.StoredKey) != 1 {
		return nil, errSCRAMFailed
	}
	return []byte("v=" + base64.StdEncoding.EncodeToString(hmacSum(x.h, x.cred.ServerKey, authMessage))), nil
}

var errSCRAMFailed = errors.New("authentication failed: invalid username or password")

// scramUnescape undoes the SCRAM username escaping (=2C for ",", =3D for "=").
func scramUnescape(s string) (string, error) {
	if !strings.Contains(s, "=") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '=' {
			b.WriteByte(s[i])
			continue
		}
		switch {
		case strings.HasPrefix(s[i:], "=2C"):
			b.WriteByte(',')
		case strings.HasPrefix(s[i:], "=3D"):
			b.WriteByte('=')
		default:
			return "", errors.New("SCRAM: bad escape in user name")
		}
		i += 2
	}
	return b.String(), nil
}
