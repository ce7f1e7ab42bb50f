package push

import (
	"embed"
	"io/fs"
	"net/http"
)

// web holds the live page: plain HTML, CSS and JavaScript, embedded in
// the binary (no build step, nothing fetched from elsewhere).
//
//go:embed web
var web embed.FS

// pageFiles is web/ as the root of /live/.
var pageFiles, _ = fs.Sub(web, "web")

// servePage answers GET /: the live page. Its script opens
// /v1/spectate (with the page's own ?token=, if any) and reads /v1/map.
func servePage(w http.ResponseWriter, r *http.Request) {
	pageHeaders(w)
	http.ServeFileFS(w, r, pageFiles, "index.html")
}

// serveAssets answers GET /live/{file}: the page's script and style.
func serveAssets() http.Handler {
	files := http.StripPrefix("/live/", http.FileServerFS(pageFiles))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pageHeaders(w)
		files.ServeHTTP(w, r)
	})
}

// pageHeaders: the page loads only its own files and talks only to its
// own origin.
func pageHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'; script-src 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-cache")
}
