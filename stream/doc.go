// Package stream serves the gateway's streams: exec, attach and
// port-forward, speaking the Kubernetes channel protocols of package
// wsproto.
//
// # Kinds and transports
//
// The stream kinds (exec.go, attach.go, portforward.go) hold a client
// (conn.go) and talk to it only through Conn: Send an output frame,
// Finish with a status, Fail with a cause; client frames (input, resize,
// the close signal) reach the kind's FrameHandler. The kinds never see the
// wire. The transport is the Pump (pump.go), over one WebSocket; a second
// transport, or a recorder, hooks in at the same interface, and the
// client's input and output methods are the one place payload bytes pass.
//
// # The Pump
//
// One goroutine at a time does every read of the WebSocket (readLoop), and
// calls the FrameHandler, which must not block or send: readLoop is what
// answers the client's pings. Once the client has sent no message for
// restAfter, and gorilla holds none of its bytes, the reading rests: the
// connection is parked in the gateway's own poller (package park), the
// goroutine ends, and a new one reads on when the client sends something
// (pings and pongs are answered without waking gorilla). An exec's output
// readers and a tunnel's TCP reader rest the same way while quiet (each
// in a park.Slot), so an idle exec session or tunnel holds no goroutine
// at all. A SPDY stream (spdy.go) is the second transport, with the same
// ends: a cancelled stream whose client does not read ends for its session
// after stuckWriterGrace. Writes are done by whoever holds the write baton
// (baton.go): a producer that queues a frame (the goroutine reading a
// process's output, say) writes it itself, and the ping timer or the end
// of the stream start a writer goroutine only when no one holds it. An
// idle stream therefore parks no writer, and the output queue is bounded:
// a slow client slows the process down, and memory never grows with it.
// Client input goes to its consumer through an inputQueue, whose writer
// holds a baton of its own, so readLoop never waits for a process that is
// slow to read. The connection is corked from the upgrade until the
// writer runs out of frames or the reader waits for the client: the
// handshake's answer and the first frames (an exec's ready frame, a
// tunnel's port prefixes, written with Pump.Prime before Run) leave in
// one write, as do the last frame and the close frame.
//
// A stream ends normally with the status and a close frame, or is
// cancelled (the client left, the API closed it, the gateway shuts down,
// an attacher fell behind). Its session ends within stuckWriterGrace even
// when a write is stuck on a client that does not read; that client still
// gets the close frame if it reads within closeLinger. Pump.Run calls its
// done only when all of its goroutines have returned (it may itself
// return before, once the reading rests).
//
// On a plain TCP listener, UpgradeListener (upgrades.go) reads each
// connection's first request header itself: an upgrade is handed to the
// gateway's handler with a ResponseWriter of its own, anything else goes
// on to net/http, its bytes replayed. TLS listeners are net/http's alone.
//
// Handlers validate a request completely before upgrading it. An error they
// return means nothing was written to the client; the caller answers with a
// Status. After the upgrade, failures are reported in-band: a Status on the
// error channel, then a close frame.
package stream
