package chunkio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"gateway/internal/ptyio"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// countingPool hands out buffers of size bytes and counts them.
type countingPool struct {
	size int
	mu   sync.Mutex
	gets int
	puts int
}

func (p *countingPool) Get() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gets++
	return make([]byte, p.size)
}

func (p *countingPool) Put([]byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.puts++
}

func (p *countingPool) counts() (gets, puts int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gets, p.puts
}

// collector is an fn for Read that keeps the data and the buffers it was
// handed (without putting them back).
type collector struct {
	mu     sync.Mutex
	data   []byte
	handed int
	err    error // returned for every chunk when set
}

func (c *collector) fn(buf []byte, n int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.data = append(c.data, buf[:n]...)
	c.handed++
	return c.err
}

func (c *collector) got() (string, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(c.data), c.handed
}

// checkBuffers checks that every buffer taken from pool was put back or
// handed to fn.
func checkBuffers(t *testing.T, pool *countingPool, c *collector) {
	t.Helper()
	gets, puts := pool.counts()
	_, handed := c.got()
	if gets != puts+handed {
		t.Errorf("pool: %d gets, %d puts, %d buffers handed to fn: %d buffers lost", gets, puts, handed, gets-puts-handed)
	}
}

// pipe returns both ends of a pipe, in non-blocking mode as os.Pipe opens
// them, closed at the end of the test.
func pipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// readAsync runs Read in a goroutine; the channel gets its result.
func readAsync(f *os.File, pool BufferPool, fn func([]byte, int) error) <-chan error {
	done := make(chan error, 1)
	go func() { done <- Read(f, pool, fn) }()
	return done
}

// wait returns Read's result, failing the test after a bound.
func wait(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Read did not return within 10s")
		return nil
	}
}

// waitFor polls cond for at most 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
	}
}

func TestReadEOF(t *testing.T) {
	tests := []struct {
		name    string
		bufSize int
		data    string
		chunks  int // buffers handed to fn
	}{
		{"one chunk", 64, "hello", 1},
		{"several chunks", 4, "0123456789", 3},
		{"nothing", 64, "", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, w := pipe(t)
			if _, err := io.WriteString(w, tc.data); err != nil {
				t.Fatal(err)
			}
			w.Close()
			pool, c := &countingPool{size: tc.bufSize}, &collector{}
			if err := wait(t, readAsync(r, pool, c.fn)); err != nil {
				t.Fatalf("Read: %v, want nil at end of file", err)
			}
			if got, handed := c.got(); got != tc.data || handed != tc.chunks {
				t.Errorf("fn got %q in %d chunks, want %q in %d", got, handed, tc.data, tc.chunks)
			}
			checkBuffers(t, pool, c)
		})
	}
}

// A pty master whose other end is closed reads what is left, then EIO:
// that is the end of file.
func TestReadPtyEIO(t *testing.T) {
	master, tty, err := ptyio.Open(80, 24)
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	// No newline: the line discipline would turn it into \r\n.
	if _, err := io.WriteString(tty, "hello"); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	pool, c := &countingPool{size: 64}, &collector{}
	if err := wait(t, readAsync(master, pool, c.fn)); err != nil {
		t.Fatalf("Read: %v, want nil (EIO is the end of file)", err)
	}
	if got, _ := c.got(); got != "hello" {
		t.Errorf("fn got %q, want %q", got, "hello")
	}
	checkBuffers(t, pool, c)
}

