package wsproto

// Info is the channel of the gateway's session information, which, like
// Ack, only the web page uses (it asks with info=1): the gateway sends one
// JSON SessionInfo on it, after the stream's first frame, so that a client
// that cannot read the handshake's headers (a browser) learns which
// session it is in, and from which output offset its live output counts.
const Info Channel = 6

// SessionInfo is what the gateway sends on Info.
type SessionInfo struct {
	// Session is the id to join again at /api/v1/sessions/{id}/attach.
	Session string `json:"session"`
	// Detach is how long (seconds) the process outlives its last client;
	// 0 when it ends with this one.
	Detach float64 `json:"detach"`
	// Offset is how many output bytes came before the live output: a
	// client that counts the output it gets after the replay can rejoin
	// with since=Offset+count.
	Offset int64 `json:"offset"`
	// Join says what came before the live output: "screen" (a tty's
	// screen, drawn from a reset), "replay" (kept output), "since" (the
	// output after the offset asked for) or "live" (nothing); "resize" in
	// the frames after the first.
	Join string `json:"join"`
	// ViewOnly: the client's input and resizes are dropped (a view share).
	ViewOnly bool `json:"viewOnly,omitempty"`
	// Cols and Rows are the pty's size (none without a pty). The gateway
	// sends the frame again, with Join "resize", where the pty takes a new
	// size in the output: a client that does not set the size (a view
	// share) follows it.
	Cols uint16 `json:"cols,omitempty"`
	Rows uint16 `json:"rows,omitempty"`
}
