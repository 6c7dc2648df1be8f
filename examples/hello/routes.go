package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
)

// app is what every answer says about the instance.
type app struct {
	service, color, version, id string
	// shutdown ends when the server shuts down, after the drain.
	shutdown context.Context
	// failRatio of the answers are 500s, each latency late (--fail-ratio,
	// --latency); served counts the answers, to spread the failures evenly.
	failRatio float64
	latency   time.Duration
	served    atomic.Uint64
}

// rehearse makes the instance a bad release on demand: every answer comes
// latency late, and failRatio of them are 500s, evenly spread (with 0.25,
// every fourth), so that a test knows how many to expect. The SDK's own
// endpoints come before it, so health checks pass: a release that is
// healthy by its checks and bad for its users.
func (a *app) rehearse(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if a.latency > 0 {
			select {
			case <-time.After(a.latency):
			case <-c.Request().Context().Done():
				return c.Request().Context().Err()
			}
		}
		if a.failRatio > 0 {
			n := a.served.Add(1)
			if math.Floor(float64(n)*a.failRatio) > math.Floor(float64(n-1)*a.failRatio) {
				return c.JSON(http.StatusInternalServerError, map[string]any{"error": "failing on purpose (--fail-ratio)", "color": a.color})
			}
		}
		return next(c)
	}
}

// maxDelay caps /delay/{ms}, well inside any proxy's patience.
const maxDelay = 120 * time.Second

func (a *app) routes(e *echo.Echo) {
	e.GET("/*", a.who)
	e.POST("/*", a.digest)
	e.GET("/ws", a.socket)
	e.GET("/sse", a.events)
	e.GET("/delay/:ms", a.delay)
	e.Any("/status/:code", a.status)
}

func (a *app) identity() map[string]any {
	return map[string]any{"service": a.service, "color": a.color, "instance": a.id, "version": a.version}
}

func (a *app) fail(c echo.Context, format string, args ...any) error {
	return c.JSON(http.StatusBadRequest, map[string]string{"error": fmt.Sprintf(format, args...), "color": a.color})
}

func (a *app) who(c echo.Context) error {
	// ?sleep=50ms holds the request, to show draining in flight.
	if d, err := time.ParseDuration(c.QueryParam("sleep")); err == nil && d > 0 {
		select {
		case <-time.After(min(d, 10*time.Second)):
		case <-c.Request().Context().Done():
		}
	}
	return c.JSON(http.StatusOK, a.identity())
}

// digest echoes the size and SHA-256 of the body, so a load can prove
// that a body crossed the gateway intact.
func (a *app) digest(c echo.Context) error {
	h := sha256.New()
	n, err := io.Copy(h, http.MaxBytesReader(c.Response(), c.Request().Body, 1<<20))
	if err != nil {
		return echo.NewHTTPError(http.StatusRequestEntityTooLarge, "body over 1 MiB or unreadable: "+err.Error())
	}
	body := a.identity()
	body["bytes"], body["sha256"] = n, hex.EncodeToString(h.Sum(nil))
	return c.JSON(http.StatusOK, body)
}

// delay answers after the given milliseconds, to rehearse slow upstreams
// and requests in flight during a switch. It is not cut short by the
// shutdown: a drain is meant to let it finish.
func (a *app) delay(c echo.Context) error {
	ms, err := strconv.Atoi(c.Param("ms"))
	if err != nil || ms < 0 {
		return a.fail(c, "delay must be a whole number of milliseconds, not %q", c.Param("ms"))
	}
	d := min(time.Duration(ms)*time.Millisecond, maxDelay)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.Request().Context().Done():
		return nil // nobody is left to answer
	}
	body := a.identity()
	body["delay_ms"] = d.Milliseconds()
	return c.JSON(http.StatusOK, body)
}

// status answers any method with the status code asked for, to rehearse
// an upstream's errors.
func (a *app) status(c echo.Context) error {
	code, err := strconv.Atoi(c.Param("code"))
	if err != nil || code < 100 || code > 599 {
		return a.fail(c, "status must be a code from 200 to 599, not %q", c.Param("code"))
	}
	if code < 200 {
		// net/http sends 1xx codes as interim responses, never as the answer.
		return a.fail(c, "status %d is informational and cannot be the final answer", code)
	}
	if code == http.StatusNoContent || code == http.StatusNotModified {
		return c.NoContent(code) // these may not carry a body
	}
	body := a.identity()
	body["status"] = code
	return c.JSON(code, body)
}
