package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// The long scenarios, run only when named (not by "all"): a soak with
// random kills, and ten thousand sessions at once. Both check every byte
// and report what the gateway holds before, during and after.

// gwState is what the gateway holds: its goroutines, threads,
// descriptors, children and memory.
type gwState struct {
	goroutines, threads, fds, children int
	rssKiB                             int64
	heapMiB, stackMiB                  float64
}

func (b *bench) gwState() (gwState, error) {
	m, err := metricsSnapshot(b.gw.addr)
	if err != nil {
		return gwState{}, err
	}
	rss, _ := vmRSS(b.gw.pid)
	return gwState{goroutines: int(m["go_goroutines"]), threads: int(m["go_threads"]), fds: int(m["process_open_fds"]),
		children: children(b.gw.pid), rssKiB: rss,
		heapMiB: m["go_memstats_heap_inuse_bytes"] / (1 << 20), stackMiB: m["go_memstats_stack_inuse_bytes"] / (1 << 20)}, nil
}

func (s gwState) String() string {
	return fmt.Sprintf("%d goroutines, %d threads, %d open files, %d children, RSS %.1f MiB (heap in use %.1f, stacks %.1f)",
		s.goroutines, s.threads, s.fds, s.children, float64(s.rssKiB)/1024, s.heapMiB, s.stackMiB)
}

// settle waits until the gateway holds no more than base (its sessions
// ended, its processes reaped), and returns what it holds then.
func (b *bench) settle(base gwState, d time.Duration) (gwState, error) {
	deadline := time.Now().Add(d)
	for {
		s, err := b.gwState()
		if err == nil && s.goroutines <= base.goroutines && s.fds <= base.fds && s.children <= base.children {
			return s, nil
		}
		if time.Now().After(deadline) {
			return s, fmt.Errorf("after %v the gateway still holds %v (at the start: %v)", d, s, base)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// soak holds SOAK-SESSIONS streams for SOAK-TIME: execs of cat (tty and
// pipes) and tunnels to an echo server, each echoing random bytes that are
// checked; each stream ends after a random number of round trips, half of
// them by an abrupt kill (a reset), and is replaced at once.
func (b *bench) soak() error {
	srv, err := startServer(echoHandler(b.o.timeout))
	if err != nil {
		return err
	}
	defer srv.close()
	port := srv.ln.Addr().(*net.TCPAddr).Port
	base, err := b.gwState()
	if err != nil {
		return err
	}
	fmt.Printf("%d streams held for %v (execs of cat, tty and pipes, and tunnels), every byte echoed and checked, half ended by a reset\n"+
		"at the start the gateway holds %v\n", b.o.soakSessions, b.o.soakTime, base)
	start := time.Now()
	ctx, cancel := context.WithTimeout(b.ctx, b.o.soakTime)
	defer cancel()
	var streams, kills, bytesOK atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, b.o.soakSessions)
	for w := range b.o.soakSessions {
		wg.Go(func() {
			for ctx.Err() == nil {
				n, err := b.soakOne(ctx, w, port, &kills)
				bytesOK.Add(n)
				streams.Add(1)
				if dl, _ := ctx.Deadline(); err != nil && time.Until(dl) > time.Second { // not cut by the end
					errc <- err
					cancel()
					return
				}
			}
		})
	}
	peak := base
	tick := time.NewTicker(10 * time.Second)
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-tick.C:
			if s, err := b.gwState(); err == nil {
				peak = s
				fmt.Printf("  %v: %d streams so far, %d killed; the gateway holds %v\n", time.Since(start).Round(time.Second), streams.Load(), kills.Load(), s)
			}
		}
	}
	tick.Stop()
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return err
	}
	after, err := b.settle(base, time.Minute)
	fmt.Printf("%d streams, %d killed, %.1f MiB echoed exactly; at the end %v\n", streams.Load(), kills.Load(), float64(bytesOK.Load())/(1<<20), after)
	if err != nil {
		return fmt.Errorf("leak: %w", err)
	}
	// The gateway returns its free memory after 30 to 35 s without a stream.
	time.Sleep(40 * time.Second)
	idle, _ := b.gwState()
	fmt.Printf("40 s later, idle: %v (start %.1f MiB, under load %.1f)\n", idle, float64(base.rssKiB)/1024, float64(peak.rssKiB)/1024)
	b.sum = append(b.sum, sumRow{scenario: "soak", figure: fmt.Sprintf("%d streams held %v, %d killed", b.o.soakSessions, b.o.soakTime, kills.Load()),
		gateway: fmt.Sprintf("RSS %.1f → %.1f → %.1f MiB idle", float64(base.rssKiB)/1024, float64(peak.rssKiB)/1024, float64(idle.rssKiB)/1024),
		ceiling: fmt.Sprintf("leaks: none (goroutines %d → %d, fds %d → %d)", base.goroutines, after.goroutines, base.fds, after.fds), target: "no leak", met: "MET"})
	return nil
}

