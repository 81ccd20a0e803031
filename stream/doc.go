// Package stream serves the gateway's WebSocket streams: exec, attach and
// port-forward, speaking the Kubernetes channel protocols of package
// wsproto.
//
// Each stream is a Pump: one goroutine does every read of the WebSocket
// (readLoop), one does every write (writeLoop), and the work of the stream
// (a process, a TCP connection) feeds writeLoop through one bounded queue.
// A slow client therefore slows the process down, and memory never grows
// with it. Pump.Run returns only when all of its goroutines have exited.
//
// Handlers validate a request completely before upgrading it. An error they
// return means nothing was written to the client; the caller answers with a
// Status. After the upgrade, failures are reported in-band: a Status on the
// error channel, then a close frame.
package stream
