package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

type bench struct {
	o   options
	c   *client
	ctx context.Context
	gw  *gatewayProc
	sum []sumRow
	// others is the other load of each measurement of the current
	// scenario, in cores.
	others []float64
}

// row is one line of the summary table.
type row struct {
	scenario, figure string
	gateway, ceiling string
	ratio            string
	target, met      string
}

// sumRow is a row with the median other load of its measurements, in
// cores.
type sumRow struct {
	row
	other string
}

func (b *bench) add(r row) {
	sr := sumRow{row: r}
	if len(b.others) > 0 {
		sr.other = fmt.Sprintf("%.2f", median(b.others))
	}
	b.sum = append(b.sum, sr)
}

func (b *bench) printSummary() {
	if len(b.sum) == 0 {
		return
	}
	fmt.Printf("\n== summary (medians over %d repetitions; ratio = gateway performance / ceiling performance;\n"+
		"other load = median CPU used by the rest of the machine during the measurements, in cores of %d)\n", b.o.reps, runtime.NumCPU())
	fmt.Printf("| scenario | figure | gateway | ceiling | ratio | target | met | other load |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range b.sum {
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %s | %s |\n", r.scenario, r.figure, r.gateway, r.ceiling, r.ratio, r.target, r.met, r.other)
	}
}

// alternate runs gateway and ceiling measurements reps times, swapping
// which goes first on every repetition so that drift in the machine's load
// hits both alike.
func (b *bench) alternate(gw, ceil func(rep int) error) error {
	return b.rotate(gw, ceil)
}

