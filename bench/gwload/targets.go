package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"gateway/stream/wsproto"
)

// The protocols: exec and attach over v5 on the gateway (what kubectl
// uses) and v4 on the CRI library, which has no v5; port-forward over v4
// on both.
var v5, v4 = wsproto.V5, wsproto.V4

// endpoint is a server of the channel protocols that gwload measures: the
// gateway, or the CRI library's streaming server (criServer).
//
// Setup is not alike on the two, and gwload does not hide it: the
// gateway's exec and port-forward take the request in the query of one
// WebSocket GET, as kubectl's requests to the API server do, while the CRI
// flow needs a single-use URL first (the kubelet's Exec RPC, GetExec). The
// CRI's setup figures include that mint, one loopback HTTP round trip on a
// kept-alive connection, and the sessions record it apart.
type endpoint struct {
	*proc
	addr      string // host:port
	token     string // bearer token; empty for the CRI, whose URL is the authorization
	container string // the gateway's container to exec into
	mint      bool   // every stream's URL is minted first (the CRI)
	proto     wsproto.Protocol
	metrics   bool // serves /metrics
	timeout   time.Duration
	hc        *http.Client // kept-alive connections for the mints and the API
}

// metricsAddr is the address of e's /metrics, or "" when it serves none.
func (e *endpoint) metricsAddr() string {
	if !e.metrics {
		return ""
	}
	return e.addr
}

// execReq is the request of one exec.
type execReq struct {
	Command []string `json:"command"`
	Stdin   bool     `json:"stdin"`
	Stdout  bool     `json:"stdout"`
	Stderr  bool     `json:"stderr"`
	TTY     bool     `json:"tty"`
	noSize  bool     // with TTY: the client sends no terminal size
	// With TTY: the size the client sends (80x24 when zero).
	cols, rows uint16
	// detach keeps the session (and its screen) for that long after its
	// client leaves: the gateway only (detach=).
	detach time.Duration
}

// execURL returns the URL of an exec, minted on the CRI (mint says how
// long that took).
func (e *endpoint) execURL(ctx context.Context, r execReq) (u string, mint time.Duration, err error) {
	if e.mint {
		return e.mintURL(ctx, "/mint/exec", r)
	}
	q := url.Values{"command": r.Command}
	for name, v := range map[string]bool{"stdin": r.Stdin, "stdout": r.Stdout, "stderr": r.Stderr, "tty": r.TTY} {
		q.Set(name, map[bool]string{true: "1", false: "0"}[v])
	}
	if r.detach > 0 {
		q.Set("detach", r.detach.String())
	}
	return "ws://" + e.addr + "/api/v1/containers/" + url.PathEscape(e.container) + "/exec?" + q.Encode(), 0, nil
}

// pfURL returns the URL of a tunnel to port on 127.0.0.1: in the gateway's
// "host" sandbox, gwload's own network.
func (e *endpoint) pfURL(ctx context.Context, port int) (string, time.Duration, error) {
	if e.mint {
		return e.mintURL(ctx, "/mint/portforward", map[string]int{"port": port})
	}
	return fmt.Sprintf("ws://%s/api/v1/sandboxes/%s/portforward?port=%d", e.addr, pfSandbox, port), 0, nil
}

// mintURL asks the CRI server for a single-use URL.
func (e *endpoint) mintURL(ctx context.Context, path string, body any) (string, time.Duration, error) {
	t0 := time.Now()
	var out struct{ URL string }
	if err := e.rest(ctx, "POST", path, body, http.StatusOK, &out); err != nil {
		return "", 0, err
	}
	u, ok := strings.CutPrefix(out.URL, "http://")
	if !ok {
		return "", 0, fmt.Errorf("minted URL %q is not http", out.URL)
	}
	return "ws://" + u, time.Since(t0), nil
}

// rest does one JSON request and checks the status code; out, when not
// nil, receives the decoded answer.
func (e *endpoint) rest(ctx context.Context, method, path string, body any, want int, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+e.addr+path, rd)
	if err != nil {
		return err
	}
	if e.token != "" {
		req.Header.Set("Authorization", "Bearer "+e.token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: HTTP %d, want %d: %s", method, path, resp.StatusCode, want, strings.TrimSpace(string(b)))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return nil
}

// dialer returns a WebSocket dialer offering proto, with the given buffers.
func dialer(proto wsproto.Protocol, readBuf, writeBuf int) *websocket.Dialer {
	return &websocket.Dialer{
		Subprotocols:     []string{proto.Name},
		ReadBufferSize:   readBuf,
		WriteBufferSize:  writeBuf,
		HandshakeTimeout: 10 * time.Second,
	}
}

// dial opens a WebSocket and checks the chosen subprotocol.
func (e *endpoint) dial(ctx context.Context, d *websocket.Dialer, u string) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	h := http.Header{}
	if e.token != "" {
		h.Set("Authorization", "Bearer "+e.token)
	}
	conn, resp, err := d.DialContext(ctx, u, h)
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			return nil, fmt.Errorf("dial: %w: HTTP %d: %s", err, resp.StatusCode, strings.TrimSpace(string(body)))
		}
		return nil, fmt.Errorf("dial: %w", err)
	}
	if want := d.Subprotocols[0]; conn.Subprotocol() != want {
		conn.Close()
		return nil, fmt.Errorf("server chose subprotocol %q, want %q", conn.Subprotocol(), want)
	}
	return conn, nil
}

