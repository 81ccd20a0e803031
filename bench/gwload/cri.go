package main

import (
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
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"gateway/internal/ptyio"
)

// The reference target: the Kubernetes CRI streaming library (the
// kubelet's streaming server) around a minimal runtime of real processes,
// in a child gwload. Beside the library's routes (/exec/{token},
// /portforward/{token}) the child serves the mint that a kubelet's RPC
// would be:
//
//	POST /mint/exec         {"command":["true"],"stdout":true,...}  ->  {"url":"http://ADDR/exec/TOKEN"}
//	POST /mint/portforward  {"port":8080}                          ->  {"url":"http://ADDR/portforward/TOKEN"}

// criChild serves the library on a loopback port, prints the address and
// serves until its stdin closes.
func criChild(o options, _ []string) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	cfg := streaming.DefaultConfig
	cfg.Addr = ln.Addr().String()
	cfg.BaseURL = &url.URL{Scheme: "http", Host: cfg.Addr, Path: "/"}
	rt := &criRuntime{bufSize: o.bufSize}
	srv, err := streaming.NewServer(cfg, rt)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/", srv)
	mux.HandleFunc("POST /mint/exec", func(w http.ResponseWriter, r *http.Request) {
		var req execReq
		if !decode(w, r, &req) {
			return
		}
		// The runtime keeps the request under an id of its own, as a
		// runtime keeps its exec instances.
		id := "exec-" + strconv.FormatInt(rt.seq.Add(1), 10)
		rt.execs.Store(id, req)
		resp, err := srv.GetExec(&runtimeapi.ExecRequest{ContainerId: id, Cmd: req.Command, Tty: req.TTY,
			Stdin: req.Stdin, Stdout: req.Stdout, Stderr: req.Stderr})
		answer(w, resp.GetUrl(), err)
	})
	mux.HandleFunc("POST /mint/portforward", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Port int32 }
		if !decode(w, r, &req) {
			return
		}
		resp, err := srv.GetPortForward(&runtimeapi.PortForwardRequest{PodSandboxId: "host", Port: []int32{req.Port}})
		answer(w, resp.GetUrl(), err)
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	fmt.Println(ln.Addr())
	go func() {
		waitStdin()
		hs.Close() // the hijacked streams end with the process
	}()
	if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(v); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

func answer(w http.ResponseWriter, u string, err error) {
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{"url": u})
}

// criRuntime is the library's Runtime: processes started with os/exec in
// the temporary directory, a pty for tty sessions, and TCP to 127.0.0.1
// for port-forward. Attach is not offered.
type criRuntime struct {
	bufSize int
	seq     atomic.Int64
	execs   sync.Map // exec id -> execReq, from its mint to its start
}

var _ streaming.Runtime = (*criRuntime)(nil)

// Exec runs cmd until it exits. The library hands every session a stdin
// reader (one that is at its end at once when stdin was not asked for);
// when stdin was asked for, its end is the end of the session (v4 has no
// half-close: the stream ends with the WebSocket), and the runtime hangs
// up the terminal or closes the pipe, as the gateway ends the process of a
// client that left. The exit code goes back as the status.
func (rt *criRuntime) Exec(_ context.Context, id string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool,
	resize <-chan remotecommand.TerminalSize) error {
	v, ok := rt.execs.LoadAndDelete(id)
	if !ok || len(cmd) == 0 {
		return fmt.Errorf("no exec %q", id)
	}
	stdin := v.(execReq).Stdin
	c := exec.Command(cmd[0], cmd[1:]...)
	c.Dir = os.TempDir()
	var err error
	if tty {
		err = rt.execTTY(c, stdin, in, out, resize)
	} else {
		err = execPipes(c, stdin, in, out, errw, resize)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return &utilexec.ExitErrorWrapper{ExitError: ee}
	}
	return err
}

// execTTY runs c in a pty: output is read until the tty side is gone, and
// sizes are applied as they come.
func (rt *criRuntime) execTTY(c *exec.Cmd, stdin bool, in io.Reader, out io.Writer, resize <-chan remotecommand.TerminalSize) error {
	ptmx, err := startPty(c)
	if err != nil {
		return err
	}
	defer ptmx.Close()
	go func() { // until the library closes resize, after the session
		for sz := range resize {
			_ = ptyio.SetSize(ptmx, sz.Width, sz.Height)
		}
	}()
	if stdin {
		go func() {
			_, _ = io.Copy(ptmx, in)
			ptmx.Close() // hang up: the kernel signals the session
		}()
	}
	if err := copyOut(out, ptmx, rt.bufSize); !errors.Is(err, syscall.EIO) {
		// The output did not end by itself: hung up, or the client left.
		_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
	}
	return c.Wait()
}

// execPipes runs c with pipes; os/exec copies the output to the streams.
func execPipes(c *exec.Cmd, stdin bool, in io.Reader, out, errw io.Writer, resize <-chan remotecommand.TerminalSize) error {
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	c.Stdout, c.Stderr = out, errw
	var w io.WriteCloser
	if stdin {
		var err error
		if w, err = c.StdinPipe(); err != nil {
			return err
		}
	}
	if err := c.Start(); err != nil {
		return err
	}
	go func() {
		for range resize { // sizes mean nothing without a pty
		}
	}()
	if stdin {
		go func() {
			_, _ = io.Copy(w, in)
			w.Close()
		}()
	}
	return c.Wait()
}

// Attach is not offered: no scenario attaches to the CRI library.
func (rt *criRuntime) Attach(context.Context, string, io.Reader, io.WriteCloser, io.WriteCloser, bool, <-chan remotecommand.TerminalSize) error {
	return errors.New("attach is not offered by gwload's runtime")
}

// PortForward dials 127.0.0.1:port and copies both ways: the client's
// bytes until the stream ends (then a half-close), the server's until it
// closes, which ends the forward.
func (rt *criRuntime) PortForward(_ context.Context, _ string, port int32, s io.ReadWriteCloser) error {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))), 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	tc := c.(*net.TCPConn)
	up := make(chan struct{})
	go func() {
		defer close(up)
		_ = copyHalf(tc, s, rt.bufSize)
	}()
	err = copyOut(s, tc, rt.bufSize)
	s.Close() // ends the client's side if the client has not
	<-up
	return err
}