// rotate runs each measurement once per repetition, starting each
// repetition with the next one in turn (with two: alternately).
func (b *bench) rotate(fns ...func(rep int) error) error {
	for i := range b.o.reps {
		for j := range fns {
			if err := fns[(i+j)%len(fns)](i); err != nil {
				return err
			}
		}
		if err := b.ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// cpuMeter measures, over one measurement, the CPU time of the gateway
// (when its pid is known) and of gwload, and the CPU the rest of the
// machine used meanwhile ("other load": other sessions' builds and tests on
// a shared machine, and kernel workers, such as the pty's flush work).
type cpuMeter struct {
	b                  *bench
	pid                int
	gw0, gwAll0        time.Duration
	self0, kids0, all0 time.Duration
	cs0                int64
	t0                 time.Time
	relay              int           // pid of a relay child (pf-throughput's reference), or 0
	gwFine0, relFine0  time.Duration // cpuTimeFine at the start
}

func (b *bench) startCPU() cpuMeter {
	m := cpuMeter{b: b, pid: b.o.pid, self0: selfCPU(), kids0: childrenCPU(), all0: machineBusy(), t0: time.Now()}
	if m.pid > 0 {
		m.gw0, _ = cpuTime(m.pid)
		m.gwAll0, _ = cpuTimeAll(m.pid)
		m.cs0 = ctxSwitches(m.pid)
		m.gwFine0 = cpuTimeFine(m.pid)
	}
	return m
}

// startCPUWithRelay is startCPU that also measures the relay child, if
// there is one.
func (b *bench) startCPUWithRelay(r *relayProc) cpuMeter {
	m := b.startCPU()
	if r != nil {
		m.relay = r.pid()
		m.relFine0 = cpuTimeFine(m.relay)
	}
	return m
}

// used returns the CPU the gateway and the relay child used so far, to
// the nanosecond.
func (m cpuMeter) used() (gw, relay time.Duration) {
	if m.pid > 0 {
		gw = cpuTimeFine(m.pid) - m.gwFine0
	}
	if m.relay > 0 {
		relay = cpuTimeFine(m.relay) - m.relFine0
	}
	return gw, relay
}

// stop returns "gateway cpu X, N context switches; gwload cpu Y; other
// load Z cores" for a log line, and records the other load.
func (m cpuMeter) stop() string {
	wall := time.Since(m.t0)
	self, kids, all := selfCPU()-m.self0, childrenCPU()-m.kids0, machineBusy()-m.all0
	var gw, gwAll time.Duration
	var cs int64
	if m.pid > 0 {
		g, _ := cpuTime(m.pid)
		ga, _ := cpuTimeAll(m.pid)
		gw, gwAll, cs = g-m.gw0, ga-m.gwAll0, ctxSwitches(m.pid)-m.cs0
	}
	_, relay := m.used()
	relayNote := ""
	if m.relay > 0 {
		relayNote = fmt.Sprintf("relay cpu %.2fs; ", relay.Seconds())
	}
	other := max(0, (all-self-kids-gwAll-relay).Seconds()/wall.Seconds())
	if m.pid <= 0 {
		// Without the gateway's pid its CPU cannot be told apart.
		return fmt.Sprintf("%sgwload cpu %.2fs; rest of the machine, gateway included, %.2f cores", relayNote, self.Seconds(), other)
	}
	m.b.others = append(m.b.others, other)
	return fmt.Sprintf("gateway cpu %.2fs, %d context switches; %sgwload cpu %.2fs; other load %.2f cores",
		gw.Seconds(), cs, relayNote, self.Seconds(), other)
}

// --- tty-throughput, pipe-throughput ---------------------------------------

func (b *bench) throughput(tty bool) error {
	name, target := "pipe-throughput", 0.6
	if tty {
		name, target = "tty-throughput", 0.9
	}
	n := b.o.bytes
	command := []string{"head", "-c", strconv.FormatInt(n, 10), "/dev/zero"}
	fmt.Printf("%s, tty=%v, %d bytes, %d reps alternating; ceiling: the same command started by gwload with a %s read directly (%d-byte reads)\n",
		strings.Join(command, " "), tty, n, b.o.reps, map[bool]string{true: "pty", false: "pipe"}[tty], b.o.bufSize)
	if !tty {
		fmt.Println("reference, in turn with the two: a bare relay of the same pipe over loopback TCP inside gwload (no WebSocket)")
	}
	var gws, ceils []float64
	gw := func(rep int) error {
		cpu := b.startCPU()
		t0 := time.Now()
		s, err := b.c.open(b.ctx, dialer(64<<10), execReq{command: command, stdout: true, tty: tty})
		if err != nil {
			return err
		}
		var first, end time.Time
		for s.status == nil {
			ch, p, err := s.next()
			if err != nil {
				s.conn.Close()
				return fmt.Errorf("after %d bytes: %w", s.stdout, err)
			}
			if ch == chStdout && len(p) > 0 && first.IsZero() {
				first = time.Now()
			}
		}
		end = time.Now()
		if err := s.drain(); err != nil {
			return err
		}
		if s.stdout != n || s.stderr != 0 {
			return fmt.Errorf("received %d bytes on stdout and %d on stderr, want %d and 0", s.stdout, s.stderr, n)
		}
		d := end.Sub(t0)
		rate := float64(n) / d.Seconds()
		gws = append(gws, rate)
		fmt.Printf("  rep %d gateway: %s in %.3fs (first byte after %.1fms; %d messages, %.1f KiB average; %s)\n", rep+1, mibps(rate), d.Seconds(),
			ms(first.Sub(t0)), s.msgs, float64(n)/float64(max(s.msgs-2, 1))/1024, cpu.stop())
		return nil
	}
	ceil := func(rep int) error {
		cpu := b.startCPU()
		cmd := exec.Command(command[0], command[1:]...)
		t0 := time.Now()
		var got, reads int64
		if tty {
			ptmx, err := startPty(cmd)
			if err != nil {
				return err
			}
			_ = ptmx.SetReadDeadline(time.Now().Add(b.o.timeout))
			got, reads, err = readAllCount(ptmx, b.o.bufSize)
			ptmx.Close()
			if err != nil {
				abort(cmd)
				return fmt.Errorf("ceiling: %w", err)
			}
		} else {
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
			out, err := cmd.StdoutPipe()
			if err != nil {
				return err
			}
			if err := cmd.Start(); err != nil {
				return err
			}
			if f, ok := out.(*os.File); ok {
				_ = f.SetReadDeadline(time.Now().Add(b.o.timeout))
			}
			if got, reads, err = readAllCount(out, b.o.bufSize); err != nil {
				abort(cmd)
				return fmt.Errorf("ceiling: %w", err)
			}
		}
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("ceiling: %w", err)
		}
		d := time.Since(t0)
		if got != n {
			return fmt.Errorf("ceiling read %d bytes, want %d", got, n)
		}
		rate := float64(n) / d.Seconds()
		ceils = append(ceils, rate)
		fmt.Printf("  rep %d ceiling: %s in %.3fs (%d reads, %.1f KiB average; %s)\n", rep+1, mibps(rate), d.Seconds(),
			reads, float64(n)/float64(max(reads, 1))/1024, cpu.stop())
		return nil
	}
	// Without a tty, a third measurement: the least any relay of the pipe
	// over loopback TCP costs (one goroutine reading the pipe and writing
	// a TCP socket, another reading it; no WebSocket, no hand-off).
	var relays []float64
	relay := func(rep int) error {
		cpu := b.startCPU()
		rate, writes, err := pipeRelay(command, n, b.o.bufSize)
		if err != nil {
			return fmt.Errorf("relay: %w", err)
		}
		relays = append(relays, rate)
		fmt.Printf("  rep %d tcp relay: %s (%d writes of at most %d bytes; %s)\n", rep+1, mibps(rate), writes, b.o.bufSize, cpu.stop())
		return nil
	}
	var err error
	if tty {
		err = b.alternate(gw, ceil)
	} else {
		err = b.rotate(gw, ceil, relay)
	}
	if err != nil {
		return err
	}
	g, c := median(gws), median(ceils)
	ratio := g / c
	met := verdict(ratio >= target)
	fmt.Printf("%s: gateway %s, ceiling %s (medians), ratio %.3f, target >= %.1f: %s; per-rep ratios %s\n",
		name, mibps(g), mibps(c), ratio, target, met, pairRatios(gws, ceils))
	b.add(row{name, "throughput (bytes/s at the client)", mibps(g), mibps(c), fmt.Sprintf("%.3f", ratio),
		fmt.Sprintf(">= %.1f", target), met})
	if !tty {
		r := median(relays)
		fmt.Printf("%s: bare pipe-to-TCP relay %s (median): gateway/relay %.3f, relay/ceiling %.3f\n", name, mibps(r), g/r, r/c)
		b.add(row{name, "reference: bare pipe-to-TCP relay", mibps(g), mibps(r) + " (relay)", fmt.Sprintf("%.3f", g/r), "", ""})
	}
	return nil
}

// --- echo-latency -----------------------------------------------------------

func (b *bench) echoLatency() error {
	k := b.o.keystrokes
	script := fmt.Sprintf("stty raw -echo; echo READY; exec dd bs=1 count=%d status=none", k)
	command := []string{"sh", "-c", script}
	fmt.Printf("sh -c %q, tty=1 stdin=1: %d keystrokes of one byte per rep, each timed from the write until it is read back; %d reps alternating; ceiling: the same in a pty started by gwload\n",
		script, k, b.o.reps)
	var gwP50, gwP99, ceP50, ceP99 []float64
	var gwAll, ceAll []time.Duration
	gw := func(rep int) error {
		cpu := b.startCPU()
		s, err := b.c.open(b.ctx, dialer(4096), execReq{command: command, stdin: true, stdout: true, tty: true})
		if err != nil {
			return err
		}
		defer s.conn.Close()
		var got []byte
		for !bytes.HasSuffix(got, []byte("READY\n")) {
			ch, p, err := s.next()
			if err != nil {
				return fmt.Errorf("waiting for READY (got %q): %w", got, err)
			}
			if ch == chStdout {
				got = append(got, p...)
			}
			if len(got) > 1024 {
				return fmt.Errorf("no READY in %q", got)
			}
		}
		if string(got) != "READY\n" {
			return fmt.Errorf("unexpected output before the keystrokes: %q", got)
		}
		lat := make([]time.Duration, 0, k)
		for i := range k {
			c := byte('a' + i%26)
			t := time.Now()
			if err := s.write([]byte{c}); err != nil {
				return err
			}
			for {
				ch, p, err := s.next()
				if err != nil {
					return fmt.Errorf("keystroke %d: %w", i, err)
				}
				if ch != chStdout || len(p) == 0 {
					continue
				}
				if len(p) != 1 || p[0] != c {
					return fmt.Errorf("keystroke %d: sent %q, got back %q", i, c, p)
				}
				break
			}
			lat = append(lat, time.Since(t))
		}
		if err := s.drain(); err != nil {
			return err
		}
		if want := int64(len("READY\n") + k); s.stdout != want {
			return fmt.Errorf("stdout carried %d bytes, want %d", s.stdout, want)
		}
		p50, p99 := pct(lat, 50), pct(lat, 99)
		gwP50, gwP99 = append(gwP50, us(p50)), append(gwP99, us(p99))
		gwAll = append(gwAll, lat...)
		fmt.Printf("  rep %d gateway: p50 %.0fµs p99 %.0fµs max %.0fµs (%s)\n", rep+1, us(p50), us(p99), us(slices.Max(lat)), cpu.stop())
		return nil
	}
	ceil := func(rep int) error {
		cpu := b.startCPU()
		cmd := exec.Command(command[0], command[1:]...)
		ptmx, err := startPty(cmd)
		if err != nil {
			return err
		}
		defer ptmx.Close()
		buf := make([]byte, 4096)
		var got []byte
		for !bytes.HasSuffix(got, []byte("READY\n")) {
			_ = ptmx.SetReadDeadline(time.Now().Add(b.o.timeout))
			n, err := ptmx.Read(buf)
			if err != nil {
				abort(cmd)
				return fmt.Errorf("ceiling: waiting for READY (got %q): %w", got, err)
			}
			got = append(got, buf[:n]...)
		}
		if string(got) != "READY\n" {
			abort(cmd)
			return fmt.Errorf("ceiling: unexpected output before the keystrokes: %q", got)
		}
		lat := make([]time.Duration, 0, k)
		for i := range k {
			c := byte('a' + i%26)
			t := time.Now()
			if _, err := ptmx.Write([]byte{c}); err != nil {
				abort(cmd)
				return err
			}
			n, err := ptmx.Read(buf)
			if err != nil || n != 1 || buf[0] != c {
				abort(cmd)
				return fmt.Errorf("ceiling keystroke %d: sent %q, got %q, %v", i, c, buf[:n], err)
			}
			lat = append(lat, time.Since(t))
		}
		rest, err := readAll(ptmx, 4096)
		if werr := cmd.Wait(); werr != nil || err != nil || rest != 0 {
			return fmt.Errorf("ceiling end: exit %v, read %v, %d extra bytes", werr, err, rest)
		}
		p50, p99 := pct(lat, 50), pct(lat, 99)
		ceP50, ceP99 = append(ceP50, us(p50)), append(ceP99, us(p99))
		ceAll = append(ceAll, lat...)
		fmt.Printf("  rep %d ceiling: p50 %.0fµs p99 %.0fµs max %.0fµs (%s)\n", rep+1, us(p50), us(p99), us(slices.Max(lat)), cpu.stop())
		return nil
	}
	if err := b.alternate(gw, ceil); err != nil {
		return err
	}
	g50, g99, c50, c99 := median(gwP50), median(gwP99), median(ceP50), median(ceP99)
	fmt.Printf("echo-latency: p50 gateway %.0fµs ceiling %.0fµs (ratio %.3f, gateway adds %.0fµs); p99 gateway %.0fµs ceiling %.0fµs (ratio %.3f) (medians of per-rep percentiles)\n",
		g50, c50, c50/g50, g50-c50, g99, c99, c99/g99)
	fmt.Printf("echo-latency: pooled over all %d keystrokes: gateway p50 %.0fµs p99 %.0fµs, ceiling p50 %.0fµs p99 %.0fµs\n",
		len(gwAll), us(pct(gwAll, 50)), us(pct(gwAll, 99)), us(pct(ceAll, 50)), us(pct(ceAll, 99)))
	b.add(row{"echo-latency", "keystroke echo p50", fmt.Sprintf("%.0f µs", g50), fmt.Sprintf("%.0f µs", c50),
		fmt.Sprintf("%.3f", c50/g50), "none set", "n/a"})
	b.add(row{"echo-latency", "keystroke echo p99", fmt.Sprintf("%.0f µs", g99), fmt.Sprintf("%.0f µs", c99),
		fmt.Sprintf("%.3f", c99/g99), "none set", "n/a"})
	return nil
}

// --- setup-rate ---------------------------------------------------------------

func (b *bench) setupRate() error {
	n := b.o.sessions
	fmt.Printf("%d exec sessions of \"true\" (stdout=1) in a row, each read to its close frame; %d reps alternating; ceiling: %d fork/execs of \"true\" by gwload with a stdout pipe read to EOF\n",
		n, b.o.reps, n)
	var gws, ceils []float64
	var gwLat []time.Duration
	d := dialer(4096)
	gw := func(rep int) error {
		cpu := b.startCPU()
		t0 := time.Now()
		for i := range n {
			t := time.Now()
			s, err := b.c.open(b.ctx, d, execReq{command: []string{"true"}, stdout: true})
			if err != nil {
				return fmt.Errorf("session %d: %w", i, err)
			}
			if err := s.drain(); err != nil {
				return fmt.Errorf("session %d: %w", i, err)
			}
			if s.stdout != 0 || s.stderr != 0 {
				return fmt.Errorf("session %d: true printed %d+%d bytes", i, s.stdout, s.stderr)
			}
			gwLat = append(gwLat, time.Since(t))
		}
		rate := float64(n) / time.Since(t0).Seconds()
		gws = append(gws, rate)
		fmt.Printf("  rep %d gateway: %.1f sessions/s (%s)\n", rep+1, rate, cpu.stop())
		return nil
	}
	ceil := func(rep int) error {
		cpu := b.startCPU()
		t0 := time.Now()
		for i := range n {
			cmd := exec.Command("true")
			cmd.Dir = os.TempDir()
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
			out, err := cmd.StdoutPipe()
			if err != nil {
				return err
			}
			if err := cmd.Start(); err != nil {
				return err
			}
			got, rerr := readAll(out, 4096)
			if err := errors.Join(rerr, cmd.Wait()); err != nil || got != 0 {
				return fmt.Errorf("ceiling %d: %v, %d bytes", i, err, got)
			}
		}
		rate := float64(n) / time.Since(t0).Seconds()
		ceils = append(ceils, rate)
		fmt.Printf("  rep %d ceiling: %.1f spawns/s (%s)\n", rep+1, rate, cpu.stop())
		return nil
	}
	if err := b.alternate(gw, ceil); err != nil {
		return err
	}
	g, c := median(gws), median(ceils)
	fmt.Printf("setup-rate: gateway %.1f sessions/s, ceiling %.1f spawns/s (medians), ratio %.3f; per-session time through the gateway p50 %.2fms p99 %.2fms\n",
		g, c, g/c, ms(pct(gwLat, 50)), ms(pct(gwLat, 99)))
	b.add(row{"setup-rate", fmt.Sprintf("sessions/s (%d in a row)", n), fmt.Sprintf("%.1f /s", g), fmt.Sprintf("%.1f /s", c),
		fmt.Sprintf("%.3f", g/c), "none set", "n/a"})
	b.add(row{"setup-rate", "one session, dial to close", fmt.Sprintf("p50 %.2f ms, p99 %.2f ms", ms(pct(gwLat, 50)), ms(pct(gwLat, 99))),
		"", "", "", ""})
	return nil
}

// --- idle-rss -------------------------------------------------------------------

// freshGateway restarts the gateway gwload started, so that the heap grown
// by the other scenarios neither hides nor inflates an idle cost, and
// returns its pid (a running gateway's is given by -pid).
func (b *bench) freshGateway() (int, error) {
	if b.gw != nil {
		fmt.Println("restarting the gateway for a fresh process")
		if err := b.gw.restart(b.ctx); err != nil {
			return 0, err
		}
		b.o.addr, b.o.pid = b.gw.addr, b.gw.pid()
		b.c.addr = b.gw.addr
	}
	if b.o.pid <= 0 {
		return 0, errors.New("the gateway's pid is needed: use -gateway, or -pid with -addr")
	}
	return b.o.pid, nil
}

func (b *bench) idleRSS() error {
	n := b.o.idle
	pid, err := b.freshGateway()
	if err != nil {
		return err
	}
	fmt.Printf("%d idle exec sessions of \"sleep 1000000\" (tty=1 stdin=1 stdout=1), WebSockets held open and read; VmRSS of gateway pid %d from /proc/%d/status\n",
		n, pid, pid)
	fmt.Println("(the sleep processes are the gateway's children, separate processes: their memory is not in the gateway's RSS; neither is kernel memory for sockets and ptys)")
	base := children(pid)
	req := execReq{command: []string{"sleep", "1000000"}, stdin: true, stdout: true, tty: true}
	d := dialer(4096)

	// Warm up the code paths: a few finished sessions (and, in
	// measureIdle, idle ones).
	for range 3 {
		s, err := b.c.open(b.ctx, d, execReq{command: []string{"true"}, stdout: true})
		if err != nil {
			return err
		}
		if err := s.drain(); err != nil {
			return err
		}
	}
	waiting, threads := -1, 0
	var unexpected int64
	r, err := b.measureIdle(pid, n,
		func(k int) ([]*held, error) { return b.openIdleSessions(d, req, k) },
		func(k int) error {
			_, err := waitChildren(pid, base+k, 2*time.Minute)
			return err
		},
		func(hs []*held) {
			if nr := sysWaitid(); nr != "" {
				waiting, threads = threadsIn(pid, nr)
			}
			for _, h := range hs {
				unexpected += h.got.Load()
			}
		})
	if err != nil {
		return err
	}
	if unexpected != 0 {
		return fmt.Errorf("idle sessions received %d bytes of output", unexpected)
	}
	per := r.perItem()
	r.print("session", fmt.Sprintf("%d child processes of the gateway seen, all reaped after the close", n))
	if waiting >= 0 {
		fmt.Printf("  gateway threads: %d, of which %d blocked in waitid(2) (one per child process being waited for)\n", threads, waiting)
	}

	// Reference: a bare Go process holding as many ptys (with their sleep
	// children), one goroutine blocked reading each.
	ref, err := b.refIdle(n)
	if err != nil {
		return fmt.Errorf("reference: %w", err)
	}
	fmt.Printf("  reference (gwload child holding %d ptys, one blocked reader goroutine each, no WebSocket): %.1f KiB per pty\n", n, ref)
	fmt.Printf("idle-rss: gateway %.1f KiB/session, bare pty+goroutine %.1f KiB, ratio (bare/gateway) %.3f; one measurement (not repeated: it needs a fresh gateway)\n",
		per, ref, ref/per)
	b.add(row{"idle-rss", fmt.Sprintf("VmRSS per idle session (%d open)", n), fmt.Sprintf("%.1f KiB", per),
		fmt.Sprintf("%.1f KiB (bare pty + goroutine)", ref), fmt.Sprintf("%.3f", ref/per), "none set", "n/a"})
	return nil
}

// refIdle runs the reference in a child gwload and returns KiB per pty.
func (b *bench) refIdle(n int) (float64, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, exe, "-internal-ref-idle", strconv.Itoa(n)).Output()
	if err != nil {
		return 0, err
	}
	var before, after int64
	if _, err := fmt.Sscan(string(out), &before, &after); err != nil {
		return 0, fmt.Errorf("reference printed %q: %w", out, err)
	}
	fmt.Printf("  reference VmRSS: before %d KiB, with %d ptys %d KiB\n", before, n, after)
	return float64(after-before) / float64(n), nil
}

