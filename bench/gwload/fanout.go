package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// --- REST and WebSocket helpers for the scenarios below ----------------------

// rest does one JSON request on the gateway's API and checks the status
// code; out, when not nil, receives the decoded answer.
func (c *client) rest(ctx context.Context, method, path string, body any, want int, out any) error {
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
	req, err := http.NewRequestWithContext(ctx, method, "http://"+c.addr+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
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

// dialWS opens a WebSocket on the gateway with the bearer token and checks
// the chosen subprotocol.
func (c *client) dialWS(ctx context.Context, d *websocket.Dialer, u, proto string) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	h := http.Header{"Authorization": {"Bearer " + c.token}}
	conn, resp, err := d.DialContext(ctx, u, h)
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			return nil, fmt.Errorf("dial: %w: HTTP %d: %s", err, resp.StatusCode, strings.TrimSpace(string(body)))
		}
		return nil, fmt.Errorf("dial: %w", err)
	}
	if conn.Subprotocol() != proto {
		conn.Close()
		return nil, fmt.Errorf("server chose subprotocol %q, want %q", conn.Subprotocol(), proto)
	}
	return conn, nil
}

// containerInfo is the part of GET /api/v1/containers/{id} the tool checks.
type containerInfo struct {
	State       string `json:"state"`
	ExitCode    *int   `json:"exitCode"`
	OutputBytes int64  `json:"outputBytes"`
}

// attach opens an attach WebSocket (stdout and stderr, live output only)
// and reads the empty ready frame on channel 1.
func (c *client) attach(ctx context.Context, d *websocket.Dialer, id string, stdin bool) (*session, error) {
	q := url.Values{"stdout": {"1"}, "stderr": {"1"}, "stdin": {"0"}, "replay": {"0"}}
	if stdin {
		q.Set("stdin", "1")
	}
	u := "ws://" + c.addr + "/api/v1/containers/" + url.PathEscape(id) + "/attach?" + q.Encode()
	conn, err := c.dialWS(ctx, d, u, v5)
	if err != nil {
		return nil, err
	}
	s := c.newSession(conn)
	if err := s.readReady(chStdout); err != nil {
		conn.Close()
		return nil, err
	}
	return s, nil
}

// --- attach-fanout -----------------------------------------------------------

// fanoutScript is the main process of the attach-fanout containers: it
// echoes the numbered ping lines it reads until "go", then writes n zero
// bytes as fast as it can. The pings tell gwload that every attacher is
// subscribed: the ready frame alone does not say that the gateway already
// delivers live output to it.
func fanoutScript(n int64) string {
	return fmt.Sprintf(`while read x && [ "$x" != go ]; do echo "$x"; done; exec head -c %d /dev/zero`, n)
}

// zeros is compared with the data the attachers receive.
var zeros = make([]byte, 64<<10)

// allZero reports whether p holds only zero bytes.
func allZero(p []byte) bool {
	for len(p) > 0 {
		k := min(len(p), len(zeros))
		if !bytes.Equal(p[:k], zeros[:k]) {
			return false
		}
		p = p[k:]
	}
	return true
}

// pingParser checks the handshake part of an output stream: ping lines
// "1\n", "2\n", ... (a suffix of them: a late subscriber misses the first
// ones), then the first zero byte starts the data.
type pingParser struct {
	first, last atomic.Int64 // ping numbers seen; 0 before the first
	line        []byte       // a ping line not yet complete
	inData      bool
}

// feed takes output bytes and returns the part that is data.
func (pp *pingParser) feed(p []byte) ([]byte, error) {
	if pp.inData {
		return p, nil
	}
	head := p
	if i := bytes.IndexByte(p, 0); i >= 0 {
		head, p, pp.inData = p[:i], p[i:], true
	} else {
		p = nil
	}
	for _, c := range head {
		if c != '\n' {
			if c < '0' || c > '9' || len(pp.line) > 9 {
				return nil, fmt.Errorf("unexpected output %q before the data", head)
			}
			pp.line = append(pp.line, c)
			continue
		}
		v, err := strconv.ParseInt(string(pp.line), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("bad ping line %q", pp.line)
		}
		pp.line = pp.line[:0]
		if last := pp.last.Load(); last != 0 && v != last+1 {
			return nil, fmt.Errorf("ping %d after ping %d", v, last)
		}
		if pp.first.Load() == 0 {
			pp.first.Store(v)
		}
		pp.last.Store(v)
	}
	if pp.inData && len(pp.line) > 0 {
		return nil, fmt.Errorf("partial ping line %q before the data", pp.line)
	}
	return p, nil
}

