package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/labstack/echo/v4"
	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/zkstate"
)

// Board is what the dashboard shows: the state every controller reads
// from ZooKeeper and the registry, the history of switches, and each
// instance's traffic as the gateways report it. GET /v1/board returns it,
// and GET /v1/events streams it as it changes.
type Board struct {
	At time.Time `json:"at"`
	// Controller is the controller that serves the page, and Leading
	// whether it leads: a follower serves the same state.
	Controller string       `json:"controller"`
	Leading    bool         `json:"leading"`
	View       zkstate.View `json:"view"`
	// History is the newest switches first, at most boardHistory.
	History []zkstate.Switch `json:"history"`
	// Traffic is each instance's rates over the last interval, summed
	// over the gateways.
	Traffic map[string]Rate `json:"traffic"`
	// Progress is how far the switch in the view has come; nil with no
	// switch.
	Progress *Progress `json:"progress,omitempty"`
}

// Progress counts a switch's moves: those done (or skipped), and all,
// done plus those still to make from the instances' statuses now.
type Progress struct {
	Done  int `json:"done"`
	Total int `json:"total"`
}

// progressOf measures the switch of v. A finished switch is complete; one
// in flight has done the steps its record settled, and has to move the
// members that are not where its target puts them yet, as Plan counts
// them.
func progressOf(v zkstate.View) *Progress {
	rec := v.Switch
	if rec == nil {
		return nil
	}
	done := rec.StepsTotal - len(rec.Steps) // older steps the record dropped were settled
	for _, s := range rec.Steps {
		if s.State != zkstate.StepPending {
			done++
		}
	}
	if rec.Phase.Finished() {
		return &Progress{Done: done, Total: done}
	}
	var members []Member
	for _, in := range v.Instances {
		if in.InZK && in.Registry && in.Quarantine == "" {
			members = append(members, Member{ID: in.ID, Service: in.Service, Color: in.Color, Status: in.Status})
		}
	}
	ups, outs := Plan(rec.Target, members)
	return &Progress{Done: done, Total: done + len(ups) + len(outs)}
}

// Rate is an instance's traffic through all gateways.
type Rate struct {
	RPS       float64 `json:"rps"`
	ErrorRate float64 `json:"error_rate"` // errors per request, 0 to 1
}

const (
	boardHistory = 20
	// boardTick is how often an open dashboard rereads the registry and
	// the gateways' traffic; ZooKeeper's changes come at once by watch.
	boardTick = time.Second
	// boardMinGap spaces rebuilds, so that a burst of changes costs one.
	boardMinGap = 100 * time.Millisecond
	// boardPing keeps an idle event stream open through proxies.
	boardPing = 15 * time.Second
	// maxActionBody bounds the body of POST /v1/switch.
	maxActionBody = 1 << 10
)

// board builds the Board while at least one page follows it, and hands
// each new one to the pages.
type board struct {
	c       *Controller
	watches sync.Once
	poke    chan struct{} // a watched node changed

	mu      sync.Mutex
	subs    map[chan []byte]struct{}
	running bool
	last    []byte
	// prev is each gateway's newest report, by gateway id.
	prev map[string]gatewaySample
}

func newBoard(c *Controller) *board {
	return &board{c: c, poke: make(chan struct{}, 1), subs: map[chan []byte]struct{}{}}
}

// subscribe adds a page; it receives the current board at once, then
// every change. Only the newest board waits in the channel: a slow page
// skips boards, never blocks the others.
func (b *board) subscribe(ctx context.Context) (chan []byte, func()) {
	b.watches.Do(func() { b.watchZK(ctx) })
	ch := make(chan []byte, 1)
	b.mu.Lock()
	b.subs[ch] = struct{}{}
	if b.last != nil {
		ch <- b.last
	}
	if !b.running {
		b.running = true
		go b.run()
	}
	b.mu.Unlock()
	return ch, func() {
		b.mu.Lock()
		delete(b.subs, ch)
		b.mu.Unlock()
	}
}

// run rebuilds the board on each change and tick until no page follows.
func (b *board) run() {
	tick := time.NewTicker(boardTick)
	defer tick.Stop()
	for {
		built := time.Now()
		next := b.build(true)
		b.mu.Lock()
		if len(b.subs) == 0 {
			b.running, b.last, b.prev = false, nil, nil
			b.mu.Unlock()
			return
		}
		if !bytes.Equal(next, b.last) {
			b.last = next
			for ch := range b.subs {
				select {
				case <-ch:
				default:
				}
				ch <- next
			}
		}
		b.mu.Unlock()
		select {
		case <-b.poke:
		case <-tick.C:
		}
		time.Sleep(time.Until(built.Add(boardMinGap)))
	}
}

