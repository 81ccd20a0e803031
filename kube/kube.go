// Package kube gives the gateway what kubectl needs to reach it as a
// Kubernetes API server: a serving certificate signed by a CA of its own,
// kept in a state directory, and a kubeconfig that trusts that CA and
// carries the token (kubectl sends a token only over TLS).
package kube

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"go.yaml.in/yaml/v3"
)

// The files of the state directory.
const (
	caCertFile = "ca.crt"
	caKeyFile  = "ca.key"
	certFile   = "tls.crt"
	keyFile    = "tls.key"
)

// Validity of what EnsureCert makes; a serving certificate is made again
// when less than a month of it is left, or when it does not name a host.
const (
	caValidity   = 10 * 365 * 24 * time.Hour
	certValidity = 365 * 24 * time.Hour
	renewBefore  = 30 * 24 * time.Hour
)

// Cert is the serving certificate and the CA that signed it.
type Cert struct {
	TLS   tls.Certificate
	CAPEM []byte // for a kubeconfig's certificate-authority-data
}

// EnsureCert returns the serving certificate kept in dir for hosts (names
// and addresses), making the directory (0700), the CA and the certificate
// the first time. The CA is kept for good: a kubeconfig written once keeps
// working.
func EnsureCert(dir string, hosts []string) (*Cert, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	ca, caKey, caPEM, err := loadOrMakeCA(dir)
	if err != nil {
		return nil, err
	}
	if c, err := tls.LoadX509KeyPair(filepath.Join(dir, certFile), filepath.Join(dir, keyFile)); err == nil && covers(c, ca, hosts) {
		return &Cert{TLS: c, CAPEM: caPEM}, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "gateway"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(certValidity),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	if err := writePEM(dir, certFile, keyFile, der, key); err != nil {
		return nil, err
	}
	c, err := tls.LoadX509KeyPair(filepath.Join(dir, certFile), filepath.Join(dir, keyFile))
	if err != nil {
		return nil, err
	}
	return &Cert{TLS: c, CAPEM: caPEM}, nil
}

func loadOrMakeCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
	if c, err := tls.LoadX509KeyPair(filepath.Join(dir, caCertFile), filepath.Join(dir, caKeyFile)); err == nil {
		if k, ok := c.PrivateKey.(*ecdsa.PrivateKey); ok && c.Leaf != nil && time.Now().Before(c.Leaf.NotAfter) {
			caPEM, err := os.ReadFile(filepath.Join(dir, caCertFile))
			return c.Leaf, k, caPEM, err
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "gateway CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(caValidity),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := writePEM(dir, caCertFile, caKeyFile, der, key); err != nil {
		return nil, nil, nil, err
	}
	ca, err := x509.ParseCertificate(der)
	return ca, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), err
}

// covers reports whether c was signed by ca, lasts a while yet, and names
// every host.
func covers(c tls.Certificate, ca *x509.Certificate, hosts []string) bool {
	leaf := c.Leaf
	if leaf == nil || time.Until(leaf.NotAfter) < renewBefore || leaf.CheckSignatureFrom(ca) != nil {
		return false
	}
	for _, h := range hosts {
		if h != "" && leaf.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

func writePEM(dir, certName, keyName string, der []byte, key *ecdsa.PrivateKey) error {
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, keyName), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, certName), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// writeFile replaces path (mode 0600) in one rename: a reader never sees
// half of it.
func writeFile(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o600); err != nil { // an older file's mode
		return err
	}
	return os.Rename(tmp, path)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// Hosts are the names a certificate for a listener on host serves: the
// loopback names, the host itself unless unspecified, and this machine's
// name.
func Hosts(listenHost string) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if ip := net.ParseIP(listenHost); listenHost != "" && (ip == nil || !ip.IsUnspecified()) {
		hosts = append(hosts, listenHost)
	}
	if h, err := os.Hostname(); err == nil {
		hosts = append(hosts, h)
	}
	slices.Sort(hosts)
	return slices.Compact(hosts)
}

// Kubeconfig is what WriteKubeconfig writes: one cluster, one user with
// the token, one context, all named Name and the current one.
type Kubeconfig struct {
	Name      string
	Server    string // https://host:port
	CAPEM     []byte
	Token     string
	Namespace string
}

// WriteKubeconfig writes a kubeconfig to path (mode 0600, its directory
// made 0700 if missing).
func WriteKubeconfig(path string, k Kubeconfig) error {
	if k.Name == "" || k.Server == "" || len(k.CAPEM) == 0 || k.Token == "" {
		return errors.New("kubeconfig: name, server, CA and token are required")
	}
	type named struct {
		Name    string         `yaml:"name"`
		Cluster map[string]any `yaml:"cluster,omitempty"`
		User    map[string]any `yaml:"user,omitempty"`
		Context map[string]any `yaml:"context,omitempty"`
	}
	doc := struct {
		APIVersion     string  `yaml:"apiVersion"`
		Kind           string  `yaml:"kind"`
		Clusters       []named `yaml:"clusters"`
		Users          []named `yaml:"users"`
		Contexts       []named `yaml:"contexts"`
		CurrentContext string  `yaml:"current-context"`
	}{
		APIVersion: "v1", Kind: "Config",
		Clusters:       []named{{Name: k.Name, Cluster: map[string]any{"server": k.Server, "certificate-authority-data": base64.StdEncoding.EncodeToString(k.CAPEM)}}},
		Users:          []named{{Name: k.Name, User: map[string]any{"token": k.Token}}},
		Contexts:       []named{{Name: k.Name, Context: map[string]any{"cluster": k.Name, "user": k.Name, "namespace": k.Namespace}}},
		CurrentContext: k.Name,
	}
	b, err := yaml.Marshal(doc)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return writeFile(path, b)
}
