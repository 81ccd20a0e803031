package container

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"gateway/sandbox"
	"gateway/vt"
)

func jobContainer(t *testing.T) *Container {
	t.Helper()
	rt := New(Config{StopGrace: time.Second, Scrollback: 1 << 20}, sandbox.NewRegistry())
	t.Cleanup(func() { rt.Shutdown(context.Background()) })
	c, err := rt.Create(Spec{ID: "box", Command: []string{"sleep", "60"}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestJobJoinFrom: a client that joins from an offset gets exactly the
// bytes after it, whenever it joins, and the exit code at the end; an
// offset no longer kept is refused, as is one not reached yet.
func TestJobJoinFrom(t *testing.T) {
	c := jobContainer(t)
	var seen bytes.Buffer
	j, err := c.StartJob(ExecSpec{Command: []string{"sh", "-c", "i=0; while [ $i -lt 300 ]; do echo line $i; i=$((i+1)); sleep 0.002; done; exit 3"},
		Stdout: true}, JobConfig{Keep: 1 << 20, OnOutput: func(p []byte) { seen.Write(p) }})
	if err != nil {
		t.Fatal(err)
	}
	first, err := j.Attach(Live, nil)
	if err != nil {
		t.Fatal(err)
	}
	go j.Run()
	var want []byte
	for i := range 300 {
		want = fmt.Appendf(want, "line %d\n", i)
	}
	// Read some, then join a second time from what was read.
	var got []byte
	for len(got) < 1000 {
		ch := <-first.C
		got = append(got, ch.Data...)
	}
	second, err := j.Attach(Join{From: int64(len(got))}, nil)
	if err != nil {
		t.Fatal(err)
	}
	firstDone := make(chan []byte)
	go func() {
		more, _, _ := drain(first)
		firstDone <- more
	}()
	rest, code, err := drain(second)
	if err != nil || code == nil || *code != 3 {
		t.Fatalf("second attachment ended with %v, code %v", err, code)
	}
	if all := append(got, rest...); !bytes.Equal(all, want) {
		t.Fatalf("joined from %d: %d bytes, want %d (a gap or a repeat)", len(got), len(all), len(want))
	}
	more := <-firstDone
	if all := append(got, more...); !bytes.Equal(all, want) {
		t.Fatalf("first attachment: %d bytes, want %d", len(all), len(want))
	}
	if code, err := j.Wait(); code != 3 || err != nil {
		t.Fatalf("Wait = %d, %v", code, err)
	}
	if !bytes.Equal(seen.Bytes(), want) || j.OutputBytes() != int64(len(want)) {
		t.Fatalf("OnOutput saw %d bytes, OutputBytes %d, want %d", seen.Len(), j.OutputBytes(), len(want))
	}
	if _, err := j.Attach(Join{From: int64(len(want)) + 1}, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("join beyond the output: %v", err)
	}
}

func TestJobJoinGone(t *testing.T) {
	c := jobContainer(t)
	j, err := c.StartJob(ExecSpec{Command: []string{"sh", "-c", "head -c 5000 /dev/zero; sleep 30"}, Stdout: true}, JobConfig{Keep: 1000})
	if err != nil {
		t.Fatal(err)
	}
	go j.Run()
	defer func() { j.Terminate(); j.Wait() }()
	for deadline := time.Now().Add(5 * time.Second); j.OutputBytes() < 5000; {
		if time.Now().After(deadline) {
			t.Fatal("no output")
		}
		time.Sleep(10 * time.Millisecond)
	}
	var gone *GoneError
	if _, err := j.Attach(Join{From: 10}, nil); !errors.As(err, &gone) || gone.Kept != 4000 || gone.Total != 5000 {
		t.Fatalf("join from a dropped offset: %v", err)
	}
	a, err := j.Attach(Join{From: 4500}, nil)
	if err != nil || len(a.Replay) != 1 || len(a.Replay[0].Data) != 500 || a.Offset != 5000 {
		t.Fatalf("join from a kept offset: %v %d chunks, offset %d", err, len(a.Replay), a.Offset)
	}
	a.Detach()
}

// TestJobScreen: a tty job gives a client that joins the screen as it is
// (a full-screen program's, here), not the raw output; the input of
// every client reaches the process; a resize reaches its pty and screen.
func TestJobScreen(t *testing.T) {
	c := jobContainer(t)
	j, err := c.StartJob(ExecSpec{Command: []string{"sh", "-c", `printf 'scrolled away\n'; printf '\033[?1049h\033[2J\033[H top\033[5;3H marker'; read x; printf '\033[H%s\n' "$x"; stty size; sleep 30`},
		TTY: true, Stdin: true, Size: Size{Cols: 40, Rows: 10}}, JobConfig{Keep: 1 << 16})
	if err != nil {
		t.Fatal(err)
	}
	go j.Run()
	defer func() { j.Terminate(); j.Wait() }()
	screen := func() *vt.Terminal {
		t.Helper()
		a, err := j.Attach(Replay, nil)
		if err != nil {
			t.Fatal(err)
		}
		a.Detach()
		cols, rows := int(j.Size().Cols), int(j.Size().Rows)
		term := vt.New(cols, rows, vt.DefaultConfig())
		term.Write(a.Replay[0].Data)
		return term
	}
	waitScreen := func(want string) *vt.Terminal {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; {
			term := screen()
			if strings.Contains(strings.Join(term.Text(), "\n"), want) {
				return term
			}
			if time.Now().After(deadline) {
				t.Fatalf("screen never showed %q:\n%s", want, strings.Join(term.Text(), "\n"))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	term := waitScreen("marker")
	if !term.AltScreen() || term.Text()[0] != " top" || term.Text()[4] != "   marker" {
		t.Fatalf("restored screen: alt %v %q", term.AltScreen(), term.Text())
	}
	if err := j.Resize(Size{Cols: 50, Rows: 12}); err != nil {
		t.Fatal(err)
	}
	if err := j.WriteStdin([]byte("typed\r"), nil); err != nil {
		t.Fatal(err)
	}
	term = waitScreen("12 50")
	if got := term.Text()[0]; got != "typed" {
		t.Fatalf("first row after the input: %q", got)
	}
	if cols, rows := term.Size(); cols != 50 || rows != 12 {
		t.Fatalf("restored at %dx%d, want 50x12", cols, rows)
	}
}

// TestJobTerminate: Terminate ends the process group, and every
// attachment gets the exit code.
func TestJobTerminate(t *testing.T) {
	c := jobContainer(t)
	j, err := c.StartJob(ExecSpec{Command: []string{"sh", "-c", "sleep 60 & wait"}, TTY: true}, JobConfig{Keep: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := j.Attach(Live, nil)
	go j.Run()
	j.Terminate()
	_, code, err := drain(a)
	if err != nil || code == nil || *code != 128+1 && *code != 128+15 {
		t.Fatalf("ended with %v, code %v", err, code)
	}
	assertNoZombies(t)
}
