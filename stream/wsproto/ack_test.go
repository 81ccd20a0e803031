package wsproto

import (
	"errors"
	"strconv"
	"testing"
)

func TestParseAck(t *testing.T) {
	for in, want := range map[string]uint64{"0": 0, "1048576": 1 << 20, "18446744073709551615": 1<<64 - 1} {
		if got, err := ParseAck([]byte(in)); err != nil || got != want {
			t.Errorf("ParseAck(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "-1", "1e6", " 1", "18446744073709551616", "0x10", "123456789012345678901"} {
		if _, err := ParseAck([]byte(in)); !errors.Is(err, ErrBadAck) {
			t.Errorf("ParseAck(%q) = %v, want ErrBadAck", in, err)
		}
	}
}

// FuzzParseAck: no panic, ErrBadAck only, and accepted values round-trip.
func FuzzParseAck(f *testing.F) {
	f.Add([]byte("1048576"))
	f.Add([]byte(""))
	f.Add([]byte("99999999999999999999"))
	f.Fuzz(func(t *testing.T, p []byte) {
		n, err := ParseAck(p)
		if err != nil {
			if !errors.Is(err, ErrBadAck) {
				t.Fatalf("undeclared error %v", err)
			}
			return
		}
		if back, err := ParseAck(strconv.AppendUint(nil, n, 10)); err != nil || back != n {
			t.Fatalf("%q -> %d -> %d %v", p, n, back, err)
		}
	})
}
