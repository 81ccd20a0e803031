package stream

import (
	"errors"

	"gateway/metrics"
	"gateway/stream/wsproto"
)

// What exec and attach do alike with client frames (readLoop only).

// resizes reads the resize channel: sizes are decoded as one byte stream,
// zero or absurd ones are skipped, and after a malformed one the rest are
// ignored, as the kubelet does; the stream itself goes on.
type resizes struct {
	dec  wsproto.ResizeDecoder
	dead bool
}

// handle decodes a resize frame and applies each valid size.
func (r *resizes) handle(p *Pump, payload []byte, apply func(wsproto.TerminalSize)) {
	if r.dead {
		return
	}
	err := r.dec.Decode(payload, func(sz wsproto.TerminalSize) {
		if err := sz.Validate(); err != nil {
			p.km.Error(metrics.ReasonBadResize)
			p.log.Warn("resize ignored", "error", err)
			return
		}
		apply(sz)
	})
	if err != nil {
		r.dead = true
		p.km.Error(metrics.ReasonBadResize)
		p.log.Warn("malformed resize: further resizes are ignored", "error", err)
	}
}

// closesStdin reads a v5 close signal: it reports whether it closes stdin,
// and fails for a channel that does not exist (which ends the stream, as
// in the kubelet). Closing an output channel means nothing.
func (p *Pump) closesStdin(f wsproto.Frame) (bool, error) {
	switch ch := wsproto.Channel(f.Payload[0]); {
	case ch == wsproto.Stdin:
		return true, nil
	case ch >= wsproto.ExecChannels:
		p.km.Error(metrics.ReasonProtocol)
		return false, &protocolError{errors.New("close signal for " + ch.String() + ", which does not exist")}
	}
	return false, nil
}

// otherFrame handles the rest: data on the server's channels is dropped,
// acks pace the output (flow=1), other channels are unknown and ignored.
func (p *Pump) otherFrame(f wsproto.Frame) {
	switch f.Channel {
	case wsproto.Stdout, wsproto.Stderr, wsproto.Error:
	case wsproto.Ack:
		p.onAck(f)
	default:
		p.unknownChannel(f.Channel)
	}
}
