package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
)

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns
// their paths and the certificate in PEM.
func selfSigned(t *testing.T) (certFile, keyFile string, certPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "gateway test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	os.WriteFile(certFile, certPEM, 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	return certFile, keyFile, certPEM
}

// TestTLS: with a certificate the gateway serves HTTPS, prints an https
// URL, marks the login cookie Secure, and streams over wss.
func TestTLS(t *testing.T) {
	cert, key, certPEM := selfSigned(t)
	g := startGateway(t, "--tls-cert", cert, "--tls-key", key)
	if !strings.HasPrefix(g.url, "https://127.0.0.1:") {
		t.Fatalf("url %s", g.url)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer client.CloseIdleConnections()
	resp, err := client.Post(g.url+"login", "application/json", strings.NewReader(`{"token":"`+g.token+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if c := resp.Cookies(); resp.StatusCode != 204 || len(c) != 1 || !c[0].Secure {
		t.Errorf("login over TLS: %d %+v", resp.StatusCode, c)
	}
	if _, err := http.Get(g.url + "healthz"); err == nil {
		t.Error("an untrusted certificate was accepted")
	}

	cfg := &rest.Config{Host: g.url, BearerToken: g.token, TLSClientConfig: rest.TLSClientConfig{CAData: certPEM}}
	e, err := remotecommand.NewWebSocketExecutorForProtocols(cfg, "GET", g.url+"api/v1/containers/box/exec?command=echo&command=over-tls&stdout=1", v5)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Stderr: io.Discard}); err != nil || out.String() != "over-tls\n" {
		t.Errorf("exec over wss: %q %v", out.String(), err)
	}
}
