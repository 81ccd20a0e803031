package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"gateway/internal/ptyio"
)

// The ceilings: the same commands started by the tool itself, read
// without any gateway in between.

// startPty starts cmd in a new pty of 80x24 the way the gateway does
// (container/process.go): a new session with the pty as controlling
// terminal, and a non-blocking master read through Go's poller.
func startPty(cmd *exec.Cmd) (*os.File, error) {
	ptmx, tty, err := ptyio.Open(80, 24)
	if err != nil {
		return nil, err
	}
	defer tty.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		ptmx.Close()
		return nil, err
	}
	return ptmx, nil
}

// readAll reads r to its end with a buffer of bufSize and returns the byte
// count. A pty master's EIO (the child side is gone) is the end.
func readAll(r io.Reader, bufSize int) (int64, error) {
	total, _, err := readAllCount(r, bufSize)
	return total, err
}

// readAllCount is readAll that also counts the reads that returned data.
func readAllCount(r io.Reader, bufSize int) (total, reads int64, err error) {
	buf := make([]byte, bufSize)
	for {
		n, err := r.Read(buf)
		total += int64(n)
		if n > 0 {
			reads++
		}
		if err != nil {
			if err == io.EOF || errors.Is(err, syscall.EIO) {
				return total, reads, nil
			}
			return total, reads, err
		}
	}
}

// pipeRelay runs command with a stdout pipe and relays it over a loopback
// TCP connection to a reader in this process: read bufSize, write, as any
// gateway must at least do. It returns bytes/s at the reader and the
// number of writes.
func pipeRelay(command []string, want int64, bufSize int) (float64, int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, err
	}
	defer l.Close()
	type result struct {
		n   int64
		end time.Time
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(time.Minute))
		n, err := readAll(c, 64<<10)
		done <- result{n, time.Now(), err}
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	cmd := exec.Command(command[0], command[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, 0, err
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	buf := make([]byte, bufSize)
	writes := 0
	var werr error
	for {
		k, err := out.Read(buf)
		if k > 0 && werr == nil {
			_, werr = c.Write(buf[:k])
			writes++
		}
		if err != nil {
			break
		}
	}
	if err := errors.Join(cmd.Wait(), werr); err != nil {
		return 0, 0, err
	}
	c.Close()
	r := <-done
	if r.err != nil {
		return 0, 0, r.err
	}
	if r.n != want {
		return 0, 0, fmt.Errorf("relayed %d bytes, want %d", r.n, want)
	}
	return float64(r.n) / r.end.Sub(t0).Seconds(), writes, nil
}

// --- /proc readings -------------------------------------------------------

// vmRSS returns the VmRSS of pid in KiB.
func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) < 1 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// clockTick is USER_HZ, which is 100 on Linux for every architecture Go
// supports.
const clockTick = 100

// procStat returns the fields of /proc/pid/stat after the command name:
// index 0 is the state (field 3 in proc(5)).
func procStat(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	return strings.Fields(string(b[i+1:])), nil
}

// cpuTime returns the user+system CPU time of pid (not its children).
func cpuTime(pid int) (time.Duration, error) {
	f, err := procStat(pid)
	if err != nil {
		return 0, err
	}
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64) // utime, field 14
	st, err2 := strconv.ParseInt(f[12], 10, 64) // stime, field 15
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(ut+st) * time.Second / clockTick, nil
}

// cpuTimeFine returns the time pid's live threads have run, to the
// nanosecond (/proc/PID/task/*/schedstat; /proc/PID/stat counts in clock
// ticks, too coarse for a measurement of a tenth of a second). Threads
// that exited are not counted; Go seldom ends threads.
func cpuTimeFine(pid int) time.Duration {
	paths, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/[0-9]*/schedstat", pid))
	var sum int64
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			sum += ns
		}
	}
	return time.Duration(sum)
}

// ctxSwitches sums the voluntary and involuntary context switches of
// every thread of pid (threads that exited are not counted; Go seldom ends
// threads).
func ctxSwitches(pid int) int64 {
	paths, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/[0-9]*/status", pid))
	var n int64
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
				k, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				n += k
			} else if v, ok := strings.CutPrefix(line, "nonvoluntary_ctxt_switches:"); ok {
				k, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				n += k
			}
		}
	}
	return n
}

// threadsIn counts the threads of pid that are in the system call nr (see
// /proc/pid/task/tid/syscall), and returns the number of threads too.
func threadsIn(pid int, nr string) (in, all int) {
	paths, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/[0-9]*/syscall", pid))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		all++
		if f := strings.Fields(string(b)); len(f) > 0 && f[0] == nr {
			in++
		}
	}
	return in, all
}

// sysWaitid is the number of waitid(2) on this architecture, or "".
func sysWaitid() string {
	switch runtime.GOARCH {
	case "amd64":
		return "247"
	case "arm64", "riscv64", "loong64":
		return "95"
	}
	return ""
}

// cpuTimeAll returns the CPU time of pid and of its children it has
// waited for (utime+stime+cutime+cstime).
func cpuTimeAll(pid int) (time.Duration, error) {
	f, err := procStat(pid)
	if err != nil {
		return 0, err
	}
	if len(f) < 15 {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	var sum int64
	for _, s := range f[11:15] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return time.Duration(sum) * time.Second / clockTick, nil
}

// machineBusy returns the CPU time all CPUs spent busy since boot (user,
// nice, system, irq and softirq; not idle, iowait or steal).
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var sum int64
	for _, i := range []int{1, 2, 3, 6, 7} {
		v, _ := strconv.ParseInt(f[i], 10, 64)
		sum += v
	}
	return time.Duration(sum) * time.Second / clockTick
}

// childrenCPU returns the CPU time of this process's waited-for children.
func childrenCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// selfCPU returns this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// children counts the processes whose parent is pid.
func children(pid int) int {
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	want := strconv.Itoa(pid)
	n := 0
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // exited meanwhile
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == want {
			n++
		}
	}
	return n
}

// waitChildren waits until pid has want children, polling, at most d.
func waitChildren(pid, want int, d time.Duration) (int, error) {
	deadline := time.Now().Add(d)
	for {
		n := children(pid)
		if n == want {
			return n, nil
		}
		if time.Now().After(deadline) {
			return n, fmt.Errorf("gateway has %d child processes after %v, want %d", n, d, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// metricsSnapshot reads a few series from the gateway's /metrics (the Go
// and process collectors).
func metricsSnapshot(addr string) (map[string]float64, error) {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: HTTP %d", resp.StatusCode)
	}
	want := map[string]bool{
		"go_goroutines": true, "go_threads": true, "go_memstats_heap_inuse_bytes": true,
		"go_memstats_stack_inuse_bytes": true, "go_memstats_sys_bytes": true,
		"process_open_fds": true, "process_resident_memory_bytes": true,
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) == 2 && want[f[0]] {
			v, err := strconv.ParseFloat(f[1], 64)
			if err == nil {
				out[f[0]] = v
			}
		}
	}
	return out, sc.Err()
}
