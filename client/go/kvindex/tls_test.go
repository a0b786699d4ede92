package kvindex

// TLS and mutual TLS against a real kvindex-server, as tests/server/tls_test.cc
// does for the C++ client: certificates made at test time (crypto/x509) in a
// temporary directory the test removes.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// tlsFiles is a CA, a server certificate for localhost/127.0.0.1 and a client
// certificate, all signed by the CA; plus a second, unrelated CA and a client
// certificate it signed ("stranger"). Path("ca.crt"), Path("server.key"), ...
type tlsFiles struct{ dir string }

func (f tlsFiles) Path(name string) string { return filepath.Join(f.dir, name) }

type issuer struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// writeCert makes a key and a certificate from tmpl, signed by parent (nil:
// self-signed), and writes <name>.crt and <name>.key.
func writeCert(t *testing.T, dir, name string, tmpl *x509.Certificate, parent *issuer) issuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if tmpl.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120)); err != nil {
		t.Fatal(err)
	}
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(48 * time.Hour)
	signer := issuer{cert: tmpl, key: key}
	if parent != nil {
		signer = *parent
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer.cert, &key.PublicKey, signer.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(file, kind string, der []byte) {
		if err := os.WriteFile(filepath.Join(dir, file), pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(name+".crt", "CERTIFICATE", der)
	write(name+".key", "PRIVATE KEY", keyDER)
	return issuer{cert: cert, key: key}
}

func makeTLSFiles(t *testing.T) tlsFiles {
	t.Helper()
	dir := t.TempDir() // removed when the test ends
	ca := func(cn string) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	}
	leaf := func(cn string, usage x509.ExtKeyUsage) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: cn}, KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	}
	rootCA := writeCert(t, dir, "ca", ca("kvindex-test-ca"), nil)
	otherCA := writeCert(t, dir, "other-ca", ca("other-ca"), nil)
	server := leaf("localhost", x509.ExtKeyUsageServerAuth)
	server.DNSNames = []string{"localhost"}
	server.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	writeCert(t, dir, "server", server, &rootCA)
	writeCert(t, dir, "client", leaf("kvindex-test-client", x509.ExtKeyUsageClientAuth), &rootCA)
	writeCert(t, dir, "stranger", leaf("stranger", x509.ExtKeyUsageClientAuth), &otherCA)
	return tlsFiles{dir: dir}
}

// getStats is one GetStats call with o (a deadline on the call and on the
// connection attempts it waits for: a refused handshake ends it early).
func getStats(t *testing.T, addr string, o Options) error {
	t.Helper()
	o.Timeout = 5 * time.Second
	c := dial(t, addr, o)
	_, err := c.GetStats(testContext(t, 5*time.Second))
	return err
}

// A TLS server serves clients that trust its CA (Match and GetStats); a
// client certificate is not needed and not refused; plaintext clients and
// clients trusting another CA get UNAVAILABLE.
func TestTLS(t *testing.T) {
	files := makeTLSFiles(t)
	addr := startServer(t, "--tls_cert_file="+files.Path("server.crt"), "--tls_key_file="+files.Path("server.key"))

	c := dial(t, addr, Options{CAFile: files.Path("ca.crt"), Timeout: 5 * time.Second})
	ctx := testContext(t, 5*time.Second)
	if resp, err := c.MatchTokens(ctx, "m", "", []uint32{1, 2, 3}); err != nil || len(resp.GetPods()) != 0 {
		t.Errorf("Match over TLS: %v, %v; want an empty OK answer", resp, err)
	}
	stats, err := c.GetStats(ctx)
	if err != nil || stats.GetMatches() == 0 {
		t.Errorf("GetStats over TLS: %v, %v; want OK counting the Match", stats, err)
	}

	if err := getStats(t, addr, Options{CAFile: files.Path("ca.crt"), CertFile: files.Path("client.crt"),
		KeyFile: files.Path("client.key")}); err != nil {
		t.Errorf("TLS with a client certificate: %v, want OK", err)
	}
	if err := getStats(t, addr, Options{CAFile: files.Path("ca.crt"), ServerName: "localhost"}); err != nil {
		t.Errorf("TLS with ServerName localhost: %v, want OK", err)
	}
	if err := getStats(t, addr, Options{CAFile: files.Path("ca.crt"), ServerName: "elsewhere.example"}); status.Code(err) != codes.Unavailable {
		t.Errorf("TLS with a ServerName the certificate does not name: %v, want UNAVAILABLE", err)
	}
	if err := getStats(t, addr, Options{CAFile: files.Path("other-ca.crt")}); status.Code(err) != codes.Unavailable {
		t.Errorf("TLS trusting another CA: %v, want UNAVAILABLE", err)
	}
	if err := getStats(t, addr, Options{}); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext against TLS: %v, want UNAVAILABLE", err)
	}
}

// A mutual TLS server (--tls_client_ca_file) serves only clients presenting a
// certificate its client CA signed.
func TestMutualTLS(t *testing.T) {
	files := makeTLSFiles(t)
	addr := startServer(t, "--tls_cert_file="+files.Path("server.crt"), "--tls_key_file="+files.Path("server.key"),
		"--tls_client_ca_file="+files.Path("ca.crt"))

	c := dial(t, addr, Options{CAFile: files.Path("ca.crt"), CertFile: files.Path("client.crt"),
		KeyFile: files.Path("client.key"), Timeout: 5 * time.Second})
	ctx := testContext(t, 5*time.Second)
	if resp, err := c.MatchTokens(ctx, "m", "", []uint32{1, 2, 3}); err != nil || len(resp.GetPods()) != 0 {
		t.Errorf("Match over mTLS: %v, %v; want an empty OK answer", resp, err)
	}
	if stats, err := c.GetStats(ctx); err != nil || stats.GetMatches() == 0 {
		t.Errorf("GetStats over mTLS: %v, %v; want OK counting the Match", stats, err)
	}

	if err := getStats(t, addr, Options{CAFile: files.Path("ca.crt")}); status.Code(err) != codes.Unavailable {
		t.Errorf("mTLS without a client certificate: %v, want UNAVAILABLE", err)
	}
	if err := getStats(t, addr, Options{CAFile: files.Path("ca.crt"), CertFile: files.Path("stranger.crt"),
		KeyFile: files.Path("stranger.key")}); status.Code(err) != codes.Unavailable {
		t.Errorf("mTLS with a certificate of another CA: %v, want UNAVAILABLE", err)
	}
	if err := getStats(t, addr, Options{}); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext against mTLS: %v, want UNAVAILABLE", err)
	}
}
