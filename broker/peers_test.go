package broker

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/millstream/millstream/config"
)

type paho5Publish = paho5.Publish

// dialV5 connects an MQTT 5 client (Eclipse Paho for Go, v5).
func dialV5(t *testing.T, addr, id, user, pass string) *paho5.Client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := paho5.NewClient(paho5.ClientConfig{Conn: conn, PacketTimeout: testTimeout})
	cp := &paho5.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}
	if user != "" {
		cp.Username, cp.UsernameFlag = user, true
		cp.Password, cp.PasswordFlag = []byte(pass), true
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	ack, err := c.Connect(ctx, cp)
	if err != nil {
		t.Fatalf("MQTT 5 connect as %s: %v (connack %+v)", id, err, ack)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho5.Disconnect{}) })
	return c
}

// pki is a throwaway CA with a server and a client certificate.
type pki struct {
	caPool                        *x509.CertPool
	caFile, certFile, keyFile     string
	client                        tls.Certificate
	clientCertFile, clientKeyFile string
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func newPKI(t *testing.T, clientCN string) *pki {
	t.Helper()
	dir := t.TempDir()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	now := time.Now()
	caKey := key()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "millstream test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP) ([]byte, *ecdsa.PrivateKey) {
		k := key()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, k
	}
	p := &pki{caPool: x509.NewCertPool()}
	p.caPool.AddCert(ca)
	p.caFile = filepath.Join(dir, "ca.pem")
	writePEM(t, p.caFile, "CERTIFICATE", caDER)

	srvDER, srvKey := issue(2, "127.0.0.1", x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)})
	p.certFile, p.keyFile = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	writePEM(t, p.certFile, "CERTIFICATE", srvDER)
	kb, _ := x509.MarshalECPrivateKey(srvKey)
	writePEM(t, p.keyFile, "EC PRIVATE KEY", kb)

	cliDER, cliKey := issue(3, clientCN, x509.ExtKeyUsageClientAuth, nil)
	p.clientCertFile, p.clientKeyFile = filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
	writePEM(t, p.clientCertFile, "CERTIFICATE", cliDER)
	kb, _ = x509.MarshalECPrivateKey(cliKey)
	writePEM(t, p.clientKeyFile, "EC PRIVATE KEY", kb)
	p.client, err = tls.LoadX509KeyPair(p.clientCertFile, p.clientKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTLSListenerWithClientCertificates(t *testing.T) {
	p := newPKI(t, "alice")
	l := openLog(t, t.TempDir())
	cfg := testConfig()
	no := false
	cfg.AllowAnonymous = &no
	cfg.Listeners = append(cfg.Listeners,
		config.Listener{Name: "tls", Type: "tcp", Address: "127.0.0.1:0",
			TLS: config.TLS{CertFile: p.certFile, KeyFile: p.keyFile, ClientCAFile: p.caFile, RequireClientCert: true}},
		config.Listener{Name: "wss", Type: "websocket", Address: "127.0.0.1:0",
			TLS: config.TLS{CertFile: p.certFile, KeyFile: p.keyFile}})
	cfg.Users = []config.User{{Username: "bob", PasswordHash: hashFor(t, "pw")}}
	// Only alice may publish: proves the certificate's CN is the username.
	cfg.ACL = []config.ACL{{User: "alice", Action: "all", Allow: []string{"secure/#"}}, {User: "bob", Action: "all", Allow: []string{"web/#"}}}
	b := startBroker(t, cfg, l, Options{})

	withTLS := func(tc *tls.Config) func(*paho.ClientOptions) {
		return func(o *paho.ClientOptions) { o.SetTLSConfig(tc) }
	}
	alice := mustPaho(t, "ssl://"+b.addr("tls"), "alice-dev", withTLS(&tls.Config{RootCAs: p.caPool, Certificates: []tls.Certificate{p.client}}))
	if err := publish(t, alice, "secure/line1", 1, false, "over-tls"); err != nil {
		t.Fatalf("publish over mutual TLS: %v", err)
	}
	if _, err := pahoClient(t, "ssl://"+b.addr("tls"), "nocert", withTLS(&tls.Config{RootCAs: p.caPool})); err == nil {
		t.Error("client without a certificate connected to a require_client_cert listener")
	}
	bob := mustPaho(t, "wss://"+b.addr("wss")+"/mqtt", "bob-web", func(o *paho.ClientOptions) {
		o.SetTLSConfig(&tls.Config{RootCAs: p.caPool})
		o.SetUsername("bob").SetPassword("pw")
	})
	if err := publish(t, bob, "web/hmi", 1, false, "over-wss"); err != nil {
		t.Fatalf("publish over secure websocket: %v", err)
	}
	// A real TLS peer too.
	if out, err := runTool(t, "mosquitto_pub", "-h", "127.0.0.1", "-p", b.port("tls"), "--cafile", p.caFile,
		"--cert", p.clientCertFile, "--key", p.clientKeyFile, "-i", "alice-cli", "-q", "1", "-t", "secure/cli", "-m", "mosquitto-tls"); err != nil {
		t.Fatalf("mosquitto_pub over mutual TLS: %v: %s", err, out)
	}

	recs := readTopic(t, l, "mqtt.ingress", 3)
	want := map[string]string{"secure/line1": "alice-dev", "web/hmi": "bob-web", "secure/cli": "alice-cli"}
	for _, r := range recs {
		if want[string(r.Key)] != header(r, HeaderClientID) {
			t.Errorf("record %s from %s", r.Key, header(r, HeaderClientID))
		}
	}
}
