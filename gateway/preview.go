// The preview: the idle color of each service, served apart from live
// traffic.
//
// A second listener (Config.PreviewListen), as AWS CodeDeploy's test
// listener, serves through the same routes as the live one, but each
// service's idle color: the color without an UP instance while the other
// has some. It goes to that color's OUT_OF_SERVICE instances, which live
// traffic never reaches, and to nothing else: with no idle color (a switch
// in flight, or no live color at all) or no instance of it, it answers 503
// and says which. On the live listener, a trusted proxy (TrustedProxies)
// may send one request to a color's UP and OUT_OF_SERVICE instances with
// Switchyard-Color; from anyone else that header is stripped and ignored.
//
// Such check traffic is kept out of everything the controller compares
// the colors by (the per-color series, ColorTraffic, each instance's
// traffic) and counted in switchyard_gateway_preview_requests_total
// instead; its streams are not moved by switches.

package gateway

import (
	"fmt"
	"net/http"
	"strings"
)

const (
	// colorHeader asks for a color on the live listener.
	colorHeader = "Switchyard-Color"
	// previewHeader names the color a preview or colored answer came from.
	previewHeader = "Switchyard-Preview"
)

// colorView is a pool's endpoints by color: each color's UP and
// OUT_OF_SERVICE endpoints as a pool of its own, indexed as colorLabels,
// and how many of them are UP.
type colorView struct {
	pools [len(colorLabels)]*Pool
	up    [len(colorLabels)]int
}

// byColor is p's colorView, sorted out the first time a request asks; the
// live path never does. A table that does not keep standby endpoints has
// only the UP ones to sort.
func (p *Pool) byColor() *colorView {
	if v := p.colors.Load(); v != nil {
		return v
	}
	v := &colorView{}
	for ci := 1; ci < len(v.pools); ci++ {
		v.pools[ci] = &Pool{service: p.service, index: p.index, applied: p.applied, ready: p.ready}
	}
	for _, e := range p.eps {
		if ci := colorIndex(e.inst.Color); ci != 0 {
			v.pools[ci].eps = append(v.pools[ci].eps, e)
			v.up[ci]++
		}
	}
	for _, e := range p.standby {
		if ci := colorIndex(e.inst.Color); ci != 0 {
			v.pools[ci].eps = append(v.pools[ci].eps, e)
		}
	}
	if p.colors.CompareAndSwap(nil, v) {
		return v
	}
	return p.colors.Load()
}

// idle is the color the preview of service serves, as its colorLabels
// index, or why there is none.
func (v *colorView) idle(service string) (int, error) {
	blue, green := v.up[colorIndex("blue")], v.up[colorIndex("green")]
	var idle, live int
	switch {
	case blue > 0 && green > 0:
		return 0, &previewError{service: service, reason: previewSwitching}
	case blue == 0 && green == 0:
		return 0, &previewError{service: service, reason: previewNoLive}
	case blue == 0:
		idle, live = colorIndex("blue"), colorIndex("green")
	default:
		idle, live = colorIndex("green"), colorIndex("blue")
	}
	if v.pools[idle].Len() == 0 {
		return idle, &previewError{service: service, reason: previewNoIdle, color: colorLabels[idle], live: colorLabels[live]}
	}
	return idle, nil
}

// previewReason says why a preview or colored request has nowhere to go.
type previewReason uint8

const (
	previewSwitching previewReason = iota // both colors have UP instances
	previewNoLive                         // neither color has an UP instance
	previewNoIdle                         // the idle color has no OUT_OF_SERVICE instance
	previewNoColor                        // the color asked for has no UP or OUT_OF_SERVICE instance
)

// previewError is a 503 of the preview, or of a Switchyard-Color request.
type previewError struct {
	service     string
	reason      previewReason
	color, live string
}

