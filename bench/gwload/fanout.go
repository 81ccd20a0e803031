package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"gateway/stream/wsproto"
)

// containerInfo is the part of GET /api/v1/containers/{id} the tool checks.
type containerInfo struct {
	State       string `json:"state"`
	ExitCode    *int   `json:"exitCode"`
	OutputBytes int64  `json:"outputBytes"`
}

// attach opens an attach WebSocket on the gateway (stdout and stderr, live
// output only) and reads the empty ready frame on channel 1.
func (e *endpoint) attach(ctx context.Context, d *websocket.Dialer, id string, stdin bool) (*session, error) {
	q := url.Values{"stdout": {"1"}, "stderr": {"1"}, "stdin": {"0"}, "replay": {"0"}}
	if stdin {
		q.Set("stdin", "1")
	}
	conn, err := e.dial(ctx, d, "ws://"+e.addr+"/api/v1/containers/"+url.PathEscape(id)+"/attach?"+q.Encode())
	if err != nil {
		return nil, err
	}
	s := &session{stream: newStream(conn, e.proto, e.timeout)}
	if err := s.readReady(wsproto.Stdout); err != nil {
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
		ch, p, err := r.s.read()
		if errors.Is(err, errClosed) {
			break
		}
		if err != nil {
			r.err = fmt.Errorf("after %d data bytes: %w", r.data, err)
			return
		}
		switch ch {
		case wsproto.Error:
			r.statusAt = time.Now()
		case wsproto.Stdout:
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
		"K in %v, %d bytes each, %d reps rotating; rate = K*%d bytes / (\"go\" sent .. last status received); gateway CPU from /proc/%d/task/*/schedstat\n"+
		"ceiling (against K=1): the same command started by gwload with pipes, \"go\" written, stdout read directly (%d-byte reads)\n",
		script, ks, n, b.o.reps, n, b.gw.pid, b.o.bufSize)
	var late []string
	start := b.procStarter(command, false, true)
	arms := []*arm{{name: "ceiling", what: "pipe read directly", run: func(r *rep) error {
		f, err := start()
		if err != nil {
			return err
		}
		defer f.close()
		if err := f.write([]byte("1\n")); err != nil {
			return err
		}
		if p, err := f.next(); err != nil || string(p) != "1\n" {
			return fmt.Errorf("ping echo %q, %v", p, err)
		}
		self0, t0 := selfCPU(), time.Now()
		if err := f.write([]byte("go\n")); err != nil {
			return err
		}
		var got int64
		for {
			p, err := f.next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
			if !allZero(p) {
				return fmt.Errorf("a non-zero byte after %d bytes", got)
			}
			got += int64(len(p))
		}
		v, per := rate(n, time.Since(t0)), ms(selfCPU()-self0)/mib(n)
		if got != n {
			return fmt.Errorf("read %d bytes, want %d", got, n)
		}
		r.set("rate", v)
		r.set("cpu", per)
		r.say("%s; gwload (the reader) cpu %.3f ms/MiB", mibps(v), per)
		return nil
	}}}
	seq := 0
	for _, k := range ks {
		arms = append(arms, &arm{name: fmt.Sprintf("gateway K=%d", k), proc: b.gw.proc, run: func(r *rep) error {
			seq++
			lateN, err := b.fanoutOnce(r, fmt.Sprintf("gwload-fanout-%d-%d", os.Getpid(), seq), command, k, n)
			if lateN > 0 {
				late = append(late, fmt.Sprintf("K=%d rep %d: %d", k, r.n, lateN))
			}
			return err
		}})
	}
	res, err := b.measure(b.o.reps, arms...)
	if err != nil {
		return err
	}
	for _, k := range ks {
		main := fmt.Sprintf("gateway K=%d", k)
		f := fig{label: fmt.Sprintf("K=1: bytes/s delivered (%d bytes)", n), key: "rate", unit: mibps, main: main}
		if k != 1 {
			f = fig{label: fmt.Sprintf("K=%d: aggregate bytes/s delivered (K×%d bytes)", k, n), key: "rate", unit: mibps, main: main,
				ceil: "gateway K=1", ceilWhat: "K=1 rate, reference"}
		}
		b.report("attach-fanout", res, f, fig{label: fmt.Sprintf("K=%d: gateway CPU per MiB delivered", k), key: "cpu", unit: msPerMiB,
			lower: true, main: main, ceilWhat: "gwload reading the pipe"})
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
// the pings, "go", and every attacher read to its end. It records the
// aggregate rate and the gateway's CPU per MiB delivered, and returns the
// number of attachers that missed the first ping.
func (b *bench) fanoutOnce(r *rep, id string, command []string, k int, n int64) (late int, err error) {
	gw := b.gw
	spec := map[string]any{"id": id, "command": command, "stdin": true, "tty": false}
	if err := gw.rest(b.ctx, "POST", "/api/v1/containers", spec, http.StatusCreated, nil); err != nil {
		return 0, err
	}
	var readers []*fanReader
	defer func() {
		for _, r := range readers {
			r.s.conn.Close()
			<-r.done
		}
		derr := gw.rest(context.WithoutCancel(b.ctx), "DELETE", "/api/v1/containers/"+id, nil, http.StatusNoContent, nil)
		if err == nil && derr != nil {
			err = derr
		}
	}()
	d := dialer(gw.proto, 64<<10, 4096)
	tOpen := time.Now()
	for i := range k {
		s, err := gw.attach(b.ctx, d, id, i == 0)
		if err != nil {
			return 0, fmt.Errorf("attacher %d: %w", i, err)
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
			return 0, fmt.Errorf("after %d pings, not every attacher sees the output", pings)
		}
		pings++
		line := strconv.Itoa(pings) + "\n"
		pingBytes += int64(len(line))
		if err := stdin.write([]byte(line)); err != nil {
			return 0, fmt.Errorf("ping: %w", err)
		}
		for deadline := time.Now().Add(200 * time.Millisecond); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			subscribed = true
			for _, r := range readers {
				select {
				case <-r.done:
					return 0, fmt.Errorf("an attacher ended during the pings: %v", r.err)
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

	r.cpu.restart() // the CPU of the delivery only
	t0 := time.Now()
	if err := stdin.write([]byte("go\n")); err != nil {
		return 0, fmt.Errorf("go: %w", err)
	}
	var end time.Time
	for i, r := range readers {
		<-r.done
		if r.err != nil {
			return 0, fmt.Errorf("attacher %d: %w", i, r.err)
		}
		if r.data != n || r.s.stderr != 0 {
			return 0, fmt.Errorf("attacher %d received %d data bytes and %d on stderr, want %d and 0", i, r.data, r.s.stderr, n)
		}
		if r.statusAt.After(end) {
			end = r.statusAt
		}
	}
	total := int64(k) * n
	r.setCPU("cpu", gw.proc, mib(total))
	dur := end.Sub(t0)
	r.set("rate", rate(total, dur))

	// The container saw the same bytes: the pings and the data.
	var info containerInfo
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if err := gw.rest(b.ctx, "GET", "/api/v1/containers/"+id, nil, http.StatusOK, &info); err != nil {
			return 0, err
		}
		if info.State == "exited" || time.Now().After(deadline) {
			break
		}
	}
	if info.State != "exited" || info.ExitCode == nil || *info.ExitCode != 0 || info.OutputBytes != n+pingBytes {
		return 0, fmt.Errorf("container after the run: %+v (exit code %v), want exited, exit code 0 and %d output bytes",
			info, info.ExitCode, n+pingBytes)
	}
	r.say("%s aggregate in %.3fs", mibps(rate(total, dur)), dur.Seconds())
	r.note("%d attachers opened in %.0fms, %d ping(s)", k, ms(openTime), pings)
	if v, ok := r.vals["cpu"]; ok {
		r.note("gateway %.3f ms/MiB", v)
	}
	return late, nil
}
