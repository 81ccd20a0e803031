// Package web serves the gateway's web terminal: a page built from src/
// with npm and esbuild (make web) into dist/, embedded in the binary.
package web

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

// dist holds the built page. A fresh clone has only dist/.keep until
// make web runs; the handler then says so.
//
//go:embed all:dist
var dist embed.FS

// ContentSecurityPolicy allows the page its own scripts, styles (xterm.js
// sets element styles), and connections to its own origin, and nothing
// else: no inline scripts, no framing. 'wasm-unsafe-eval' lets the
// recordings' player compile the terminal emulator it carries as
// WebAssembly; it allows no JavaScript eval.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; " +
	"connect-src 'self'; img-src 'self' data:; font-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Handler serves the page at / and its files under /assets/.
func Handler() http.Handler {
	root, _ := fs.Sub(dist, "dist") // cannot fail: dist is embedded
	files := http.FileServerFS(root)
	_, err := fs.Stat(root, "index.html")
	built := err == nil
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		if !built {
			h.Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("The web terminal is not built into this binary: build it with make build (npm and esbuild).\n" +
				"The API and the WebSocket endpoints work without it.\n"))
			return
		}
		if r.URL.Path == "/" {
			http.ServeFileFS(w, r, root, "index.html")
			return
		}
		if !strings.HasPrefix(r.URL.Path, "/assets/") {
			http.NotFound(w, r)
			return
		}
		files.ServeHTTP(w, r)
	})
}