func (e *previewError) Error() string {
	switch e.reason {
	case previewSwitching:
		return fmt.Sprintf("no idle color to preview: service %q has UP instances of both blue and green (a switch is in flight)", e.service)
	case previewNoLive:
		return fmt.Sprintf("no idle color to preview: service %q has no UP instance of either color, so neither is live", e.service)
	case previewNoIdle:
		return fmt.Sprintf("no instance of the idle color to preview: service %q has no OUT_OF_SERVICE instance of %s (%s is live)", e.service, e.color, e.live)
	default:
		return fmt.Sprintf("no UP or OUT_OF_SERVICE instance of color %s of service %q", e.color, e.service)
	}
}

// previewHandler serves the preview listener.
type previewHandler struct{ g *Gateway }

func (h previewHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.g.serve(w, r, true) }

// chooseColor decides where a request of the preview listener, or one
// that carries Switchyard-Color on the live listener, goes; it strips the
// header either way. It reports false when it answered the request
// itself. A live request whose header it ignores keeps ex.color 0.
func (g *Gateway) chooseColor(w http.ResponseWriter, r *http.Request, ex *exchange, ci *connInfo, preview bool) bool {
	asked, hasHeader := r.Header[colorHeader]
	if hasHeader {
		delete(r.Header, colorHeader)
	}
	if preview {
		c, err := ex.route.pool.byColor().idle(ex.route.Service)
		if c != 0 {
			ex.color = uint8(c)
			w.Header()[previewHeader] = []string{colorLabels[c]}
		}
		if err != nil {
			ex.err = err
			writePlain(w, http.StatusServiceUnavailable, err.Error())
			return false
		}
		return true
	}
	if peer, _ := peerOf(r, ci); !g.trusts(peer) {
		return true // a client cannot pick a color; it gets live routing
	}
	ex.check = true
	c := 0
	if len(asked) == 1 {
		c = colorIndex(strings.ToLower(strings.TrimSpace(asked[0])))
	}
	if c == 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%s must be given once, as blue or green; got %q", colorHeader, strings.Join(asked, ", ")))
		return false
	}
	ex.color = uint8(c)
	w.Header()[previewHeader] = []string{colorLabels[c]}
	if ex.route.pool.byColor().pools[c].Len() == 0 {
		err := &previewError{service: ex.route.Service, reason: previewNoColor, color: colorLabels[c]}
		ex.err = err
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return false
	}
	return true
}

// poolIn is the pool ex's request goes to in t: its service's, or, for a
// color it was sent to, that color's UP and OUT_OF_SERVICE endpoints. A
// preview request gets nil once its color is no longer idle in t (a
// switch began meanwhile): it must not reach a color going live.
func (ex *exchange) poolIn(t *Table) *Pool {
	p := t.pools[ex.route.Service]
	if ex.color == 0 || p == nil {
		return p
	}
	v := p.byColor()
	if ex.preview {
		if c, err := v.idle(ex.route.Service); err != nil || c != int(ex.color) {
			return nil
		}
	}
	return v.pools[ex.color]
}

// unavailable is why ex's pool in t has no endpoint to try.
func (ex *exchange) unavailable(t *Table) error {
	svc := ex.route.Service
	switch p := t.pools[svc]; {
	case ex.color == 0:
		return &noUpError{service: svc}
	case !ex.preview:
		return &previewError{service: svc, reason: previewNoColor, color: colorLabels[ex.color]}
	case p == nil:
		return &previewError{service: svc, reason: previewNoLive}
	default:
		c, err := p.byColor().idle(svc)
		switch {
		case err != nil:
			return err
		case c != int(ex.color):
			// The colors traded places since the request was matched.
			return &previewError{service: svc, reason: previewSwitching}
		}
		return &previewError{service: svc, reason: previewNoIdle, color: colorLabels[c], live: colorLabels[otherColor(c)]}
	}
}

// otherColor is the colorLabels index of the color that is not c.
func otherColor(c int) int { return len(colorLabels) - c }

// writePlain answers with msg as plain text: the preview's own answers are
// read by people and check scripts, not parsed.
func writePlain(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(msg + "\n"))
}
