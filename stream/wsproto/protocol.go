package wsproto

import (
	"net/http"
	"strconv"
	"strings"
)

// Channel is a stream number: the first byte of a frame.
type Channel uint8

// Channel numbers of exec and attach (kubernetes remotecommand constants).
const (
	Stdin  Channel = 0
	Stdout Channel = 1
	Stderr Channel = 2
	Error  Channel = 3 // the Status, or the error text before v4
	Resize Channel = 4 // TerminalSize JSON objects, as a byte stream
	// Close is not a channel: on v5 a message ff <ch> says the client has
	// finished sending on <ch>.
	Close Channel = 255
)

// ExecChannels is the number of channels of exec and attach. Frames on higher
// channels (but Close) are ignored, as the kubelet does.
const ExecChannels = 5

var channelNames = [...]string{"stdin", "stdout", "stderr", "error", "resize"}

func (c Channel) String() string {
	if int(c) < len(channelNames) {
		return channelNames[c]
	}
	if c == Close {
		return "close"
	}
	return "channel " + strconv.Itoa(int(c))
}

// Protocol is one WebSocket subprotocol: its token and the behaviours that
// the token selects.
type Protocol struct {
	// Name is the Sec-WebSocket-Protocol token. It is empty when the client
	// offered none: the kubelet then speaks the unversioned binary protocol.
	Name string
	// Base64 frames are text messages: an ASCII channel digit, then base64.
	Base64 bool
	// Status: the error channel always carries one JSON Status at the end,
	// success included (v4 and later). Before v4 it carries plain text, and
	// only on failure.
	Status bool
	// CloseSignal: the client may send ff <ch> to close a channel (v5).
	CloseSignal bool
	// Raw: no channels at all; binary messages are the bytes of the one
	// forwarded TCP connection (websockify's "binary" protocol).
	Raw bool
}

// The subprotocols the gateway speaks.
var (
	V5       = Protocol{Name: "v5.channel.k8s.io", Status: true, CloseSignal: true}
	V4       = Protocol{Name: "v4.channel.k8s.io", Status: true}
	V4Base64 = Protocol{Name: "v4.base64.channel.k8s.io", Base64: true, Status: true}
	V1       = Protocol{Name: "channel.k8s.io"}
	V1Base64 = Protocol{Name: "base64.channel.k8s.io", Base64: true}
	// Unversioned is what a client that offers no subprotocol gets.
	Unversioned = Protocol{}
	// Binary is websockify's raw mode, for port-forward only.
	Binary = Protocol{Name: "binary", Raw: true}
)

// ExecProtocols are accepted by exec and attach, in the gateway's order of
// preference (the client's order decides, as in Kubernetes).
var ExecProtocols = []Protocol{V5, V4, V4Base64, V1, V1Base64}

// PortForwardProtocols are accepted by port-forward: the kubelet's
// WebSocket port-forward protocols, and websockify's raw mode.
var PortForwardProtocols = []Protocol{V4, V4Base64, Binary}

// BearerProtocolPrefix starts the subprotocol that carries a bearer token
// for clients that cannot set headers (browsers): the prefix, then the token
// in unpadded base64url. It is never chosen as the protocol.
const BearerProtocolPrefix = "base64url.bearer.authorization.k8s.io."

// Offered returns the subprotocols listed in the request's
// Sec-WebSocket-Protocol headers, in the client's order.
func Offered(h http.Header) []string {
	var out []string
	for _, v := range h.Values("Sec-Websocket-Protocol") {
		for tok := range strings.SplitSeq(v, ",") {
			if tok = strings.TrimSpace(tok); tok != "" {
				out = append(out, tok)
			}
		}
	}
	return out
}

// Negotiate picks the first protocol in the client's list that is supported,
// as the kubelet does. Bearer-token entries are skipped. A client that offers
// nothing else gets Unversioned. ok is false when the client offered
// protocols but none is supported: the upgrade must be refused.
func Negotiate(offered []string, supported []Protocol) (p Protocol, ok bool) {
	any := false
	for _, name := range offered {
		if strings.HasPrefix(name, BearerProtocolPrefix) {
			continue
		}
		any = true
		for _, s := range supported {
			if s.Name == name {
				return s, true
			}
		}
	}
	if !any {
		return Unversioned, true
	}
	return Protocol{}, false
}

// Names lists the tokens of protocols, for error messages.
func Names(protocols []Protocol) []string {
	out := make([]string, len(protocols))
	for i, p := range protocols {
		out[i] = p.Name
	}
	return out
}
