package stream

import (
	"errors"

	"gateway/container"
	"gateway/metrics"
	"gateway/stream/wsproto"
)

// What exec and attach do alike with client frames (on the transport's
// reading goroutine).

// resizes reads the resize channel: sizes are decoded as one byte stream,
// 0x0 (a client whose terminal has no size: kubectl sends it from one) is
// the default size, other zero or absurd ones are skipped, and after a
// malformed one the rest are ignored, as the kubelet does; the stream
// itself goes on.
type resizes struct {
	dec  wsproto.ResizeDecoder
	dead bool
}

// handle decodes a resize frame and applies each valid size.
func (r *resizes) handle(c *client, payload []byte, apply func(wsproto.TerminalSize)) {
	if r.dead {
		return
	}
	if sz, ok := r.dec.Simple(payload); ok && (sz.Validate() == nil || sz == wsproto.TerminalSize{}) {
		r.apply(c, sz, apply)
		return
	}
	// encoding/json, and the warning's log line, would grow readLoop's
	// stack for good (see serve).
	onFreshStack(func() { r.decode(c, payload, apply) })
}

// apply applies a decoded size, or says why it is ignored.
func (r *resizes) apply(c *client, sz wsproto.TerminalSize, apply func(wsproto.TerminalSize)) {
	if sz == (wsproto.TerminalSize{}) {
		sz = wsproto.TerminalSize{Width: container.DefaultSize.Cols, Height: container.DefaultSize.Rows}
	}
	if err := sz.Validate(); err != nil {
		c.km.Error(metrics.ReasonBadResize)
		c.log.Warn("resize ignored", "error", err)
		return
	}
	apply(sz)
	// After apply: a size held for the start is the recording's first
	// (its header), one applied to a running process an event.
	c.sess.Resized(int(sz.Width), int(sz.Height))
}

func (r *resizes) decode(c *client, payload []byte, apply func(wsproto.TerminalSize)) {
	err := r.dec.Decode(payload, func(sz wsproto.TerminalSize) { r.apply(c, sz, apply) })
	if err != nil {
		r.dead = true
		c.km.Error(metrics.ReasonBadResize)
		c.log.Warn("malformed resize: further resizes are ignored", "error", err)
	}
}

// closesStdin reads a v5 close signal: it reports whether it closes stdin,
// and fails for a channel that does not exist (which ends the stream, as
// in the kubelet). Closing an output channel means nothing.
func (c *client) closesStdin(f wsproto.Frame) (bool, error) {
	if len(f.Payload) != 1 { // ParseFrame and the SPDY reader send one byte
		return false, &protocolError{err: errors.New("a close signal without its channel")}
	}
	switch ch := wsproto.Channel(f.Payload[0]); {
	case ch == wsproto.Stdin:
		return true, nil
	case ch >= wsproto.ExecChannels:
		c.km.Error(metrics.ReasonProtocol)
		return false, &protocolError{err: errors.New("close signal for " + ch.String() + ", which does not exist")}
	}
	return false, nil
}

// otherFrame handles the rest: data on the server's channels is dropped,
// other channels are unknown and ignored.
func (c *client) otherFrame(f wsproto.Frame) {
	switch f.Channel {
	case wsproto.Stdout, wsproto.Stderr, wsproto.Error:
	default:
		c.unknownChannel(f.Channel)
	}
}
