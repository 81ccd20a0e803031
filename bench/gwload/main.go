// Command gwload measures the gateway against ceilings measured by the same
// tool in the same run: throughput of a pty and of a pipe, keystroke echo
// latency, session setup rate and the memory of idle sessions; attach
// fan-out; and port-forward throughput, setup rate and idle memory.
//
// The gateway's own costs are the point, so every figure comes with the
// same work done without the gateway (the command started by gwload in a
// pty or with a pipe, read directly), measured alternately with the
// gateway figure, and the median of the repetitions is compared.
//
// Typical run (gwload starts and stops the gateway itself):
//
//	make build
//	go run ./bench/gwload -gateway bin/gateway
//
// Against a gateway already running (its container must run "sleep"-like
// and be able to exec head, sh, stty, dd, true and sleep):
//
//	go run ./bench/gwload -addr 127.0.0.1:8080 -token T -container box -pid PID
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"
)

type options struct {
	addr, token, container string
	gateway, gatewayLog    string
	gatewayArgs            string
	pid                    int
	scenarios              string
	reps                   int
	bytes                  int64
	bufSize                int
	keystrokes             int
	sessions               int
	idle, idleConc         int
	timeout                time.Duration
	cpuProfile             string
	refIdle                int // internal: the idle-rss reference child
	fanout                 string
	fanoutBytes            int64
	pfBytes                int64
	tunnels                int
	tunnelConc             int
	refTunnels             int    // internal: the pf-idle-rss reference child
	refTarget              string // internal: its upstream address
	relayTarget            string // internal: the pf-throughput relay child's upstream
}

var allScenarios = []string{"tty-throughput", "pipe-throughput", "echo-latency", "setup-rate", "idle-rss",
	"attach-fanout", "pf-throughput", "pf-setup-rate", "pf-idle-rss"}

