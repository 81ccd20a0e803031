package vt

import "unicode"

// Character widths follow xterm.js's default (its "Unicode 6" provider,
// Markus Kuhn's wcwidth): the East Asian wide and fullwidth blocks take two
// columns, combining marks and format characters none, everything else one.
// A client's terminal and this state must agree on every width, or the
// screens drift apart.

// widths holds the width of every BMP code point, two bits each.
var widths [1 << 16 / 4]byte

func init() {
	set := func(lo, hi rune, w byte) {
		for r := lo; r <= hi; r++ {
			shift := uint(r&3) * 2
			widths[r>>2] = widths[r>>2]&^(3<<shift) | w<<shift
		}
	}
	set(0x20, 0xFFFF, 1)
	set(0x7F, 0x9F, 0)
	for _, r := range [][2]rune{
		{0x1100, 0x115F}, {0x2329, 0x232A}, {0x2E80, 0x303E}, {0x3040, 0xA4CF},
		{0xAC00, 0xD7A3}, {0xF900, 0xFAFF}, {0xFE10, 0xFE19}, {0xFE30, 0xFE6F},
		{0xFF00, 0xFF60}, {0xFFE0, 0xFFE6},
	} {
		set(r[0], r[1], 2)
	}
	// Combining last: it wins over the wide blocks.
	for r := rune(0xA0); r <= 0xFFFF; r++ {
		if zeroWidth(r) {
			set(r, r, 0)
		}
	}
}

// zeroWidth reports the characters that combine with the one before them.
func zeroWidth(r rune) bool {
	return unicode.In(r, unicode.Mn, unicode.Me) || unicode.Is(unicode.Cf, r) && r != 0xAD ||
		r >= 0x1160 && r <= 0x11FF || r == 0x200B
}

// width is the number of columns r takes: 0, 1 or 2.
func width(r rune) int {
	if r < 0x10000 {
		return int(widths[r>>2] >> (uint(r&3) * 2) & 3)
	}
	switch {
	case zeroWidth(r):
		return 0
	case r >= 0x20000 && r <= 0x2FFFD, r >= 0x30000 && r <= 0x3FFFD:
		return 2
	}
	return 1
}
