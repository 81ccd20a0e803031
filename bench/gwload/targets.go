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
	"strings"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"gateway/stream/wsproto"
)

// The protocols: exec and attach over v5 (what kubectl uses),
// port-forward over v4.
var v5, v4 = wsproto.V5, wsproto.V4

// endpoint is a server of the channel protocols that gwload measures: the
// gateway.
type endpoint struct {
	*proc
	addr      string // host:port
	token     string // bearer token
	container string // the container to exec into
	proto     wsproto.Protocol
	metrics   bool // serves /metrics
	timeout   time.Duration
	hc        *http.Client // for the API
}

// execReq is the request of one exec.
type execReq struct {
	Command []string `json:"command"`
	Stdin   bool     `json:"stdin"`
	Stdout  bool     `json:"stdout"`
	Stderr  bool     `json:"stderr"`
	TTY     bool     `json:"tty"`
}

// execURL returns the URL of an exec.
func (e *endpoint) execURL(r execReq) string {
	q := url.Values{"command": r.Command}
	for name, v := range map[string]bool{"stdin": r.Stdin, "stdout": r.Stdout, "stderr": r.Stderr, "tty": r.TTY} {
		q.Set(name, map[bool]string{true: "1", false: "0"}[v])
	}
	return "ws://" + e.addr + "/api/v1/containers/" + url.PathEscape(e.container) + "/exec?" + q.Encode()
}

// pfURL returns the URL of a tunnel to port on 127.0.0.1: in the gateway's
// "host" sandbox, gwload's own network.
func (e *endpoint) pfURL(port int) string {
	return fmt.Sprintf("ws://%s/api/v1/sandboxes/%s/portforward?port=%d", e.addr, pfSandbox, port)
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
}

// startGateway writes a config with one container, starts the gateway on
// a free loopback port and waits until it serves and the container runs.
func startGateway(ctx context.Context, o options) (*gatewayProc, error) {
	dir, err := os.MkdirTemp("", "gwload-")
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "gateway.yaml")
	yaml := fmt.Sprintf("containers:\n  - id: %s\n    command: [sleep, \"1000000\"]\n    workingDir: /tmp\n    stdin: true\n", o.container)
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
	args := []string{"--listen", g.addr, "--token", g.o.token, "--config", cfg}
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

// fresh restarts the gateway gwload started, so that a memory scenario
// measures a fresh process: the heap grown by the other
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
	return nil
}

// --- gwload's children --------------------------------------------------------

// child is a gwload child process (-internal-child): a relay or a memory
// reference. It talks in lines on its stdout, and ends
// when its stdin closes (or when it is done).
type child struct {
	cmd   *exec.Cmd
	stdin io.Closer
	out   *bufio.Reader
}

func startChild(ctx context.Context, name string, args ...string) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, exe, append([]string{"-internal-child", name}, args...)...)
	cmd.Stderr = os.Stderr
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
