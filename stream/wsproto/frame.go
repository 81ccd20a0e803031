package wsproto

import (
	"encoding/base64"
	"errors"
	"fmt"
)

// WebSocket message types (RFC 6455 opcodes), so callers need not import a
// WebSocket library to pick one.
const (
	TextMessage   = 1
	BinaryMessage = 2
)

// Errors from decoding client frames.
var (
	// ErrEmpty: a zero-length message. Kubernetes ignores it.
	ErrEmpty = errors.New("empty message")
	// ErrBadBase64: the payload of a base64 frame does not decode.
	// Kubernetes drops the frame and carries on.
	ErrBadBase64 = errors.New("malformed base64 payload")
	// ErrBadChannel: the channel character of a base64 frame is below '0'.
	ErrBadChannel = errors.New("malformed channel")
	// ErrBadCloseSignal: a v5 close message that is not exactly ff <ch>.
	// Kubernetes ends the session.
	ErrBadCloseSignal = errors.New("malformed close signal")
	// ErrUnknownChannel: a frame on a channel the session does not have.
	// Kubernetes ignores it.
	ErrUnknownChannel = errors.New("unknown channel")
	// ErrFrameTooLarge: a message over the read limit. The session ends.
	ErrFrameTooLarge = errors.New("frame too large")
)

// Frame is one decoded message.
type Frame struct {
	Channel Channel
	// Payload aliases the message for binary protocols; base64 payloads are
	// decoded into a new slice. For a Close signal it is the one-byte
	// channel being closed.
	Payload []byte
}

// MessageType is the WebSocket message type of the frames the server sends.
func (p Protocol) MessageType() int {
	if p.Base64 {
		return TextMessage
	}
	return BinaryMessage
}

// AppendFrame appends the wire form of a frame to dst and returns it.
func (p Protocol) AppendFrame(dst []byte, ch Channel, payload []byte) []byte {
	if p.Raw {
		return append(dst, payload...)
	}
	if p.Base64 {
		dst = append(dst, '0'+byte(ch))
		return base64.StdEncoding.AppendEncode(dst, payload)
	}
	dst = append(dst, byte(ch))
	return append(dst, payload...)
}

// EncodedLen is the length of the wire form of a payload of n bytes.
func (p Protocol) EncodedLen(n int) int {
	switch {
	case p.Raw:
		return n
	case p.Base64:
		return 1 + base64.StdEncoding.EncodedLen(n)
	}
	return 1 + n
}

// ParseFrame decodes one message from a client. Binary payloads alias msg.
// The channel is not checked against the session's channels (see
// ErrUnknownChannel), but for 255: a Close frame is only ever the v5 close
// signal.
func (p Protocol) ParseFrame(msg []byte) (Frame, error) {
	if len(msg) == 0 {
		return Frame{}, ErrEmpty
	}
	if p.Raw {
		return Frame{Channel: 0, Payload: msg}, nil
	}
	if p.CloseSignal && msg[0] == byte(Close) {
		if len(msg) != 2 {
			return Frame{}, fmt.Errorf("%w: %d bytes, want 2", ErrBadCloseSignal, len(msg))
		}
		return Frame{Channel: Close, Payload: msg[1:2]}, nil
	}
	if !p.Base64 {
		if msg[0] == byte(Close) { // the close signal's number, without its meaning
			return Frame{}, fmt.Errorf("%w: 255 (the close signal is v5's)", ErrUnknownChannel)
		}
		return Frame{Channel: Channel(msg[0]), Payload: msg[1:]}, nil
	}
	if msg[0] < '0' {
		return Frame{}, fmt.Errorf("%w: %q", ErrBadChannel, msg[0])
	}
	payload, err := base64.StdEncoding.AppendDecode(nil, msg[1:])
	if err != nil {
		return Frame{}, fmt.Errorf("%w: %v", ErrBadBase64, err)
	}
	return Frame{Channel: Channel(msg[0] - '0'), Payload: payload}, nil
}
