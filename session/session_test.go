package session

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }
func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}
func (c *clock) Step(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// closerFunc records close requests and finishes the session like a stream.
type closerFunc func(error)

func (f closerFunc) Close(cause error) { f(cause) }

func TestSessionLifecycle(t *testing.T) {
	clk := newClock()
	r := NewRegistry(Config{MaxSessions: 10, Retention: time.Minute, History: 10, OutputBuffer: 4, Now: clk.Now})
	s, err := r.Register(Exec, "shell", "127.0.0.1:5555")
	if err != nil {
		t.Fatal(err)
	}
	if len(s.ID) != 26 {
		t.Errorf("id %q: want 26 characters", s.ID)
	}
	if got := s.Info().State; got != Pending {
		t.Errorf("state = %s, want pending", got)
	}
	var causes []error
	s.Activate(closerFunc(func(c error) { causes = append(causes, c) }))
	if got := s.Info().State; got != Active {
		t.Errorf("state = %s, want active", got)
	}
	s.RecordIn([]byte("abc"))
	s.RecordOut([]byte("hello"))
	if got := string(s.Output()); got != "ello" {
		t.Errorf("output = %q, want the last 4 bytes", got)
	}
	clk.Step(time.Second)
	code := 7
	s.Finish(&code)
	s.Finish(nil) // harmless
	info := s.Info()
	want := Info{ID: s.ID, Kind: Exec, Target: "shell", State: Closed, CreatedAt: clk.Now().Add(-time.Second),
		BytesIn: 3, BytesOut: 5, RemoteAddr: "127.0.0.1:5555"}
	if info.ClosedAt == nil || !info.ClosedAt.Equal(clk.Now()) || info.ExitCode == nil || *info.ExitCode != 7 {
		t.Fatalf("info = %+v", info)
	}
	info.ClosedAt, info.ExitCode = nil, nil
	if info != want {
		t.Errorf("info = %+v\nwant %+v", info, want)
	}
	if err := r.Close(s.ID, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("closing a closed session: %v, want ErrClosed", err)
	}
	if len(causes) != 0 {
		t.Errorf("closer called %v after finish", causes)
	}
}

func TestRegistryClose(t *testing.T) {
	r := NewRegistry(Config{MaxSessions: 10, Retention: time.Minute, History: 10})
	s, _ := r.Register(Attach, "c1", "")
	var got error
	s.Activate(closerFunc(func(c error) { got = c; s.Finish(nil) }))
	if err := r.Close(s.ID, nil); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(got, ErrClosedByAPI) {
		t.Errorf("cause = %v, want ErrClosedByAPI", got)
	}
	if err := r.Close(s.ID, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("second close = %v, want ErrClosed", err)
	}
	if err := r.Close("nope", nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown id = %v, want ErrNotFound", err)
	}
	var nf interface{ Resource() (string, string) }
	if err := r.Close("nope", nil); !errors.As(err, &nf) {
		t.Errorf("unknown id error does not name the resource")
	} else if k, n := nf.Resource(); k != "sessions" || n != "nope" {
		t.Errorf("Resource() = %q %q", k, n)
	}
}

// TestCloseWhileClosing: a session whose close is still under way counts
// as closed: a second close is ErrClosed (409), as for a finished one.
func TestCloseWhileClosing(t *testing.T) {
	r := NewRegistry(Config{MaxSessions: 10, Retention: time.Minute, History: 10})
	s, _ := r.Register(Exec, "c", "")
	calls := 0
	s.Activate(closerFunc(func(error) { calls++ })) // the stream takes its time to end
	if err := r.Close(s.ID, nil); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(s.ID, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("second close while closing = %v, want ErrClosed", err)
	}
	if calls != 1 {
		t.Errorf("the stream was asked to close %d times", calls)
	}
	p, _ := r.Register(Exec, "c", "") // pending: the close waits for the activation
	if err := r.Close(p.ID, nil); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(p.ID, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("second close of a pending session = %v, want ErrClosed", err)
	}
}

// TestAbandon: a session whose upgrade failed leaves no trace.
func TestAbandon(t *testing.T) {
	r := NewRegistry(Config{MaxSessions: 1, Retention: time.Minute, History: 10})
	s, _ := r.Register(Exec, "c", "")
	s.Abandon()
	if l := r.List(Filter{}); len(l) != 0 || r.CountActive() != 0 {
		t.Errorf("after Abandon: %v, %d live", l, r.CountActive())
	}
	if _, err := r.Register(Exec, "c", ""); err != nil {
		t.Errorf("the abandoned session still counts against the limit: %v", err)
	}
}

// TestClosePending: a session closed before its stream is live is closed
// as soon as it activates.
func TestClosePending(t *testing.T) {
	r := NewRegistry(Config{MaxSessions: 10, Retention: time.Minute})
	s, _ := r.Register(Exec, "c", "")
	if err := r.Close(s.ID, nil); err != nil {
		t.Fatal(err)
	}
	closed := false
	s.Activate(closerFunc(func(error) { closed = true }))
	if !closed {
		t.Error("pending close was lost")
	}
}

func TestRegistryLimitAndRetention(t *testing.T) {
	clk := newClock()
	r := NewRegistry(Config{MaxSessions: 2, Retention: time.Minute, History: 10, Now: clk.Now})
	a, _ := r.Register(Exec, "c", "")
	clk.Step(time.Millisecond)
	b, _ := r.Register(PortForward, "sb", "")
	if _, err := r.Register(Exec, "c", ""); !errors.Is(err, ErrTooMany) {
		t.Fatalf("third session: %v, want ErrTooMany", err)
	}
	if n := r.CountActive(); n != 2 {
		t.Errorf("CountActive = %d", n)
	}
	a.Finish(nil)
	if _, err := r.Register(Exec, "c", ""); err != nil {
		t.Fatalf("after a finish: %v", err)
	}
	if got := len(r.List(Filter{})); got != 3 {
		t.Errorf("listed %d, want 3 (closed ones stay)", got)
	}
	if got := r.List(Filter{Kind: PortForward}); len(got) != 1 || got[0].ID != b.ID {
		t.Errorf("kind filter: %+v", got)
	}
	if got := r.List(Filter{State: Closed}); len(got) != 1 || got[0].ID != a.ID {
		t.Errorf("state filter: %+v", got)
	}
	clk.Step(2 * time.Minute)
	if got := r.List(Filter{}); len(got) != 2 {
		t.Errorf("after retention: %d listed, want 2", len(got))
	}
	if _, err := r.Get(a.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("swept session still found: %v", err)
	}
}

// TestHistoryBound: however fast sessions come and go, at most History
// closed ones stay, the most recent.
func TestHistoryBound(t *testing.T) {
	r := NewRegistry(Config{MaxSessions: 10, Retention: time.Hour, History: 3, OutputBuffer: 1 << 10})
	var ids []string
	for range 100 {
		s, _ := r.Register(Exec, "c", "")
		s.RecordOut(make([]byte, 1<<10))
		s.Finish(nil)
		ids = append(ids, s.ID)
	}
	got := r.List(Filter{})
	if len(got) != 3 {
		t.Fatalf("%d sessions kept, want 3", len(got))
	}
	for i, info := range got {
		if info.ID != ids[97+i] {
			t.Errorf("kept %s, want the newest", info.ID)
		}
	}
	if len(r.sessions) != 3 || len(r.closed) != 3 {
		t.Errorf("map %d, closed list %d", len(r.sessions), len(r.closed))
	}
}

func TestCloseAll(t *testing.T) {
	r := NewRegistry(Config{MaxSessions: 100, Retention: time.Minute})
	var wg sync.WaitGroup
	for range 20 {
		s, _ := r.Register(Exec, "c", "")
		s.Activate(closerFunc(func(cause error) {
			if !errors.Is(cause, ErrShutdown) {
				t.Errorf("cause %v", cause)
			}
			wg.Go(func() { time.Sleep(time.Millisecond); s.Finish(nil) })
		}))
	}
	if err := r.CloseAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if n := r.CountActive(); n != 0 {
		t.Errorf("%d still active", n)
	}

	// A stream that never ends: CloseAll gives up at the deadline.
	s, _ := r.Register(Exec, "c", "")
	s.Activate(closerFunc(func(error) {}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := r.CloseAll(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("CloseAll = %v, want deadline", err)
	}
	s.Finish(nil)
}

func TestStore(t *testing.T) {
	clk := newClock()
	st := NewStore(30*time.Second, 2, clk.Now)
	tok, exp, err := st.Put("req-a")
	if err != nil {
		t.Fatal(err)
	}
	if len(tok) != 22 {
		t.Errorf("token %q: want 22 characters (128 bits)", tok)
	}
	if !exp.Equal(clk.Now().Add(30 * time.Second)) {
		t.Errorf("expires %v", exp)
	}
	req, err := st.Consume(tok, nil)
	if err != nil || req != "req-a" {
		t.Fatalf("Consume = %v, %v", req, err)
	}
	if _, err := st.Consume(tok, nil); !errors.Is(err, ErrTokenNotFound) {
		t.Errorf("reuse: %v, want ErrTokenNotFound", err)
	}

	t1, _, _ := st.Put("1")
	st.Put("2")
	if _, _, err := st.Put("3"); !errors.Is(err, ErrTooManyPending) {
		t.Errorf("third pending: %v, want ErrTooManyPending", err)
	}
	clk.Step(30 * time.Second)
	if _, err := st.Consume(t1, nil); !errors.Is(err, ErrTokenNotFound) {
		t.Errorf("expired: %v, want ErrTokenNotFound", err)
	}
	if _, _, err := st.Put("4"); err != nil {
		t.Errorf("expired entries were not swept: %v", err)
	}
	if _, _, err := st.Put("5"); err != nil {
		t.Errorf("after the sweep, one pending: %v", err)
	}
	if _, _, err := st.Put("6"); !errors.Is(err, ErrTooManyPending) {
		t.Errorf("4 and 5 pending: %v, want ErrTooManyPending", err)
	}
	if _, err := st.Consume("made-up", nil); err == nil || err.Error() != "stream URL not found, used or expired" {
		t.Errorf("unknown token error = %v", err)
	}
}

// TestClosedOutputBudget: closed sessions together keep at most
// ClosedOutput bytes of output; the oldest lose theirs first and stay
// listed.
func TestClosedOutputBudget(t *testing.T) {
	r := NewRegistry(Config{MaxSessions: 10, Retention: time.Minute, History: 10, OutputBuffer: 100, ClosedOutput: 250})
	var ids []string
	for range 4 {
		s, _ := r.Register(Exec, "c", "")
		s.RecordOut(bytes.Repeat([]byte("x"), 100))
		s.Finish(nil)
		ids = append(ids, s.ID)
	}
	for i, id := range ids {
		s, err := r.Get(id)
		if err != nil {
			t.Fatalf("session %d is no longer listed: %v", i, err)
		}
		want := 100
		if i < 2 {
			want = 0 // the two oldest gave theirs up
		}
		if n := len(s.Output()); n != want {
			t.Errorf("session %d keeps %d bytes, want %d", i, n, want)
		}
	}
}

// TestOutputFrom: a session whose output is kept elsewhere serves the
// last OutputBuffer bytes from there and keeps none of its own until it
// finishes; then it owns a copy. A source that keeps less than the
// session's buffer is not used.
func TestOutputFrom(t *testing.T) {
	r := NewRegistry(Config{MaxSessions: 10, Retention: time.Minute, History: 10, OutputBuffer: 8, ClosedOutput: 100})
	var kept []byte
	tail := func(n int) []byte { return bytes.Clone(kept[max(len(kept)-n, 0):]) }
	s, _ := r.Register(Exec, "c", "")
	s.OutputFrom(tail, 1000)
	for _, p := range []string{"hello, ", "world", "!"} {
		kept = append(kept, p...)
		s.RecordOut([]byte(p))
	}
	if got := string(s.Output()); got != ", world!" {
		t.Errorf("Output() = %q, want %q", got, ", world!")
	}
	if n := s.output.Load().Len(); n != 0 {
		t.Errorf("the session kept %d bytes of its own", n)
	}
	s.Finish(nil)
	kept = []byte("changed after the end")
	if got := string(s.Output()); got != ", world!" {
		t.Errorf("after Finish, Output() = %q, want %q", got, ", world!")
	}

	small, _ := r.Register(Exec, "c", "")
	small.OutputFrom(tail, 4)
	small.RecordOut([]byte("abc"))
	if got := string(small.Output()); got != "abc" {
		t.Errorf("with a small source, Output() = %q, want %q", got, "abc")
	}
	small.Finish(nil)
}