func main() {
	var o options
	flag.StringVar(&o.addr, "addr", "", "address (host:port) of a running gateway; ignored with -gateway, which picks a free loopback port")
	flag.StringVar(&o.token, "token", "gwload", "bearer token of the gateway (passed to it with -gateway)")
	flag.StringVar(&o.container, "container", "box", "container to exec into (created by the config gwload writes with -gateway)")
	flag.StringVar(&o.gateway, "gateway", "", "path of the gateway binary: gwload starts it with its own config and stops it at the end (recommended; needed for a fresh gateway in idle-rss)")
	flag.StringVar(&o.gatewayLog, "gateway-log", "", "file for the gateway's log with -gateway (default: in a temporary directory)")
	flag.StringVar(&o.gatewayArgs, "gateway-args", "", "extra arguments for the gateway with -gateway, space-separated (e.g. \"--log-level warn\")")
	flag.IntVar(&o.pid, "pid", 0, "pid of the running gateway given by -addr: enables its CPU accounting and idle-rss")
	flag.StringVar(&o.scenarios, "scenarios", "all", "comma-separated scenarios to run: "+strings.Join(allScenarios, ", ")+", or all")
	flag.IntVar(&o.reps, "reps", 5, "repetitions of each measurement, alternating gateway and ceiling; the medians are compared")
	flag.Int64Var(&o.bytes, "bytes", 256<<20, "bytes for the throughput scenarios (head -c BYTES /dev/zero)")
	flag.IntVar(&o.bufSize, "bufsize", 32<<10, "read buffer of the ceilings (the gateway reads 32 KiB chunks); in pf-throughput, the read, write and frame size on both paths")
	flag.IntVar(&o.keystrokes, "keystrokes", 2000, "keystrokes per repetition in echo-latency")
	flag.IntVar(&o.sessions, "sessions", 200, "sessions per repetition in setup-rate")
	flag.IntVar(&o.idle, "idle", 1000, "idle sessions held open in idle-rss, and idle tunnels in pf-idle-rss")
	flag.IntVar(&o.idleConc, "idle-concurrency", 16, "sessions (tunnels) opened at once in idle-rss and pf-idle-rss")
	flag.StringVar(&o.fanout, "fanout", "1,10,100", "attacher counts K of attach-fanout, comma-separated")
	flag.Int64Var(&o.fanoutBytes, "fanout-bytes", 64<<20, "bytes the attach-fanout main process writes (each attacher receives them all)")
	flag.Int64Var(&o.pfBytes, "pf-bytes", 256<<20, "bytes each way through the tunnel in pf-throughput")
	flag.IntVar(&o.tunnels, "tunnels", 2000, "tunnels per repetition in pf-setup-rate")
	flag.IntVar(&o.tunnelConc, "tunnel-concurrency", 8, "tunnels set up at once in pf-setup-rate's second measurement (the first is one at a time)")
	flag.DurationVar(&o.timeout, "timeout", 2*time.Minute, "bound on any one session or measurement")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write gwload's own CPU profile to this file")
	flag.IntVar(&o.refIdle, "internal-ref-idle", 0, "internal: run the idle-rss reference with N ptys and exit")
	flag.IntVar(&o.refTunnels, "internal-ref-tunnels", 0, "internal: run the pf-idle-rss reference with N connections and exit")
	flag.StringVar(&o.refTarget, "internal-ref-target", "", "internal: the upstream address of the pf-idle-rss reference")
	flag.StringVar(&o.relayTarget, "internal-relay", "", "internal: run the pf-throughput relay to this address (with -bufsize) until stdin closes")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), `gwload: load and benchmark tool for the gateway.

Every scenario prints the gateway figure beside a ceiling measured by this
tool in the same run (the same command started by gwload itself in a pty or
with a pipe and read directly), alternating the two, and compares medians.

Scenarios:
  tty-throughput   head -c BYTES /dev/zero, tty=1, bytes/s at the client; ceiling: pty read in-process (target >= 0.9)
  pipe-throughput  the same with a stdout pipe; ceiling: pipe read in-process (target >= 0.6)
  echo-latency     one byte at a time through sh -c 'stty raw -echo; ...; dd bs=1' in a pty; p50/p99; ceiling: same pty in-process
  setup-rate       SESSIONS exec sessions of "true" in a row, each to its close; ceiling: fork/exec of "true" with a stdout pipe
  idle-rss         IDLE idle "sleep" sessions (tty, stdin) held open; gateway VmRSS delta per session; reference: a bare
                   process holding as many ptys with one blocked reader goroutine each
  attach-fanout    K attachers (FANOUT, e.g. 1,10,100) of a fresh container writing FANOUT-BYTES as fast as it can; aggregate
                   bytes/s and gateway CPU per MiB delivered; ceiling: the same command's pipe read in-process (against K=1)
  pf-throughput    one port-forward tunnel, PF-BYTES each way (download, upload) to a TCP server in gwload; ceiling: direct
                   loopback TCP to the same server (target >= 0.75 each way); reference: a bare relay process
  pf-setup-rate    TUNNELS tunnels, each a 4-byte echo then close, one at a time and TUNNEL-CONCURRENCY at a time;
                   per second, p50/p99; ceiling: direct TCP at the same concurrency
                   connect + the same echo (target >= 2000/s)
  pf-idle-rss      IDLE idle tunnels to a server that never writes; gateway VmRSS delta per tunnel on a fresh gateway
                   (target < 32 KiB); reference: a bare relay process holding as many connection pairs

attach-fanout creates and deletes its containers through the API (they run sh and head). The pf-* scenarios
forward into the "host" sandbox to TCP servers that gwload runs on 127.0.0.1, so the gateway must run on this host.

Usage: gwload [flags]

`)
		flag.PrintDefaults()
	}
	flag.Parse()
	if o.refIdle > 0 {
		if err := refIdleChild(o.refIdle); err != nil {
			fmt.Fprintln(os.Stderr, "gwload reference:", err)
			os.Exit(1)
		}
		return
	}
	if o.refTunnels > 0 {
		if err := refTunnelsChild(o.refTunnels, o.refTarget); err != nil {
			fmt.Fprintln(os.Stderr, "gwload reference:", err)
			os.Exit(1)
		}
		return
	}
	if o.relayTarget != "" {
		if err := relayChild(o.relayTarget, o.bufSize); err != nil {
			fmt.Fprintln(os.Stderr, "gwload relay:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "gwload:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.reps < 1 || o.bytes < 1 || o.bufSize < 1 || o.keystrokes < 1 || o.sessions < 1 || o.idle < 1 || o.idleConc < 1 ||
		o.fanoutBytes < 1 || o.pfBytes < 1 || o.tunnels < 1 || o.tunnelConc < 1 {
		return errors.New("-reps, -bytes, -bufsize, -keystrokes, -sessions, -idle, -idle-concurrency, -fanout-bytes, -pf-bytes, -tunnels and -tunnel-concurrency must be positive")
	}
	fanout, err := parseFanout(o.fanout)
	if err != nil {
		return err
	}
	scen, err := pickScenarios(o.scenarios)
	if err != nil {
		return err
	}
	if o.gateway == "" && o.addr == "" {
		return errors.New("give -gateway PATH (gwload starts the gateway) or -addr HOST:PORT of a running one")
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	// Go raises the soft open-files limit to the hard one at start; say
	// what we have, since idle-rss needs about one descriptor per session
	// here and two in the gateway.
	var lim syscall.Rlimit
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	fmt.Printf("gwload: %s, GOMAXPROCS %d, NumCPU %d, %s, open files %d (hard %d)\n",
		runtime.Version(), runtime.GOMAXPROCS(0), runtime.NumCPU(), kernel(), lim.Cur, lim.Max)
	if scen["idle-rss"] && int(lim.Cur) < o.idle+64 {
		return fmt.Errorf("idle-rss needs %d open files and the limit is %d: raise ulimit -n", o.idle+64, lim.Cur)
	}
	// pf-idle-rss: a WebSocket and the server's socket per tunnel here.
	if scen["pf-idle-rss"] && int(lim.Cur) < 2*o.idle+64 {
		return fmt.Errorf("pf-idle-rss needs %d open files and the limit is %d: raise ulimit -n", 2*o.idle+64, lim.Cur)
	}
	if k := slices.Max(fanout); scen["attach-fanout"] && int(lim.Cur) < k+64 {
		return fmt.Errorf("attach-fanout needs %d open files and the limit is %d: raise ulimit -n", k+64, lim.Cur)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var gw *gatewayProc
	if o.gateway != "" {
		if gw, err = startGateway(ctx, o); err != nil {
			return err
		}
		defer gw.stop()
		o.addr, o.pid = gw.addr, gw.pid()
	}
	c := &client{addr: o.addr, token: o.token, container: o.container, timeout: o.timeout}
	b := &bench{o: o, c: c, ctx: ctx, gw: gw}

	var errs []error
	for _, name := range allScenarios {
		if !scen[name] {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		fmt.Printf("\n== %s\n", name)
		b.others = nil
		var err error
		switch name {
		case "tty-throughput":
			err = b.throughput(true)
		case "pipe-throughput":
			err = b.throughput(false)
		case "echo-latency":
			err = b.echoLatency()
		case "setup-rate":
			err = b.setupRate()
		case "idle-rss":
			err = b.idleRSS()
		case "attach-fanout":
			err = b.attachFanout()
		case "pf-throughput":
			err = b.pfThroughput()
		case "pf-setup-rate":
			err = b.pfSetupRate()
		case "pf-idle-rss":
			err = b.pfIdleRSS()
		}
		if err != nil {
			fmt.Printf("%s: FAILED: %v\n", name, err)
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	b.printSummary()
	if gw != nil {
		fmt.Printf("\ngateway log: %s\n", gw.logPath)
	}
	return errors.Join(errs...)
}

func pickScenarios(s string) (map[string]bool, error) {
	m := map[string]bool{}
	for name := range strings.SplitSeq(s, ",") {
		name = strings.TrimSpace(name)
		switch {
		case name == "all":
			for _, n := range allScenarios {
				m[n] = true
			}
		case name == "":
		default:
			ok := false
			for _, n := range allScenarios {
				ok = ok || n == name
			}
			if !ok {
				return nil, fmt.Errorf("unknown scenario %q; known: %s", name, strings.Join(allScenarios, ", "))
			}
			m[name] = true
		}
	}
	if len(m) == 0 {
		return nil, errors.New("no scenario selected")
	}
	return m, nil
}

func kernel() string {
	var u syscall.Utsname
	if syscall.Uname(&u) != nil {
		return "linux"
	}
	b := make([]byte, 0, len(u.Release))
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return "linux " + string(b)
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

	// Ready: /healthz answers and the container runs.
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

// restart stops the gateway and starts a fresh one with the same config.
func (g *gatewayProc) restart(ctx context.Context) error {
	g.stop()
	return g.start(ctx, filepath.Join(g.dir, "gateway.yaml"))
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
