package vt

// history holds the lines that scrolled off the top of the main screen,
// oldest first, at most maxLines of them and about maxBytes in all. A line
// is kept in the form that redraws it (text and SGR sequences, see
// appendLine), so that a scrolled-off line costs its text, not a cell per
// column; lines are never changed once they scroll off.
type history struct {
	maxLines, maxBytes int

	data  []byte    // the lines' bytes; data[:off] is dropped
	off   int       // start of the oldest kept line
	lines []histRef // the kept lines are lines[head:]
	head  int
}

type histRef struct {
	end     int  // end offset in data
	wrapped bool // continues the line before it
	full    bool // its last column holds a character
	lead    bool // its first column holds a character
}

func (h *history) len() int { return len(h.lines) - h.head }

func (h *history) bytes() int { return len(h.data) - h.off }

// push adds a line, given as its redrawing bytes, dropping the oldest
// lines beyond the bounds.
func (h *history) push(b []byte, ref histRef) {
	if h.maxLines <= 0 {
		return
	}
	h.data = append(h.data, b...)
	ref.end = len(h.data)
	h.lines = append(h.lines, ref)
	for h.len() > h.maxLines || h.bytes() > h.maxBytes && h.len() > 1 {
		h.off = h.lines[h.head].end
		h.head++
	}
	// Compact when the dropped part outweighs the kept one: amortized, the
	// bytes and refs are moved once.
	if h.off > len(h.data)/2 && h.off > 4096 {
		n := copy(h.data, h.data[h.off:])
		h.data = h.data[:n]
		for i := h.head; i < len(h.lines); i++ {
			h.lines[i].end -= h.off
		}
		h.off = 0
	}
	if h.head > len(h.lines)/2 && h.head > 64 {
		n := copy(h.lines, h.lines[h.head:])
		h.lines = h.lines[:n]
		h.head = 0
	}
}

// line returns the i-th kept line (0 the oldest).
func (h *history) line(i int) ([]byte, histRef) {
	ref := h.lines[h.head+i]
	start := h.off
	if i > 0 {
		start = h.lines[h.head+i-1].end
	}
	return h.data[start:ref.end], ref
}

func (h *history) clear() {
	h.data, h.off, h.lines, h.head = h.data[:0], 0, h.lines[:0], 0
}
