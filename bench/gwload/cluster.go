package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/gorilla/websocket"
)

// --- forward-hop ----------------------------------------------------------------

// forwardHop measures one forwarding hop: a second gateway, with the first
// as its peer and no containers of its own, forwards every exec to it.
// The same tty output throughput and keystroke echo, direct and through
// the hop, in one run.
func (b *bench) forwardHop() error {
	if b.gwProc == nil {
		return fmt.Errorf("forward-hop starts a second gateway beside the first: use -gateway")
	}
	hop, err := b.startHop()
	if err != nil {
		return err
	}
	defer hop.stop()
	hp := &proc{name: "forwarder", pid: hop.pid()}
	b.own(hp)
	defer b.disown(hp)
	via := *b.gw
	via.addr, via.proc = hop.addr, hp

	n := b.o.bytes
	out := execReq{Command: []string{"head", "-c", strconv.FormatInt(n, 10), "/dev/zero"}, Stdout: true, TTY: true}
	k := b.o.keystrokes
	echo := execReq{Command: []string{"sh", "-c", fmt.Sprintf("stty raw -echo; echo READY; exec dd bs=1 count=%d status=none", k)},
		Stdin: true, Stdout: true, TTY: true}
	fmt.Printf("a second gateway (pid %d, %s) whose peer is the first forwards to it; %s (tty) and %d keystrokes of echo, direct and through the hop,\n"+
		"%d reps rotating\n", hop.pid(), hop.addr, "head -c BYTES /dev/zero", k, b.o.reps)
	d := func(e *endpoint) *websocket.Dialer { return dialer(e.proto, 64<<10, 4096) }
	res, err := b.measure(b.o.reps,
		readArm(&arm{name: "gateway", what: "direct", proc: b.gw.proc}, n, b.gw.execFlow(b.ctx, d(b.gw), out), nil),
		readArm(&arm{name: hopArm, what: "through one forwarding hop", proc: hp}, n, via.execFlow(b.ctx, d(&via), out), nil))
	if err != nil {
		return err
	}
	b.report("forward-hop", res, fig{label: "tty output throughput through one hop (bytes/s at the client)", main: hopArm, key: "rate", unit: mibps,
		refs: []string{"gateway"}, goals: []goal{{vs: "gateway", bound: 0.8}}},
		fig{label: "the forwarder's CPU per MiB", main: hopArm, key: "cpu", unit: msPerMiB, lower: true})
	res, err = b.measure(b.o.reps,
		typeArm(&arm{name: "gateway", what: "direct", proc: b.gw.proc}, k, b.gw.execFlow(b.ctx, d(b.gw), echo)),
		typeArm(&arm{name: hopArm, what: "through one forwarding hop", proc: hp}, k, via.execFlow(b.ctx, d(&via), echo)))
	if err != nil {
		return err
	}
	b.report("forward-hop", res, fig{label: "keystroke echo p50 through one hop", main: hopArm, key: "p50", unit: micros, lower: true,
		refs: []string{"gateway"}, goals: []goal{{vs: "gateway", above: 100}}},
		fig{label: "keystroke echo p99 through one hop", main: hopArm, key: "p99", unit: micros, lower: true, refs: []string{"gateway"}})
	return nil
}

const hopArm = "gateway, via a peer"

// startHop starts the forwarding gateway: no containers, the first
// gateway its peer.
func (b *bench) startHop() (*gatewayProc, error) {
	dir, err := os.MkdirTemp("", "gwload-hop-")
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(cfg, []byte("containers: []\n"), 0o600); err != nil {
		return nil, err
	}
	o := b.o
	o.gatewayArgs += " --node gwload-forwarder --peers http://" + b.gw.addr
	g := &gatewayProc{o: o, dir: dir, logPath: filepath.Join(dir, "gateway.log")}
	if err := g.start(b.ctx, cfg); err != nil {
		return nil, err
	}
	return g, nil
}
