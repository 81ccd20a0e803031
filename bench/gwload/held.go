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
