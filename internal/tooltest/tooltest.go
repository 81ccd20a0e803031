// Package tooltest holds what tests need of the tools they run besides
// Go: the rule for a missing tool, and the headless Chromium that browser
// tests drive (Debian's chromium package; make test installs it).
package tooltest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Chromium is where Debian installs it.
const Chromium = "/usr/bin/chromium"

// SkipOrFail skips the test, or fails it under make test
// (GATEWAY_REQUIRE_TOOLS set), where every tool must be there.
func SkipOrFail(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("GATEWAY_REQUIRE_TOOLS") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// StartChromium starts a headless Chromium with one tab of the given size and
// returns the tab's context; setup runs as the first actions (the ones
// that start the browser). Everything the browser does ends within four
// minutes, and the browser is stopped when the test ends. A missing
// Chromium skips the test (see SkipOrFail).
func StartChromium(t testing.TB, width, height int, setup ...chromedp.Action[chromedp.Void]) context.Context {
	t.Helper()
	if _, err := os.Stat(Chromium); err != nil {
		SkipOrFail(t, Chromium+" not found: make test installs it (apt-get install chromium)")
	}
	dataDir := t.TempDir() // removed after the browser has stopped (cleanups run last in, first out)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(Chromium),
		chromedp.NoSandbox,
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(dataDir),
		chromedp.WindowSize(width, height),
	)
	life, stop := context.WithTimeout(context.Background(), 4*time.Minute)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(life, opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // waits for the browser process to end
		stop()
	})
	// The first run starts the browser and must not have a shorter timeout
	// than the tab's life.
	if err := chromedp.Do(ctx, setup...); err != nil {
		t.Fatalf("start %s: %v", Chromium, err)
	}
	return ctx
}
