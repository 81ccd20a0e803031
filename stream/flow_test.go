package stream

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"gateway/metrics"
)

// TestFlowControl: with flow=1, output stops while the page acknowledges
// nothing, at the high watermark, and goes on as acks come.
func TestFlowControl(t *testing.T) {
	h := newHarness(t, nil)
	const total = 8 << 20
	c := h.mustDial(t, execQuery("stdout,flow", "head", "-c", strconv.Itoa(total), "/dev/zero"), "v5.channel.k8s.io")
	sess := h.activeSession(t)
	var got atomic.Int64
	last := make(chan string, 1)
	go func() {
		for {
			_, m, err := c.ReadMessage()
			if err != nil {
				return
			}
			switch m[0] {
			case 1:
				got.Add(int64(len(m) - 1))
			case 3:
				last <- string(m[1:])
			}
		}
	}()
	// settle waits until no more output comes.
	settle := func() int64 {
		var n int64 = -1
		waitFor(t, "the output to settle", func() bool {
			time.Sleep(100 * time.Millisecond)
			m := got.Load()
			done := m == n
			n = m
			return done
		})
		return n
	}
	// No acks: everything sent arrives, then nothing more.
	n := settle()
	if n < flowHigh || n > flowHigh+2*bufferSize {
		t.Fatalf("without acks the page got %d bytes; want about %d", n, flowHigh)
	}
	if out := sess.Info().BytesOut; out != n {
		t.Errorf("the gateway took %d bytes from the process, the page got %d", out, n)
	}
	// A malformed ack is ignored.
	c.WriteMessage(websocket.BinaryMessage, []byte("\x05lots"))
	// Acks as the page renders: the stream goes on to the end. The page
	// acks all it got, the last bytes too: the output may stop over the
	// watermark right after them, before the end of file is read.
	for {
		c.WriteMessage(websocket.BinaryMessage, append([]byte{5}, strconv.FormatInt(n, 10)...))
		if n == total {
			break
		}
		before := n
		n = settle()
		if n == before {
			t.Fatalf("stuck at %d bytes after an ack", n)
		}
	}
	select {
	case st := <-last:
		if st != `{"metadata":{},"status":"Success"}` {
			t.Errorf("status %s", st)
		}
	case <-time.After(10 * time.Second):
		t.Error("no status")
	}
	if v := testutil.ToFloat64(h.metrics.StreamErrors.WithLabelValues("exec", metrics.ReasonProtocol)); v != 1 {
		t.Errorf("protocol errors %v", v)
	}
}

// TestAckWithoutFlow: acks from a client that did not ask for flow control
// are an unknown channel, ignored.
func TestAckWithoutFlow(t *testing.T) {
	h := newHarness(t, nil)
	c := h.mustDial(t, execQuery("stdin,stdout", "head", "-c", "3"), "v5.channel.k8s.io")
	c.WriteMessage(websocket.BinaryMessage, []byte("\x0512"))
	c.WriteMessage(websocket.BinaryMessage, []byte("\x00abc"))
	msgs, ce := readUntilClose(t, c)
	if collect(t, msgs, 1) != "abc" || ce.Code != 1000 {
		t.Errorf("%v %v", msgs, ce)
	}
	if v := testutil.ToFloat64(h.metrics.StreamErrors.WithLabelValues("exec", metrics.ReasonUnknownChannel)); v != 1 {
		t.Errorf("unknown channel %v", v)
	}
}
