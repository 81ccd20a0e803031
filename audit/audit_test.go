package audit

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
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
