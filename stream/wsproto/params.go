package wsproto

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ParseBool reads a boolean query parameter as the Kubernetes API server
// does: absent is false; otherwise only the first value counts, and it is
// false when it is "0" or "false" (any case), true for anything else, the
// empty string included (?stdin means true).
func ParseBool(values []string) bool {
	if len(values) == 0 {
		return false
	}
	v := values[0]
	return v != "0" && !strings.EqualFold(v, "false")
}

// ErrBadPort: a port parameter that is missing, empty, not a number or out
// of 1..65535.
var ErrBadPort = errors.New("invalid port")

// ParsePorts reads the port parameters of a port-forward request: repeated
// and/or comma-separated decimals in 1..65535, kept in the order given.
func ParsePorts(values []string) ([]uint16, error) {
	var ports []uint16
	for _, v := range values {
		for s := range strings.SplitSeq(v, ",") {
			s = strings.TrimSpace(s)
			n, err := strconv.ParseUint(s, 10, 16)
			if err != nil || n == 0 {
				return nil, fmt.Errorf("%w %q: want a number in 1..65535", ErrBadPort, s)
			}
			ports = append(ports, uint16(n))
		}
	}
	if len(ports) == 0 {
		return nil, fmt.Errorf("%w: at least one port is required", ErrBadPort)
	}
	return ports, nil
}

// PortPrefix is the first payload on both channels of a forwarded port: the
// port number, little-endian. Port 8080 is 90 1f.
func PortPrefix(port uint16) [2]byte {
	return [2]byte{byte(port), byte(port >> 8)}
}

// DataChannel and ErrorChannel are the two channels of the i-th forwarded
// port.
func DataChannel(i int) Channel  { return Channel(2 * i) }
func ErrorChannel(i int) Channel { return Channel(2*i + 1) }

// MaxPorts bounds the ports of one port-forward connection: two channels per
// port must fit in one byte, and base64 frames spell the channel as the one
// character '0'+channel.
const MaxPorts = 100
