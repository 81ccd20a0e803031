package wsproto

import (
	"errors"
	"fmt"
	"strconv"
)

// Ack is the channel of the gateway's flow-control extension, which only
// its web page uses (the stream URL carries flow=1; Kubernetes clients
// never send on it, and a server without the extension ignores it as an
// unknown channel). The page sends, on Ack, the total number of output
// bytes its terminal has processed so far, in ASCII decimal:
//
//	05 31 30 34 38 35 37 36      "1048576": a mebibyte is on the screen
//
// The gateway stops reading the process's output while too much of what it
// sent is not acknowledged, so a flood cannot outrun the page.
const Ack Channel = 5

// ErrBadAck: an ack payload that is not a decimal byte count.
var ErrBadAck = errors.New("malformed ack")

// ParseAck reads an ack payload.
func ParseAck(p []byte) (uint64, error) {
	if len(p) == 0 || len(p) > 20 {
		return 0, fmt.Errorf("%w: %d bytes", ErrBadAck, len(p))
	}
	for _, c := range p {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: %q", ErrBadAck, p)
		}
	}
	n, err := strconv.ParseUint(string(p), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %q", ErrBadAck, p)
	}
	return n, nil
}