// build reads the board and encodes it. Only the board's own loop counts
// rates, so that a GET /v1/board between two of its reads cannot shorten
// the interval they are taken over.
func (b *board) build(withRates bool) []byte {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c := b.c
	bd := Board{At: time.Now().UTC(), Controller: c.cfg.ID, Leading: c.Leading(),
		View: zkstate.ReadView(ctx, c.conn, c.paths, c.cfg.Registry)}
	h, err := zkstate.ReadHistory(c.conn, c.paths, boardHistory)
	if err != nil {
		bd.View.Errors = append(bd.View.Errors, "read history: "+err.Error())
	}
	bd.History = h
	if bd.History == nil {
		bd.History = []zkstate.Switch{}
	}
	bd.Progress = progressOf(bd.View)
	bd.Traffic = map[string]Rate{}
	if withRates {
		bd.Traffic = b.rates(bd.View.Gateways)
	}
	// The counts made the rates; the page needs no more of them, nor the
	// per-color latency buckets the analysis reads.
	for i := range bd.View.Gateways {
		bd.View.Gateways[i].Traffic, bd.View.Gateways[i].Colors = nil, nil
	}
	out, err := json.Marshal(bd)
	if err != nil {
		c.log.WithError(err).Error("encode the dashboard's board")
		return []byte(`{}`)
	}
	return out
}

// rates turns the gateways' cumulative counts into rates: for each
// gateway, from its two newest reports that differ, over the time between
// them by its own clock, so that how often the board reads them does not
// matter. A count that went down started again; its rate waits for the
// next report.
func (b *board) rates(gws []registry.GatewayReport) map[string]Rate {
	b.mu.Lock()
	defer b.mu.Unlock()
	next := make(map[string]gatewaySample, len(gws))
	type sum struct{ rps, errs float64 }
	sums := map[string]sum{}
	for _, gw := range gws {
		s, ok := b.prev[gw.ID]
		if !ok || !gw.At.Equal(s.at) {
			s = gatewaySample{at: gw.At, counts: gw.Traffic, rps: map[string][2]float64{}}
			if prev, ok := b.prev[gw.ID]; ok && gw.At.After(prev.at) {
				secs := gw.At.Sub(prev.at).Seconds()
				for id, t := range gw.Traffic {
					p, ok := prev.counts[id]
					if !ok || p.Requests > t.Requests || p.Errors > t.Errors {
						continue
					}
					s.rps[id] = [2]float64{float64(t.Requests-p.Requests) / secs, float64(t.Errors-p.Errors) / secs}
				}
			}
		}
		next[gw.ID] = s
		for id, r := range s.rps {
			x := sums[id]
			x.rps += r[0]
			x.errs += r[1]
			sums[id] = x
		}
	}
	b.prev = next
	out := make(map[string]Rate, len(sums))
	for id, x := range sums {
		r := Rate{RPS: x.rps}
		if x.rps > 0 {
			r.ErrorRate = x.errs / x.rps
		}
		out[id] = r
	}
	return out
}

// gatewaySample is one gateway's newest report as the board read it, with
// the rates taken against the one before.
type gatewaySample struct {
	at     time.Time
	counts map[string]registry.Traffic
	rps    map[string][2]float64 // requests and errors per second, by instance
}

// watchZK pokes the board whenever a node the page shows changes, with
// the controller's own re-arming watch (Controller.watchZK), so that
// watches never pile up in the client; they live as long as the
// controller's connection.
func (b *board) watchZK(ctx context.Context) {
	poke := func() {
		select {
		case b.poke <- struct{}{}:
		default:
		}
	}
	p := b.c.paths
	for _, path := range []string{p.ActiveColor(), p.Switch()} {
		go b.c.watchZK(ctx, poke, func() (<-chan zk.Event, error) {
			_, _, ev, err := b.c.conn.GetW(path)
			return ev, err
		})
	}
	for _, path := range []string{p.Leader(), p.History(), p.Color(zkstate.Blue), p.Color(zkstate.Green)} {
		go b.c.watchZK(ctx, poke, func() (<-chan zk.Event, error) {
			_, _, ev, err := b.c.conn.ChildrenW(path)
			return ev, err
		})
	}
}

// serveBoard adds the dashboard's routes: the page, its state, its event
// stream, and the two actions, which need the shared token.
func (c *Controller) serveBoard(ctx context.Context, e *echo.Echo) {
	b := newBoard(c)
	e.GET("/", pageHandler)
	e.GET("/dashboard.js", pageHandler)
	e.GET("/dashboard.css", pageHandler)
	e.GET("/v1/board", func(ec echo.Context) error {
		ec.Response().Header().Set("Cache-Control", "no-store")
		return ec.JSONBlob(http.StatusOK, b.build(false))
	})
	e.GET("/v1/events", func(ec echo.Context) error { return b.stream(ctx, ec) })
	e.POST("/v1/switch", c.switchAction)
	e.POST("/v1/rollback", c.switchAction)
	e.POST("/v1/abort", c.switchAction)
}

