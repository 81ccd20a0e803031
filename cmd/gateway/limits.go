package main

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
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

// gcPercent is the collector's target unless GOGC says otherwise. The
// heap is mostly small objects that live as long as their sessions, so
// Go's default (collect when the heap has doubled) holds almost as much
// garbage as live state: at 50, 1,000 idle sessions cost 1.5-2 KiB less
// each (docs/performance.md, "Idle memory"), and the setup and
// throughput figures stayed within their spread.
const gcPercent = 50

// tuneGC sets gcPercent unless the environment sets GOGC.
func tuneGC(lookupenv func(string) (string, bool)) {
	if v, _ := lookupenv("GOGC"); v == "" {
		debug.SetGCPercent(gcPercent)
	}
}

// returnIdleMemory gives the heap's free pages back to the system when
// a burst is over: once the gateway has had no stream for idleFor after
// some had come; and, at most once a minute, when it holds over heldFree
// of heap and either more of it is free than live or no collection has
// run for idleFor (a quiet process collects only every two minutes, so
// the garbage of 1,000 shells' screens, compacted once they went quiet,
// would wait that long, and Go's scavenger then keeps about twice the
// live heap). counts reports the live sessions and how many ever opened.
// It returns when ctx ends.
func returnIdleMemory(ctx context.Context, counts func() (live int, opened uint64)) {
	const tick, idleFor, every, heldFree = 5 * time.Second, 30 * time.Second, time.Minute, 64 << 20
	t := time.NewTicker(tick)
	defer t.Stop()
	var freedAt, cycles uint64 // opened at the last return; GC cycles at the last tick
	var idleSince, lastFree, lastGC time.Time
	heap := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}, {Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/cycles/total:gc-cycles"}}
	free := func(now time.Time) {
		runtime.GC() // the pools' buffers survive one collection
		debug.FreeOSMemory()
		lastFree = now
	}
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
				free(now)
				freedAt, idleSince = opened, time.Time{}
				continue
			}
			metrics.Read(heap)
			f, objs, n := heap[0].Value.Uint64(), heap[1].Value.Uint64(), heap[2].Value.Uint64()
			if n != cycles || lastGC.IsZero() {
				cycles, lastGC = n, now
			}
			if f+objs > heldFree && (f > objs || now.Sub(lastGC) >= idleFor) && now.Sub(lastFree) >= every {
				free(now)
			}
		}
	}
}