// fanReader reads one attacher to its end.
type fanReader struct {
	s        *session
	pings    pingParser
	data     int64     // bytes from the first zero byte on
	statusAt time.Time // when the status arrived
	err      error
	done     chan struct{}
}

func (r *fanReader) run() {
	defer close(r.done)
	defer r.s.conn.Close()
	for {
		ch, p, err := r.s.next()
		if errors.Is(err, errClosed) {
			break
		}
		if err != nil {
			r.err = fmt.Errorf("after %d data bytes: %w", r.data, err)
			return
		}
		switch ch {
		case chStatus:
			r.statusAt = time.Now()
		case chStdout:
			d, err := r.pings.feed(p)
			if err != nil {
				r.err = err
				return
			}
			if !allZero(d) {
				r.err = fmt.Errorf("a non-zero byte in the data after %d bytes", r.data)
				return
			}
			r.data += int64(len(d))
		}
	}
	if r.s.closeCode == CloseSlowConsumer {
		r.err = fmt.Errorf("cut by the gateway as a slow consumer (close %d) after %d data bytes", r.s.closeCode, r.data)
		return
	}
	r.err = r.s.checkSuccess()
}

// CloseSlowConsumer is the gateway's close code for an attacher that fell
// too far behind.
const CloseSlowConsumer = 4001

func parseFanout(s string) ([]int, error) {
	var ks []int
	for f := range strings.SplitSeq(s, ",") {
		k, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || k < 1 {
			return nil, fmt.Errorf("-fanout %q: want a comma-separated list of positive attacher counts", s)
		}
		if !slices.Contains(ks, k) {
			ks = append(ks, k)
		}
	}
	return ks, nil
}

func (b *bench) attachFanout() error {
	ks, err := parseFanout(b.o.fanout)
	if err != nil {
		return err
	}
	n := b.o.fanoutBytes
	script := fanoutScript(n)
	command := []string{"sh", "-c", script}
	fmt.Printf("attach fan-out: a fresh container per measurement (POST, then DELETE), main process sh -c %q, stdin, no tty;\n"+
		"K attachers (stdout=1 stderr=1 replay=0; the first also stdin=1) connected and subscribed (ping lines echoed to all) before \"go\" on stdin;\n"+
		"K in %v, %d bytes each, %d reps rotating; rate = K*%d bytes / (\"go\" sent .. last status received); gateway CPU from /proc/%d/stat\n"+
		"ceiling (against K=1): the same command started by gwload with pipes, \"go\" written, stdout read directly (%d-byte reads)\n",
		script, ks, n, b.o.reps, n, b.o.pid, b.o.bufSize)
	rates := make(map[int][]float64)
	cpus := make(map[int][]float64) // gateway CPU ms per MiB delivered
	var late []string
	var ceils, ceilCPU []float64
	seq := 0
	gw := func(k int) func(rep int) error {
		return func(rep int) error {
			seq++
			id := fmt.Sprintf("gwload-fanout-%d-%d", os.Getpid(), seq)
			rate, cpuMS, lateN, err := b.fanoutOnce(id, command, k, n, rep)
			if err != nil {
				return fmt.Errorf("with %d attachers: %w", k, err)
			}
			rates[k] = append(rates[k], rate)
			if cpuMS >= 0 {
				cpus[k] = append(cpus[k], cpuMS)
			}
			if lateN > 0 {
				late = append(late, fmt.Sprintf("K=%d rep %d: %d", k, rep+1, lateN))
			}
			return nil
		}
	}
	ceil := func(rep int) error {
		cpu := b.startCPU()
		self0 := selfCPU()
		rate, err := fanoutDirect(command, n, b.o.bufSize, b.o.timeout)
		if err != nil {
			return fmt.Errorf("ceiling: %w", err)
		}
		per := ms(selfCPU()-self0) / (float64(n) / (1 << 20))
		ceils, ceilCPU = append(ceils, rate), append(ceilCPU, per)
		fmt.Printf("  rep %d ceiling: %s; gwload (the reader) cpu %.3f ms/MiB (%s)\n", rep+1, mibps(rate), per, cpu.stop())
		return nil
	}
	fns := []func(int) error{ceil}
	for _, k := range ks {
		fns = append(fns, gw(k))
	}
	if err := b.rotate(fns...); err != nil {
		return err
	}
	c := median(ceils)
	ref := math.NaN()
	if len(rates[1]) > 0 {
		ref = median(rates[1])
	}
	for _, k := range ks {
		g := median(rates[k])
		cpuS, ceilCPUS, cpuRatio := "n/a", fmt.Sprintf("%.3f ms/MiB (gwload reading the pipe)", median(ceilCPU)), "n/a"
		if len(cpus[k]) > 0 {
			cpuS = fmt.Sprintf("%.3f ms/MiB", median(cpus[k]))
			cpuRatio = fmt.Sprintf("%.3f", median(ceilCPU)/median(cpus[k]))
		}
		if k == 1 {
			fmt.Printf("attach-fanout K=1: gateway %s, ceiling %s (medians), ratio %.3f; per-rep ratios %s; gateway cpu %s, reader cpu in the ceiling %s\n",
				mibps(g), mibps(c), g/c, pairRatios(rates[1], ceils), cpuS, ceilCPUS)
			b.add(row{"attach-fanout", fmt.Sprintf("K=1: bytes/s delivered (%d bytes)", n), mibps(g), mibps(c) + " (pipe read directly)",
				fmt.Sprintf("%.3f", g/c), "none set", "n/a"})
		} else {
			fmt.Printf("attach-fanout K=%d: aggregate %s (medians; K=1 rate %s, so %.2f× it; %.3f of the K=1 ceiling), gateway cpu %s\n",
				k, mibps(g), mibps(ref), g/ref, g/c, cpuS)
			b.add(row{"attach-fanout", fmt.Sprintf("K=%d: aggregate bytes/s delivered (K×%d bytes)", k, n), mibps(g),
				mibps(ref) + " (K=1 rate, reference)", fmt.Sprintf("%.3f", g/ref), "none set", "n/a"})
		}
		b.add(row{"attach-fanout", fmt.Sprintf("K=%d: gateway CPU per MiB delivered", k), cpuS, ceilCPUS, cpuRatio, "none set", "n/a"})
	}
	if len(late) > 0 {
		fmt.Printf("attach-fanout: attachers that had their ready frame but missed the first ping (subscribed after it was published): %s\n",
			strings.Join(late, "; "))
	} else {
		fmt.Println("attach-fanout: every attacher saw the first ping (none was subscribed late)")
	}
	return nil
}

