// Command gwload measures the gateway against ceilings measured by the same
// tool in the same run: throughput of a pty and of a pipe, keystroke echo
// latency, session setup rate and the memory of idle sessions; attach
// fan-out; and port-forward throughput, setup rate and idle memory.
//
// The gateway's own costs are the point, so every figure comes with the
// same work done without the gateway (the command started by gwload in a
// pty or with a pipe, read directly), and the exec and tunnel figures also
// with the same work through the Kubernetes CRI streaming library, the
// kubelet's own code, run by gwload in a child process. The targets take
// turns, repetition after repetition, and the medians are compared.
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
	"os"
	"os/signal"
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
	setupConc              int
	idle, idleConc         int
	idleSettle             time.Duration
	timeout                time.Duration
	cpuProfile             string
	fanout                 string
	fanoutBytes            int64
	pfBytes                int64
	tunnels                int
	tunnelConc             int
	child                  string // internal: run this child of gwload (see children)
	kubectl                string
	soakSessions           int
	soakTime               time.Duration
	many                   int
}

// scenarios in the order they run.
var scenarios = []struct {
	name string
	run  func(*bench) error
}{
	{"tty-throughput", func(b *bench) error { return b.throughput(true) }},
	{"pipe-throughput", func(b *bench) error { return b.throughput(false) }},
	{"echo-latency", (*bench).echoLatency},
	{"setup-rate", (*bench).setupRate},
	{"tty-setup-rate", (*bench).ttySetupRate},
	{"busy-setup-rate", (*bench).busySetupRate},
	{"idle-rss", (*bench).idleRSS},
	{"tty-idle-open", (*bench).ttyIdleOpen},
	{"detached-rss", (*bench).detachedRSS},
	{"attach-fanout", (*bench).attachFanout},
	{"pf-throughput", (*bench).pfThroughput},
	{"pf-setup-rate", (*bench).pfSetupRate},
	{"pf-idle-rss", (*bench).pfIdleRSS},
	{"kubectl-pf-throughput", (*bench).kubectlPFThroughput},
	{"kubectl-exec", (*bench).kubectlExec},
	{"forward-hop", (*bench).forwardHop},
	// Run only when named:
	{"soak", (*bench).soak},
	{"many-sessions", (*bench).manySessions},
}

// longScenarios are not part of "all".
var longScenarios = []string{"soak", "many-sessions"}

// childMains are the processes gwload runs as children of its own
// (-internal-child NAME ARGS...): the references and the CRI server.
var childMains = map[string]func(o options, args []string) error{
	"relay":       relayChild,
	"bare":        bareChild,
	"cri":         criChild,
	"ref-idle":    refIdleChild,
	"ref-tunnels": refTunnelsChild,
}

