package container

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gateway/internal/chunkio"
	"gateway/internal/proctest"
	"gateway/sandbox"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	cleanup := proctest.Hermetic() // no test depends on the user's HOME, shell or locale
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { cleanup() }))
}

// newTestRuntime returns a runtime with a short grace period and a
// container "c" running sleep, stopped at cleanup.
func newTestRuntime(t *testing.T) (*Runtime, *Container) {
	t.Helper()
	rt := New(Config{StopGrace: 200 * time.Millisecond, Scrollback: 1 << 10}, sandbox.NewRegistry())
	c, err := rt.Create(Spec{ID: "c", Command: []string{"sleep", "1000"}, WorkingDir: t.TempDir(),
		Env: map[string]string{"GREETING": "hi there"}})
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, c, Running)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rt.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		assertNoZombies(t)
	})
	return rt, c
}

func waitState(t *testing.T, c *Container, want State) {
	t.Helper()
	for range 500 {
		if c.State() == want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("container %s: state %s, want %s", c.ID(), c.State(), want)
}

// assertNoZombies fails if a child of this process is left unreaped.
func assertNoZombies(t *testing.T) {
	t.Helper()
	if z := proctest.Zombies(); len(z) > 0 {
		t.Errorf("zombie children: %v", z)
	}
}

// run execs command, collects its output and exit code.
func run(t *testing.T, c *Container, spec ExecSpec, stdin string) (stdout, stderr string, code int) {
	t.Helper()
	p, err := c.Exec(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var wg sync.WaitGroup
	var out, errb []byte
	read := func(f *os.File, dst *[]byte) {
		if f == nil {
			return
		}
		wg.Go(func() {
			chunkio.Read(f, testBuffers{}, func(b []byte, n int) error { *dst = append(*dst, b[:n]...); return nil })
		})
	}
	read(p.Stdout, &out)
	read(p.Stderr, &errb)
	if spec.Stdin {
		if _, err := p.Stdin.Write([]byte(stdin)); err != nil {
			t.Fatal(err)
		}
		if err := p.CloseStdin(); err != nil {
			t.Fatal(err)
		}
	}
	code, err = p.Wait()
	if err != nil {
		t.Fatal(err)
	}
	p.StopReadingAfter(time.Second)
	wg.Wait()
	return string(out), string(errb), code
}

func TestExecPipes(t *testing.T) {
	_, c := newTestRuntime(t)
	out, errOut, code := run(t, c, ExecSpec{Command: []string{"sh", "-c", "echo out; echo err >&2; exit 7"}, Stdout: true, Stderr: true}, "")
	if out != "out\n" || errOut != "err\n" || code != 7 {
		t.Errorf("got %q %q %d", out, errOut, code)
	}
	out, _, code = run(t, c, ExecSpec{Command: []string{"wc", "-c"}, Stdin: true, Stdout: true}, "hello\n")
	if strings.TrimSpace(out) != "6" || code != 0 {
		t.Errorf("wc -c: %q %d", out, code)
	}
	// The container's context: working dir and env, without GATEWAY_*.
	t.Setenv("GATEWAY_TOKEN", "secret")
	_, c2 := newTestRuntime(t)
	out, _, _ = run(t, c2, ExecSpec{Command: []string{"sh", "-c", `pwd; echo "$GREETING"; echo "tok=$GATEWAY_TOKEN"`}, Stdout: true}, "")
	lines := strings.Split(out, "\n")
	if lines[0] != c2.Spec().WorkingDir || lines[1] != "hi there" || lines[2] != "tok=" {
		t.Errorf("context: %q", out)
	}
}

func TestExecTTY(t *testing.T) {
	_, c := newTestRuntime(t)
	out, _, code := run(t, c, ExecSpec{Command: []string{"sh", "-c", "stty size; echo $TERM; tty >/dev/null && echo tty; echo err >&2"},
		TTY: true, Size: Size{Cols: 123, Rows: 45}}, "")
	if out != "45 123\r\nxterm-256color\r\ntty\r\nerr\r\n" || code != 0 {
		t.Errorf("got %q %d", out, code)
	}

	p, err := c.Exec(ExecSpec{Command: []string{"sh", "-c", "read x; stty size"}, TTY: true, Stdin: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Resize(Size{Cols: 77, Rows: 11}); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		chunkio.Read(p.Stdout, testBuffers{}, func(b []byte, n int) error { got.Write(b[:n]); return nil })
	}()
	p.Stdin.Write([]byte("go\n"))
	if code, err := p.Wait(); code != 0 || err != nil {
		t.Errorf("exit %d %v", code, err)
	}
	p.StopReadingAfter(time.Second)
	<-done
	if !strings.HasSuffix(got.String(), "11 77\r\n") {
		t.Errorf("after resize: %q", got.String())
	}
}

func TestExecExitCodes(t *testing.T) {
	_, c := newTestRuntime(t)
	for _, tc := range []struct {
		cmd  string
		want int
	}{{"exit 0", 0}, {"exit 3", 3}, {"exit 255", 255}, {"kill -9 $$", 128 + 9}, {"kill -TERM $$", 128 + 15}} {
		if _, _, code := run(t, c, ExecSpec{Command: []string{"sh", "-c", tc.cmd}}, ""); code != tc.want {
			t.Errorf("%s: exit code %d, want %d", tc.cmd, code, tc.want)
		}
	}
	if _, err := c.Exec(ExecSpec{Command: []string{"no-such-command-here"}}); err == nil || !strings.Contains(err.Error(), "executable file not found") {
		t.Errorf("missing command: %v", err)
	}
}

// TestTerminate: a process group that ignores SIGTERM is killed after the
// grace period, children included.
func TestTerminate(t *testing.T) {
	_, c := newTestRuntime(t)
	for _, tty := range []bool{false, true} {
		t.Run(fmt.Sprintf("tty=%v", tty), func(t *testing.T) {
			p, err := c.Exec(ExecSpec{Command: []string{"sh", "-c", "trap '' TERM HUP; sleep 1000 & echo started; wait"}, TTY: tty, Stdout: true})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			buf := make([]byte, 64)
			if n, _ := p.Stdout.Read(buf); !strings.Contains(string(buf[:n]), "started") {
				t.Fatalf("read %q", buf[:n])
			}
			p.Terminate()
			p.Terminate() // once is enough
			code, err := p.Wait()
			if err != nil || code != 128+int(syscall.SIGKILL) {
				t.Errorf("exit %d %v, want SIGKILL", code, err)
			}
			// The background sleep got the SIGKILL too: nothing in the group
			// is alive (init may not have reaped it yet).
			var live []int
			for range 500 {
				if live = proctest.LiveInGroup(p.Pid()); len(live) == 0 {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if len(live) > 0 {
				t.Errorf("process group still alive: %v", live)
			}
		})
	}
}

// TestGroupOutlivesLeader: children that ignore SIGHUP and SIGTERM are
// killed after the grace even when the leader died of the SIGTERM at once
// and was reaped: the whole group goes, and with a tty the whole session,
// a job in a process group of its own included. The same when the leader
// exits by itself and leaves them behind.
func TestGroupOutlivesLeader(t *testing.T) {
	rt, c := newTestRuntime(t)
	for _, tc := range []struct {
		name    string
		tty     bool
		script  string
		endSelf bool // the leader exits by itself instead of being terminated
	}{
		{"pipes", false, `(trap "" HUP TERM; echo started; exec sleep 120) & exec cat`, false},
		{"tty", true, `(trap "" HUP TERM; echo started; exec sleep 120) & exec cat`, false},
		{"tty, own process group", true, `set -m; (trap "" HUP TERM; echo started; exec sleep 120) & exec cat`, false},
		{"leader exits", false, `(trap "" HUP TERM; echo started; exec sleep 120) & exec sleep 0.2`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := c.Exec(ExecSpec{Command: []string{"sh", "-c", tc.script}, TTY: tc.tty, Stdin: true, Stdout: true})
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 64)
			if n, _ := p.Stdout.Read(buf); !strings.Contains(string(buf[:n]), "started") {
				t.Fatalf("read %q", buf[:n])
			}
			sid := p.Pid()
			if !tc.endSelf {
				p.Terminate()
			}
			code, _ := p.Wait()
			if !tc.endSelf && code != 128+int(syscall.SIGTERM) && code != 128+int(syscall.SIGHUP) {
				t.Errorf("leader exit %d, want the SIGTERM or SIGHUP it died of", code)
			}
			p.Close()
			if left := proctest.InSession(sid); tc.tty && len(left) == 0 {
				t.Fatalf("nothing left in the session right after the leader: the test proves nothing")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := rt.exits.waitKills(ctx); err != nil {
				t.Fatal(err)
			}
			left := func() []int {
				l := proctest.LiveInGroup(sid)
				if tc.tty {
					l = append(l, proctest.InSession(sid)...)
				}
				return l
			}
			for range 200 { // killed already; init may not have reaped them yet
				if len(left()) == 0 {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if l := left(); len(l) > 0 {
				t.Errorf("left after the grace: %v", l)
			}
		})
	}
}

// TestLingeringChild: output held open by a background child does not
// keep the reader waiting once the process has exited.
func TestLingeringChild(t *testing.T) {
	_, c := newTestRuntime(t)
	p, err := c.Exec(ExecSpec{Command: []string{"sh", "-c", "sleep 1000 & echo bye"}, Stdout: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if code, _ := p.Wait(); code != 0 {
		t.Errorf("exit %d", code)
	}
	p.StopReadingAfter(100 * time.Millisecond)
	var got []byte
	chunkio.Read(p.Stdout, testBuffers{}, func(b []byte, n int) error { got = append(got, b[:n]...); return nil })
	if string(got) != "bye\n" {
		t.Errorf("got %q", got)
	}
	syscall.Kill(-p.Pid(), syscall.SIGKILL)
}

// TestDrainKeepsEverything: output written just before exit is all read,
// even when the deadline passes while it sits in the pipe.
func TestDrainKeepsEverything(t *testing.T) {
	_, c := newTestRuntime(t)
	p, err := c.Exec(ExecSpec{Command: []string{"head", "-c", "60000", "/dev/zero"}, Stdout: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if code, _ := p.Wait(); code != 0 {
		t.Errorf("exit %d", code)
	}
	p.StopReadingAfter(-time.Second) // already passed
	total := 0
	if err := chunkio.Read(p.Stdout, testBuffers{}, func(b []byte, n int) error { total += n; return nil }); err != nil {
		t.Fatal(err)
	}
	if total != 60000 {
		t.Errorf("read %d bytes, want 60000", total)
	}
}

func TestExecSync(t *testing.T) {
	_, c := newTestRuntime(t)
	ctx := context.Background()
	res, err := c.ExecSync(ctx, []string{"sh", "-c", "cat; echo e >&2; exit 4"}, []byte("in"), 0, 1<<20)
	if err != nil || string(res.Stdout) != "in" || string(res.Stderr) != "e\n" || res.ExitCode != 4 || res.TimedOut || res.Truncated {
		t.Errorf("got %+v %v", res, err)
	}
	res, err = c.ExecSync(ctx, []string{"head", "-c", "100000", "/dev/zero"}, nil, 0, 1000)
	if err != nil || len(res.Stdout) != 1000 || !res.Truncated || res.ExitCode != 0 {
		t.Errorf("cap: %d bytes truncated=%v exit=%d %v", len(res.Stdout), res.Truncated, res.ExitCode, err)
	}
	res, err = c.ExecSync(ctx, []string{"sleep", "1000"}, nil, 50*time.Millisecond, 1000)
	if err != nil || !res.TimedOut || res.ExitCode != 128+int(syscall.SIGTERM) {
		t.Errorf("timeout: %+v %v", res, err)
	}
	// A process that never reads its stdin does not block ExecSync.
	res, err = c.ExecSync(ctx, []string{"true"}, bytes.Repeat([]byte("x"), 1<<20), 0, 10)
	if err != nil || res.ExitCode != 0 {
		t.Errorf("unread stdin: %+v %v", res, err)
	}
}

// TestExecSyncEndsWithContainer: removing the container ends an exec-sync
// in it (the process is terminated, not left to run), with ErrStopped;
// execs are refused once the container is stopping.
func TestExecSyncEndsWithContainer(t *testing.T) {
	rt, c := newTestRuntime(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	type result struct {
		res SyncResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := c.ExecSync(context.Background(), []string{"sh", "-c", "echo $$ > " + pidFile + "; exec sleep 1000"}, nil, 0, 1000)
		done <- result{res, err}
	}()
	pid := 0
	for range 500 {
		b, _ := os.ReadFile(pidFile)
		if pid, _ = strconv.Atoi(strings.TrimSpace(string(b))); pid != 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if pid == 0 {
		t.Fatal("the exec-sync did not start")
	}
	if err := rt.Remove(context.Background(), "c"); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if !errors.Is(r.err, ErrStopped) {
		t.Errorf("exec-sync ended with %+v %v, want ErrStopped", r.res, r.err)
	}
	if proctest.Alive(pid) {
		t.Errorf("exec-sync process %d still running", pid)
	}
	if _, err := c.Exec(ExecSpec{Command: []string{"true"}}); !errors.Is(err, ErrNotRunning) {
		t.Errorf("exec in a removed container: %v, want ErrNotRunning", err)
	}
}

func TestContainerLifecycle(t *testing.T) {
	rt := New(Config{StopGrace: 200 * time.Millisecond, Scrollback: 16}, sandbox.NewRegistry())
	c, err := rt.Create(Spec{ID: "printer", Command: []string{"sh", "-c", "echo 0123456789abcdefXYZ; exit 3"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Create(Spec{ID: "printer", Command: []string{"true"}}); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate: %v", err)
	}
	waitState(t, c, Exited)
	info := c.Info()
	if info.ExitCode == nil || *info.ExitCode != 3 || info.StartedAt == nil || info.FinishedAt == nil || info.Pid == 0 {
		t.Errorf("info %+v", info)
	}
	<-c.done
	sb := c.Scrollback()
	if len(sb) != 1 || string(sb[0].Data) != "456789abcdefXYZ\n" { // the last 16 bytes
		t.Errorf("scrollback %+v", sb)
	}
	if _, err := c.Exec(ExecSpec{Command: []string{"true"}}); !errors.Is(err, ErrNotRunning) {
		t.Errorf("exec into exited: %v", err)
	}
	if got := rt.StateCounts(); got["exited"] != 1 {
		t.Errorf("counts %v", got)
	}
	if err := rt.Remove(context.Background(), "printer"); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Get("printer"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after remove: %v", err)
	}
	if err := rt.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	assertNoZombies(t)
}

func TestCreateValidation(t *testing.T) {
	rt := New(Config{StopGrace: time.Second}, sandbox.NewRegistry())
	defer rt.Shutdown(context.Background())
	for _, tc := range []struct {
		name string
		spec Spec
		want string
	}{
		{"bad id", Spec{ID: "Bad_ID", Command: []string{"true"}}, "id"},
		{"traversal", Spec{ID: "../x", Command: []string{"true"}}, "id"},
		{"no sandbox", Spec{ID: "a", Sandbox: "nope", Command: []string{"true"}}, "sandbox"},
		{"missing command", Spec{ID: "a", Command: []string{"/no/such/thing"}}, "command"},
		{"relative dir", Spec{ID: "a", Command: []string{"true"}, WorkingDir: "tmp"}, "workingDir"},
		{"bad env", Spec{ID: "a", Command: []string{"true"}, Env: map[string]string{"A=B": "x"}}, "env"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := rt.Create(tc.spec); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Create = %v, want an error about %s", err, tc.want)
			}
		})
	}
	if len(rt.List()) != 0 {
		t.Error("a refused container was registered")
	}
}

// TestStopTTYShell: the default kind of container, a login shell in a pty,
// stops promptly (an interactive shell ignores SIGTERM but not SIGHUP).
func TestStopTTYShell(t *testing.T) {
	rt := New(Config{StopGrace: 30 * time.Second, Scrollback: 1 << 10}, sandbox.NewRegistry())
	c, err := rt.Create(Spec{ID: "shell", Command: []string{"sh", "-i"}, TTY: true, Stdin: true})
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, c, Running)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rt.Shutdown(ctx); err != nil {
		t.Fatalf("%v; %s", err, rt.exits.describe())
	}
	if code := c.Info().ExitCode; code == nil || *code == 128+9 {
		t.Errorf("exit code %v: the shell needed SIGKILL", code)
	}
	assertNoZombies(t)
}

func TestScrollback(t *testing.T) {
	s := scrollback{limit: 10}
	s.append(Stdout, []byte("abc"))
	s.append(Stdout, []byte("def"))
	s.append(Stderr, []byte("gh"))
	s.append(Stdout, []byte("ijk"))
	got := s.snapshot()
	want := []Chunk{{Stream: Stdout, Data: []byte("bcdef")}, {Stream: Stderr, Data: []byte("gh")}, {Stream: Stdout, Data: []byte("ijk")}}
	if !slices.EqualFunc(got, want, func(a, b Chunk) bool { return a.Stream == b.Stream && bytes.Equal(a.Data, b.Data) }) {
		t.Errorf("snapshot %+v, want %+v", got, want)
	}
	// tail: the last bytes of every stream, in order, across blocks.
	for n, want := range map[int]string{0: "", 4: "hijk", 7: "efghijk", 10: "bcdefghijk", 50: "bcdefghijk"} {
		if got := string(s.tail(n)); got != want {
			t.Errorf("tail(%d) = %q, want %q", n, got, want)
		}
	}
	s.append(Stderr, []byte("0123456789XY"))
	if got := s.snapshot(); len(got) != 1 || string(got[0].Data) != "23456789XY" || s.size != 10 {
		t.Errorf("after a write over the limit: %+v size %d", got, s.size)
	}
	// A flood of one-byte writes packs into few blocks (which grow from
	// 512 bytes to 32 KiB), and a little output takes little room.
	s = scrollback{limit: 1 << 20}
	s.append(Stdout, []byte("user@host:~$ "))
	if n := cap(s.blocks[0].base); n > scrollbackFirst {
		t.Errorf("a prompt takes a block of %d bytes", n)
	}
	for range 100000 {
		s.append(Stdout, []byte("x"))
	}
	if len(s.blocks) > 10 {
		t.Errorf("%d blocks for 100000 bytes", len(s.blocks))
	}
	// A flood beyond the limit reuses the dropped blocks.
	s = scrollback{limit: 4 * scrollbackBlock}
	chunk := make([]byte, 1000)
	s.append(Stdout, chunk)
	allocs := testing.AllocsPerRun(100, func() { s.append(Stdout, chunk) })
	if allocs > 0.1 {
		t.Errorf("%.2f allocations per append once full", allocs)
	}

	// compact keeps every byte in blocks of their size, and the next
	// write starts a small block again.
	s = scrollback{limit: 1 << 20}
	var want2 []byte
	for i := range 5000 {
		p := []byte(fmt.Sprintf("line %d\r\n", i))
		s.append(Stdout, p)
		want2 = append(want2, p...)
	}
	s.append(Stderr, []byte("oops"))
	s.compact()
	room := 0
	for _, b := range s.blocks {
		room += cap(b.base) - len(b.data)
	}
	if got := s.snapshot(); len(got) != 2 || !bytes.Equal(got[0].Data, want2) || string(got[1].Data) != "oops" || room != 0 {
		t.Errorf("after compact: %d chunks, %d bytes spare", len(got), room)
	}
	s.append(Stderr, []byte("!"))
	if n := cap(s.blocks[len(s.blocks)-1].base); n != scrollbackFirst {
		t.Errorf("the block after a compact has %d bytes", n)
	}
}

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "tool"), []byte("#!/bin/sh\n"), 0o755)
	os.WriteFile(filepath.Join(dir, "data"), []byte("x"), 0o644)
	env := []string{"PATH=" + dir + ":/bin"}
	for _, tc := range []struct {
		name, want string
		ok         bool
	}{
		{"tool", filepath.Join(dir, "tool"), true},
		{"./tool", filepath.Join(dir, "tool"), true},
		{"sh", "/bin/sh", true},
		{"data", "", false},
		{"./data", "", false},
		{"nope", "", false},
	} {
		got, err := lookPath(tc.name, env, dir)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("lookPath(%q) = %q, %v", tc.name, got, err)
		}
	}
}

// testBuffers allocates a buffer per read.
type testBuffers struct{}

func (testBuffers) Get() []byte { return make([]byte, 32<<10) }
func (testBuffers) Put([]byte)  {}

// TestWaitNeedsNoThread: processes being waited for do not each hold an
// OS thread (os/exec's Wait blocks one per process in waitid).
func TestWaitNeedsNoThread(t *testing.T) {
	_, c := newTestRuntime(t)
	before := threads(t)
	var procs []*Process
	var wg sync.WaitGroup
	for range 50 {
		p, err := c.Exec(ExecSpec{Command: []string{"sleep", "1000"}})
		if err != nil {
			t.Fatal(err)
		}
		procs = append(procs, p)
		wg.Go(func() { p.Wait() })
	}
	time.Sleep(200 * time.Millisecond) // let every Wait block
	during := threads(t)
	for _, p := range procs {
		p.Kill()
	}
	wg.Wait()
	for _, p := range procs {
		p.Close()
	}
	t.Logf("threads: %d before, %d with 50 processes waited for", before, during)
	if during-before > 10 {
		t.Errorf("%d threads for 50 waits", during-before)
	}
}

func threads(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	t.Fatal("no Threads line")
	return 0
}

// TestRemoveSandboxRacesCreate: a sandbox removed as a container is
// created in it never leaves that container running in no sandbox: one of
// the two fails.
func TestRemoveSandboxRacesCreate(t *testing.T) {
	sandboxes := sandbox.NewRegistry()
	rt := New(Config{StopGrace: 200 * time.Millisecond, Scrollback: 1 << 10}, sandboxes)
	defer rt.Shutdown(context.Background())
	for i := range 100 {
		id := fmt.Sprintf("race%d", i)
		if _, err := sandboxes.Create(sandbox.Spec{ID: id, Network: sandbox.NetworkHost}); err != nil {
			t.Fatal(err)
		}
		var createErr, removeErr error
		var wg sync.WaitGroup
		wg.Go(func() {
			_, createErr = rt.Create(Spec{ID: "c" + id, Sandbox: id, Command: []string{"sleep", "1000"}, WorkingDir: t.TempDir()})
		})
		wg.Go(func() {
			time.Sleep(time.Duration(i%25) * 20 * time.Microsecond) // at every point of the create
			removeErr = rt.RemoveSandbox(id)
		})
		wg.Wait()
		if createErr == nil && removeErr == nil {
			t.Fatalf("round %d: the container was created and its sandbox removed", i)
		}
		if createErr == nil {
			rt.Remove(context.Background(), "c"+id)
			if err := rt.RemoveSandbox(id); err != nil {
				t.Fatal(err)
			}
		}
	}
}
