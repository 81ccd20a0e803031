package record

import (
	"strings"
	"unicode/utf8"
)

// The event encoder is written out rather than encoding/json's, which
// allocates for every event: a recording sees every chunk of a stream.

// nuls is 64 escaped NULs.
var nuls = strings.Repeat(`\u0000`, 64)

// appendJSONString appends p as a JSON string: invalid UTF-8 becomes
// U+FFFD, as encoding/json does.
func appendJSONString(b, p []byte) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(p); {
		c := p[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c == 0 { // a run of NULs (head -c N /dev/zero): a copy per 64
			b = append(b, p[start:i]...)
			j := i
			for j < len(p) && p[j] == 0 {
				j++
			}
			for n := j - i; n > 0; n -= 64 {
				b = append(b, nuls[:6*min(n, 64)]...)
			}
			i, start = j, j
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, p[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(p[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, p[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, p[start:]...)
	return append(b, '"')
}

// incompleteTail is how many bytes at the end of p begin a UTF-8 sequence
// that the next bytes may complete.
func incompleteTail(p []byte) int {
	for k := 1; k <= 3 && k <= len(p); k++ {
		c := p[len(p)-k]
		if c&0xC0 == 0x80 {
			continue // a continuation byte: look further back
		}
		need := 0
		switch {
		case c&0xE0 == 0xC0:
			need = 2
		case c&0xF0 == 0xE0:
			need = 3
		case c&0xF8 == 0xF0:
			need = 4
		}
		if need > k {
			return k
		}
		return 0
	}
	return 0
}