// An idle non-blocking file parks Read in the poller: its one attempt
// before parking takes a buffer and puts it back on EAGAIN, then no buffer
// is taken and none is held until data is ready.
func TestReadIdleHoldsNoBuffer(t *testing.T) {
	r, w := pipe(t)
	pool, c := &countingPool{size: 64}, &collector{}
	done := readAsync(r, pool, c.fn)
	waitFor(t, "the first attempt", func() bool { gets, puts := pool.counts(); return gets == 1 && puts == 1 })
	time.Sleep(50 * time.Millisecond) // a reader that spins would take more
	if gets, puts := pool.counts(); gets != 1 || puts != 1 {
		t.Fatalf("idle: %d gets and %d puts, want 1 and 1 (parked, holding nothing)", gets, puts)
	}

	if _, err := io.WriteString(w, "ping"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the chunk", func() bool { got, _ := c.got(); return got == "ping" })
	// The chunk's buffer went to fn; the next attempt finds nothing and
	// puts its buffer back.
	waitFor(t, "parking again", func() bool { gets, puts := pool.counts(); return gets == 3 && puts == 2 })
	time.Sleep(50 * time.Millisecond)
	if gets, puts := pool.counts(); gets != 3 || puts != 2 {
		t.Fatalf("idle again: %d gets and %d puts, want 3 and 2", gets, puts)
	}
	w.Close()
	if err := wait(t, done); err != nil {
		t.Fatalf("Read: %v", err)
	}
	if _, handed := c.got(); handed != 1 {
		t.Errorf("fn was handed %d buffers, want 1", handed)
	}
	checkBuffers(t, pool, c)
}

func TestReadFnError(t *testing.T) {
	r, w := pipe(t)
	if _, err := io.WriteString(w, "abc"); err != nil {
		t.Fatal(err)
	}
	errStop := errors.New("stop")
	pool, c := &countingPool{size: 64}, &collector{err: errStop}
	if err := wait(t, readAsync(r, pool, c.fn)); !errors.Is(err, errStop) {
		t.Fatalf("Read: %v, want fn's error", err)
	}
	if got, handed := c.got(); got != "abc" || handed != 1 {
		t.Errorf("fn got %q in %d chunks, want %q in 1", got, handed, "abc")
	}
	checkBuffers(t, pool, c)
}

// Closing the file ends a parked Read with os.ErrClosed.
func TestReadClosed(t *testing.T) {
	want := os.ErrClosed
	r, _ := pipe(t)
	pool, c := &countingPool{size: 64}, &collector{}
	done := readAsync(r, pool, c.fn)
	waitFor(t, "parking", func() bool { gets, puts := pool.counts(); return gets == 1 && puts == 1 })
	r.Close()
	if err := wait(t, done); !errors.Is(err, want) {
		t.Fatalf("Read: %v, want %v", err, want)
	}
	if _, handed := c.got(); handed != 0 {
		t.Errorf("fn was handed %d buffers, want 0", handed)
	}
	checkBuffers(t, pool, c)
}

// A closed socket ends a parked Read with net.ErrClosed.
func TestReadClosedSocket(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	pool, c := &countingPool{size: 64}, &collector{}
	done := make(chan error, 1)
	go func() { done <- Read(server.(*net.TCPConn), pool, c.fn) }()
	waitFor(t, "parking", func() bool { gets, puts := pool.counts(); return gets == 1 && puts == 1 })
	server.Close()
	if err := wait(t, done); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read: %v, want net.ErrClosed", err)
	}
	checkBuffers(t, pool, c)
}

// A passed deadline drains what the kernel buffers, without waiting for
// more, and Read returns nil.
func TestReadDeadlineDrains(t *testing.T) {
	tests := []struct {
		name     string
		deadline time.Duration // from now
		data     string
		chunks   int
	}{
		{"passed before the call", -time.Second, "0123456789", 3},
		{"passes while parked", 50 * time.Millisecond, "", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, w := pipe(t) // w stays open: no end of file
			if _, err := io.WriteString(w, tc.data); err != nil {
				t.Fatal(err)
			}
			if err := r.SetReadDeadline(time.Now().Add(tc.deadline)); err != nil {
				t.Fatal(err)
			}
			pool, c := &countingPool{size: 4}, &collector{}
			if err := wait(t, readAsync(r, pool, c.fn)); err != nil {
				t.Fatalf("Read: %v, want nil after the drain", err)
			}
			if got, handed := c.got(); got != tc.data || handed != tc.chunks {
				t.Errorf("fn got %q in %d chunks, want %q in %d", got, handed, tc.data, tc.chunks)
			}
			checkBuffers(t, pool, c)
		})
	}
}

