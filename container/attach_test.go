package container

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gateway/sandbox"
	"gateway/vt"
)

// attach attaches to the container, failing the test on an error.
func attach(t *testing.T, c *Container, j Join) *Attachment {
	t.Helper()
	a, err := c.Attach(j, nil)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// drain collects an attachment's replay and live output until it ends,
// and returns them with the exit code and why it ended.
func drain(a *Attachment) ([]byte, *int, error) {
	var b bytes.Buffer
	for _, c := range a.Replay {
		b.Write(c.Data)
	}
	for c := range a.C {
		b.Write(c.Data)
	}
	return b.Bytes(), a.ExitCode(), a.Err()
}

// TestAttachGapFree: attachers that join at different times each see the
// scrollback then the live output, with no line lost or repeated.
func TestAttachGapFree(t *testing.T) {
	rt := New(Config{StopGrace: time.Second, Scrollback: 1 << 20}, sandbox.NewRegistry())
	defer rt.Shutdown(context.Background())
	c, err := rt.Create(Spec{ID: "seq", Command: []string{"sh", "-c", "i=0; while [ $i -lt 200 ]; do echo $i; i=$((i+1)); sleep 0.01; done"}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, delay := range []time.Duration{300 * time.Millisecond, 900 * time.Millisecond} {
		time.Sleep(delay)
		a := attach(t, c, Replay)
		wg.Go(func() {
			out, code, err := drain(a)
			if err != nil || code == nil || *code != 0 {
				t.Errorf("end: %v %v", err, code)
			}
			lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
			for i, l := range lines {
				if l != strconv.Itoa(i) {
					t.Errorf("attached after %v: line %d is %q", delay, i, l)
					return
				}
			}
			if len(lines) != 200 {
				t.Errorf("attached after %v: %d lines", delay, len(lines))
			}
		})
	}
	wg.Wait()
	// Attaching after the end: the replay, then the end at once.
	out, code, err := drain(attach(t, c, Replay))
	if !strings.HasPrefix(string(out), "0\n1\n") || err != nil || code == nil || *code != 0 {
		t.Errorf("late attach: %d bytes %v %v", len(out), err, code)
	}
	if a := attach(t, c, Live); len(a.Replay) != 0 {
		t.Errorf("replay=false replayed %d chunks", len(a.Replay))
	}
}

// TestSlowAttacherCut: an attacher that never reads is cut; one that reads
// keeps getting everything; the writer is not held up for long.
func TestSlowAttacherCut(t *testing.T) {
	rt := New(Config{StopGrace: time.Second, Scrollback: 1 << 16, AttachLagLimit: 2 * time.Second}, sandbox.NewRegistry())
	defer rt.Shutdown(context.Background())
	c, err := rt.Create(Spec{ID: "flood", Command: []string{"sh", "-c", "read x; head -c 100000000 /dev/zero"}, Stdin: true})
	if err != nil {
		t.Fatal(err)
	}
	slow := attach(t, c, Live)
	fast := attach(t, c, Live)
	defer slow.Detach()
	c.WriteStdin([]byte("go\n"), nil)
	var n int
	for ch := range fast.C {
		n += len(ch.Data)
	}
	if fast.Err() != nil || n != 100000000 {
		t.Errorf("fast attacher: %d bytes, %v", n, fast.Err())
	}
	if !errors.Is(slow.Err(), ErrSlowConsumer) {
		t.Errorf("slow attacher: %v", slow.Err())
	}
	queued := 0
	for ch := range slow.C {
		queued += len(ch.Data)
	}
	if queued > attachQueueLen*32<<10 {
		t.Errorf("slow attacher held %d bytes", queued)
	}
}

func TestDetachDoesNotStall(t *testing.T) {
	// A reader starved of CPU by parallel tests must not be cut.
	rt := New(Config{StopGrace: time.Second, Scrollback: 1 << 16, AttachLagLimit: time.Minute}, sandbox.NewRegistry())
	defer rt.Shutdown(context.Background())
	c, _ := rt.Create(Spec{ID: "f", Command: []string{"sh", "-c", "read x; head -c 20000000 /dev/zero"}, Stdin: true})
	gone := attach(t, c, Live)
	gone.Detach()
	a := attach(t, c, Live)
	c.WriteStdin([]byte("\n"), nil)
	out, _, err := drain(a)
	if len(out) != 20000000 || err != nil {
		t.Errorf("%d bytes %v", len(out), err)
	}
	if gone.Err() != nil {
		t.Errorf("a detached attachment was cut: %v", gone.Err())
	}
}

func TestStdinFromTwoWriters(t *testing.T) {
	rt := New(Config{StopGrace: time.Second, Scrollback: 1 << 20}, sandbox.NewRegistry())
	defer rt.Shutdown(context.Background())
	c, err := rt.Create(Spec{ID: "cat", Command: []string{"cat"}, Stdin: true})
	if err != nil {
		t.Fatal(err)
	}
	a := attach(t, c, Live)
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for i := range 500 {
				if err := c.WriteStdin(fmt.Appendf(nil, "writer-%d-line-%03d-%s\n", w, i, strings.Repeat("x", 100)), nil); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	var got bytes.Buffer
	for got.Len() < 2*500*(len("writer-0-line-000-")+101) {
		ch := <-a.C
		got.Write(ch.Data)
	}
	seen := map[string]bool{}
	for l := range strings.SplitSeq(strings.TrimSuffix(got.String(), "\n"), "\n") {
		if !strings.HasPrefix(l, "writer-") || len(l) != len("writer-0-line-000-")+100 {
			t.Fatalf("interleaved line %q", l)
		}
		seen[l[:17]] = true
	}
	if len(seen) != 1000 {
		t.Errorf("%d distinct lines, want 1000", len(seen))
	}
	nostdin, _ := rt.Create(Spec{ID: "nostdin", Command: []string{"sleep", "100"}})
	if err := nostdin.WriteStdin([]byte("x"), nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("stdin to a container without stdin: %v", err)
	}
}

// TestStopWhileRestarting: a container stopped as its main process is
// started again does not keep that process: the supervisor ends.
func TestStopWhileRestarting(t *testing.T) {
	rt := New(Config{StopGrace: time.Second, Scrollback: 1 << 10, RestartBackoff: time.Millisecond, RestartBackoffMax: time.Millisecond}, sandbox.NewRegistry())
	flag := filepath.Join(t.TempDir(), "ran")
	starts := 0
	testHookStarting = func(c *Container) {
		if starts++; starts == 2 {
			c.terminate() // the stop lands between the backoff and the fork
		}
	}
	defer func() { testHookStarting = nil }()
	// The first run exits (and is restarted), the second would run for good.
	c, err := rt.Create(Spec{ID: "restarting", Command: []string{"sh", "-c", "test -e " + flag + " && exec sleep 1000; touch " + flag},
		RestartPolicy: RestartAlways})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		c.terminate()
		<-c.done
		t.Fatal("the process started during the stop kept running")
	}
	if err := rt.Remove(context.Background(), c.ID()); err != nil {
		t.Fatal(err)
	}
	if st := c.Info(); st.State != Exited || st.Restarts != 1 {
		t.Errorf("after the stop: %+v", st)
	}
}

func TestRestartPolicy(t *testing.T) {
	rt := New(Config{StopGrace: time.Second, Scrollback: 1 << 10, RestartBackoff: 5 * time.Millisecond, RestartBackoffMax: 20 * time.Millisecond}, sandbox.NewRegistry())
	tests := []struct {
		policy  string
		command string
		restart bool
	}{
		{RestartOnFailure, "exit 3", true},
		{RestartOnFailure, "exit 0", false},
		{RestartAlways, "exit 0", true},
		{RestartNever, "exit 3", false},
	}
	for i, tc := range tests {
		t.Run(tc.policy+" "+tc.command, func(t *testing.T) {
			c, err := rt.Create(Spec{ID: fmt.Sprintf("r%d", i), Command: []string{"sh", "-c", tc.command}, RestartPolicy: tc.policy})
			if err != nil {
				t.Fatal(err)
			}
			if tc.restart {
				waitFor(t, func() bool { return c.Info().Restarts >= 3 })
				if err := rt.Remove(context.Background(), c.ID()); err != nil {
					t.Fatal(err)
				}
			} else {
				<-c.done
				time.Sleep(50 * time.Millisecond)
				if r := c.Info().Restarts; r != 0 {
					t.Errorf("%d restarts", r)
				}
			}
			if st := c.State(); st != Exited {
				t.Errorf("state %s", st)
			}
		})
	}
	if _, err := rt.Create(Spec{ID: "bad", Command: []string{"true"}, RestartPolicy: "sometimes"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad policy: %v", err)
	}
	if err := rt.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	assertNoZombies(t)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("timed out")
}

// TestStopDuringBackoff: an attacher that joined while the container waited
// to restart gets the last exit when the container is stopped meanwhile.
func TestStopDuringBackoff(t *testing.T) {
	rt := New(Config{StopGrace: time.Second, Scrollback: 1 << 10, RestartBackoff: time.Minute}, sandbox.NewRegistry())
	defer rt.Shutdown(context.Background())
	c, err := rt.Create(Spec{ID: "flaky", Command: []string{"sh", "-c", "exit 3"}, RestartPolicy: RestartOnFailure})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return c.State() == Exited })
	a := attach(t, c, Live) // waiting for the next run
	ended := make(chan struct{})
	go func() {
		for range a.C {
		}
		close(ended)
	}()
	if err := rt.Remove(context.Background(), "flaky"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ended:
		if code := a.ExitCode(); a.Err() != nil || code == nil || *code != 3 {
			t.Errorf("attachment ended with %v, %v; want exit code 3", a.Err(), code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the attachment outlived its container")
	}
}

// TestAttachTTYScreen: a late attacher of a tty container running a
// full-screen program gets its screen, not a replay of raw bytes.
func TestAttachTTYScreen(t *testing.T) {
	rt := New(Config{StopGrace: time.Second, Scrollback: 1 << 20}, sandbox.NewRegistry())
	defer rt.Shutdown(context.Background())
	c, err := rt.Create(Spec{ID: "full", TTY: true, Command: []string{"sh", "-c",
		`i=0; while [ $i -lt 100 ]; do echo noise $i; i=$((i+1)); done; printf '\033[?1049h\033[2J\033[3;4Hfull screen\033[1;1H'; sleep 30`}})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		a := attach(t, c, Replay)
		a.Detach()
		term := vt.New(int(DefaultSize.Cols), int(DefaultSize.Rows), vt.DefaultConfig())
		term.Write(a.Replay[0].Data)
		if rows := term.Text(); term.AltScreen() && rows[2] == "   full screen" {
			if strings.Contains(strings.Join(rows, "\n"), "noise") {
				t.Fatalf("the alternate screen shows the main screen's text: %q", rows)
			}
			if x, y, _ := term.Cursor(); x != 0 || y != 0 {
				t.Fatalf("cursor at %d,%d, want 0,0", x, y)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("screen: alt %v %q", term.AltScreen(), term.Text())
		}
	}
}

// TestEvents: a crash loop's events count up (Started, BackOff), a stop
// of a running container is Killing, and a container created again with
// the same id starts counting anew.
func TestEvents(t *testing.T) {
	rt := New(Config{StopGrace: time.Second, Scrollback: 1 << 10, RestartBackoff: 5 * time.Millisecond, RestartBackoffMax: 5 * time.Millisecond}, sandbox.NewRegistry())
	defer assertNoZombies(t)
	defer rt.Shutdown(context.Background())
	c, err := rt.Create(Spec{ID: "loop", Command: []string{"sh", "-c", "exit 3"}, RestartPolicy: RestartAlways})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return c.Info().Restarts >= 3 })
	if err := rt.Remove(context.Background(), c.ID()); err != nil {
		t.Fatal(err)
	}
	summary := func() []string {
		var out []string
		evs, _ := rt.Events(0)
		for _, e := range evs {
			out = append(out, fmt.Sprintf("%s %s %v %q many=%v", e.Container, e.Reason, e.Warning, e.Message, e.Count >= 3))
		}
		return out
	}
	// The last Started and BackOff are the newest, in either order; a stop
	// during the back-off kills nothing.
	got := summary()
	want := []string{`loop Started false "Started container loop" many=true`, `loop BackOff true "Back-off restarting failed container loop in pod host" many=true`}
	if len(got) < 2 || len(got) > 3 || !slices.Contains(got, want[0]) || !slices.Contains(got, want[1]) {
		t.Fatalf("events: %q", got)
	}
	if len(got) == 3 && got[2] != `loop Killing false "Stopping container loop" many=false` {
		t.Errorf("the third event: %q", got[2])
	}
	again, err := rt.Create(Spec{ID: "loop", Command: []string{"sleep", "100"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Remove(context.Background(), again.ID()); err != nil {
		t.Fatal(err)
	}
	got = summary()
	if n := len(got); n < 4 || got[n-2] != `loop Started false "Started container loop" many=false` || got[n-1] != `loop Killing false "Stopping container loop" many=false` {
		t.Errorf("events after the second container: %q", got)
	}
	evs, v := rt.Events(0)
	if evs[len(evs)-1].Added <= evs[len(evs)-2].Added || evs[len(evs)-1].Version != v {
		t.Errorf("sequence numbers out of order: %+v (at %d)", evs, v)
	}
	if since, _ := rt.Events(evs[len(evs)-2].Version); len(since) != 1 || since[0] != evs[len(evs)-1] {
		t.Errorf("the events after the last but one: %+v", since)
	}
}

// TestReplayWholeLines: once the scrollback has dropped the oldest output,
// a replay (non-tty) and the logs start at a line's start, not inside one
// (perhaps inside an escape sequence or a character).
func TestReplayWholeLines(t *testing.T) {
	rt := New(Config{StopGrace: time.Second, Scrollback: 1 << 10}, sandbox.NewRegistry())
	defer rt.Shutdown(context.Background())
	c, err := rt.Create(Spec{ID: "color", Command: []string{"sh", "-c",
		`i=0; while [ $i -lt 300 ]; do printf '\033[31mé line %05d\033[0m\n' $i; i=$((i+1)); done; sleep 1000`}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return c.Info().OutputBytes >= 300*23 })
	att, err := c.Attach(Replay, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer att.Detach()
	var replay []byte
	for _, ch := range att.Replay {
		replay = append(replay, ch.Data...)
	}
	if !bytes.HasPrefix(replay, []byte("\x1b[31mé line ")) || !bytes.HasSuffix(replay, []byte("line 00299\x1b[0m\n")) {
		t.Errorf("the replay: %q ... %q", replay[:min(40, len(replay))], replay[max(0, len(replay)-20):])
	}
	lines, _, err := c.Logs(false, false)
	if err != nil || len(lines) == 0 || !bytes.HasPrefix(lines[0].Data, []byte("\x1b[31mé line ")) {
		t.Errorf("the logs' first line: %v %v", lines[:min(1, len(lines))], err)
	}
}
