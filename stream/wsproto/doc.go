// Package wsproto is the Kubernetes channel framing used by exec, attach and
// port-forward over WebSocket, exactly as the kubelet and the API server put
// it on the wire. It is pure functions over byte slices: no sockets, no
// goroutines, no logging, and only the standard library, so it can be fuzzed
// and benchmarked alone.
//
// # Frames
//
// Every WebSocket message carries one frame: a channel number, then payload.
// On the binary protocols the channel is one byte:
//
//	00 6c 73 0a     stdin "ls\n" (client to server)
//	01 0a           stdout "\n" (server to client)
//	01              the empty "ready" frame sent once after the upgrade
//
// On the base64 protocols the channel is an ASCII digit and the payload is
// standard base64 with padding, in a text message:
//
//	0Zm9vCg==       stdin "foo\n"
//	1Cg==           stdout "\n"
//
// Channels for exec and attach: 0 stdin, 1 stdout, 2 stderr, 3 error (the
// final Status), 4 resize (JSON {"Width":80,"Height":24}). On
// v5.channel.k8s.io a message ff 00 means "no more stdin". Port-forward
// uses channel 2i for the data and 2i+1 for the errors of the i-th port, and
// opens both with the port number, two bytes little-endian: port 8080 is
// 00 90 1f then 01 90 1f.
package wsproto
