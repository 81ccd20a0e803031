package wsproto

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// TerminalSize is one resize event: client-go's TerminalSize, whose fields
// go on the wire without JSON tags, {"Width":80,"Height":24}. Decoding
// matches names case-insensitively, as Kubernetes does.
type TerminalSize struct {
	Width  uint16
	Height uint16
}

// MaxTerminalSide bounds each side of a terminal: larger values are refused
// as absurd rather than handed to the kernel.
const MaxTerminalSide = 4096

// maxResizePending bounds the bytes of one unfinished resize object.
const maxResizePending = 4096

// ErrBadResize: the resize stream holds something that is not a size object.
// Kubernetes stops reading resizes for the rest of the session.
var ErrBadResize = errors.New("malformed resize")

// ErrBadSize: a well-formed size that is zero or absurd.
var ErrBadSize = errors.New("invalid terminal size")

// Validate checks that both sides are in 1..MaxTerminalSide.
func (s TerminalSize) Validate() error {
	if s.Width == 0 || s.Height == 0 || s.Width > MaxTerminalSide || s.Height > MaxTerminalSide {
		return fmt.Errorf("%w: %dx%d", ErrBadSize, s.Width, s.Height)
	}
	return nil
}

// ResizeDecoder reads the resize channel as one byte stream of JSON objects,
// like the kubelet's streaming decoder: a message may hold several objects,
// and an object may span messages. The zero value is ready to use.
type ResizeDecoder struct {
	pending []byte
	err     error
}

// Decode appends p to the stream and calls fn for each complete object, in
// order. After the first malformed object it returns an error wrapping
// ErrBadResize, then and on every later call. Sizes are not validated.
func (d *ResizeDecoder) Decode(p []byte, fn func(TerminalSize)) error {
	if d.err != nil {
		return d.err
	}
	d.pending = append(d.pending, p...)
	for {
		rest := bytes.TrimLeft(d.pending, " \t\r\n")
		if len(rest) == 0 {
			d.pending = d.pending[:0]
			return nil
		}
		dec := json.NewDecoder(bytes.NewReader(rest))
		var s TerminalSize
		err := dec.Decode(&s)
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			if len(rest) > maxResizePending {
				d.err = fmt.Errorf("%w: object longer than %d bytes", ErrBadResize, maxResizePending)
				return d.err
			}
			d.pending = append(d.pending[:0], rest...)
			return nil
		}
		if err != nil {
			d.err = fmt.Errorf("%w: %v", ErrBadResize, err)
			d.pending = nil
			return d.err
		}
		fn(s)
		d.pending = append(d.pending[:0], rest[dec.InputOffset():]...)
	}
}

// Simple reads a message that is exactly one object as client-go and the
// web page write it, {"Width":80,"Height":24} (with json.Encoder's
// newline or not), without encoding/json: no allocation, and a shallow
// stack for the reader that handles it (see stream's resizes). It reports
// false for anything else (other spacing, order or case, a number JSON or
// uint16 would refuse, bytes pending from an earlier message), which
// Decode reads. The decoder is not changed: Simple's size is as Decode's
// would be.
func (d *ResizeDecoder) Simple(p []byte) (TerminalSize, bool) {
	if d.err != nil || len(d.pending) > 0 {
		return TerminalSize{}, false
	}
	p = bytes.TrimSuffix(p, []byte("\n"))
	w, p, ok := simpleField(p, `{"Width":`)
	if !ok {
		return TerminalSize{}, false
	}
	h, p, ok := simpleField(p, `,"Height":`)
	if !ok || string(p) != "}" {
		return TerminalSize{}, false
	}
	return TerminalSize{Width: w, Height: h}, true
}

// simpleField reads name and the decimal uint16 after it, as JSON writes
// it (no sign, no leading zero), and returns the rest of p.
func simpleField(p []byte, name string) (uint16, []byte, bool) {
	p, ok := bytes.CutPrefix(p, []byte(name))
	if !ok {
		return 0, nil, false
	}
	n, v := 0, 0
	for n < len(p) && n < 6 && p[n] >= '0' && p[n] <= '9' {
		v = v*10 + int(p[n]-'0')
		n++
	}
	if n == 0 || (n > 1 && p[0] == '0') || v > 0xffff {
		return 0, nil, false
	}
	return uint16(v), p[n:], true
}
