package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"gateway/internal/ptyio"
)

// The exec scenarios, and their ceilings: the same commands started by
// gwload itself and read directly.

// --- tty-throughput, pipe-throughput -----------------------------------------

func (b *bench) throughput(tty bool) error {
	name, kind, target := "pipe-throughput", "pipe", 0.6
	if tty {
		name, kind, target = "tty-throughput", "pty", 0.9
	}
	cri, err := b.criEndpoint()
	if err != nil {
		return err
	}
	n := b.o.bytes
	req := execReq{Command: []string{"head", "-c", strconv.FormatInt(n, 10), "/dev/zero"}, Stdout: true, TTY: tty}
	fmt.Printf("%s, tty=%v, %d bytes, through the gateway and the CRI library, %d reps rotating; ceiling: the same command started by gwload with a %s read directly (%d-byte reads)\n",
		strings.Join(req.Command, " "), tty, n, b.o.reps, kind, b.o.bufSize)
	d := func(e *endpoint) *websocket.Dialer { return dialer(e.proto, 64<<10, 4096) }
	arms := []*arm{
		readArm(&arm{name: "gateway", what: "the same session, neither kept nor recorded", proc: b.gw.proc}, n, b.gw.execFlow(b.ctx, d(b.gw), req), nil),
		readArm(&arm{name: "ceiling", what: "the " + kind + " read directly"}, n, b.procStarter(req.Command, tty, false), nil),
		readArm(&arm{name: "cri", proc: cri.proc}, n, cri.execFlow(b.ctx, d(cri), req), nil),
	}
	var refs []string
	if tty {
		// The same with the session's terminal state kept, as a
		// detachable shell's is, to restore its screen.
		kept := req
		kept.detach = time.Hour
		arms = append(arms, readArm(&arm{name: screenKept, what: "tty session kept for a rejoin (detach=1h): terminal state on", proc: b.gw.proc},
			n, b.gw.execFlow(b.ctx, d(b.gw), kept), nil))
	}
	if b.gwProc != nil {
		// The same in a container whose sessions are recorded.
		rec := *b.gw
		rec.container = recordedContainer(b.o)
		arms = append(arms, readArm(&arm{name: recorded, what: "a recorded session (asciicast v2 to the state directory)", proc: b.gw.proc},
			n, rec.execFlow(b.ctx, d(&rec), req), nil))
	}
	if !tty {
		// The least any relay of the pipe over loopback TCP costs: one
		// goroutine reading the pipe and writing a TCP socket, another
		// reading it; no WebSocket, no hand-off.
		fmt.Println("reference: a bare relay of the same pipe over loopback TCP inside gwload (no WebSocket)")
		arms = append(arms, readArm(&arm{name: "tcp relay", what: "bare pipe-to-TCP relay"}, n, b.relayStarter(req.Command), nil))
		refs = []string{"tcp relay"}
	}
	res, err := b.measure(b.o.reps, arms...)
	if err != nil {
		return err
	}
	figs := []fig{{label: "throughput (bytes/s at the client)", key: "rate", unit: mibps, refs: refs,
		goals: []goal{{vs: "ceiling", bound: target}}},
		{label: "server CPU per MiB carried", key: "cpu", unit: msPerMiB, lower: true}}
	if tty {
		figs = append(figs, fig{label: "throughput with the terminal state on (bytes/s at the client)", main: screenKept, key: "rate", unit: mibps,
			refs: []string{"gateway"}, goals: []goal{{vs: "gateway", bound: 0.8}}})
	}
	figs = append(figs, fig{label: "throughput of a recorded session (bytes/s at the client)", main: recorded, key: "rate", unit: mibps,
		refs: []string{"gateway"}},
		fig{label: "server CPU per MiB carried, recorded", main: recorded, key: "cpu", unit: msPerMiB, lower: true, refs: []string{"gateway"}})
	b.report(name, res, figs...)
	return nil
}

// screenKept is the gateway arm whose tty sessions keep a terminal state;
// recorded, the one whose sessions are recorded.
const (
	screenKept = "gateway, screen kept"
	recorded   = "gateway, recorded"
)

// checker checks the bytes of one run of a readArm and, at the end, the
// rest.
type checker interface {
	feed(p []byte)
	done() error
}