const usage = `gwload: load and benchmark tool for the gateway.

Every scenario prints the gateway figure beside a ceiling measured by this
tool in the same run (the same command started by gwload itself in a pty or
with a pipe and read directly), and the exec and tunnel scenarios beside the
Kubernetes CRI streaming library (k8s.io/cri-streaming, the kubelet's
streaming server) run by gwload in a child process around real processes;
the targets take turns and medians are compared. The gateway is spoken to
over v5.channel.k8s.io (what kubectl uses), the CRI library over
v4.channel.k8s.io (it has no v5); port-forward is v4 on both. The set-up
and echo scenarios also measure the bare server, a floor: the same
protocol answered by one goroutine per stream with nothing else (no
authentication, session, log or deadline), in a child gwload; its row
gives the gateway's ratio to it and its own to the CRI library.

Scenarios:
  tty-throughput   head -c BYTES /dev/zero, tty=1, bytes/s at the client; ceiling: pty read in-process (target >= 0.9);
                   also with the terminal state kept (detach=1h, as a detachable shell: target >= 0.8 of without)
  pipe-throughput  the same with a stdout pipe; ceiling: pipe read in-process (target >= 0.6)
  echo-latency     one byte at a time through sh -c 'stty raw -echo; ...; dd bs=1' in a pty; p50/p99; ceiling: same pty in-process
  setup-rate       SESSIONS exec sessions of "true" in a row, each to its close; ceiling: fork/exec of "true" with a stdout pipe
  tty-setup-rate   the same with tty=1 stdin=1, one at a time and SETUP-CONCURRENCY at a time; beside setup-rate's sessions
                   (target >= 0.9 of their rate) and the CRI library's (target >= 1.5); ceiling: fork/exec of "true" in a pty;
                   the client sends its size at once, as kubectl does, and the gateway is measured once more without it
  busy-setup-rate  tty-setup-rate's sessions one at a time while the gateway and the CRI library each hold IDLE idle tty
                   sessions open; ceiling: fork/exec of "true" in a pty
  idle-rss         IDLE idle "sleep" sessions (tty, stdin) held open; VmRSS delta per session of a fresh gateway (and CRI
                   server); reference: a bare process holding as many ptys with one blocked reader goroutine each
  tty-idle-open    IDLE idle "sleep" sessions (tty, stdin) opened IDLE-CONCURRENCY at a time, until the server has started
                   every process; opens/s (target >= 1.5 of the CRI library's); ceiling: gwload starting as many in ptys;
                   the gateway also without the client's size
  detached-rss     IDLE detached tty sessions (detach=1h, 200x50, a full screen and 50 lines above drawn, the client gone);
                   VmRSS per session of a fresh gateway beside idle-rss's sessions on another (target: at most 64 KiB more)
  attach-fanout    K attachers (FANOUT, e.g. 1,10,100) of a fresh container writing FANOUT-BYTES as fast as it can; aggregate
                   bytes/s and gateway CPU per MiB delivered; ceiling: the same command's pipe read in-process (against K=1)
  pf-throughput    one port-forward tunnel, PF-BYTES each way (download, upload) to a TCP server in gwload; ceiling: direct
                   loopback TCP to the same server (target >= 0.75 each way); reference: a bare relay process
  pf-setup-rate    TUNNELS tunnels, each a 4-byte echo then close, one at a time and TUNNEL-CONCURRENCY at a time;
                   per second, p50/p99; ceiling: direct TCP connect + the same echo at the same concurrency
                   (target >= 2000/s)
  pf-idle-rss      IDLE idle tunnels to a server that never writes; VmRSS delta per tunnel on a fresh gateway
                   (target < 32 KiB); reference: a bare relay process holding as many connection pairs

  kubectl-pf-throughput  one connection through kubectl port-forward (SPDY in a WebSocket), PF-BYTES each way,
                   beside the gateway's own v4 tunnel and direct TCP (needs -kubectl)
  kubectl-exec     wall time of kubectl exec of "true", over WebSocket and SPDY, beside gwload's own exec and
                   kubectl starting alone (needs -kubectl)
  forward-hop      a second gateway, the first its peer, forwards every exec: tty throughput (target >= 0.8 of direct)
                   and keystroke echo p50 (target: at most 100 µs added) and p99, direct and through the hop

Run only when named (not by "all"):
  soak             SOAK-SESSIONS streams for SOAK-TIME (execs of cat, tty and pipes, tunnels), every byte echoed and
                   checked, half ended by a reset and replaced; the gateway's goroutines, descriptors, children and RSS
                   at the start, under load, after, and idle 40 s later (it returns free memory after 30 s without a stream)
  many-sessions    MANY streams at once (tty execs of cat and tunnels), a keystroke echoed by each, checked; RSS per
                   stream and CPU while idle

attach-fanout creates and deletes its containers through the API (they run sh and head). The pf-* scenarios
forward into the "host" sandbox to TCP servers that gwload runs on 127.0.0.1, so the gateway must run on this host.

Usage: gwload [flags]

`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gwload:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (options, []string, error) {
	var o options
	fs := flag.NewFlagSet("gwload", flag.ContinueOnError)
	fs.StringVar(&o.addr, "addr", "", "address (host:port) of a running gateway; ignored with -gateway, which picks a free loopback port")
	fs.StringVar(&o.token, "token", "gwload", "bearer token of the gateway (passed to it with -gateway)")
	fs.StringVar(&o.container, "container", "box", "container to exec into (created by the config gwload writes with -gateway)")
	fs.StringVar(&o.gateway, "gateway", "", "path of the gateway binary: gwload starts it with its own config and stops it at the end (recommended; needed for a fresh gateway in idle-rss)")
	fs.StringVar(&o.gatewayLog, "gateway-log", "", "file for the gateway's log with -gateway (default: in a temporary directory)")
	fs.StringVar(&o.gatewayArgs, "gateway-args", "", "extra arguments for the gateway with -gateway, space-separated (e.g. \"--log-level warn\")")
	fs.IntVar(&o.pid, "pid", 0, "pid of the running gateway given by -addr: enables its CPU accounting and idle-rss")
	fs.StringVar(&o.scenarios, "scenarios", "all", "comma-separated scenarios to run: "+strings.Join(scenarioNames(), ", ")+", or all")
	fs.IntVar(&o.reps, "reps", 5, "repetitions of each measurement, the targets taking turns; the medians are compared")
	fs.Int64Var(&o.bytes, "bytes", 256<<20, "bytes for the throughput scenarios (head -c BYTES /dev/zero)")
	fs.IntVar(&o.bufSize, "bufsize", 32<<10, "read buffer of the ceilings (the gateway reads 32 KiB chunks); in pf-throughput, the read, write and frame size on all paths")
	fs.IntVar(&o.keystrokes, "keystrokes", 2000, "keystrokes per repetition in echo-latency")
	fs.IntVar(&o.sessions, "sessions", 200, "sessions per repetition in setup-rate and tty-setup-rate")
	fs.IntVar(&o.setupConc, "setup-concurrency", 8, "sessions set up at once in tty-setup-rate's second measurement (the first is one at a time)")
	fs.IntVar(&o.idle, "idle", 1000, "idle sessions held open in idle-rss and opened in tty-idle-open, and idle tunnels in pf-idle-rss")
	fs.IntVar(&o.idleConc, "idle-concurrency", 16, "sessions (tunnels) opened at once in idle-rss, tty-idle-open and pf-idle-rss")
	fs.DurationVar(&o.idleSettle, "idle-settle", 2*time.Second, "how long idle sessions (tunnels) are held before VmRSS is read in idle-rss and pf-idle-rss")
	fs.StringVar(&o.fanout, "fanout", "1,10,100", "attacher counts K of attach-fanout, comma-separated")
	fs.Int64Var(&o.fanoutBytes, "fanout-bytes", 64<<20, "bytes the attach-fanout main process writes (each attacher receives them all)")
	fs.Int64Var(&o.pfBytes, "pf-bytes", 256<<20, "bytes each way through the tunnel in pf-throughput")
	fs.IntVar(&o.tunnels, "tunnels", 2000, "tunnels per repetition in pf-setup-rate")
	fs.IntVar(&o.tunnelConc, "tunnel-concurrency", 8, "tunnels set up at once in pf-setup-rate's second measurement (the first is one at a time)")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "bound on any one session or measurement")
	fs.IntVar(&o.soakSessions, "soak-sessions", 200, "streams held at once in soak")
	fs.DurationVar(&o.soakTime, "soak-time", 5*time.Minute, "how long soak runs")
	fs.IntVar(&o.many, "many", 10000, "streams held at once in many-sessions")
	fs.StringVar(&o.kubectl, "kubectl", "", "kubectl binary for the kubectl scenarios (make test builds .cache/bin/kubectl); without it they are skipped")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write gwload's own CPU profile to this file")
	fs.StringVar(&o.child, "internal-child", "", "internal: run one of gwload's child processes (relay, cri, bare, ref-idle, ref-tunnels) with the arguments that follow")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	err := fs.Parse(args)
	return o, fs.Args(), err
}