// fanoutOnce runs one gateway measurement: a fresh container, k attachers,
// the pings, "go", and every attacher read to its end. It returns the
// aggregate rate, the gateway's CPU in ms per MiB delivered (-1 without
// its pid) and the number of attachers that missed the first ping.
func (b *bench) fanoutOnce(id string, command []string, k int, n int64, rep int) (rate, cpuMS float64, late int, err error) {
	spec := map[string]any{"id": id, "command": command, "stdin": true, "tty": false}
	if err := b.c.rest(b.ctx, "POST", "/api/v1/containers", spec, http.StatusCreated, nil); err != nil {
		return 0, 0, 0, err
	}
	var readers []*fanReader
	defer func() {
		for _, r := range readers {
			r.s.conn.Close()
			<-r.done
		}
		derr := b.c.rest(context.WithoutCancel(b.ctx), "DELETE", "/api/v1/containers/"+id, nil, http.StatusNoContent, nil)
		if err == nil && derr != nil {
			err = derr
		}
	}()
	d := &websocket.Dialer{Subprotocols: []string{v5}, ReadBufferSize: 64 << 10, WriteBufferSize: 4096, HandshakeTimeout: 10 * time.Second}
	tOpen := time.Now()
	for i := range k {
		s, err := b.c.attach(b.ctx, d, id, i == 0)
		if err != nil {
			return 0, 0, 0, fmt.Errorf("attacher %d: %w", i, err)
		}
		r := &fanReader{s: s, done: make(chan struct{})}
		readers = append(readers, r)
		go r.run()
	}
	openTime := time.Since(tOpen)
	// Ping until every attacher has seen the same ping: then all are
	// subscribed. Bounded: 50 pings, 200ms each.
	stdin := readers[0].s
	var pingBytes int64
	pings := 0
	for subscribed := false; !subscribed; {
		if pings == 50 {
			return 0, 0, 0, fmt.Errorf("after %d pings, not every attacher sees the output", pings)
		}
		pings++
		line := strconv.Itoa(pings) + "\n"
		pingBytes += int64(len(line))
		if err := stdin.write([]byte(line)); err != nil {
			return 0, 0, 0, fmt.Errorf("ping: %w", err)
		}
		for deadline := time.Now().Add(200 * time.Millisecond); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			subscribed = true
			for _, r := range readers {
				select {
				case <-r.done:
					return 0, 0, 0, fmt.Errorf("an attacher ended during the pings: %v", r.err)
				default:
				}
				subscribed = subscribed && r.pings.last.Load() == int64(pings)
			}
			if subscribed {
				break
			}
		}
	}
	for _, r := range readers {
		if r.pings.first.Load() != 1 {
			late++
		}
	}

	cpu := b.startCPU()
	var gw0 time.Duration
	if b.o.pid > 0 {
		gw0, _ = cpuTime(b.o.pid)
	}
	t0 := time.Now()
	if err := stdin.write([]byte("go\n")); err != nil {
		return 0, 0, 0, fmt.Errorf("go: %w", err)
	}
	var end time.Time
	for i, r := range readers {
		<-r.done
		if r.err != nil {
			return 0, 0, 0, fmt.Errorf("attacher %d: %w", i, r.err)
		}
		if r.data != n || r.s.stderr != 0 {
			return 0, 0, 0, fmt.Errorf("attacher %d received %d data bytes and %d on stderr, want %d and 0", i, r.data, r.s.stderr, n)
		}
		if r.statusAt.After(end) {
			end = r.statusAt
		}
	}
	cpuMS = -1
	var gwCPU time.Duration
	if b.o.pid > 0 {
		g1, _ := cpuTime(b.o.pid)
		gwCPU = g1 - gw0
		cpuMS = ms(gwCPU) / (float64(k) * float64(n) / (1 << 20))
	}
	line := cpu.stop()
	dur := end.Sub(t0)
	rate = float64(k) * float64(n) / dur.Seconds()

	// The container saw the same bytes: the pings and the data.
	var info containerInfo
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if err := b.c.rest(b.ctx, "GET", "/api/v1/containers/"+id, nil, http.StatusOK, &info); err != nil {
			return 0, 0, 0, err
		}
		if info.State == "exited" || time.Now().After(deadline) {
			break
		}
	}
	if info.State != "exited" || info.ExitCode == nil || *info.ExitCode != 0 || info.OutputBytes != n+pingBytes {
		return 0, 0, 0, fmt.Errorf("container after the run: %+v (exit code %v), want exited, exit code 0 and %d output bytes",
			info, info.ExitCode, n+pingBytes)
	}
	cpuS := "n/a"
	if cpuMS >= 0 {
		cpuS = fmt.Sprintf("%.3f ms/MiB", cpuMS)
	}
	fmt.Printf("  rep %d gateway K=%d: %s aggregate in %.3fs (%d attachers opened in %.0fms, %d ping(s); gateway %s; %s)\n",
		rep+1, k, mibps(rate), dur.Seconds(), k, ms(openTime), pings, cpuS, line)
	return rate, cpuMS, late, nil
}