// soakOne runs one stream of worker w to its end; it returns the bytes
// echoed exactly.
func (b *bench) soakOne(ctx context.Context, w, port int, kills *atomic.Int64) (int64, error) {
	var f interface {
		write([]byte) error
		next() ([]byte, error)
	}
	var conn *websocket.Conn
	switch w % 3 {
	case 0, 1:
		s, err := b.openCat(ctx, w%3 == 0, 4096)
		if err != nil {
			return 0, err
		}
		f, conn = s, s.conn
	default:
		t, err := b.gw.portForward(ctx, pfDialer(4096), port)
		if err != nil {
			return 0, err
		}
		f, conn = t, t.conn
	}
	defer conn.Close()
	var ok int64
	for range 1 + mrand.IntN(50) {
		p := make([]byte, 1+mrand.IntN(4096))
		rand.Read(p)
		if err := f.write(p); err != nil {
			return ok, err
		}
		var got []byte
		for len(got) < len(p) {
			q, err := f.next()
			if err != nil {
				return ok, fmt.Errorf("after %d of %d bytes: %w", len(got), len(p), err)
			}
			got = append(got, q...)
		}
		if !bytes.Equal(got, p) {
			return ok, errors.New("echoed bytes differ")
		}
		ok += int64(len(p))
	}
	if mrand.IntN(2) == 0 {
		kills.Add(1)
		conn.NetConn().(*net.TCPConn).SetLinger(0) // the close is a reset
	} else {
		msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
		_ = conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(5*time.Second))
	}
	return ok, nil
}

// openCat opens an exec of cat that echoes exactly what it gets: with a
// tty, once the tty is raw and does not echo.
func (b *bench) openCat(ctx context.Context, tty bool, buf int) (*session, error) {
	req := execReq{Command: []string{"cat"}, Stdin: true, Stdout: true}
	if tty {
		req = execReq{Command: []string{"sh", "-c", "stty raw -echo; echo raw; exec cat"}, Stdin: true, Stdout: true, TTY: true}
	}
	s, err := b.gw.open(ctx, dialer(v5, buf, buf), req)
	if err != nil || !tty {
		return s, err
	}
	var got []byte
	for !bytes.Contains(got, []byte("raw\n")) {
		p, err := s.next()
		if err != nil {
			s.close()
			return nil, fmt.Errorf("waiting for the raw tty: %w (got %q)", err, got)
		}
		got = append(got, p...)
	}
	return s, nil
}

// manySessions opens MANY streams at once, half tty execs of cat, half
// tunnels to an echo server; each echoes one keystroke (4 bytes), checked;
// it reports the gateway's RSS per stream and its CPU while they idle.
func (b *bench) manySessions() error {
	srv, err := startServer(echoHandler(b.o.timeout))
	if err != nil {
		return err
	}
	defer srv.close()
	port := srv.ln.Addr().(*net.TCPAddr).Port
	base, err := b.gwState()
	if err != nil {
		return err
	}
	n := b.o.many
	fmt.Printf("%d streams at once (%d tty execs of cat, %d tunnels), %d opened at a time, each echoing a keystroke, checked\n", n, n/2, n-n/2, b.o.idleConc)
	type one struct {
		conn *websocket.Conn
		f    interface {
			write([]byte) error
			next() ([]byte, error)
		}
	}
	all := make([]one, n)
	t0 := time.Now()
	err = runConcurrently(n, b.o.idleConc, func(i int) error {
		if i%2 == 0 {
			s, err := b.openCat(b.ctx, true, 1024)
			if err != nil {
				return fmt.Errorf("exec %d: %w", i, err)
			}
			all[i] = one{s.conn, s}
			return nil
		}
		t, err := b.gw.portForward(b.ctx, pfDialer(1024), port)
		if err != nil {
			return fmt.Errorf("tunnel %d: %w", i, err)
		}
		all[i] = one{t.conn, t}
		return nil
	})
	defer func() {
		for _, o := range all {
			if o.conn != nil {
				o.conn.Close()
			}
		}
	}()
	if err != nil {
		return err
	}
	opened := time.Since(t0)
	err = runConcurrently(n, b.o.idleConc, func(i int) error {
		key := []byte(fmt.Sprintf("k%03d", i%1000))
		if err := all[i].f.write(key); err != nil {
			return err
		}
		var got []byte
		for len(got) < len(key) {
			q, err := all[i].f.next()
			if err != nil {
				return fmt.Errorf("stream %d: %w", i, err)
			}
			got = append(got, q...)
		}
		if !bytes.Equal(got, key) {
			return fmt.Errorf("stream %d echoed %q, want %q", i, got, key)
		}
		return nil
	})
	if err != nil {
		return err
	}
	held, _ := b.gwState()
	cpu0 := cpuTimeFine(b.gw.pid)
	time.Sleep(10 * time.Second)
	idleCPU := cpuTimeFine(b.gw.pid) - cpu0
	perStream := float64(held.rssKiB-base.rssKiB) / float64(n)
	fmt.Printf("opened in %v; every keystroke echoed; the gateway holds %v: %.1f KiB of RSS per stream, %.3f cores while idle\n",
		opened.Round(time.Millisecond), held, perStream, idleCPU.Seconds()/10)
	b.sum = append(b.sum, sumRow{scenario: "many-sessions", figure: fmt.Sprintf("%d streams at once, every keystroke checked", n),
		gateway: fmt.Sprintf("%.1f KiB RSS per stream, %.3f cores idle", perStream, idleCPU.Seconds()/10),
		ceiling: fmt.Sprintf("opened in %v", opened.Round(time.Millisecond)), target: "report", met: "n/a"})
	return nil
}