// readArm makes a's run: a flow from start, read to its end, which must
// come after n bytes (each handed to a checker from check, when not nil);
// timed from the start to the end.
func readArm(a *arm, n int64, start func() (flow, error), check func() checker) *arm {
	a.run = func(r *rep) error {
		var chk checker
		if check != nil {
			chk = check()
		}
		t0 := time.Now()
		f, err := start()
		if err != nil {
			return err
		}
		var got, chunks int64
		var first time.Time
		for {
			p, err := f.next()
			if err == io.EOF {
				break
			}
			if err != nil {
				f.close()
				return fmt.Errorf("after %d bytes: %w", got, err)
			}
			if first.IsZero() {
				first = time.Now()
			}
			got, chunks = got+int64(len(p)), chunks+1
			if chk != nil {
				chk.feed(p)
			}
		}
		dur := time.Since(t0)
		if got != n {
			return fmt.Errorf("received %d bytes, want %d", got, n)
		}
		if chk != nil {
			if err := chk.done(); err != nil {
				return err
			}
		}
		r.set("rate", rate(n, dur))
		r.setCPU("cpu", a.proc, mib(n))
		r.say("%s in %.3fs", mibps(rate(n, dur)), dur.Seconds())
		r.note("first byte after %.1fms; %d chunks, %.1f KiB average", ms(first.Sub(t0)), chunks, float64(n)/float64(max(chunks, 1))/1024)
		return nil
	}
	return a
}

// --- echo-latency -------------------------------------------------------------

func (b *bench) echoLatency() error {
	cri, err := b.criEndpoint()
	if err != nil {
		return err
	}
	bare, err := b.bareEndpoint()
	if err != nil {
		return err
	}
	k := b.o.keystrokes
	script := fmt.Sprintf("stty raw -echo; echo READY; exec dd bs=1 count=%d status=none", k)
	req := execReq{Command: []string{"sh", "-c", script}, Stdin: true, Stdout: true, TTY: true}
	fmt.Printf("sh -c %q, tty=1 stdin=1: %d keystrokes of one byte per rep, each timed from the write until it is read back; through the gateway and the CRI library, %d reps rotating; ceiling: the same in a pty started by gwload\n",
		script, k, b.o.reps)
	d := func(e *endpoint) *websocket.Dialer { return dialer(e.proto, 4096, 4096) }
	res, err := b.measure(b.o.reps,
		typeArm(&arm{name: "gateway", proc: b.gw.proc}, k, b.gw.execFlow(b.ctx, d(b.gw), req)),
		typeArm(&arm{name: "ceiling", what: "the same pty, in-process"}, k, b.procStarter(req.Command, true, false)),
		typeArm(&arm{name: "cri", proc: cri.proc}, k, cri.execFlow(b.ctx, d(cri), req)),
		typeArm(&arm{name: "bare", what: bareWhat, proc: bare.proc}, k, bare.execFlow(b.ctx, d(bare), req)))
	if err != nil {
		return err
	}
	b.report("echo-latency",
		res, fig{label: "keystroke echo p50", key: "p50", unit: micros, lower: true, refs: []string{"bare"}},
		fig{label: "keystroke echo p99", key: "p99", unit: micros, lower: true, refs: []string{"bare"}})
	c50 := median(res.values("ceiling", "p50"))
	var pooled []string
	for _, name := range []string{"gateway", "ceiling", "cri", "bare"} {
		lat := res.pooled(name, "echo")
		pooled = append(pooled, fmt.Sprintf("%s p50 %.0fµs p99 %.0fµs", name, us(pct(lat, 50)), us(pct(lat, 99))))
		if name != "ceiling" {
			fmt.Printf("echo-latency: the %s adds %.0fµs to the ceiling's p50 (medians of per-rep percentiles)\n", name, median(res.values(name, "p50"))-c50)
		}
	}
	fmt.Printf("echo-latency: pooled over all keystrokes: %s\n", strings.Join(pooled, ", "))
	return nil
}

// typeArm makes a's run: a flow from start that says READY, then k
// keystrokes, each written and timed until it is read back, then the end.
func typeArm(a *arm, k int, start func() (flow, error)) *arm {
	a.run = func(r *rep) error {
		f, err := start()
		if err != nil {
			return err
		}
		lat, err := typeKeys(f, k)
		if err != nil {
			f.close()
			return err
		}
		r.set("p50", us(pct(lat, 50)))
		r.set("p99", us(pct(lat, 99)))
		r.time("echo", lat...)
		r.say("p50 %.0fµs p99 %.0fµs max %.0fµs", us(pct(lat, 50)), us(pct(lat, 99)), us(slices.Max(lat)))
		return nil
	}
	return a
}

func typeKeys(f flow, k int) ([]time.Duration, error) {
	var got []byte
	for !bytes.HasSuffix(got, []byte("READY\n")) {
		p, err := f.next()
		if err != nil {
			return nil, fmt.Errorf("waiting for READY (got %q): %w", got, err)
		}
		if got = append(got, p...); len(got) > 1024 {
			return nil, fmt.Errorf("no READY in %q", got)
		}
	}
	if string(got) != "READY\n" {
		return nil, fmt.Errorf("unexpected output before the keystrokes: %q", got)
	}
	lat := make([]time.Duration, 0, k)
	for i := range k {
		c := byte('a' + i%26)
		t := time.Now()
		if err := f.write([]byte{c}); err != nil {
			return nil, err
		}
		p, err := f.next()
		if err != nil || len(p) != 1 || p[0] != c {
			return nil, fmt.Errorf("keystroke %d: sent %q, got back %q: %v", i, c, p, err)
		}
		lat = append(lat, time.Since(t))
	}
	if rest, err := readEnd(f); err != nil || rest != 0 {
		return nil, fmt.Errorf("after the keystrokes: %d more bytes, %v", rest, err)
	}
	return lat, nil
}