// fanoutDirect is the ceiling: the same command with pipes, one ping
// echoed, then "go", and stdout read to its end.
func fanoutDirect(command []string, n int64, bufSize int, timeout time.Duration) (float64, error) {
	cmd := exec.Command(command[0], command[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return 0, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	if f, ok := out.(*os.File); ok {
		_ = f.SetReadDeadline(time.Now().Add(timeout))
	}
	if _, err := io.WriteString(in, "1\n"); err != nil {
		abort(cmd)
		return 0, err
	}
	br := bufio.NewReaderSize(out, 16)
	if line, err := br.ReadString('\n'); err != nil || line != "1\n" {
		abort(cmd)
		return 0, fmt.Errorf("ping echo %q, %v", line, err)
	}
	if br.Buffered() != 0 {
		abort(cmd)
		return 0, errors.New("output after the ping echo before go")
	}
	t0 := time.Now()
	if _, err := io.WriteString(in, "go\n"); err != nil {
		abort(cmd)
		return 0, err
	}
	in.Close()
	buf := make([]byte, bufSize)
	var got int64
	for {
		k, err := out.Read(buf)
		if !allZero(buf[:k]) {
			abort(cmd)
			return 0, fmt.Errorf("a non-zero byte after %d bytes", got)
		}
		got += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			abort(cmd)
			return 0, err
		}
	}
	d := time.Since(t0)
	if err := cmd.Wait(); err != nil {
		return 0, err
	}
	if got != n {
		return 0, fmt.Errorf("read %d bytes, want %d", got, n)
	}
	return float64(n) / d.Seconds(), nil
}
