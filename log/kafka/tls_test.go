package kafka

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

	"github.com/twmb/franz-go/pkg/kfake"

	mlog "github.com/millstream/millstream/log"
)

// TestTLS runs the log over TLS against a broker whose certificate is signed
// by a CA given as CAFile, and checks that the same broker is refused
// without that CA.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "millstream test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, 1, kfake.TLS(&tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}}}))

	opts := testOptions(c)
	opts.TLS = TLSOptions{Enabled: true, CAFile: caFile}
	l := open(t, opts)
	ctx := ctxT(t)
	if err := l.CreateTopic(ctx, "secure", mlog.TopicConfig{}); err != nil {
		t.Fatal(err)
	}
	if err := l.ProduceSync(ctx, &mlog.Record{Topic: "secure", Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	if rs, err := l.Fetch(ctx, "secure", 0, 0, mlog.FetchOptions{}); err != nil || len(rs) != 1 {
		t.Fatalf("fetch over TLS: %v %v", rs, err)
	}

	opts.TLS = TLSOptions{Enabled: true} // system roots do not know the test CA
	short, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if l, err := Open(short, opts); err == nil {
		l.Close()
		t.Fatal("Open trusted a broker certificate from an unknown CA")
	}
}
