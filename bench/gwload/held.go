package main

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// held is a WebSocket kept open by a goroutine that reads it (answering
// pings) and counts the payload bytes that arrive: the idle sessions and
// idle tunnels of the memory scenarios.
type held struct {
	conn *websocket.Conn
	got  atomic.Int64  // payload bytes received after the opening frames
	done chan struct{} // closed when the reader goroutine ends
}

// openHeld opens n connections, o.idleConc at a time. open dials one and
// returns it with a function that reads one message and returns its
// payload length; what names them in errors ("sessions", "tunnels").
func (b *bench) openHeld(what string, n int, open func() (*websocket.Conn, func() (int, error), error)) ([]*held, error) {
	var (
		mu    sync.Mutex
		out   []*held
		first error
		wg    sync.WaitGroup
		next  atomic.Int64
	)
	for range min(b.o.idleConc, n) {
		wg.Go(func() {
			for next.Add(1) <= int64(n) && b.ctx.Err() == nil {
				mu.Lock()
				failed := first != nil
				mu.Unlock()
				if failed {
					return
				}
				conn, read, err := open()
				if err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("after %d %s: %w", len(out), what, err)
					}
					mu.Unlock()
					return
				}
				_ = conn.SetReadDeadline(time.Time{}) // held open; closeHeld bounds the end
				h := &held{conn: conn, done: make(chan struct{})}
				go func() {
					defer close(h.done)
					for {
						k, err := read()
						if err != nil {
							return
						}
						h.got.Add(int64(k))
					}
				}()
				mu.Lock()
				out = append(out, h)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if first == nil && len(out) != n {
		first = fmt.Errorf("opened %d of %d %s: %v", len(out), n, what, b.ctx.Err())
	}
	return out, first
}

// closeHeld closes the connections from the client side: a close frame,
// the server's answer (bounded), then the connection.
func closeHeld(hs []*held) {
	for _, h := range hs {
		msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
		_ = h.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(5*time.Second))
	}
	deadline := time.After(10 * time.Second)
	for _, h := range hs {
		select {
		case <-h.done:
		case <-deadline:
		}
		h.conn.Close()
	}
	for _, h := range hs {
		<-h.done // Close ends the reader
	}
}

// idleRun is one memory measurement of n idle connections on a fresh
// gateway: its VmRSS (KiB) and /metrics before, with them open, and
// after closing them.
type idleRun struct {
	n                   int
	rss0, rss1, rss2    int64
	m0, m1, m2          map[string]float64
	openTime, closeTime time.Duration
}

// measureIdle warms up with 16 connections, then opens n with open and
// measures, closes them and measures again. settled(k) waits until the
// gateway shows k open (its children, the server's connections); during
// runs while the n are open.
func (b *bench) measureIdle(pid, n int, open func(n int) ([]*held, error), settled func(k int) error, during func([]*held)) (idleRun, error) {
	r := idleRun{n: n}
	warm, err := open(16)
	closeHeld(warm)
	if err != nil {
		return r, err
	}
	if err := settled(0); err != nil {
		return r, fmt.Errorf("after the warm-up: %w", err)
	}
	time.Sleep(2 * time.Second)
	if r.rss0, err = vmRSS(pid); err != nil {
		return r, err
	}
	r.m0, _ = metricsSnapshot(b.o.addr)

	t0 := time.Now()
	hs, err := open(n)
	r.openTime = time.Since(t0)
	if err == nil {
		if err = settled(n); err != nil {
			err = fmt.Errorf("with %d open: %w", n, err)
		}
	}
	if err == nil {
		time.Sleep(2 * time.Second)
		r.rss1, err = vmRSS(pid)
	}
	if err != nil {
		closeHeld(hs)
		return r, err
	}
	r.m1, _ = metricsSnapshot(b.o.addr)
	during(hs)

	t1 := time.Now()
	closeHeld(hs)
	err = settled(0)
	r.closeTime = time.Since(t1)
	time.Sleep(2 * time.Second)
	r.rss2, _ = vmRSS(pid)
	r.m2, _ = metricsSnapshot(b.o.addr)
	if err != nil {
		return r, fmt.Errorf("after closing the WebSockets: %w", err)
	}
	return r, nil
}

// perItem is the VmRSS growth per open connection, in KiB.
func (r idleRun) perItem() float64 { return float64(r.rss1-r.rss0) / float64(r.n) }

// print reports the run; item names one connection ("session", "tunnel"),
// seen says how the gateway's side was counted.
func (r idleRun) print(item, seen string) {
	fmt.Printf("  opened %d %ss in %.2fs (%s), closed them in %.2fs\n", r.n, item, r.openTime.Seconds(), seen, r.closeTime.Seconds())
	fmt.Printf("  gateway VmRSS: before %d KiB, with %d idle %ss %d KiB, after closing them %d KiB\n", r.rss0, r.n, item, r.rss1, r.rss2)
	fmt.Printf("  => %.1f KiB per idle %s\n", r.perItem(), item)
	if r.m0 != nil && r.m1 != nil {
		dm := func(k string) float64 { return (r.m1[k] - r.m0[k]) / float64(r.n) }
		fmt.Printf("  per %s from /metrics: %.2f goroutines, %.1f KiB heap in use, %.1f KiB stacks, %.2f open fds; go_threads %g -> %g\n",
			item, dm("go_goroutines"), dm("go_memstats_heap_inuse_bytes")/1024, dm("go_memstats_stack_inuse_bytes")/1024,
			dm("process_open_fds"), r.m0["go_threads"], r.m1["go_threads"])
		if r.m2 != nil {
			fmt.Printf("  after closing: goroutines %g (before %g), open fds %g (before %g)\n",
				r.m2["go_goroutines"], r.m0["go_goroutines"], r.m2["process_open_fds"], r.m0["process_open_fds"])
		}
	}
}
