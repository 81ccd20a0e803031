package proctest

import (
	"bytes"
	"io"
	"testing"
	"time"
)

// NudgeUntil writes a newline to w every 100 ms until what r yields holds
// want, and returns what it read. It is for a process that prints its
// terminal size on each line it reads, resized by a client that sends
// sizes from a goroutine of its own (client-go, kubectl): the size and
// the input after it travel apart, and no sleep orders them on a slow
// machine. It fails t after a minute, or if r ends first.
func NudgeUntil(t testing.TB, w io.Writer, r io.Reader, want string) string {
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
		if _, err := w.Write([]byte("\n")); err != nil {
			t.Fatalf("nudge: %v", err)
		}
		select {
		case r := <-res:
			if !bytes.Contains(r.got, []byte(want)) {
				t.Fatalf("the output ended (%v) without %q: %q", r.err, want, r.got)
			}
			return string(r.got)
		case <-tick.C:
		case <-deadline:
			t.Fatalf("no %q after a minute of newlines", want)
		}
	}
}
