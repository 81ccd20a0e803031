package main

import (
	"runtime/debug"
	"testing"
)

// TestTuneGC: the gateway collects at gcPercent unless GOGC is set.
func TestTuneGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	tuneGC(func(k string) (string, bool) { return "200", k == "GOGC" })
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("with GOGC set, the percent became %d", got)
	}
	tuneGC(noEnv)
	if got := debug.SetGCPercent(100); got != gcPercent {
		t.Errorf("without GOGC, the percent is %d, want %d", got, gcPercent)
	}
}
