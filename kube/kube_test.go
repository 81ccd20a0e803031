package kube

import (
	"bytes"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
)

// TestEnsureCert: the first call makes the CA and the certificate, later
// ones keep them; a host the certificate does not name gets a new
// certificate from the same CA.
func TestEnsureCert(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	c1, err := EnsureCert(dir, Hosts("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state directory mode %v %v", fi.Mode(), err)
	}
	for _, f := range []string{caKeyFile, keyFile} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v %v", f, fi.Mode(), err)
		}
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c1.CAPEM)
	for _, h := range []string{"localhost", "127.0.0.1", "::1"} {
		if _, err := c1.TLS.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: h}); err != nil {
			t.Errorf("%s: %v", h, err)
		}
	}
	c2, err := EnsureCert(dir, Hosts("127.0.0.1"))
	if err != nil || !bytes.Equal(c2.TLS.Certificate[0], c1.TLS.Certificate[0]) || !bytes.Equal(c2.CAPEM, c1.CAPEM) {
		t.Errorf("a second call made new ones: %v", err)
	}
	c3, err := EnsureCert(dir, Hosts("gateway.example"))
	if err != nil || bytes.Equal(c3.TLS.Certificate[0], c1.TLS.Certificate[0]) || !bytes.Equal(c3.CAPEM, c1.CAPEM) {
		t.Fatalf("a new host: %v", err)
	}
	if _, err := c3.TLS.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "gateway.example"}); err != nil {
		t.Errorf("the new certificate: %v", err)
	}
}

// TestWriteKubeconfig: client-go reads what is written, and only the user
// can read the file.
func TestWriteKubeconfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "kubeconfig")
	c, err := EnsureCert(t.TempDir(), Hosts(""))
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteKubeconfig(path, Kubeconfig{Name: "node1", Server: "https://127.0.0.1:6443", CAPEM: c.CAPEM, Token: "tok", Namespace: "default"}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v %v", fi.Mode(), err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://127.0.0.1:6443" || cfg.BearerToken != "tok" || !bytes.Equal(cfg.TLSClientConfig.CAData, c.CAPEM) {
		t.Errorf("client-go read %+v", cfg)
	}
	raw, _ := clientcmd.LoadFromFile(path)
	if raw.CurrentContext != "node1" || raw.Contexts["node1"].Namespace != "default" {
		t.Errorf("context %q %+v", raw.CurrentContext, raw.Contexts)
	}
}
