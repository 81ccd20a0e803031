package wsproto

import (
	"errors"
	"slices"
	"testing"
)

func TestParseBool(t *testing.T) {
	tests := []struct {
		values []string
		want   bool
	}{
		{nil, false}, {[]string{""}, true}, {[]string{"1"}, true}, {[]string{"true"}, true},
		{[]string{"yes"}, true}, {[]string{"0"}, false}, {[]string{"false"}, false},
		{[]string{"FALSE"}, false}, {[]string{"0", "1"}, false}, {[]string{"1", "0"}, true},
	}
	for _, tc := range tests {
		if got := ParseBool(tc.values); got != tc.want {
			t.Errorf("ParseBool(%q) = %v, want %v", tc.values, got, tc.want)
		}
	}
}

func TestParsePorts(t *testing.T) {
	tests := []struct {
		name    string
		values  []string
		want    []uint16
		wantErr bool
	}{
		{"one", []string{"8080"}, []uint16{8080}, false},
		{"repeated", []string{"80", "90"}, []uint16{80, 90}, false},
		{"comma", []string{"80,90", "100"}, []uint16{80, 90, 100}, false},
		{"bounds", []string{"1,65535"}, []uint16{1, 65535}, false},
		{"missing", nil, nil, true},
		{"empty", []string{""}, nil, true},
		{"zero", []string{"0"}, nil, true},
		{"too big", []string{"65536"}, nil, true},
		{"negative", []string{"-1"}, nil, true},
		{"word", []string{"http"}, nil, true},
		{"trailing comma", []string{"80,"}, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePorts(tc.values)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error = %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil && !errors.Is(err, ErrBadPort) {
				t.Errorf("error %v is not ErrBadPort", err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("ports = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPortPrefix(t *testing.T) {
	for port, want := range map[uint16][2]byte{8080: {0x90, 0x1f}, 80: {0x50, 0x00}, 65535: {0xff, 0xff}} {
		if got := PortPrefix(port); got != want {
			t.Errorf("PortPrefix(%d) = %x, want %x", port, got, want)
		}
	}
	if b := V4Base64.AppendFrame(nil, DataChannel(0), []byte{0x90, 0x1f}); string(b) != "0kB8=" {
		t.Errorf("base64 port frame = %q, want 0kB8=", b)
	}
	if DataChannel(1) != 2 || ErrorChannel(1) != 3 {
		t.Errorf("channels of port 1: %d %d", DataChannel(1), ErrorChannel(1))
	}
}

// FuzzParsePorts: no panic, declared errors only, and every accepted port
// is in range.
func FuzzParsePorts(f *testing.F) {
	f.Add("8080")
	f.Add("80,90")
	f.Add("0")
	f.Add("65536,")
	f.Fuzz(func(t *testing.T, s string) {
		ports, err := ParsePorts([]string{s})
		if err != nil {
			if !errors.Is(err, ErrBadPort) {
				t.Fatalf("undeclared error %v", err)
			}
			return
		}
		for _, p := range ports {
			if p == 0 {
				t.Fatalf("accepted port 0 from %q", s)
			}
		}
	})
}
