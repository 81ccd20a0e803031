package container

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"gateway/internal/procfs"
)

// TestExitWatcherMany: each of many watched children is handed to its own
// callback exactly once, whether it exits alone or with others, and a
// child the watcher does not watch (reaped by os/exec's Wait) neither
// hides the others nor is taken from its owner.
func TestExitWatcherMany(t *testing.T) {
	for _, others := range []bool{false, true} {
		t.Run(map[bool]string{false: "watched only", true: "with others"}[others], func(t *testing.T) { testExitWatcher(t, others) })
	}
}

func testExitWatcher(t *testing.T, others bool) {
	w := newExitWatcher()
	const n = 40
	var (
		mu   sync.Mutex
		got  = map[int]int{}
		done sync.WaitGroup
	)
	start := func(args ...string) *exec.Cmd {
		cmd := exec.Command(args[0], args[1:]...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	watch := func(cmd *exec.Cmd) {
		pid := cmd.Process.Pid
		done.Add(1)
		w.watch(pid, func() {
			if err := cmd.Wait(); err != nil {
				t.Errorf("pid %d: %v", pid, err)
			}
			mu.Lock()
			got[pid]++
			mu.Unlock()
			done.Done()
		})
	}
	// Someone else's children, exited before and after the watched ones.
	var other, late *exec.Cmd
	if others {
		other = start("sh", "-c", "exit 3")
	}
	var cmds []*exec.Cmd
	for i := range n {
		cmd := start("sleep", []string{"0", "0.2"}[i%2])
		cmds = append(cmds, cmd)
		watch(cmd)
	}
	time.Sleep(50 * time.Millisecond)
	if others {
		late = start("sh", "-c", "sleep 0.1; exit 4")
	}
	finished := make(chan struct{})
	go func() { done.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(10 * time.Second):
		t.Fatalf("%d of %d exits seen", len(got), n)
	}
	for _, cmd := range cmds {
		if c := got[cmd.Process.Pid]; c != 1 {
			t.Errorf("pid %d: %d callbacks, want 1", cmd.Process.Pid, c)
		}
	}
	for _, c := range []struct {
		cmd  *exec.Cmd
		code int
	}{{other, 3}, {late, 4}} {
		if c.cmd == nil {
			continue
		}
		err := c.cmd.Wait()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != c.code {
			t.Errorf("unwatched child: %v, want exit status %d", err, c.code)
		}
	}
	w.mu.Lock()
	running := w.running
	w.mu.Unlock()
	if running {
		t.Error("the watcher's goroutine still runs with nothing watched")
	}
}

// TestSiginfoPid: the pid read from waitid's siginfo is the child's.
func TestSiginfoPid(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}
	if got := siginfoPid(&info); got != cmd.Process.Pid {
		t.Errorf("siginfoPid = %d, want %d", got, cmd.Process.Pid)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
}

// describe tells a failing test what the watcher holds: each watched
// process and its state in /proc, the kills and sweeps still pending, and
// whether its goroutine runs.
func (w *exitWatcher) describe() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "watcher: running %v, %d kills pending, %d sessions to sweep (timer set %v); watched:", w.running, w.pendingKills, len(w.sweeps), w.sweepTimer != nil)
	for pid := range w.procs {
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		fmt.Fprintf(&b, " %d (%s)", pid, bytes.TrimSpace(stat))
	}
	for _, p := range procfs.All() {
		if p.PPid == os.Getpid() {
			fmt.Fprintf(&b, "; child %d state %s", p.Pid, p.State)
		}
	}
	return b.String()
}
