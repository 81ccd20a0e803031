// Package ptyio opens ptys whose master is read through Go's poller, so
// that Close and deadlines interrupt a blocked read.
package ptyio

import (
	"fmt"
	"os"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// Open opens a pty of cols×rows. The master is non-blocking; never call
// Fd on it, which would make it blocking again. The caller owns both
// files.
func Open(cols, rows uint16) (master, tty *os.File, err error) {
	// pty.Open leaves the master in blocking mode (it calls Fd).
	master, tty, err = pty.Open()
	if err != nil {
		return nil, nil, fmt.Errorf("open pty: %w", err)
	}
	if err = control(master, func(fd int) error { return unix.SetNonblock(fd, true) }); err != nil {
		err = fmt.Errorf("pty non-blocking: %w", err)
	} else {
		err = SetSize(master, cols, rows)
	}
	if err != nil {
		master.Close()
		tty.Close()
		return nil, nil, err
	}
	return master, tty, nil
}

// SetSize sets the size of the pty whose master is f; the kernel signals
// SIGWINCH to its foreground job.
func SetSize(f *os.File, cols, rows uint16) error {
	ws := &unix.Winsize{Row: rows, Col: cols}
	if err := control(f, func(fd int) error { return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, ws) }); err != nil {
		return fmt.Errorf("set pty size %dx%d: %w", cols, rows, err)
	}
	return nil
}

// control runs fn on f's descriptor without switching it to blocking mode
// (as File.Fd would).
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}
