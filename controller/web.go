package controller

import (
	"embed"
	"net/http"
	"path"

	"github.com/labstack/echo/v4"
)

// web is the dashboard: one page, its script and its style, served from
// the binary. It loads nothing from anywhere else.
//
//go:embed web
var web embed.FS

// pageSecurity is set on every file of the page. Scripts and styles come
// only from the controller itself, the page cannot be framed (so no other
// site can trick a click on Switch), and nothing is sniffed.
var pageSecurity = map[string]string{
	"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
	"X-Content-Type-Options":  "nosniff",
	"Referrer-Policy":         "no-referrer",
	"Cache-Control":           "no-cache",
}

var pageTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
}

// pageHandler serves the dashboard's files: / is the page.
func pageHandler(ec echo.Context) error {
	name := ec.Request().URL.Path
	if name == "/" {
		name = "/index.html"
	}
	b, err := web.ReadFile("web" + name)
	if err != nil {
		return echo.ErrNotFound
	}
	h := ec.Response().Header()
	for k, v := range pageSecurity {
		h.Set(k, v)
	}
	return ec.Blob(http.StatusOK, pageTypes[path.Ext(name)], b)
}