// --- setup-rate, tty-setup-rate, pf-setup-rate ----------------------------------

// setupSpec is a setup-rate measurement: n items set up and ended, at each
// concurrency, by the arms made for it.
type setupSpec struct {
	name, item string // the scenario; what is set up ("session", "tunnel")
	n          int
	concs      []int
	refs       []string
	variants   []string              // more arms of the gateway, each with a rate figure of its own
	goals      func(conc int) []goal // of the rates
	arms       func(conc int) []*arm
}

// setupRates measures and reports items per second and the pooled time of
// one item, at each concurrency.
func (b *bench) setupRates(s setupSpec) error {
	for _, conc := range s.concs {
		res, err := b.measure(b.o.reps, s.arms(conc)...)
		if err != nil {
			return err
		}
		var goals []goal
		if s.goals != nil {
			goals = s.goals(conc)
		}
		rate := fmt.Sprintf("%ss/s (%d, %d at a time)", s.item, s.n, conc)
		figs := []fig{
			{label: rate, key: "rate", unit: perSec, refs: s.refs, goals: goals},
			{label: fmt.Sprintf("one %s, dial to close (%d at a time)", s.item, conc), key: "setup", pcts: []float64{50, 99},
				unit: millis, lower: true, refs: s.refs},
		}
		for _, v := range s.variants {
			figs = append(figs, fig{label: rate + ", " + v, main: v, key: "rate", unit: perSec, refs: s.refs, goals: goals})
		}
		b.report(s.name, res, figs...)
		if m := res.pooled("cri", "mint"); len(m) > 0 {
			fmt.Printf("  cri: minting each %s's URL took p50 %.3f ms, p99 %.3f ms of its setup (the gateway needs no mint)\n", s.item, ms(pct(m, 50)), ms(pct(m, 99)))
		}
		var phases []string
		for _, name := range []string{"gateway", "cri", "bare"} {
			if up := res.pooled(name, "upgraded"); len(up) > 0 {
				phases = append(phases, fmt.Sprintf("%s %.3f / %.3f / %.3f", name, ms(pct(up, 50)),
					ms(pct(res.pooled(name, "first"), 50)), ms(pct(res.pooled(name, "end"), 50))))
			}
		}
		if len(phases) > 0 {
			fmt.Printf("  phases of one %s, ms from the dial (p50): the upgrade answered / the first frames / the end: %s\n", s.item, strings.Join(phases, "; "))
		}
	}
	return nil
}

// concurrentArm makes a's run: n calls of one, conc at a time, each timed;
// one returns how long minting a URL took (0 when there was none).
func concurrentArm(a *arm, n, conc int, one func(i int) (timing, error)) *arm {
	a.run = func(r *rep) error {
		var mu sync.Mutex
		allocs := startAllocs(a.metrics)
		t0 := time.Now()
		err := runConcurrently(n, conc, func(i int) error {
			t := time.Now()
			tm, err := one(i)
			d := time.Since(t)
			mu.Lock()
			defer mu.Unlock()
			r.time("setup", d)
			if tm.mint > 0 {
				r.time("mint", tm.mint)
			}
			if tm.upgraded > 0 { // the phases, from the dial
				r.time("upgraded", tm.upgraded)
				r.time("first", tm.first)
				r.time("end", d-tm.mint)
			}
			return err
		})
		if err != nil {
			return err
		}
		v := rate(int64(n), time.Since(t0))
		r.set("rate", v)
		r.say("%.1f /s, %d at a time", v, conc)
		if note := allocs.per(n); note != "" {
			r.note("%s", note)
		}
		return nil
	}
	return a
}

