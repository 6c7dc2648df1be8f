package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/coder/websocket"
	"github.com/labstack/echo/v4"
)

// greeting opens every stream, so a client knows which color it reached.
func (a *app) greeting() []byte {
	b, _ := json.Marshal(map[string]string{"color": a.color, "instance": a.id})
	return b
}

// socket greets, then echoes every message back as it came, text or
// binary, until the client leaves or the server shuts down; then it closes
// with 1001 (going away), so the client reconnects, to the other color.
func (a *app) socket(c echo.Context) error {
	// Any Origin is accepted: this echo holds no cookies and no
	// credentials, so a cross-site page gains nothing by opening it, and
	// behind a gateway the Origin a browser sends names the gateway's host,
	// not this instance's.
	conn, err := websocket.Accept(c.Response(), c.Request(), &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return nil // Accept has answered the request
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 20)
	stop := context.AfterFunc(a.shutdown, func() {
		_ = conn.Close(websocket.StatusGoingAway, "server shutting down")
	})
	defer stop()
	// The request's context must not be used once the connection is
	// hijacked; the connection itself ends the loop.
	ctx := context.WithoutCancel(c.Request().Context())
	if err := conn.Write(ctx, websocket.MessageText, a.greeting()); err != nil {
		return nil
	}
	for {
		typ, r, err := conn.Reader(ctx)
		if err != nil {
			return nil
		}
		w, err := conn.Writer(ctx, typ)
		if err != nil {
			return nil
		}
		if _, err := io.Copy(w, r); err != nil {
			return nil
		}
		if err := w.Close(); err != nil {
			return nil
		}
	}
}

// events streams Server-Sent Events: a hello, then a numbered tick every
// ?every= (default 1s, at least 10ms), until the client leaves or the
// server shuts down; then the response ends normally.
func (a *app) events(c echo.Context) error {
	every := time.Second
	if v := c.QueryParam("every"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return a.fail(c, "every must be a duration such as 250ms, not %q", v)
		}
		every = max(d, 10*time.Millisecond)
	}
	w := c.Response()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprintf(w, "event: hello\ndata: %s\n\n", a.greeting()); err != nil {
		return nil
	}
	w.Flush()
	t := time.NewTicker(every)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-t.C:
		case <-c.Request().Context().Done():
			return nil
		case <-a.shutdown.Done():
			return nil
		}
		if _, err := fmt.Fprintf(w, "event: tick\ndata: %d\n\n", n); err != nil {
			return nil
		}
		w.Flush()
	}
}
