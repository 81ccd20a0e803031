package vt

import (
	"encoding/binary"
	"slices"
)

// A terminal that has gone quiet can be compacted: its lines' cells (8
// bytes a column) are packed into one byte string per screen, about a
// byte a column for plain text, and unpacked on the next call that needs
// them. An idle 200x50 screen of text goes from about 80 KiB to 11 KiB.
//
// A packed line is the uvarint of its length in columns, then runs: the
// uvarint of a style index, the uvarint of the run's length, and for each
// of its cells the uvarint of its rune plus one (wideTail, -1, is 0).

// Compact packs the screens and trims the scrollback's spare capacity,
// until the next call that needs the cells (Write, Resize, AppendRestore,
// Text). It is cheap to call again.
func (t *Terminal) Compact() {
	if t.packed {
		return
	}
	t.main.pack()
	if t.alt != t.main {
		t.alt.pack()
	}
	t.hist.trim()
	t.packed = true
}

// unpack undoes Compact.
func (t *Terminal) unpack() {
	if !t.packed {
		return
	}
	t.main.unpack()
	t.alt.unpack()
	t.packed = false
}

// thawed unpacks a compacted terminal for a read, and returns what packs it
// again (so that a restore of an idle screen leaves it compact).
func (t *Terminal) thawed() (repack func()) {
	if !t.packed {
		return func() {}
	}
	t.unpack()
	return t.Compact
}

func (s *screen) pack() {
	var buf []byte
	ends := make([]int, len(s.lines))
	for y, l := range s.lines {
		if len(l.cells) > 0 {
			buf = l.appendPacked(buf)
		}
		ends[y] = len(buf)
	}
	// One exact allocation, shared by the lines.
	buf = slices.Clone(buf)
	start := 0
	for y, l := range s.lines {
		l.cells, l.packed = nil, nil
		if ends[y] > start {
			l.packed = buf[start:ends[y]:ends[y]]
		}
		start = ends[y]
	}
}

func (l *line) appendPacked(buf []byte) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(l.cells)))
	for i := 0; i < len(l.cells); {
		j := i + 1
		for j < len(l.cells) && l.cells[j].s == l.cells[i].s {
			j++
		}
		buf = binary.AppendUvarint(buf, uint64(l.cells[i].s))
		buf = binary.AppendUvarint(buf, uint64(j-i))
		for _, c := range l.cells[i:j] {
			buf = binary.AppendUvarint(buf, uint64(uint32(c.r+1)))
		}
		i = j
	}
	return buf
}

func (s *screen) unpack() {
	for _, l := range s.lines {
		if l.packed == nil {
			continue
		}
		p := l.packed
		n, k := binary.Uvarint(p)
		p = p[k:]
		cells := make([]cell, 0, n)
		for len(cells) < int(n) {
			st, k := binary.Uvarint(p)
			p = p[k:]
			run, k := binary.Uvarint(p)
			p = p[k:]
			for range run {
				r, k := binary.Uvarint(p)
				p = p[k:]
				cells = append(cells, cell{r: rune(uint32(r)) - 1, s: uint16(st)})
			}
		}
		l.cells, l.packed = cells, nil
	}
}

// trim gives back the scrollback's spare capacity.
func (h *history) trim() {
	if h.off > 0 {
		n := copy(h.data, h.data[h.off:])
		h.data = h.data[:n]
		for i := h.head; i < len(h.lines); i++ {
			h.lines[i].end -= h.off
		}
		h.off = 0
	}
	if h.head > 0 {
		n := copy(h.lines, h.lines[h.head:])
		h.lines = h.lines[:n]
		h.head = 0
	}
	if cap(h.data)-len(h.data) > 1024 {
		h.data = slices.Clone(h.data)
	}
	if cap(h.lines)-len(h.lines) > 16 {
		h.lines = slices.Clone(h.lines)
	}
}
