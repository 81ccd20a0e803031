// Package container runs processes: the supervised main process of each
// container, and the processes exec'd into a container's context (its
// sandbox's network, its working directory and environment), in a pty or
// with pipes.
//
// Every process leads its own process group, so signals reach the whole
// job; exactly one goroutine reaps each process; output files are
// non-blocking, so closing them or passing a read deadline interrupts a
// blocked read. Nothing here knows about WebSockets.
package container
