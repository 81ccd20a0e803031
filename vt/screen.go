package vt

// cell is one column of a line: a character and its style's index.
type cell struct {
	r rune
	s uint16
}

// Special values and bits of cell.r.
const (
	blank    rune = 0  // never written, or erased: shows as a space
	wideTail rune = -1 // the second column of a wide character
	// graphemeBase and above index Terminal.graphemes: a character with
	// the combining marks after it.
	graphemeBase rune = 0x110000
	// wideHead marks the first column of a wide character.
	wideHead rune = 1 << 30
)

func (c cell) isHead() bool { return c.r > 0 && c.r&wideHead != 0 }

// line is one row. Only the columns up to the last one written are kept:
// the rest are blank in the default style, so an idle screen costs little.
type line struct {
	cells   []cell
	packed  []byte // the cells while the terminal is compact (see Compact)
	wrapped bool   // continues the line above (a soft wrap)
}

// grow makes the line at least n columns long.
func (l *line) grow(n int) {
	if n <= len(l.cells) {
		return
	}
	if n <= cap(l.cells) {
		old := len(l.cells)
		l.cells = l.cells[:n]
		clear(l.cells[old:])
		return
	}
	c := make([]cell, n, max(n, 2*cap(l.cells), 16))
	copy(c, l.cells)
	l.cells = c
}

// at returns the cell at x (blank beyond the kept columns).
func (l *line) at(x int) cell {
	if x >= 0 && x < len(l.cells) {
		return l.cells[x]
	}
	return cell{}
}

func (l *line) set(x int, c cell) {
	if x >= len(l.cells) {
		if c == (cell{}) {
			return
		}
		l.grow(x + 1)
	}
	l.cells[x] = c
}

// fill sets the columns [from, to) to c.
func (l *line) fill(from, to int, c cell) {
	if from >= to {
		return
	}
	if c == (cell{}) && to >= len(l.cells) {
		if from < len(l.cells) {
			l.cells = l.cells[:from]
		}
		return
	}
	l.grow(to)
	for i := from; i < to; i++ {
		l.cells[i] = c
	}
}

// reset makes the line a blank one of the given width in style c.
func (l *line) reset(cols int, c cell) {
	l.cells = l.cells[:0]
	l.wrapped = false
	l.fill(0, cols, c)
}

// trim drops trailing blank default cells.
func (l *line) trim() {
	n := len(l.cells)
	for n > 0 && l.cells[n-1] == (cell{}) {
		n--
	}
	l.cells = l.cells[:n]
}

// erase sets [from, to) to fill, first blanking the halves of wide
// characters the range cuts, as xterm.js does.
func (l *line) erase(from, to int, fill cell) {
	if from > 0 && l.at(from-1).isHead() {
		l.set(from-1, fill)
	}
	if to < len(l.cells) && l.at(to-1).isHead() {
		l.set(to, fill)
	}
	l.fill(from, to, fill)
}

// insert shifts the cells from x right by n (those pushed past cols are
// lost) and fills the gap.
func (l *line) insert(x, n, cols int, fill cell) {
	if x > 0 && l.at(x-1).isHead() {
		l.set(x-1, fill)
	}
	n = min(n, cols-x)
	if old := len(l.cells); x < old {
		l.grow(old + n)
		copy(l.cells[x+n:], l.cells[x:old])
	}
	l.fill(x, x+n, fill)
	if len(l.cells) > cols {
		l.cells = l.cells[:cols]
	}
	if l.at(cols - 1).isHead() { // its tail fell off
		l.set(cols-1, fill)
	}
	l.trim()
}

// remove deletes n cells at x, shifting the rest left and filling the
// right end.
func (l *line) remove(x, n, cols int, fill cell) {
	n = min(n, cols-x)
	switch {
	case len(l.cells) > x+n:
		copy(l.cells[x:], l.cells[x+n:])
		l.cells = l.cells[:len(l.cells)-n]
	case len(l.cells) > x:
		l.cells = l.cells[:x]
	}
	l.fill(cols-n, cols, fill)
	if x > 0 && l.at(x-1).isHead() {
		l.set(x-1, fill)
	}
	if l.at(x).r == wideTail {
		l.set(x, fill)
	}
	l.trim()
}

// cursor is a saved cursor (DECSC): position, style and the character set
// in use, what xterm.js 6 saves.
type cursor struct {
	x, y int
	pen  style
	cs   byte
}

// screen is a buffer: the main one or the alternate one. Each has its own
// cursor, scroll region, saved cursor and tab stops, as in xterm.js.
type screen struct {
	lines       []*line
	x, y        int // x == cols: a wrap is pending
	top, bottom int // the scroll region, inclusive
	saved       cursor
	tabs        []bool // nil: every 8 columns
}

// usASCII designates US ASCII in every set; defaultCursor is the saved
// cursor of a fresh screen.
var (
	usASCII       = [4]byte{'B', 'B', 'B', 'B'}
	defaultCursor = cursor{cs: 'B'}
)

func newScreen(rows int) *screen {
	s := &screen{lines: make([]*line, rows), bottom: rows - 1}
	for i := range s.lines {
		s.lines[i] = &line{}
	}
	s.saved = defaultCursor
	return s
}

func (s *screen) isTab(x int) bool {
	if s.tabs == nil {
		return x%8 == 0
	}
	return x < len(s.tabs) && s.tabs[x]
}

// ownTabs makes the tab stops explicit, so that they can change.
func (s *screen) ownTabs(cols int) {
	if s.tabs != nil {
		if len(s.tabs) < cols {
			s.tabs = append(s.tabs, make([]bool, cols-len(s.tabs))...)
		}
		return
	}
	s.tabs = make([]bool, cols)
	for x := 0; x < cols; x += 8 {
		s.tabs[x] = true
	}
}

func (s *screen) nextTab(cols int) int {
	x := s.x
	for x++; x < cols && !s.isTab(x); x++ {
	}
	return min(x, cols-1)
}

func (s *screen) prevTab(cols int) int {
	x := s.x
	for x--; x > 0 && !s.isTab(x); x-- {
	}
	return max(min(x, cols-1), 0)
}
