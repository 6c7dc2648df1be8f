package controller

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/switchyard/switchyard/zkstate"
)

// serveAPI serves the HTTP API: GET /v1/status, /metrics and /healthz,
// and the dashboard (serveBoard). Its two actions write /active_color, as
// `switchyard switch` does, and need the shared token; the leader switches
// from /active_color alone, whoever wrote it.
func (c *Controller) serveAPI(ctx context.Context, ln net.Listener) {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.GET("/v1/status", func(ec echo.Context) error {
		rctx, cancel := context.WithTimeout(ec.Request().Context(), 5*time.Second)
		defer cancel()
		return ec.JSONPretty(http.StatusOK, zkstate.ReadView(rctx, c.conn, c.paths, c.cfg.Registry), "  ")
	})
	e.GET("/metrics", echo.WrapHandler(c.metrics.handler()))
	c.serveBoard(ctx, e)
	e.GET("/healthz", func(ec echo.Context) error {
		return ec.JSON(http.StatusOK, map[string]any{"status": "ok", "id": c.cfg.ID, "leading": c.Leading()})
	})
	srv := &http.Server{Handler: e, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		c.log.WithError(err).Error("controller API stopped")
	}
}
