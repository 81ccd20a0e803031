package main

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Descriptors a session needs at most: its WebSocket, and its process's
// pty or three pipes (a tunnel: its WebSocket and one TCP connection).
const fdsPerSession = 4

// raiseFileLimit raises the open-files limit as far as the streams allowed
// may need (Go already lifts the soft limit to the hard one; as root the
// hard limit can go up to fs.nr_open), and warns when it stays too low.
func raiseFileLimit(log *slog.Logger, maxSessions int) {
	want := uint64(maxSessions*fdsPerSession + 256)
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	if lim.Cur >= want {
		return
	}
	if lim.Max < want {
		next := unix.Rlimit{Cur: want, Max: want}
		if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
			if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && n < want {
				next = unix.Rlimit{Cur: n, Max: n}
			}
		}
		if unix.Setrlimit(unix.RLIMIT_NOFILE, &next) == nil {
			lim = next
		}
	} else {
		lim.Cur = want
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	}
	_ = unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
	if lim.Cur < want {
		log.Warn("the open-files limit is below what --max-sessions may need: streams beyond it fail to open",
			"limit", lim.Cur, "want", want, "max_sessions", maxSessions, "hint", "raise ulimit -n, or run as root")
	}
}

// returnIdleMemory gives the heap's free pages back to the system once
// the gateway has had no stream for idleFor after some had come: a burst
// of sessions leaves the RSS about where it was before the burst. counts
// reports the live sessions and how many ever opened. It returns when ctx
// ends.
func returnIdleMemory(ctx context.Context, counts func() (live int, opened uint64)) {
	const tick, idleFor = 5 * time.Second, 30 * time.Second
	t := time.NewTicker(tick)
	defer t.Stop()
	var freedAt uint64 // opened at the last return
	var idleSince time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			live, opened := counts()
			switch {
			case live > 0 || opened == freedAt:
				idleSince = time.Time{}
			case idleSince.IsZero():
				idleSince = now
			case now.Sub(idleSince) >= idleFor:
				runtime.GC() // the pools' buffers survive one collection
				debug.FreeOSMemory()
				freedAt, idleSince = opened, time.Time{}
			}
		}
	}
}
