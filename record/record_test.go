package record

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newStore(t *testing.T, cfg Config) (*Store, Counters) {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	m := Counters{Active: prometheus.NewGauge(prometheus.GaugeOpts{Name: "a"}), Bytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "b"}),
		Errors: prometheus.NewCounter(prometheus.CounterOpts{Name: "e"}), Truncated: prometheus.NewCounter(prometheus.CounterOpts{Name: "t"})}
	s, err := Open(cfg, m, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return s, m
}

// lines reads a .cast file: the header, then each event.
func lines(t *testing.T, s *Store, id string) (map[string]any, [][3]any) {
	t.Helper()
	f, _, err := s.File(id)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var hdr map[string]any
	var evs [][3]any
	for i := 0; sc.Scan(); i++ {
		if i == 0 {
			if err := json.Unmarshal(sc.Bytes(), &hdr); err != nil {
				t.Fatal(err)
			}
			continue
		}
		var ev [3]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("event %q: %v", sc.Bytes(), err)
		}
		evs = append(evs, ev)
	}
	return hdr, evs
}

// output is the text of a recording's "o" events.
func output(evs [][3]any) string {
	var b strings.Builder
	for _, ev := range evs {
		if ev[1] == "o" {
			b.WriteString(ev[2].(string))
		}
	}
	return b.String()
}

