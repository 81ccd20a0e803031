package audit

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestRotate: each event is one JSON line; past the size the file moves
// to FILE.1 (and FILE.1 to FILE.2), and no line is lost or split.
func TestRotate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path, 1000, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		l.Record(Event{Event: SessionStart, Session: strings.Repeat("s", 50), TTY: Bool(i%2 == 0), BytesIn: Int64(int64(i))})
	}
	l.Close()
	total := 0
	for _, p := range []string{path, path + ".1", path + ".2"} {
		f, err := os.Open(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		fi, _ := f.Stat()
		if fi.Size() > 1000 {
			t.Errorf("%s has %d bytes", p, fi.Size())
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var ev Event
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || ev.Event != SessionStart || ev.Time.IsZero() {
				t.Errorf("%s: line %q: %v", p, sc.Bytes(), err)
			}
			total++
		}
		f.Close()
	}
	if _, err := os.Stat(path + ".3"); err == nil {
		t.Error("more old files than asked")
	}
	if total == 0 || total > 40 {
		t.Errorf("%d lines", total)
	}
	var nilLog *Log
	nilLog.Record(Event{Event: Login}) // a gateway without a trail
	if AuthOf(WithAuth(context.Background(), AuthShare)) != AuthShare || AuthOf(context.Background()) != "" {
		t.Error("the auth in a context")
	}
}

// TestFullDisk: the trail on a disk that fills up (a 16 KiB tmpfs) and
// then gets space back. The events that could not be written are lost,
// but every line in the file is one JSON event: a line cut by the full
// disk is taken back, and does not swallow the next good event.
func TestFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=16k"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	path := filepath.Join(dir, "audit.log")
	l, err := Open(path, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	filler := filepath.Join(dir, "filler")
	os.WriteFile(filler, make([]byte, 8<<10), 0o600)
	// Fill the disk: each event is ~300 bytes, 16 KiB fills within 60.
	for i := range 60 {
		l.Record(Event{Event: SessionStart, Session: strings.Repeat("s", 250), BytesIn: Int64(int64(i))})
	}
	// Space comes back (an operator removes a file); the next event is a
	// good one.
	os.Remove(filler)
	l.Record(Event{Event: SessionEnd, Session: "after-the-disk-was-freed"})
	l.Close()

	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	n, sawLast := 0, false
	for sc.Scan() {
		n++
		var ev Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Errorf("line %d is not one JSON event (%v): %.80q ... %.80q", n, err, sc.Text(), sc.Text()[max(0, len(sc.Text())-80):])
			continue
		}
		if ev.Session == "after-the-disk-was-freed" {
			sawLast = true
		}
	}
	if !sawLast {
		t.Errorf("the event written once the disk had room again cannot be read from the trail (%d lines)", n)
	}
}
