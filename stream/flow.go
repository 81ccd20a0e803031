package stream

import (
	"context"
	"sync"
	"sync/atomic"

	"gateway/metrics"
	"gateway/stream/wsproto"
)

// flowControl lets the web page pace a stream's output (the flow=1
// extension, see wsproto.Ack): once more than flowHigh bytes of output are
// unacknowledged, the stream stops taking output from the process until
// the page has caught up to within flowLow. The process then blocks on its
// own output, so a flood stays at most flowHigh ahead of the screen and
// Ctrl-C takes effect at once. A nil *flowControl does nothing.
type flowControl struct {
	sent  atomic.Int64 // output bytes sent to the page
	acked atomic.Int64 // output bytes the page says it has processed

	mu   sync.Mutex
	wake chan struct{} // closed and replaced at each ack
}

const (
	flowHigh = 512 << 10
	flowLow  = 128 << 10
)

func newFlowControl() *flowControl { return &flowControl{wake: make(chan struct{})} }

func (f *flowControl) unacked() int64 { return f.sent.Load() - f.acked.Load() }

// sentBytes counts output sent to the page.
func (f *flowControl) sentBytes(n int) {
	if f != nil {
		f.sent.Add(int64(n))
	}
}

// wait blocks while the page is too far behind. It returns false when ctx
// ends first.
func (f *flowControl) wait(ctx context.Context) bool {
	if f == nil || f.unacked() <= flowHigh {
		return true
	}
	for {
		f.mu.Lock()
		w := f.wake
		f.mu.Unlock()
		if f.unacked() <= flowLow { // checked after taking w: no ack is missed
			return true
		}
		select {
		case <-w:
		case <-ctx.Done():
			return false
		}
	}
}

// ack records the page's total of processed bytes (it only moves forward).
func (f *flowControl) ack(total uint64) {
	n := int64(min(total, 1<<62))
	for {
		old := f.acked.Load()
		if n <= old {
			return
		}
		if f.acked.CompareAndSwap(old, n) {
			break
		}
	}
	f.mu.Lock()
	close(f.wake)
	f.wake = make(chan struct{})
	f.mu.Unlock()
}

// onAck handles a frame on the Ack channel, with the extension on
// (readLoop).
func (p *Pump) onAck(f wsproto.Frame) {
	n, err := wsproto.ParseAck(f.Payload)
	if err != nil {
		p.km.Error(metrics.ReasonProtocol)
		p.log.Warn("malformed ack ignored", "error", err)
		return
	}
	p.flow.ack(n)
}