// --- the gateway process ----------------------------------------------------

type gatewayProc struct {
	o       options
	cmd     *exec.Cmd
	addr    string
	dir     string
	logPath string
	logFile *os.File
	done    chan struct{}

	kubeAddr string // the Kubernetes API, for kubectl
}

// kubeconfig is the kubeconfig the gateway writes for kubectl.
func (g *gatewayProc) kubeconfig() string { return filepath.Join(g.dir, "state", "kubeconfig") }

// startGateway writes a config with one container, starts the gateway on
// a free loopback port and waits until it serves and the container runs.
func startGateway(ctx context.Context, o options) (*gatewayProc, error) {
	dir, err := os.MkdirTemp("", "gwload-")
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "gateway.yaml")
	// The second container's sessions are recorded (into the state
	// directory; the oldest go beyond 1 GiB).
	yaml := fmt.Sprintf("containers:\n  - id: %s\n    command: [sleep, \"1000000\"]\n    workingDir: /tmp\n    stdin: true\n"+
		"  - id: %s\n    command: [sleep, \"1000000\"]\n    workingDir: /tmp\n    stdin: true\n    record: true\n", o.container, recordedContainer(o))
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		return nil, err
	}
	g := &gatewayProc{o: o, dir: dir, logPath: o.gatewayLog}
	if g.logPath == "" {
		g.logPath = filepath.Join(dir, "gateway.log")
	}
	if err := g.start(ctx, cfg); err != nil {
		return nil, err
	}
	return g, nil
}

func (g *gatewayProc) pid() int { return g.cmd.Process.Pid }

// recordedContainer is the container of the gateway gwload starts whose
// sessions are recorded.
func recordedContainer(o options) string { return o.container + "-recorded" }

func (g *gatewayProc) start(ctx context.Context, cfg string) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	g.addr = fmt.Sprintf("127.0.0.1:%d", port)
	lf, err := os.OpenFile(g.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	g.logFile = lf
	kport, err := freePort()
	if err != nil {
		return err
	}
	g.kubeAddr = fmt.Sprintf("127.0.0.1:%d", kport)
	args := []string{"--listen", g.addr, "--token", g.o.token, "--config", cfg,
		"--kube-listen", g.kubeAddr, "--state-dir", filepath.Join(g.dir, "state"), "--record-max-size", "1GiB"}
	args = append(args, strings.Fields(g.o.gatewayArgs)...)
	cmd := exec.Command(g.o.gateway, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	// If gwload dies, the gateway shuts down (and stops its processes).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return fmt.Errorf("start gateway: %w", err)
	}
	g.cmd = cmd
	g.done = make(chan struct{})
	go func() { _ = cmd.Wait(); close(g.done) }()
	fmt.Printf("gateway: %s %s (pid %d, log %s)\n", g.o.gateway, strings.Join(args, " "), cmd.Process.Pid, g.logPath)

	// Ready: the API answers and the container runs.
	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-g.done:
			return fmt.Errorf("gateway exited at start; see %s", g.logPath)
		case <-ctx.Done():
			g.stop()
			return ctx.Err()
		default:
		}
		req, _ := http.NewRequest("GET", "http://"+g.addr+"/api/v1/containers/"+g.o.container, nil)
		req.Header.Set("Authorization", "Bearer "+g.o.token)
		resp, err := hc.Do(req)
		if err == nil {
			var body [512]byte
			n, _ := resp.Body.Read(body[:])
			resp.Body.Close()
			if resp.StatusCode == 200 && strings.Contains(string(body[:n]), `"running"`) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			g.stop()
			return fmt.Errorf("gateway not ready after 20s (last error %v); see %s", err, g.logPath)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits (bounded), then SIGKILL.
func (g *gatewayProc) stop() {
	if g.cmd == nil {
		return
	}
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.done:
	case <-time.After(30 * time.Second):
		fmt.Printf("gateway pid %d did not stop within 30s of SIGTERM: killing it\n", g.cmd.Process.Pid)
		_ = g.cmd.Process.Kill()
		<-g.done
	}
	g.logFile.Close()
	g.cmd = nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// fresh restarts the gateway gwload started and the CRI server, so that a
// memory scenario measures fresh processes: the heap grown by the other
// scenarios neither hides nor inflates an idle cost. A running gateway's
// pid is given by -pid.
func (b *bench) fresh() error {
	if g := b.gwProc; g != nil {
		fmt.Println("restarting the gateway for a fresh process")
		g.stop()
		if err := g.start(b.ctx, filepath.Join(g.dir, "gateway.yaml")); err != nil {
			return err
		}
		b.gw.addr, b.gw.pid = g.addr, g.pid()
	}
	if b.gw.pid <= 0 {
		return errors.New("the gateway's pid is needed: use -gateway, or -pid with -addr")
	}
	if b.cri != nil {
		fmt.Println("restarting the CRI server for a fresh process")
		return b.cri.restart(b.ctx, b.o)
	}
	return nil
}

// --- gwload's children --------------------------------------------------------

// child is a gwload child process (-internal-child): a relay, the CRI
// server or a memory reference. It talks in lines on its stdout, and ends
// when its stdin closes (or when it is done).
type child struct {
	cmd   *exec.Cmd
	stdin io.Closer
	out   *bufio.Reader
}

// startChild starts a child whose stderr goes to gwload's.
func startChild(ctx context.Context, name string, args ...string) (*child, error) {
	return startChildLog(ctx, os.Stderr, name, args...)
}

func startChildLog(ctx context.Context, stderr io.Writer, name string, args ...string) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, exe, append([]string{"-internal-child", name}, args...)...)
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &child{cmd: cmd, stdin: in, out: bufio.NewReader(out)}, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// scan reads the child's next line into v.
func (c *child) scan(v ...any) error {
	line, err := c.out.ReadString('\n')
	if _, serr := fmt.Sscan(line, v...); err != nil || serr != nil {
		return fmt.Errorf("child %s printed %q: %v", c.cmd.Args[2], line, errors.Join(err, serr))
	}
	return nil
}

