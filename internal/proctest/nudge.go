package proctest

import (
	"bytes"
	"io"
	"testing"
	"time"
)

// SendUntil calls send every 100 ms until what r yields holds want. It is
// for input whose effect may come after it, with no order to wait on: a
// resize sent by a client's goroutine of its own (client-go, kubectl)
// travels apart from the input after it, and a line said before a
// follower follows is not shown. No sleep orders those on a slow machine.
// It fails t after a minute, or if r ends first.
func SendUntil(t testing.TB, send func() error, r io.Reader, want string) {
	t.Helper()
	type result struct {
		got []byte
		err error
	}
	res := make(chan result, 1)
	go func() {
		var got []byte
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			got = append(got, buf[:n]...)
			if bytes.Contains(got, []byte(want)) || err != nil {
				res <- result{got, err}
				return
			}
		}
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(time.Minute)
	for {
		if err := send(); err != nil {
			t.Fatalf("send: %v", err)
		}
		select {
		case r := <-res:
			if !bytes.Contains(r.got, []byte(want)) {
				t.Fatalf("the output ended (%v) without %q: %q", r.err, want, r.got)
			}
			return
		case <-tick.C:
		case <-deadline:
			t.Fatalf("no %q after a minute of sending", want)
		}
	}
}

// NudgeUntil writes a newline to w until r yields want (see SendUntil):
// for a process that prints its terminal size on each line it reads.
func NudgeUntil(t testing.TB, w io.Writer, r io.Reader, want string) {
	t.Helper()
	SendUntil(t, func() error { _, err := w.Write([]byte("\n")); return err }, r, want)
}