// refIdleChild is the reference process: it prints its VmRSS before and
// after opening n ptys with a sleeping child and a blocked reader each.
func refIdleChild(n int) error {
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
			_ = h.cmd.Process.Kill()
			_ = h.cmd.Wait()
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

// abort kills a started command and reaps it.
func abort(cmd *exec.Cmd) {
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

// --- statistics and units ---------------------------------------------------

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// pct returns the p-th percentile (nearest rank).
func pct(v []time.Duration, p float64) time.Duration {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// pairRatios lists the ratio of each repetition (the first 10, then their
// range).
func pairRatios(g, c []float64) string {
	var parts []string
	var rs []float64
	for i := range min(len(g), len(c)) {
		rs = append(rs, g[i]/c[i])
		if i < 10 {
			parts = append(parts, fmt.Sprintf("%.2f", g[i]/c[i]))
		}
	}
	if len(rs) > 10 {
		parts = append(parts, fmt.Sprintf("... (%d in all, from %.2f to %.2f)", len(rs), slices.Min(rs), slices.Max(rs)))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func verdict(ok bool) string {
	if ok {
		return "MET"
	}
	return "MISSED"
}

func mibps(bps float64) string   { return fmt.Sprintf("%.1f MiB/s", bps/(1<<20)) }
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// openIdleSessions opens n idle exec sessions, each held open by a reader
// that counts any output.
func (b *bench) openIdleSessions(d *websocket.Dialer, req execReq, n int) ([]*held, error) {
	return b.openHeld("sessions", n, func() (*websocket.Conn, func() (int, error), error) {
		s, err := b.c.open(b.ctx, d, req)
		if err != nil {
			return nil, nil, err
		}
		return s.conn, func() (int, error) {
			_, p, err := s.next()
			return len(p), err
		}, nil
	})
}
