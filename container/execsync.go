package container

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"gateway/internal/chunkio"
)

// SyncResult is the outcome of ExecSync.
type SyncResult struct {
	ExitCode  int
	Stdout    []byte
	Stderr    []byte
	TimedOut  bool // the timeout passed and the process was terminated
	Truncated bool // output beyond the cap was read and thrown away
}

// ExecSync runs a command with pipes to completion, like the CRI's
// ExecSync: it writes stdin, captures at most maxOutput bytes of each
// output (reading and discarding the rest, so the process never blocks),
// and terminates the process when timeout (if > 0) passes, ctx ends or
// the container is stopped (ErrStopped).
func (c *Container) ExecSync(ctx context.Context, command []string, stdin []byte, timeout time.Duration, maxOutput int) (SyncResult, error) {
	p, err := c.Exec(ExecSpec{Command: command, Stdin: true, Stdout: true, Stderr: true})
	if err != nil {
		return SyncResult{}, err
	}
	defer p.Close()

	var res SyncResult
	var wg sync.WaitGroup
	var truncated [2]bool
	var bufs [2][]byte
	for i, f := range []*os.File{p.Stdout, p.Stderr} {
		wg.Go(func() { bufs[i], truncated[i] = readCapped(f, maxOutput) })
	}
	wg.Go(func() {
		// A process that does not read its input must not block us: the
		// write fails once the pipe is closed at exit.
		_, _ = p.Stdin.Write(stdin)
		_ = p.Stdin.Close()
	})

	stop := context.AfterFunc(ctx, p.Terminate)
	defer stop()
	var stopped bool // the container's stop ended the process
	stopWithContainer := context.AfterFunc(c.stopped, func() {
		p.mu.Lock()
		stopped = !p.Exited()
		p.mu.Unlock()
		p.Terminate()
	})
	defer stopWithContainer()
	var timer *time.Timer
	if timeout > 0 {
		timer = time.AfterFunc(timeout, func() {
			p.mu.Lock()
			res.TimedOut = !p.Exited()
			p.mu.Unlock()
			p.Terminate()
		})
	}
	code, err := p.Wait()
	if timer != nil {
		timer.Stop()
	}
	wg.Wait()
	p.mu.Lock() // orders the timer's write of TimedOut (and stopped) before our read
	res.ExitCode, res.Stdout, res.Stderr = code, bufs[0], bufs[1]
	res.Truncated = truncated[0] || truncated[1]
	byStop := stopped && !res.TimedOut
	p.mu.Unlock()
	switch {
	case err != nil:
		return res, err
	case ctx.Err() != nil:
		return res, ctx.Err()
	case byStop:
		return res, fmt.Errorf("%w: container %q was stopped during the exec-sync", ErrStopped, c.spec.ID)
	}
	return res, nil
}

// readCapped reads f to the end, keeping the first max bytes; truncated
// reports that there were more.
func readCapped(f *os.File, max int) (kept []byte, truncated bool) {
	total := 0
	_ = chunkio.Read(f, reusedBuffer(make([]byte, 32<<10)), func(b []byte, n int) error {
		total += n
		if room := max - len(kept); room > 0 {
			kept = append(kept, b[:min(n, room)]...)
		}
		return nil
	})
	return kept, total > max
}

// reusedBuffer hands out the same buffer for every read: for readers that
// copy what they keep.
type reusedBuffer []byte

func (b reusedBuffer) Get() []byte { return b }
func (b reusedBuffer) Put([]byte)  {}
