package vt

import (
	"testing"
)

// FuzzRestore feeds arbitrary output, checks the state's invariants, and
// that a fresh terminal fed the restore ends in the same state.
func FuzzRestore(f *testing.F) {
	for _, s := range []string{
		"hello\r\nworld", "\x1b[?1049h\x1b[2;5r\x1b[Hx\x1b[3S", "日本\x1b[1G\x1b[@e\u0301",
		"\x1b[41m\x1b[2J\x1b[?6h\x1b[5;5Hx", "\x1b(0lqk\x0e\x1b7\x1b[10;10H\x1b8", "\x1b[3g\x1bH\t\x1b[2Z\x1b[5b",
		"\x1b]0;t\x07\x1bPx\x1b\\\x9b31m", "\x1b[?7l0123456789abcdef\x1b[4h xyz", "\x1b#8\x1b[2;2H\x1b[1J",
	} {
		f.Add(uint8(10), uint8(4), []byte(s))
	}
	f.Fuzz(func(t *testing.T, cols, rows uint8, out []byte) {
		term := New(int(cols%40)+2, int(rows%12)+1, Config{Scrollback: 20, ScrollbackBytes: 4096})
		term.Write(out)
		checkInvariants(t, term)
		r := restored(term)
		checkInvariants(t, r)
		if got, want := snapshot(r), snapshot(term); got != want {
			t.Fatalf("restored state differs\n got: %s\nwant: %s", got, want)
		}
		// Compacting halfway changes nothing: not the restore of the
		// compact terminal, nor the state after the rest.
		twin := New(int(cols%40)+2, int(rows%12)+1, Config{Scrollback: 20, ScrollbackBytes: 4096})
		half := New(int(cols%40)+2, int(rows%12)+1, Config{Scrollback: 20, ScrollbackBytes: 4096})
		k := len(out) / 2
		twin.Write(out[:k])
		half.Write(out[:k])
		twin.Compact()
		if got, want := string(twin.AppendRestore(nil)), string(half.AppendRestore(nil)); got != want || !twin.packed {
			t.Fatalf("the compact terminal's restore differs (still compact: %v)\n got: %q\nwant: %q", twin.packed, got, want)
		}
		twin.Write(out[k:])
		if got, want := snapshot(twin), snapshot(term); got != want {
			t.Fatalf("compacting halfway changed the state\n got: %s\nwant: %s", got, want)
		}
	})
}

func checkInvariants(t *testing.T, term *Terminal) {
	t.Helper()
	for _, s := range []*screen{term.main, term.alt} {
		if len(s.lines) != term.rows || s.x < 0 || s.x > term.cols+1 || s.y < 0 || s.y >= term.rows ||
			s.top < 0 || s.top >= s.bottom && term.rows > 1 || s.bottom >= term.rows {
			t.Fatalf("screen out of bounds: %d lines, cursor %d,%d, region %d-%d", len(s.lines), s.x, s.y, s.top, s.bottom)
		}
		for y, l := range s.lines {
			if len(l.cells) > term.cols {
				t.Fatalf("line %d has %d cells, more than %d columns", y, len(l.cells), term.cols)
			}
			for x, c := range l.cells {
				if c.isHead() && l.at(x+1).r != wideTail {
					t.Fatalf("line %d: wide character at %d without its second half", y, x)
				}
				if int(c.s) >= len(term.styles.list) && c.s != 0 {
					t.Fatalf("line %d: style %d not in the table", y, c.s)
				}
			}
		}
	}
}
