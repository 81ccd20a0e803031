package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"go.uber.org/goleak"
	"k8s.io/klog/v2"

	"gateway/internal/proctest"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == helperArg {
		os.Exit(helperMain(os.Args[2:]))
	}
	cleanup := proctest.Hermetic() // no test depends on the user's HOME, shell or locale
	// client-go logs the errors that tests provoke on purpose.
	klog.SetLogger(logr.Discard())
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { cleanup() }),
		// client-go's logger flushes in the background for the whole process.
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
		// Idle keep-alive connections of http.DefaultTransport in tests.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// gateway is a gateway started by run in this process.
type gateway struct {
	url        string // http://127.0.0.1:PORT/
	token      string
	dir        string // the box container's working directory
	log        *logBuffer
	kubeURL    string // https://127.0.0.1:PORT, the Kubernetes API
	kubeconfig string // the kubeconfig it wrote
	// stop shuts the gateway down (as SIGTERM does) and returns run's
	// result; the test's end does it too.
	stop func() error
}

// logBuffer collects the gateway's log and reports the ready line.
type logBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	ready chan string
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if m := readyLine.FindSubmatch(l.buf.Bytes()); m != nil && l.ready != nil {
		l.ready <- string(m[1])
		l.ready = nil
	}
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

var readyLine = regexp.MustCompile(`msg="gateway ready" url=(\S+)`)

// kubeLine finds the Kubernetes API's URL and kubeconfig in the ready line.
var kubeLine = regexp.MustCompile(`kubernetes=(\S+) kubeconfig=(\S+)`)

const testToken = "test-token-0123456789"

// startGateway runs the gateway on a free loopback port with a "box"
// container (sleep, in a temporary working directory), and stops it at the
// end of the test, checking that run returns cleanly.
func startGateway(t *testing.T, args ...string) *gateway {
	t.Helper()
	dir := t.TempDir()
	cfgFile := filepath.Join(t.TempDir(), "gateway.yaml")
	cfg := fmt.Sprintf("containers:\n  - id: box\n    command: [sleep, \"1000000\"]\n    workingDir: %s\n    stdin: true\n", dir)
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	g := &gateway{token: testToken, dir: dir, log: &logBuffer{ready: make(chan string, 1)}}
	ready := g.log.ready
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	all := append([]string{"--listen", "127.0.0.1:0", "--token", testToken, "--config", cfgFile,
		"--stop-grace", "1s", "--log-level", "debug", "--kube-listen", "127.0.0.1:0", "--state-dir", filepath.Join(dir, ".state")}, args...)
	go func() { done <- run(ctx, all, noEnv, io.Discard, g.log) }()
	select {
	case g.url = <-ready:
		if m := kubeLine.FindStringSubmatch(g.log.String()); m != nil {
			g.kubeURL, g.kubeconfig = m[1], m[2]
		}
	case err := <-done:
		cancel()
		t.Fatalf("gateway did not start: %v\n%s", err, g.log)
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatalf("gateway not ready after 20s:\n%s", g.log)
	}
	var once sync.Once
	var runErr error
	g.stop = func() error {
		cancel()
		once.Do(func() {
			select {
			case runErr = <-done:
			case <-time.After(30 * time.Second):
				runErr = fmt.Errorf("gateway did not stop:\n%s", g.log)
			}
		})
		return runErr
	}
	t.Cleanup(func() {
		if err := g.stop(); err != nil {
			t.Errorf("run: %v", err)
		}
		if t.Failed() {
			t.Logf("gateway log:\n%s", g.log)
		}
	})
	return g
}

func noEnv(string) (string, bool) { return "", false }

// do sends an authenticated request and decodes a JSON answer into out.
func (g *gateway) do(t *testing.T, method, path string, body any, out any) *http.Response {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, g.url+strings.TrimPrefix(path, "/"), rd)
	req.Header.Set("Authorization", "Bearer "+g.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %d %q: %v", method, path, resp.StatusCode, b, err)
		}
	}
	return resp
}

func TestHelp(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"--help"}, noEnv, &out, io.Discard)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("run --help = %v", err)
	}
	for _, want := range []string{"Usage: gateway", "--listen", "GATEWAY_LISTEN", "--token-file", "GATEWAY_TOKEN",
		"--config", "default 127.0.0.1:8080", "containers:", "--stop-grace"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

func TestStartupErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("containers:\n  - id: a\n    comand: [sh]\n"), 0o600)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tokenFile := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(tokenFile, nil, 0o600)
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"no token beyond loopback", []string{"--listen", "0.0.0.0:0"}, nil, "refusing to listen on 0.0.0.0:0 without a token"},
		{"unknown config key", []string{"--config", bad}, nil, "field comand not found"},
		{"bad flag", []string{"--stop-grace", "soon"}, nil, "want a duration"},
		{"bad env", nil, map[string]string{"GATEWAY_MAX_SESSIONS": "many"}, "GATEWAY_MAX_SESSIONS"},
		{"empty token file", []string{"--token-file", tokenFile}, nil, "is empty"},
		{"stray argument", []string{"serve"}, nil, `unexpected argument "serve"`},
		{"port in use", []string{"--listen", busy.Addr().String()}, nil, "address already in use"},
		{"profiles beyond loopback", []string{"--listen", "127.0.0.1:0", "--kube-listen", "", "--state-dir", t.TempDir(), "--pprof-listen", "0.0.0.0:0"}, nil,
			"profiles are served on loopback only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lookupenv := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
			err := run(context.Background(), tc.args, lookupenv, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("run = %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// TestPprof: --pprof-listen serves Go's profiles there, and only there.
func TestPprof(t *testing.T) {
	g := startGateway(t, "--pprof-listen", "127.0.0.1:0")
	m := regexp.MustCompile(`msg="profiles served" url=(\S+)`).FindStringSubmatch(g.log.String())
	if m == nil {
		t.Fatalf("no profiles line:\n%s", g.log)
	}
	resp, err := http.Get(m[1] + "goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "goroutine profile") {
		t.Errorf("the goroutine profile: %d %.200s", resp.StatusCode, b)
	}
	if resp := g.do(t, "GET", "/debug/pprof/", nil, nil); resp.StatusCode == 200 {
		t.Error("the API's listener serves profiles")
	}
}

// TestGeneratedToken: on loopback without a token, one is generated and
// printed with a URL to open, and it works.
func TestGeneratedToken(t *testing.T) {
	logs := &logBuffer{ready: make(chan string, 1)}
	ready := logs.ready
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--listen", "127.0.0.1:0", "--kube-listen", "127.0.0.1:0"}, noEnv, io.Discard, logs)
	}()
	defer func() { cancel(); <-done }()
	url := <-ready
	m := regexp.MustCompile(`token=(\S+) open="(\S+)"`).FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no token in the ready line:\n%s", logs)
	}
	if len(m[1]) < 22 || m[2] != url+"#token="+m[1] {
		t.Errorf("token %q, open %q", m[1], m[2])
	}
	g := &gateway{url: url, token: m[1]}
	var list struct{ Items []struct{ ID, State string } }
	if resp := g.do(t, "GET", "/api/v1/containers", nil, &list); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if len(list.Items) != 1 || list.Items[0].ID != "shell" || list.Items[0].State != "running" {
		t.Errorf("default containers: %+v", list.Items)
	}
}

// sha256Hex is the digest of b, as sha256sum prints it.
func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