// stream sends the board as server-sent events, one "board" event per
// change, until the page or the controller goes.
func (b *board) stream(ctx context.Context, ec echo.Context) error {
	w := ec.Response()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no") // nginx in front must not hold events back
	w.WriteHeader(http.StatusOK)
	ch, stop := b.subscribe(ctx)
	defer stop()
	ping := time.NewTicker(boardPing)
	defer ping.Stop()
	rc := http.NewResponseController(w)
	for {
		var err error
		select {
		case <-ctx.Done():
			return nil
		case <-ec.Request().Context().Done():
			return nil
		case <-ping.C:
			_, err = io.WriteString(w, ": ping\n\n")
		case msg := <-ch:
			_, err = fmt.Fprintf(w, "event: board\ndata: %s\n\n", msg)
		}
		if err == nil {
			err = rc.Flush()
		}
		if err != nil {
			return nil // the page went away
		}
	}
}

// actionRequest is the body of POST /v1/switch.
type actionRequest struct {
	Color string `json:"color"`
}

// actionError is how the actions refuse: a reason a person can act on.
func actionError(ec echo.Context, code int, msg string) error {
	return ec.JSON(code, map[string]string{"error": msg})
}

// switchAction writes /active_color for a page's Switch (POST /v1/switch,
// {"color":"green"}) or Rollback (POST /v1/rollback: the other color than
// /active_color holds), as `switchyard switch` and `rollback` do. It needs
// the shared token as a bearer token, which a cross-site form cannot send,
// and a JSON body; anything else is refused and changes nothing.
func (c *Controller) switchAction(ec echo.Context) error {
	r := ec.Request()
	log := c.log.WithFields(logrus.Fields{"remote": r.RemoteAddr, "action": r.URL.Path})
	if !registry.TokenOK(r, c.cfg.Token) {
		why := "a token is required: Authorization: Bearer <SWITCHYARD_TOKEN>"
		if r.Header.Get("Authorization") != "" {
			why = "the token is wrong"
		}
		log.Warn("dashboard action refused: " + why)
		ec.Response().Header().Set("WWW-Authenticate", `Bearer realm="switchyard"`)
		return actionError(ec, http.StatusUnauthorized, why+"; nothing was changed")
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		return actionError(ec, http.StatusUnsupportedMediaType, "the body must be JSON (Content-Type: application/json); nothing was changed")
	}
	body, err := io.ReadAll(http.MaxBytesReader(ec.Response(), r.Body, maxActionBody))
	if err != nil {
		return actionError(ec, http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is over %d bytes; nothing was changed", maxActionBody))
	}
	var req actionRequest
	if len(bytes.TrimSpace(body)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return actionError(ec, http.StatusBadRequest, "the body is not a switch request ("+err.Error()+"); nothing was changed")
		}
	}
	// The peer's address, not X-Forwarded-For: anyone can write a header.
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	asker := "dashboard " + host
	color := req.Color
	if r.URL.Path == "/v1/abort" {
		if color != "" {
			return actionError(ec, http.StatusBadRequest, "an abort takes no color: it returns to the color before the switch; nothing was changed")
		}
		id, back, err := zkstate.Abort(c.conn, c.paths, c.cfg.ZKAuth, asker)
		if errors.Is(err, zkstate.ErrNothingToAbort) {
			return actionError(ec, http.StatusConflict, err.Error()+"; nothing was changed")
		}
		if err != nil {
			log.WithError(err).Warn("dashboard abort failed")
			return actionError(ec, http.StatusServiceUnavailable, err.Error())
		}
		log.WithFields(logrus.Fields{"switch": id, "target": back}).Warn("switch aborted from the dashboard")
		return ec.JSON(http.StatusAccepted, map[string]any{"switch": id, "target": back})
	}
	if r.URL.Path == "/v1/rollback" {
		if color != "" {
			return actionError(ec, http.StatusBadRequest, "a rollback takes no color: it switches to the other one; nothing was changed")
		}
		current, err := zkstate.ReadActiveColor(c.conn, c.paths)
		if errors.Is(err, zkstate.ErrBadColor) {
			return actionError(ec, http.StatusConflict, "cannot roll back: "+err.Error())
		}
		if err != nil {
			return actionError(ec, http.StatusServiceUnavailable, "cannot "+err.Error())
		}
		color = string(current.Other())
	}
	id, err := zkstate.RequestSwitch(c.conn, c.paths, c.cfg.ZKAuth, color)
	if errors.Is(err, zkstate.ErrBadColor) {
		return actionError(ec, http.StatusBadRequest, err.Error()+"; nothing was changed")
	}
	if err != nil {
		log.WithError(err).Warn("dashboard action failed")
		return actionError(ec, http.StatusServiceUnavailable, err.Error())
	}
	log = log.WithFields(logrus.Fields{"switch": id, "target": color})
	if err := zkstate.NoteRequest(c.conn, c.paths, c.cfg.ZKAuth, id, asker); err != nil {
		log.WithError(err).Warn("could not note who asked for the switch; switchyard history will show unknown")
	}
	log.Info("switch requested from the dashboard")
	return ec.JSON(http.StatusAccepted, map[string]any{"switch": id, "target": color})
}