// runConcurrently runs one(0..n-1) with conc of them at a time; it stops
// at the first error and returns it.
func runConcurrently(n, conc int, one func(i int) error) error {
	var (
		next  atomic.Int64
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	for range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := one(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					next.Store(int64(n)) // the others stop
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

func (b *bench) setupRate() error {
	cri, err := b.criEndpoint()
	if err != nil {
		return err
	}
	n := b.o.sessions
	req := execReq{Command: []string{"true"}, Stdout: true}
	fmt.Printf("%d exec sessions of \"true\" (stdout=1) in a row, each read to its close frame, through the gateway and the CRI library; %d reps rotating;\n"+
		"ceiling: %d fork/execs of \"true\" by gwload with a stdout pipe read to EOF\n", n, b.o.reps, n)
	return b.setupRates(setupSpec{name: "setup-rate", item: "session", n: n, concs: []int{1}, arms: func(conc int) []*arm {
		return []*arm{b.sessionsArm(b.gw, "gateway", req, n, conc), b.spawnArm(false, n, conc), b.sessionsArm(cri, "cri", req, n, conc)}
	}})
}

func (b *bench) ttySetupRate() error {
	cri, err := b.criEndpoint()
	if err != nil {
		return err
	}
	bare, err := b.bareEndpoint()
	if err != nil {
		return err
	}
	n := b.o.sessions
	tty := execReq{Command: []string{"true"}, Stdin: true, Stdout: true, TTY: true}
	pipes := execReq{Command: []string{"true"}, Stdout: true}
	fmt.Printf("%d exec sessions of \"true\" (tty=1 stdin=1 stdout=1) in a row, each read to its close frame, one at a time and %d at a time,\n"+
		"through the gateway and the CRI library; the client sends its size (80x24) right after the upgrade, as kubectl does, except\n"+
		"in %q (a client that sends none: the gateway waits for one); beside the gateway's sessions of setup-rate\n"+
		"(stdout=1, no tty); %d reps rotating; ceiling: fork/execs of \"true\" in a pty by gwload\n",
		n, b.o.setupConc, noSize, b.o.reps)
	return b.setupRates(setupSpec{name: "tty-setup-rate", item: "session", n: n, concs: []int{1, b.o.setupConc},
		refs: []string{noTTY, "bare"}, variants: []string{noSize},
		goals: func(int) []goal { return []goal{{vs: noTTY, bound: 0.9}, {vs: "cri", bound: 1.5}} },
		arms: func(conc int) []*arm {
			return []*arm{
				b.sessionsArm(b.gw, "gateway", tty, n, conc),
				b.sessionsArm(b.gw, noSize, withoutSize(tty), n, conc),
				b.sessionsArm(b.gw, noTTY, pipes, n, conc),
				b.spawnArm(true, n, conc),
				b.sessionsArm(cri, "cri", tty, n, conc),
				b.sessionsArm(bare, "bare", tty, n, conc),
			}
		}})
}

// busySetupRate is tty-setup-rate's one-at-a-time measurement on servers
// that each hold IDLE idle tty sessions meanwhile: what a session's start
// and end cost when many others are open (the exit of one process must not
// cost work for every other).
func (b *bench) busySetupRate() error {
	cri, err := b.criEndpoint()
	if err != nil {
		return err
	}
	n, idle := b.o.sessions, b.o.idle
	tty := execReq{Command: []string{"true"}, Stdin: true, Stdout: true, TTY: true}
	var held []*held
	defer func() { closeHeld(held) }()
	for _, e := range []*endpoint{b.gw, cri} {
		hs, err := e.openSessions(b.ctx, dialer(e.proto, 4096, 4096), idleReq, idle, b.o.idleConc)
		held = append(held, hs...)
		if err != nil {
			return fmt.Errorf("%s: opening %d idle sessions: %w", e.name, idle, err)
		}
	}
	fmt.Printf("%d exec sessions of \"true\" (tty=1 stdin=1 stdout=1) in a row, each read to its close frame, one at a time, through\n"+
		"the gateway and the CRI library while each holds %d idle tty sessions of \"sleep\" open (held for the whole scenario);\n"+
		"%d reps rotating; ceiling: fork/execs of \"true\" in a pty by gwload\n", n, idle, b.o.reps)
	return b.setupRates(setupSpec{name: "busy-setup-rate", item: "session", n: n, concs: []int{1},
		arms: func(conc int) []*arm {
			return []*arm{b.sessionsArm(b.gw, "gateway", tty, n, conc), b.spawnArm(true, n, conc), b.sessionsArm(cri, "cri", tty, n, conc)}
		}})
}

// The gateway's arms of tty-setup-rate and tty-idle-open beside its main
// one.
const (
	noTTY  = "gateway, no tty"
	noSize = "gateway, no size sent"
)

// withoutSize is r from a client that sends no terminal size.
func withoutSize(r execReq) execReq {
	r.noSize = true
	return r
}

// armWhat describes the arms that are references, for the summary.
func armWhat(name string) string {
	return map[string]string{noTTY: "setup-rate's sessions, no tty", noSize: "tty sessions whose client sends no size", "bare": bareWhat}[name]
}

// sessionsArm sets up n sessions of r (which print nothing) on e, conc at
// a time, each read to its close.
func (b *bench) sessionsArm(e *endpoint, name string, r execReq, n, conc int) *arm {
	return concurrentArm(&arm{name: name, what: armWhat(name), proc: e.proc, metrics: e.metricsAddr()}, n, conc, emptyRun(e.execFlow(b.ctx, dialer(e.proto, 4096, 4096), r)))
}

// spawnArm is the setup ceiling: n fork/execs of "true" with a stdout pipe
// or in a pty, read to the end, conc at a time.
func (b *bench) spawnArm(tty bool, n, conc int) *arm {
	what := map[bool]string{true: "fork/exec of true in a pty", false: "fork/exec of true with a stdout pipe"}[tty]
	return concurrentArm(&arm{name: "ceiling", what: what}, n, conc, emptyRun(b.procStarter([]string{"true"}, tty, false)))
}

// emptyRun is one setup of a flow that carries nothing: started and read to
// its end.
func emptyRun(start func() (flow, error)) func(i int) (timing, error) {
	return func(i int) (timing, error) {
		f, err := start()
		if err != nil {
			return timing{}, fmt.Errorf("%d: %w", i, err)
		}
		if got, err := readEnd(f); err != nil || got != 0 {
			return timing{}, fmt.Errorf("%d: %d bytes, %v", i, got, err)
		}
		return f.timing(), nil
	}
}

// --- idle-rss, tty-idle-open --------------------------------------------------

// idleReq is an idle tty session.
var idleReq = execReq{Command: []string{"sleep", "1000000"}, Stdin: true, Stdout: true, TTY: true}

func (b *bench) idleRSS() error {
	n := b.o.idle
	if err := b.fresh(); err != nil {
		return err
	}
	cri, err := b.criEndpoint()
	if err != nil {
		return err
	}
	fmt.Printf("%d idle exec sessions of \"sleep 1000000\" (tty=1 stdin=1 stdout=1), WebSockets held open and read; VmRSS of the server\n"+
		"(gateway pid %d, CRI pid %d) from /proc/PID/status; one measurement each (not repeated: it needs fresh processes)\n", n, b.gw.pid, cri.pid)
	fmt.Println("(the sleep processes are the server's children, separate processes: their memory is not in its RSS; neither is kernel memory for sockets and ptys)")
	res, err := b.measure(1, b.idleSessionsArm(b.gw, n), refIdleArm(b, n), b.idleSessionsArm(cri, n))
	if err != nil {
		return err
	}
	b.report("idle-rss", res, fig{label: fmt.Sprintf("VmRSS per idle session (%d open)", n), key: "kib", unit: kib, lower: true})
	return nil
}

// --- detached-rss ---------------------------------------------------------

// detachedReq is a detachable shell's session: at 200x50 it fills the
// screen and 50 lines of scrollback with text, then sits idle.
var detachedReq = execReq{Command: []string{"sh", "-c", "head -c " + strconv.Itoa(detachedOut) + " /dev/zero | tr '\\0' x; exec sleep 1000000"},
	Stdin: true, Stdout: true, TTY: true, cols: 200, rows: 50, detach: time.Hour}

const detachedOut = 200 * 100

func (b *bench) detachedRSS() error {
	n := b.o.idle
	fmt.Printf("%d detached tty sessions (detach=1h, 200x50, each drew %d bytes of text: a full screen and 50 lines above it, then sleeps),\n"+
		"their clients gone; VmRSS of a fresh gateway per session, beside %d idle exec sessions (idle-rss's) held open on another fresh\n"+
		"gateway; one measurement each\n", n, detachedOut, n)
	idle := b.idleSessionsArm(b.gw, n)
	idle.what = "idle exec sessions, idle-rss's"
	res, err := b.measure(1, b.onFresh(idle), b.onFresh(b.detachedArm(n)))
	if err != nil {
		return err
	}
	b.report("detached-rss", res, fig{label: fmt.Sprintf("VmRSS per detached 200x50 tty session (%d held)", n), main: "detached",
		key: "kib", unit: kib, lower: true, refs: []string{"gateway"}, goals: []goal{{vs: "gateway", above: 64}}})
	return nil
}

// onFresh has a start on a fresh gateway.
func (b *bench) onFresh(a *arm) *arm {
	run := a.run
	a.run = func(r *rep) error {
		if err := b.fresh(); err != nil {
			return err
		}
		return run(r)
	}
	return a
}

// detachedArm measures the gateway's VmRSS per detached session: each
// opened, its output read, its client gone. It closes them through the
// API at the end.
func (b *bench) detachedArm(n int) *arm {
	e, d := b.gw, dialer(b.gw.proto, 4096, 4096)
	detach := func(k int) error {
		hs, err := e.openSessions(b.ctx, d, detachedReq, k, b.o.idleConc)
		if err == nil {
			deadline := time.Now().Add(time.Minute)
			for received(hs) < int64(k*detachedOut) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if got := received(hs); got < int64(k*detachedOut) {
				err = fmt.Errorf("%d sessions printed %d bytes, want %d", k, got, k*detachedOut)
			}
		}
		closeHeld(hs)
		if err != nil {
			return err
		}
		return b.waitDetached(k)
	}
	return &arm{name: "detached", what: "detached sessions", proc: e.proc, run: func(r *rep) error {
		base := children(e.pid)
		if err := detach(16); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		if err := b.endDetached(base); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		time.Sleep(2 * time.Second)
		rss0, err := vmRSS(e.pid)
		if err != nil {
			return err
		}
		m0, _ := metricsSnapshot(e.addr)
		t0 := time.Now()
		if err := detach(n); err != nil {
			return err
		}
		if _, err := waitChildren(e.pid, base+n, time.Minute); err != nil {
			return err
		}
		took := time.Since(t0)
		// The kept state compacts after 2 s of quiet; the gateway collects
		// and gives the burst's free pages back once it has seen no
		// collection for 30 s (checked every 5 s).
		time.Sleep(45 * time.Second)
		rss1, err := vmRSS(e.pid)
		if err != nil {
			return err
		}
		m1, _ := metricsSnapshot(e.addr)
		if err := b.endDetached(base); err != nil {
			return err
		}
		rss2, _ := vmRSS(e.pid)
		fmt.Printf("  detached VmRSS: before %d KiB, with %d detached sessions %d KiB, after ending them %d KiB\n", rss0, n, rss1, rss2)
		per := float64(rss1-rss0) / float64(n)
		r.set("kib", per)
		r.say("%.1f KiB per detached session (%d opened, drawn and left in %.2fs; VmRSS 45 s after)", per, n, took.Seconds())
		if k := "go_memstats_heap_inuse_bytes"; m0 != nil && m1 != nil {
			r.note("%.1f KiB heap in use per session", (m1[k]-m0[k])/1024/float64(n))
		}
		return nil
	}}
}

// waitDetached waits until the gateway lists n detached sessions.
func (b *bench) waitDetached(n int) error {
	deadline := time.Now().Add(time.Minute)
	for {
		var list struct{ Items []struct{ ID string } }
		if err := b.gw.rest(b.ctx, "GET", "/api/v1/sessions?state=detached", nil, http.StatusOK, &list); err != nil {
			return err
		}
		if len(list.Items) == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d detached sessions after a minute, want %d", len(list.Items), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// endDetached closes the detached sessions through the API and waits
// until the gateway has base children again.
func (b *bench) endDetached(base int) error {
	var list struct{ Items []struct{ ID string } }
	if err := b.gw.rest(b.ctx, "GET", "/api/v1/sessions?state=detached", nil, http.StatusOK, &list); err != nil {
		return err
	}
	for _, s := range list.Items {
		if err := b.gw.rest(b.ctx, "DELETE", "/api/v1/sessions/"+s.ID, nil, http.StatusNoContent, nil); err != nil {
			return err
		}
	}
	_, err := waitChildren(b.gw.pid, base, time.Minute)
	return err
}

// idleSessionsArm measures the VmRSS of n idle sessions on e.
func (b *bench) idleSessionsArm(e *endpoint, n int) *arm {
	d := dialer(e.proto, 4096, 4096)
	base := -1
	a := b.idleArm(e, idleSpec{item: "session", n: n,
		open: func(k int) ([]*held, error) { return e.openSessions(b.ctx, d, idleReq, k, b.o.idleConc) },
		settled: func(k int) error {
			_, err := waitChildren(e.pid, base+k, 2*time.Minute)
			return err
		},
		seen: fmt.Sprintf("%d child processes seen, all reaped after the close", n)})
	// Warm up the code paths with a few finished sessions too.
	run := a.run
	a.run = func(r *rep) error {
		base = children(e.pid)
		warm := emptyRun(e.execFlow(b.ctx, d, execReq{Command: []string{"true"}, Stdout: true}))
		for i := range 3 {
			if _, err := warm(i); err != nil {
				return fmt.Errorf("warm-up: %w", err)
			}
		}
		return run(r)
	}
	return a
}

// refIdleArm runs the idle-rss reference in a child gwload (refIdleChild).
func refIdleArm(b *bench, n int) *arm {
	return &arm{name: "ceiling", what: "bare pty + goroutine", run: func(r *rep) error {
		ctx, cancel := context.WithTimeout(b.ctx, 2*time.Minute)
		defer cancel()
		ch, err := startChild(ctx, "ref-idle", strconv.Itoa(n))
		if err != nil {
			return err
		}
		var before, after int64
		err = ch.scan(&before, &after)
		if err := errors.Join(err, ch.close()); err != nil {
			return err
		}
		fmt.Printf("  reference VmRSS: before %d KiB, with %d ptys %d KiB\n", before, n, after)
		per := float64(after-before) / float64(n)
		r.set("kib", per)
		r.say("%.1f KiB per pty (a gwload child holding %d ptys, one blocked reader goroutine each, no WebSocket)", per, n)
		return nil
	}}
}

// refIdleChild is the idle-rss reference process: it prints its VmRSS
// before and after opening n ptys with a sleeping child and a blocked
// reader each.
func refIdleChild(_ options, args []string) error {
	n, err := strconv.Atoi(strings.Join(args, ""))
	if err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond)
	before, err := vmRSS(os.Getpid())
	if err != nil {
		return err
	}
	type held struct {
		cmd  *exec.Cmd
		ptmx *os.File
	}
	var hs []held
	defer func() {
		for _, h := range hs {
			abort(h.cmd)
			h.ptmx.Close()
		}
	}()
	for range n {
		cmd := exec.Command("sleep", "1000000")
		ptmx, err := startPty(cmd)
		if err != nil {
			return err
		}
		hs = append(hs, held{cmd, ptmx})
		parkReader(ptmx)
	}
	time.Sleep(2 * time.Second)
	after, err := vmRSS(os.Getpid())
	if err != nil {
		return err
	}
	fmt.Println(before, after)
	return nil
}

func (b *bench) ttyIdleOpen() error {
	cri, err := b.criEndpoint()
	if err != nil {
		return err
	}
	bare, err := b.bareEndpoint()
	if err != nil {
		return err
	}
	n, conc := b.o.idle, b.o.idleConc
	fmt.Printf("%d idle exec sessions of \"sleep 1000000\" (tty=1 stdin=1 stdout=1) opened %d at a time, each timed from the first dial until\n"+
		"the server has started all %d (its children), then closed; through the gateway and the CRI library, each client sending its\n"+
		"size right after the upgrade except in %q; %d reps rotating; ceiling: gwload starting as many sleep processes in ptys,\n"+
		"%d at a time\n", n, conc, n, noSize, b.o.reps, conc)
	res, err := b.measure(b.o.reps, b.idleOpenArm(b.gw, "gateway", idleReq, n, conc), b.idleOpenArm(b.gw, noSize, withoutSize(idleReq), n, conc),
		ptyStartArm(n, conc), b.idleOpenArm(cri, "cri", idleReq, n, conc), b.idleOpenArm(bare, "bare", idleReq, n, conc))
	if err != nil {
		return err
	}
	label := fmt.Sprintf("idle tty sessions opened per second (%d, %d at a time)", n, conc)
	goals := []goal{{vs: "cri", bound: 1.5}}
	b.report("tty-idle-open", res, fig{label: label, key: "rate", unit: perSec, goals: goals, refs: []string{"bare"}},
		fig{label: label + ", " + noSize, main: noSize, key: "rate", unit: perSec, goals: goals})
	return nil
}

// idleOpenArm opens n idle tty sessions on e, conc at a time, until e has
// started all their processes; then closes them and waits for their end.
func (b *bench) idleOpenArm(e *endpoint, name string, req execReq, n, conc int) *arm {
	d := dialer(e.proto, 4096, 4096)
	return &arm{name: name, what: armWhat(name), proc: e.proc, run: func(r *rep) error {
		if e.pid <= 0 {
			return errors.New("the server's pid is needed to see its processes: use -gateway, or -pid with -addr")
		}
		base := children(e.pid)
		t0 := time.Now()
		hs, err := e.openSessions(b.ctx, d, req, n, conc)
		open := time.Since(t0)
		if err == nil {
			_, err = waitChildren(e.pid, base+n, time.Minute)
		}
		started := time.Since(t0)
		unexpected := received(hs)
		closeHeld(hs)
		if err != nil {
			return err
		}
		if _, err := waitChildren(e.pid, base, time.Minute); err != nil {
			return fmt.Errorf("after the close: %w", err)
		}
		if unexpected != 0 {
			return fmt.Errorf("idle sessions received %d bytes of output", unexpected)
		}
		r.set("rate", rate(int64(n), started))
		r.say("%.1f sessions/s (%d started in %.2fs)", rate(int64(n), started), n, started.Seconds())
		r.note("the WebSockets open after %.2fs", open.Seconds())
		return nil
	}}
}

// ptyStartArm is tty-idle-open's ceiling: n sleep processes started in
// ptys, conc at a time; then killed.
func ptyStartArm(n, conc int) *arm {
	return &arm{name: "ceiling", what: "gwload starting sleep in a pty", run: func(r *rep) error {
		var mu sync.Mutex
		var cmds []*exec.Cmd
		var ptys []*os.File
		defer func() {
			for i, cmd := range cmds {
				abort(cmd)
				ptys[i].Close()
			}
		}()
		t0 := time.Now()
		err := runConcurrently(n, conc, func(int) error {
			cmd := exec.Command("sleep", "1000000")
			cmd.Dir = os.TempDir()
			ptmx, err := startPty(cmd)
			if err != nil {
				return err
			}
			mu.Lock()
			cmds, ptys = append(cmds, cmd), append(ptys, ptmx)
			mu.Unlock()
			return nil
		})
		started := time.Since(t0)
		if err != nil {
			return err
		}
		r.set("rate", rate(int64(n), started))
		r.say("%.1f starts/s (%d in %.2fs)", rate(int64(n), started), n, started.Seconds())
		return nil
	}}
}

// --- processes run by gwload ----------------------------------------------------

// procFlow is a command started by gwload itself, in a pty or with a
// stdout pipe (and a stdin pipe when asked): the ceilings.
type procFlow struct {
	cmd *exec.Cmd
	f   *os.File       // the pty's master, or the stdout pipe
	in  io.WriteCloser // the stdin pipe, or nil
	buf []byte
}

// procStarter returns a starter of command, in the temporary directory,
// read with -bufsize reads and bounded by -timeout. Without a tty, stdin
// asks for a stdin pipe.
func (b *bench) procStarter(command []string, tty, stdin bool) func() (flow, error) {
	return func() (flow, error) {
		p := &procFlow{cmd: exec.Command(command[0], command[1:]...), buf: make([]byte, b.o.bufSize)}
		p.cmd.Dir = os.TempDir()
		if stdin && !tty {
			w, err := p.cmd.StdinPipe()
			if err != nil {
				return nil, err
			}
			p.in = w
		}
		f, err := startOutput(p.cmd, tty)
		if err != nil {
			return nil, err
		}
		p.f = f
		_ = f.SetDeadline(time.Now().Add(b.o.timeout))
		return p, nil
	}
}

// startOutput starts cmd with its output on a pty (tty) or a pipe, and
// returns the end to read it from.
func startOutput(cmd *exec.Cmd, tty bool) (*os.File, error) {
	if tty {
		return startPty(cmd)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return out.(*os.File), nil
}

func (p *procFlow) write(b []byte) error {
	var w io.Writer = p.f
	if p.in != nil {
		w = p.in
	}
	_, err := w.Write(b)
	return err
}
func (p *procFlow) timing() timing { return timing{} }

func (p *procFlow) close() error {
	abort(p.cmd) // after the end too: Wait closed the pipes, Kill finds no process
	return p.f.Close()
}

// next reads the output; its end is the pipe's EOF or the pty's EIO (the
// child side is gone), then the exit.
func (p *procFlow) next() ([]byte, error) {
	n, err := p.f.Read(p.buf)
	switch {
	case n > 0:
		return p.buf[:n], nil
	case err == io.EOF || errors.Is(err, syscall.EIO):
		// Reaped before the master closes: the EIO can come while the
		// process still lives (dd closes its output before it exits), and
		// closing the master then hangs it up (SIGHUP).
		werr := p.cmd.Wait()
		p.f.Close()
		if werr != nil {
			return nil, werr
		}
		return nil, io.EOF
	}
	return nil, err
}

// startPty starts cmd in a new pty of 80x24 the way the gateway does
// (container/process.go): a new session with the pty as controlling
// terminal, and a non-blocking master read through Go's poller.
func startPty(cmd *exec.Cmd) (*os.File, error) {
	ptmx, tty, err := ptyio.Open(80, 24)
	if err != nil {
		return nil, err
	}
	defer tty.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		ptmx.Close()
		return nil, err
	}
	return ptmx, nil
}

// abort kills a started command and reaps it.
func abort(cmd *exec.Cmd) {
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

// parkReader blocks a goroutine reading r, as an idle relay does, until r
// is closed.
func parkReader(r io.Reader) {
	go func() {
		var b [1]byte
		for {
			if _, err := r.Read(b[:]); err != nil {
				return
			}
		}
	}()
}

// relayStarter returns a starter of the pipe-throughput reference:
// command's stdout pipe relayed over a loopback TCP connection by a
// goroutine in gwload (read, write: what any gateway must at least do),
// and read at the other end.
func (b *bench) relayStarter(command []string) func() (flow, error) {
	return func() (flow, error) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		dst, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			return nil, err
		}
		end, err := l.Accept()
		if err != nil {
			dst.Close()
			return nil, err
		}
		src, err := b.procStarter(command, false, false)()
		if err != nil {
			dst.Close()
			end.Close()
			return nil, err
		}
		_ = end.SetDeadline(time.Now().Add(b.o.timeout))
		r := &relayed{tcpFlow: tcpFlow{c: end, buf: make([]byte, 64<<10)}, errc: make(chan error, 1)}
		go func() {
			defer dst.Close()
			for {
				p, err := src.next()
				if err == io.EOF {
					r.errc <- nil
					return
				}
				if err == nil {
					_, err = dst.Write(p)
				}
				if err != nil {
					src.close()
					r.errc <- err
					return
				}
			}
		}()
		return r, nil
	}
}

// relayed is the reading end of relayStarter's connection; its end waits
// for the relay's.
type relayed struct {
	tcpFlow
	errc chan error
}

func (r *relayed) next() ([]byte, error) {
	p, err := r.tcpFlow.next()
	if err == io.EOF {
		if rerr := <-r.errc; rerr != nil {
			return nil, fmt.Errorf("relay: %w", rerr)
		}
	}
	return p, err
}
