package park

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fd returns the descriptor of f.
func fd(t *testing.T, f *os.File) int {
	t.Helper()
	n, err := FD(f)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// pipe returns both ends of a pipe, closed at the end of the test.
func pipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

func TestReadableRunsFn(t *testing.T) {
	r, w := pipe(t)
	ran := make(chan struct{})
	pw, err := Add(fd(t, r), func() { close(ran) })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Add(fd(t, r), func() {}); err == nil {
		t.Fatal("a second Add of the same file succeeded")
	}
	select {
	case <-ran:
		t.Fatal("fn ran before the file was readable")
	case <-time.After(50 * time.Millisecond):
	}
	if got := Parked(); got != 1 {
		t.Fatalf("Parked() = %d, want 1", got)
	}
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	<-ran
	pw.Wake() // after the fire: nothing more runs
	if got := Parked(); got != 0 {
		t.Fatalf("Parked() = %d after the fire, want 0", got)
	}
}

func TestWakeRunsFnOnce(t *testing.T) {
	r, w := pipe(t)
	runs := make(chan int, 4)
	pw, err := Add(fd(t, r), func() { runs <- 1 })
	if err != nil {
		t.Fatal(err)
	}
	pw.Wake()
	pw.Wake()
	<-runs
	if _, err := w.Write([]byte("x")); err != nil { // readable now, but no longer parked
		t.Fatal(err)
	}
	select {
	case <-runs:
		t.Fatal("fn ran twice")
	case <-time.After(50 * time.Millisecond):
	}
}

func TestHangupRunsFn(t *testing.T) {
	r, w := pipe(t)
	ran := make(chan struct{})
	if _, err := Add(fd(t, r), func() { close(ran) }); err != nil {
		t.Fatal(err)
	}
	w.Close()
	<-ran
}

// Many files parked and readied in turn: each fn runs once, and the loop
// ends when the last is gone (goleak checks).
func TestMany(t *testing.T) {
	const n = 200
	var pipes [n][2]*os.File
	done := make(chan int, n)
	for i := range pipes {
		r, w := pipe(t)
		pipes[i] = [2]*os.File{r, w}
		if _, err := Add(fd(t, r), func() { done <- i }); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[int]bool{}
	for i := range pipes {
		if _, err := pipes[i][1].Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	for range n {
		i := <-done
		if seen[i] {
			t.Fatalf("fn %d ran twice", i)
		}
		seen[i] = true
	}
}

// TestSlot: a slot's file rests and resumes any number of times (when
// readable, at its deadline), onParked runs before resume, and once the
// slot is ended a parked file resumes and parks no more.
func TestSlot(t *testing.T) {
	r, w := pipe(t)
	var s Slot
	resumed := make(chan string, 1)
	var order []string
	park := func(deadline time.Time) {
		t.Helper()
		if !s.Park(r, deadline, func() { order = append(order, "parked") }, func() { resumed <- "resumed" }) {
			t.Fatal("Park refused")
		}
	}
	park(time.Time{})
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	order = append(order, <-resumed)
	r.Read(make([]byte, 1))
	park(time.Now().Add(20 * time.Millisecond)) // nothing to read: the deadline wakes it
	order = append(order, <-resumed)
	park(time.Time{})
	s.End()
	order = append(order, <-resumed)
	if s.Park(r, time.Time{}, nil, func() {}) {
		t.Error("an ended slot parked")
	}
	if got := fmt.Sprint(order); got != "[parked resumed parked resumed parked resumed]" {
		t.Errorf("order %s", got)
	}
	if Parked() != 0 {
		t.Errorf("%d parked", Parked())
	}
}
