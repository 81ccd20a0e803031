package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"time"
)

// The kubectl scenarios: the real kubectl (-kubectl PATH) against the
// gateway gwload started, through the kubeconfig it wrote.

// kubectlCmd is a kubectl command for the gateway, with a HOME of its own
// (its discovery cache).
func (b *bench) kubectlCmd(ctx context.Context, home string, env []string, args ...string) (*exec.Cmd, error) {
	if b.o.kubectl == "" {
		return nil, errors.New("give -kubectl PATH (make test builds one in .cache/bin/kubectl)")
	}
	if b.gwProc == nil {
		return nil, errors.New("the kubectl scenarios need -gateway: gwload writes the gateway's kubeconfig")
	}
	c := exec.CommandContext(ctx, b.o.kubectl, args...)
	c.Env = append(os.Environ(), append([]string{"KUBECONFIG=" + b.gwProc.kubeconfig(), "HOME=" + home}, env...)...)
	return c, nil
}

// kubectlPFThroughput: one connection through kubectl port-forward (SPDY
// inside a WebSocket), PF-BYTES each way, beside the gateway's own v4
// tunnel and direct TCP.
func (b *bench) kubectlPFThroughput() error {
	if b.o.kubectl == "" {
		fmt.Println("skipped: no -kubectl")
		return nil
	}
	n, bs := b.o.pfBytes, b.o.bufSize
	tr, err := b.startTransfers(nil)
	if err != nil {
		return err
	}
	defer tr.close()
	downSrv, upSrv := tr.down, tr.up
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	home, _ := os.MkdirTemp("", "gwload-kubectl-")
	defer os.RemoveAll(home)
	c, err := b.kubectlCmd(ctx, home, nil, "port-forward", "--address", "127.0.0.1", "pod/"+pfSandbox,
		":"+strconv.Itoa(downSrv.port), ":"+strconv.Itoa(upSrv.port))
	if err != nil {
		return err
	}
	out, _ := c.StdoutPipe()
	if err := c.Start(); err != nil {
		return err
	}
	kp := &proc{name: "kubectl", pid: c.Process.Pid}
	b.own(kp)
	defer func() { b.disown(kp); cancel(); _ = c.Wait() }()
	local := map[int]string{}
	re := regexp.MustCompile(`Forwarding from (127\.0\.0\.1:\d+) -> (\d+)`)
	sc := bufio.NewScanner(out)
	for len(local) < 2 && sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			p, _ := strconv.Atoi(m[2])
			local[p] = m[1]
		}
	}
	if len(local) < 2 {
		return fmt.Errorf("kubectl port-forward did not start: %v", sc.Err())
	}
	go func() { // "Handling connection for ..."
		for sc.Scan() {
		}
	}()
	fmt.Printf("one connection, %d bytes each way (the random pattern, checked), %d reps rotating: through kubectl port-forward (SPDY\n"+
		"inside a WebSocket, kubectl pid %d, its CPU counted with the gateway's), through the gateway's own tunnel (%s), and directly\n", n, b.o.reps, kp.pid, v4.Name)
	d := pfDialer(bs)
	down, up := tr.download, tr.upload
	res, err := b.measure(b.o.reps,
		down(&arm{name: "kubectl download", proc: b.gw.proc}, tcpStarter(local[downSrv.port], bs, b.o.timeout)),
		down(&arm{name: "tunnel download", what: "the gateway's v4 tunnel", proc: b.gw.proc}, b.gw.tunnelFlow(b.ctx, d, downSrv.port)),
		down(&arm{name: "direct download", what: "direct loopback TCP"}, tcpStarter(downSrv.addr(), bs, b.o.timeout)),
		up(&arm{name: "kubectl upload", proc: b.gw.proc}, tcpStarter(local[upSrv.port], bs, b.o.timeout)),
		up(&arm{name: "tunnel upload", what: "the gateway's v4 tunnel", proc: b.gw.proc}, b.gw.tunnelFlow(b.ctx, d, upSrv.port)),
		up(&arm{name: "direct upload", what: "direct loopback TCP"}, tcpStarter(upSrv.addr(), bs, b.o.timeout)))
	if err != nil {
		return err
	}
	for _, dir := range []string{"download", "upload"} {
		b.report("kubectl-pf-throughput", res, fig{label: fmt.Sprintf("%s through kubectl port-forward (%d bytes)", dir, n), key: "rate",
			unit: mibps, main: "kubectl " + dir, ceil: "direct " + dir, refs: []string{"tunnel " + dir}})
	}
	return nil
}

// kubectlExec: the wall time of kubectl exec of "true", over WebSocket and
// over SPDY, beside gwload's own exec of "true" (setup-rate's session) and
// kubectl starting and exiting alone (kubectl version --client).
func (b *bench) kubectlExec() error {
	if b.o.kubectl == "" {
		fmt.Println("skipped: no -kubectl")
		return nil
	}
	home, _ := os.MkdirTemp("", "gwload-kubectl-")
	defer os.RemoveAll(home)
	runs := max(b.o.sessions/10, 5)
	timed := func(name string, env []string, args ...string) *arm {
		return &arm{name: name, proc: b.gw.proc, run: func(r *rep) error {
			for range runs {
				c, err := b.kubectlCmd(b.ctx, home, env, args...)
				if err != nil {
					return err
				}
				t0 := time.Now()
				if out, err := c.CombinedOutput(); err != nil {
					return fmt.Errorf("kubectl %v: %v: %s", args, err, out)
				}
				r.time("wall", time.Since(t0))
			}
			r.say("%d runs", runs)
			return nil
		}}
	}
	execArgs := []string{"exec", pfSandbox, "-c", b.o.container, "--", "true"}
	alone := timed("kubectl alone", nil, "version", "--client")
	alone.what, alone.proc = "kubectl version --client: kubectl starting and exiting", nil
	if c, err := b.kubectlCmd(b.ctx, home, nil, "get", "pods"); err != nil { // discovery, cached for the runs
		return err
	} else if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("kubectl get pods: %v: %s", err, out)
	}
	gw := &arm{name: "gateway", what: "gwload's own exec of true", proc: b.gw.proc, run: func(r *rep) error {
		start := emptyRun(b.gw.execFlow(b.ctx, dialer(v5, 4096, 4096), execReq{Command: []string{"true"}, Stdout: true}))
		for i := range runs {
			t0 := time.Now()
			if _, err := start(i); err != nil {
				return err
			}
			r.time("wall", time.Since(t0))
		}
		r.say("%d sessions", runs)
		return nil
	}}
	fmt.Printf("%d runs a rep of kubectl exec %s -c %s -- true, a new kubectl process each (its discovery cached), over WebSocket and over\n"+
		"SPDY; beside gwload's own exec of true, and kubectl version --client (kubectl starting and exiting, no network)\n", runs, pfSandbox, b.o.container)
	res, err := b.measure(b.o.reps, timed("kubectl websocket", nil, execArgs...),
		timed("kubectl spdy", []string{"KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false"}, execArgs...),
		alone, gw)
	if err != nil {
		return err
	}
	for _, v := range []string{"kubectl websocket", "kubectl spdy"} {
		b.report("kubectl-exec", res, fig{label: "wall time of kubectl exec of true, " + v[len("kubectl "):], main: v, key: "wall",
			pcts: []float64{50, 99}, unit: millis, lower: true, ceil: "kubectl alone", refs: []string{"gateway"}})
	}
	return nil
}