func scenarioNames() []string {
	var names []string
	for _, s := range scenarios {
		names = append(names, s.name)
	}
	return names
}

func run(ctx context.Context, args []string) error {
	o, rest, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if o.child != "" {
		child, ok := childMains[o.child]
		if !ok {
			return fmt.Errorf("unknown child %q", o.child)
		}
		return child(o, rest)
	}
	if o.reps < 1 || o.bytes < 1 || o.bufSize < 1 || o.keystrokes < 1 || o.sessions < 1 || o.setupConc < 1 || o.idle < 1 ||
		o.idleConc < 1 || o.fanoutBytes < 1 || o.pfBytes < 1 || o.tunnels < 1 || o.tunnelConc < 1 {
		return errors.New("-reps, -bytes, -bufsize, -keystrokes, -sessions, -setup-concurrency, -idle, -idle-concurrency, -fanout-bytes, -pf-bytes, -tunnels and -tunnel-concurrency must be positive")
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
	// what we have, since the idle scenarios need about one descriptor per
	// session here (two per tunnel) and more in the servers.
	var lim syscall.Rlimit
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	fmt.Printf("gwload: %s, GOMAXPROCS %d, NumCPU %d, %s, open files %d (hard %d)\n",
		runtime.Version(), runtime.GOMAXPROCS(0), runtime.NumCPU(), kernel(), lim.Cur, lim.Max)
	need := map[string]int{"many-sessions": 3*o.many/2 + 64, "soak": 2*o.soakSessions + 64, "idle-rss": o.idle + 64, "tty-idle-open": o.idle + 64, "busy-setup-rate": 2*o.idle + 64, "pf-idle-rss": 2*o.idle + 64, "attach-fanout": slices.Max(fanout) + 64}
	for name, n := range need {
		if scen[name] && int(lim.Cur) < n {
			return fmt.Errorf("%s needs %d open files and the limit is %d: raise ulimit -n", name, n, lim.Cur)
		}
	}

	b, err := newBench(ctx, o)
	if err != nil {
		return err
	}
	defer b.close()
	var errs []error
	for _, s := range scenarios {
		if !scen[s.name] || ctx.Err() != nil {
			continue
		}
		fmt.Printf("\n== %s\n", s.name)
		if err := s.run(b); err != nil {
			fmt.Printf("%s: FAILED: %v\n", s.name, err)
			errs = append(errs, fmt.Errorf("%s: %w", s.name, err))
		}
	}
	b.printSummary()
	return errors.Join(errs...)
}

func pickScenarios(s string) (map[string]bool, error) {
	m := map[string]bool{}
	names := scenarioNames()
	for name := range strings.SplitSeq(s, ",") {
		switch name = strings.TrimSpace(name); {
		case name == "all":
			for _, n := range names {
				m[n] = !slices.Contains(longScenarios, n)
			}
		case name == "":
		case slices.Contains(names, name):
			m[name] = true
		default:
			return nil, fmt.Errorf("unknown scenario %q; known: %s", name, strings.Join(names, ", "))
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