func TestRecording(t *testing.T) {
	s, m := newStore(t, Config{})
	start := time.Now().UTC()
	r, err := s.Start(Meta{ID: "abc", Session: "abc", Kind: "exec", Container: "box", Command: []string{"vim"}, TTY: true, StartedAt: start},
		Header{Width: 100, Height: 30, Command: []string{"vim", "x y"}, Env: map[string]string{"TERM": "xterm-256color"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if md, _ := s.Get("abc"); !md.Active {
		t.Errorf("a recording being written: %+v", md)
	}
	if testutil.ToFloat64(m.Active) != 1 {
		t.Error("gateway_recordings_active is not 1")
	}
	// "日本" cut inside its first character, a control character, a
	// quote: the text is whole in the events, and JSON.
	text := "日本 \x1b[1m\"bold\"\\\r\n"
	r.Output([]byte(text[:1]))
	r.Output([]byte(text[1:5]))
	r.Resize(100, 30) // the size already: no event
	r.Resize(120, 40)
	r.Resize(120, 40)
	r.Input([]byte("secret")) // not recorded: input is off
	r.Output([]byte(text[5:]))
	code := 3
	r.End(&code)
	r.End(&code) // harmless

	hdr, evs := lines(t, s, "abc")
	if hdr["version"] != 2.0 || hdr["width"] != 100.0 || hdr["height"] != 30.0 || hdr["title"] != "abc" || hdr["command"] != "vim x y" ||
		hdr["timestamp"] != float64(start.Unix()) {
		t.Errorf("header %v", hdr)
	}
	if got := output(evs); got != text {
		t.Errorf("output %q, want %q", got, text)
	}
	var kinds []string
	for _, ev := range evs {
		kinds = append(kinds, ev[1].(string))
	}
	if got := strings.Join(kinds, ""); got != "orom" || evs[1][2] != "120x40" || evs[3][2] != "exit 3" {
		t.Errorf("events %v", evs)
	}
	md, err := s.Get("abc")
	fi, _ := os.Stat(filepath.Join(s.Dir(), "abc.cast"))
	if err != nil || md.Active || md.EndedAt == nil || md.ExitCode == nil || *md.ExitCode != 3 || md.Size != fi.Size() || md.Truncated {
		t.Errorf("metadata after the end: %+v, %v (file %d bytes)", md, err, fi.Size())
	}
	if testutil.ToFloat64(m.Active) != 0 || testutil.ToFloat64(m.Bytes) != float64(fi.Size()) {
		t.Error("metrics after the end")
	}
	if err := s.Delete("abc"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("abc"); err != ErrNotFound {
		t.Errorf("after Delete: %v", err)
	}
	if _, err := s.Get("../etc/passwd"); err != ErrNotFound {
		t.Errorf("a path as an id: %v", err)
	}
}

// TestTruncated: a recording whose queue fills (the disk fell behind) is
// cut short and says so, a required one calls its onFail, and the
// session's stream is never held up.
func TestTruncated(t *testing.T) {
	s, m := newStore(t, Config{Queue: 4096, Input: true})
	failed := make(chan error, 1)
	r, err := s.Start(Meta{ID: "t1", Session: "t1", StartedAt: time.Now()}, Header{Width: 80, Height: 24}, func(err error) { failed <- err })
	if err != nil {
		t.Fatal(err)
	}
	// The writer may take the first events; a burst beyond the queue in
	// one go cannot all fit.
	r.mu.Lock()
	for range 100 {
		r.append('o', bytes.Repeat([]byte("x"), 100), true)
	}
	r.mu.Unlock()
	select {
	case err := <-failed:
		if !strings.Contains(err.Error(), "queue is full") {
			t.Errorf("onFail: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("onFail was not called")
	}
	r.Output([]byte("after")) // dropped
	r.End(nil)
	md, _ := s.Get("t1")
	_, evs := lines(t, s, "t1")
	if !md.Truncated || md.Reason == "" || strings.Contains(output(evs), "after") || testutil.ToFloat64(m.Truncated) != 1 {
		t.Errorf("a truncated recording: %+v, %d events", md, len(evs))
	}
	// What the queue had taken is there, a prefix, and the last event
	// says why the rest is not.
	if out := output(evs); len(out) == 0 || strings.Trim(out, "x") != "" || len(out)%100 != 0 {
		t.Errorf("the kept prefix: %d bytes", len(out))
	}
	if last := evs[len(evs)-1]; last[1] != "m" || !strings.HasPrefix(last[2].(string), "truncated: ") {
		t.Errorf("last event %v", last)
	}
}

// TestReopen: a recording a crash left active is marked ended and
// truncated when the store opens again; retention removes the oldest
// finished ones beyond the size bound.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	s, _ := newStore(t, Config{Dir: dir})
	for i, id := range []string{"old", "mid", "new"} {
		r, err := s.Start(Meta{ID: id, Session: id, StartedAt: time.Now().Add(time.Duration(i) * time.Second)}, Header{Width: 80, Height: 24}, nil)
		if err != nil {
			t.Fatal(err)
		}
		r.Output(bytes.Repeat([]byte("y"), 1000))
		r.End(nil)
		if id == "new" { // its metadata as a crash leaves it
			md := r.Meta()
			md.Active, md.EndedAt = true, nil
			if err := s.writeMeta(md); err != nil {
				t.Fatal(err)
			}
		}
	}
	s2, _ := newStore(t, Config{Dir: dir, MaxBytes: 2500})
	got, err := s2.List(Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, md := range got {
		ids = append(ids, md.ID)
		if md.ID == "new" && (md.Active || !md.Truncated || md.Size == 0) {
			t.Errorf("the recording a crash left: %+v", md)
		}
	}
	if strings.Join(ids, ",") != "mid,new" {
		t.Errorf("kept %v, want mid,new (old removed for size)", ids)
	}
	if l, _ := s2.List(Filter{Session: "mid"}); len(l) != 1 {
		t.Errorf("filter by session: %v", l)
	}
}

// FuzzJSONString: the encoder's strings are JSON and say what
// encoding/json says of the same bytes.
func FuzzJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", "\x1b[31m\"x\"\\\n\t\r", "日本\xff\xfe", "\xe6\x97", "\u2028\x00\x7f"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		var got, want string
		if err := json.Unmarshal(appendJSONString(nil, p), &got); err != nil {
			t.Fatalf("not JSON: %q: %v", appendJSONString(nil, p), err)
		}
		b, _ := json.Marshal(string(p))
		json.Unmarshal(b, &want)
		if got != want {
			t.Fatalf("%q: got %q, encoding/json %q", p, got, want)
		}
		// Cut anywhere, valid text comes out whole across the events.
		if utf8.Valid(p) && len(p) > 0 {
			for i := range len(p) + 1 {
				head := p[:i]
				cut := incompleteTail(head)
				rest := append(append([]byte(nil), head[len(head)-cut:]...), p[i:]...)
				if !utf8.Valid(head[:len(head)-cut]) || !utf8.Valid(rest) {
					t.Fatalf("%q cut at %d: %q + %q", p, i, head[:len(head)-cut], rest)
				}
			}
		}
	})
}

// TestBlocksReturned: after a flood, the blocks given back are whole.
func TestBlocksReturned(t *testing.T) {
	s, _ := newStore(t, Config{})
	r, err := s.Start(Meta{ID: "b1", Session: "b1", StartedAt: time.Now()}, Header{Width: 80, Height: 24}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 200 {
		r.Output(bytes.Repeat([]byte("z"), 10000))
	}
	r.End(nil)
	for range len(freeBlocks) {
		b := <-freeBlocks
		if cap(b) != blockSize || len(b) != 0 {
			t.Fatalf("a free block of len %d cap %d", len(b), cap(b))
		}
		defer putBlock(b)
	}
}