// close ends the child and waits for it.
func (c *child) close() error {
	c.stdin.Close()
	return c.cmd.Wait()
}

// waitStdin blocks until gwload closes the child's stdin (or dies).
func waitStdin() { _, _ = io.Copy(io.Discard, os.Stdin) }

// --- the CRI library's server ---------------------------------------------------

// criServer is the CRI streaming library's server in a child gwload
// (criChild), and its endpoint. Its log (the library's klog lines, such as
// an "Error on socket receive" at the end of every exec) goes to a file.
type criServer struct {
	ch  *child
	ep  *endpoint
	log *os.File
}

// criEndpoint returns the CRI server, started on first use.
func (b *bench) criEndpoint() (*endpoint, error) {
	if b.cri == nil {
		// Enough kept-alive connections for the concurrent mints.
		hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
		s := &criServer{ep: &endpoint{proc: &proc{name: "cri"}, mint: true, proto: v4, timeout: b.o.timeout, hc: hc}}
		if err := s.start(b.ctx, b.o); err != nil {
			return nil, fmt.Errorf("the CRI server: %w", err)
		}
		b.cri = s
		b.own(s.ep.proc)
		fmt.Printf("cri: k8s.io/cri-streaming %s (streaming.NewServer) around processes of gwload's own, in a child gwload (pid %d, log %s) on %s;\n"+
			"  exec over %s (it has no v5; the gateway's over %s, what kubectl uses), port-forward over %s on both;\n"+
			"  each stream's single-use URL minted first (GetExec, GetPortForward; one HTTP round trip, part of the CRI's setup: the gateway's\n"+
			"  requests need none)\n", moduleVersion("k8s.io/cri-streaming"), s.ep.pid, s.log.Name(), s.ep.addr, v4.Name, v5.Name, v4.Name)
	}
	return b.cri.ep, nil
}

func (s *criServer) start(ctx context.Context, o options) error {
	if s.log == nil {
		f, err := os.CreateTemp("", "gwload-cri-*.log")
		if err != nil {
			return err
		}
		s.log = f
	}
	ch, err := startChildLog(ctx, s.log, "cri", "-bufsize", strconv.Itoa(o.bufSize))
	if err != nil {
		return err
	}
	if err := ch.scan(&s.ep.addr); err != nil {
		ch.close()
		return err
	}
	s.ch, s.ep.pid = ch, ch.pid()
	return nil
}

func (s *criServer) restart(ctx context.Context, o options) error {
	s.stop()
	if err := s.start(ctx, o); err != nil {
		return err
	}
	fmt.Printf("cri: pid %d on %s\n", s.ep.pid, s.ep.addr)
	return nil
}

func (s *criServer) stop() {
	if err := s.ch.close(); err != nil {
		fmt.Printf("cri server: %v; see %s\n", err, s.log.Name())
	}
	s.ep.hc.CloseIdleConnections()
}

// moduleVersion is the version of a module built into gwload.
func moduleVersion(path string) string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == path {
				return m.Version
			}
		}
	}
	return "(version unknown)"
}
