package ptyio

import (
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T, cols, rows uint16) (master, tty *os.File) {
	t.Helper()
	master, tty, err := Open(cols, rows)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { master.Close(); tty.Close() })
	return master, tty
}

// The master is read through the poller: a read with a deadline ends with
// os.ErrDeadlineExceeded instead of blocking.
func TestOpenNonBlocking(t *testing.T) {
	master, _ := open(t, 80, 24)
	if err := master.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatalf("SetReadDeadline: %v (a blocking master has no deadlines)", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := master.Read(make([]byte, 16))
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read: %v, want os.ErrDeadlineExceeded", err)
		}
	case <-time.After(10 * time.Second):
		master.Close() // ends the read
		<-done
		t.Fatal("Read blocked past its deadline")
	}
}

// Closing the master ends a read blocked on it.
func TestCloseEndsRead(t *testing.T) {
	master, _ := open(t, 80, 24)
	done := make(chan error, 1)
	go func() {
		_, err := master.Read(make([]byte, 16))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	master.Close()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("Read: %v, want os.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end the read")
	}
}

// sttySize runs stty size on tty, with nothing from the environment.
func sttySize(t *testing.T, tty *os.File) string {
	t.Helper()
	cmd := exec.Command("stty", "size")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C"}
	cmd.Dir = "/"
	cmd.Stdin = tty
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("stty size: %v", err)
	}
	return string(out)
}

func TestSize(t *testing.T) {
	tests := []struct {
		name       string
		cols, rows uint16
		resize     bool // set by SetSize after Open(80, 24)
		stty       string
	}{
		{"at open", 80, 24, false, "24 80\n"},
		{"at open, large", 300, 100, false, "100 300\n"},
		{"set later", 132, 43, true, "43 132\n"},
		{"set later, one by one", 1, 1, true, "1 1\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cols, rows := tc.cols, tc.rows
			if tc.resize {
				cols, rows = 80, 24
			}
			master, tty := open(t, cols, rows)
			if tc.resize {
				if err := SetSize(master, tc.cols, tc.rows); err != nil {
					t.Fatal(err)
				}
			}
			ws, err := unix.IoctlGetWinsize(int(tty.Fd()), unix.TIOCGWINSZ)
			if err != nil {
				t.Fatal(err)
			}
			if ws.Col != tc.cols || ws.Row != tc.rows {
				t.Errorf("TIOCGWINSZ on the tty: %dx%d, want %dx%d", ws.Col, ws.Row, tc.cols, tc.rows)
			}
			if got := sttySize(t, tty); got != tc.stty {
				t.Errorf("stty size: %q, want %q", got, tc.stty)
			}
		})
	}
}