// ReadAt leaves the headroom free in every buffer it hands over.
func TestReadAtHeadroom(t *testing.T) {
	r, w := pipe(t)
	if _, err := io.WriteString(w, "abcdef"); err != nil {
		t.Fatal(err)
	}
	w.Close()
	pool := &countingPool{size: 5}
	var got []string
	err := ReadAt(r, pool, 1, func(buf []byte, n int) error {
		if len(buf) != 5 {
			t.Errorf("fn got a buffer of %d bytes, want the whole 5", len(buf))
		}
		got = append(got, string(buf[1:1+n]))
		pool.Put(buf)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "abcd,ef" {
		t.Errorf("chunks %q, want [abcd ef]", got)
	}
	if gets, puts := pool.counts(); gets != puts {
		t.Errorf("%d gets, %d puts", gets, puts)
	}
}

func pipeSize(t *testing.T, f *os.File) int {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var size int
	var serr error
	if err := rc.Control(func(fd uintptr) { size, serr = unix.FcntlInt(fd, unix.F_GETPIPE_SZ, 0) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return size
}

// TryWrite fills a pipe and returns how much it took, without waiting for
// a reader.
func TestTryWriteFullPipe(t *testing.T) {
	r, w := pipe(t)
	size := pipeSize(t, w)
	type result struct {
		n   int
		err error
	}
	try := func(p []byte) result {
		done := make(chan result, 1)
		go func() {
			n, err := TryWrite(w, p)
			done <- result{n, err}
		}()
		select {
		case res := <-done:
			return res
		case <-time.After(10 * time.Second):
			t.Fatal("TryWrite blocked")
			return result{}
		}
	}
	p := bytes.Repeat([]byte{'x'}, size+1000)
	if res := try(p); res.err != nil || res.n != size {
		t.Fatalf("TryWrite of %d bytes into an empty pipe of %d: %d, %v; want %d, nil", len(p), size, res.n, res.err, size)
	}
	if res := try(p); res.err != nil || res.n != 0 {
		t.Fatalf("TryWrite into a full pipe: %d, %v; want 0, nil", res.n, res.err)
	}
	// A pipe frees its room a page at a time.
	page := unix.Getpagesize()
	if _, err := io.ReadFull(r, make([]byte, page)); err != nil {
		t.Fatal(err)
	}
	if res := try(p); res.err != nil || res.n != page {
		t.Fatalf("TryWrite after reading a page: %d, %v; want %d, nil", res.n, res.err, page)
	}
}

func TestTryWriteClosedReader(t *testing.T) {
	r, w := pipe(t)
	r.Close()
	n, err := TryWrite(w, []byte("x"))
	if n != 0 || !errors.Is(err, unix.EPIPE) {
		t.Fatalf("TryWrite with no reader: %d, %v; want 0, EPIPE", n, err)
	}
}

func TestAppendAll(t *testing.T) {
	data := strings.Repeat("0123456789", 10) // 100 bytes
	tests := []struct {
		name   string
		prefix string
		cap    int
		r      func() io.Reader
		want   string
		reused bool // the result shares buf's array
	}{
		{"fits", "", 128, func() io.Reader { return strings.NewReader(data) }, data, true},
		{"fits after a prefix", "ab", 128, func() io.Reader { return strings.NewReader(data) }, "ab" + data, true},
		{"grows", "", 4, func() io.Reader { return strings.NewReader(data) }, data, false},
		{"grows from nothing", "", 0, func() io.Reader { return strings.NewReader(data) }, data, false},
		{"one byte at a time", "", 128, func() io.Reader { return iotest.OneByteReader(strings.NewReader(data)) }, data, true},
		{"data with EOF", "", 128, func() io.Reader { return iotest.DataErrReader(strings.NewReader(data)) }, data, true},
		{"empty", "x", 8, func() io.Reader { return strings.NewReader("") }, "x", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			buf := append(make([]byte, 0, tc.cap), tc.prefix...)
			got, err := AppendAll(buf, tc.r())
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			if shared := cap(buf) > 0 && &got[:1][0] == &buf[:1][0]; shared != tc.reused {
				t.Errorf("result shares the buffer: %v, want %v (cap %d -> %d)", shared, tc.reused, cap(buf), cap(got))
			}
		})
	}
}

func TestAppendAllReuse(t *testing.T) {
	// One buffer for many messages: it grows once, then serves them all.
	var buf []byte
	msgs := []string{strings.Repeat("a", 1000), "b", strings.Repeat("c", 999), ""}
	var grown []byte
	for i, m := range msgs {
		got, err := AppendAll(buf[:0], strings.NewReader(m))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != m {
			t.Fatalf("message %d: got %d bytes, want %d", i, len(got), len(m))
		}
		if i == 0 {
			grown = got[:1]
		} else if &got[:1][0] != &grown[0] {
			t.Fatalf("message %d: a new array, want the one grown by the first message", i)
		}
		buf = got
	}
}

func TestAppendAllError(t *testing.T) {
	errBoom := errors.New("boom")
	r := io.MultiReader(strings.NewReader("abc"), iotest.ErrReader(errBoom))
	got, err := AppendAll(make([]byte, 0, 16), r)
	if !errors.Is(err, errBoom) || string(got) != "abc" {
		t.Fatalf("got %q, %v; want %q and the reader's error", got, err, "abc")
	}
}

// ReadFor reads what comes until its wait passes with nothing more, then
// reports quiet with the deadline cleared; it reports the end of file as
// Read does: a pipe's, and a pty's EIO.
func TestReadFor(t *testing.T) {
	r, w := pipe(t)
	pool, c := &countingPool{size: 4}, &collector{}
	if quiet, err := ReadFor(r, pool, 0, 10*time.Millisecond, c.fn); !quiet || err != nil {
		t.Fatalf("ReadFor on an empty pipe: quiet %v, %v; want true, nil", quiet, err)
	}
	go func() {
		time.Sleep(5 * time.Millisecond)
		io.WriteString(w, "hello")
	}()
	if quiet, err := ReadFor(r, pool, 0, time.Second, c.fn); !quiet || err != nil {
		t.Fatalf("ReadFor with 5 bytes coming: quiet %v, %v; want true, nil", quiet, err)
	}
	if got, n := c.got(); got != "hello" || n != 2 { // 4 bytes a buffer
		t.Fatalf("fn got %q in %d chunks, want %q in 2", got, n, "hello")
	}
	// No deadline is left: a Read waits for what comes later.
	go func() {
		time.Sleep(20 * time.Millisecond)
		io.WriteString(w, "!")
		w.Close()
	}()
	if err := wait(t, readAsync(r, pool, c.fn)); err != nil {
		t.Fatalf("Read after ReadFor: %v", err)
	}
	if got, _ := c.got(); got != "hello!" {
		t.Fatalf("fn got %q, want %q", got, "hello!")
	}
	if quiet, err := ReadFor(r, pool, 0, time.Second, c.fn); quiet || err != nil {
		t.Fatalf("ReadFor at the end of the pipe: quiet %v, %v; want false, nil", quiet, err)
	}

	master, tty, err := ptyio.Open(80, 24)
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	tty.Close()
	if quiet, err := ReadFor(master, pool, 0, time.Second, c.fn); quiet || err != nil {
		t.Fatalf("ReadFor on a pty with no other end: quiet %v, %v; want false, nil", quiet, err)
	}
	checkBuffers(t, pool, c)
}

// WaitFor asks its check at once and on each readiness, and stops at the
// wait's end; the deadline it leaves is the one asked for.
func TestWaitFor(t *testing.T) {
	r, w := pipe(t)
	calls := 0
	asked := make(chan struct{})
	ready := func(uintptr) bool {
		calls++
		if calls == 2 {
			close(asked)
		}
		return calls == 3
	}
	if WaitFor(r, 10*time.Millisecond, time.Time{}, ready) || calls != 1 {
		t.Fatalf("WaitFor on an empty pipe: true or %d checks; want false after 1", calls)
	}
	go func() {
		<-asked // the write comes while WaitFor waits
		w.Write([]byte{1})
	}()
	if !WaitFor(r, 10*time.Second, time.Now().Add(-time.Second), ready) || calls != 3 {
		t.Fatalf("WaitFor with a write: false or %d checks; want true after 3", calls)
	}
	b := make([]byte, 2)
	if _, err := r.Read(b); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after WaitFor restored a past deadline: %v, want a deadline error", err)
	}
}
