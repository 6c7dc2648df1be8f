package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/registry"
)

func colored(id, color string, st registry.Status) registry.Instance {
	i := inst(id, "web", 1, st)
	i.Color = color
	return i
}

func TestPreviewIdleColor(t *testing.T) {
	up, oos := registry.StatusUp, registry.StatusOutOfService
	tests := []struct {
		desc   string
		insts  []registry.Instance
		idle   string   // the color the preview serves, "" for none
		ids    []string // its endpoints
		reason previewReason
	}{
		{desc: "green is idle while blue is live", insts: []registry.Instance{colored("b1", "blue", up), colored("b2", "blue", up), colored("g1", "green", oos), colored("g2", "green", oos)},
			idle: "green", ids: []string{"g1", "g2"}},
		{desc: "blue is idle once green is live", insts: []registry.Instance{colored("b1", "blue", oos), colored("g1", "green", up)},
			idle: "blue", ids: []string{"b1"}},
		{desc: "DOWN and STARTING instances of the idle color are never routed", insts: []registry.Instance{colored("b1", "blue", up), colored("g1", "green", registry.StatusDown), colored("g2", "green", oos), colored("g3", "green", registry.StatusStarting)},
			idle: "green", ids: []string{"g2"}},
		{desc: "an OUT_OF_SERVICE instance of the live color is not previewed", insts: []registry.Instance{colored("b1", "blue", up), colored("b2", "blue", oos), colored("g1", "green", oos)},
			idle: "green", ids: []string{"g1"}},
		{desc: "a switch in flight has no idle color", insts: []registry.Instance{colored("b1", "blue", up), colored("g1", "green", up), colored("g2", "green", oos)},
			reason: previewSwitching},
		{desc: "no live color means no idle color", insts: []registry.Instance{colored("b1", "blue", oos), colored("g1", "green", oos)},
			reason: previewNoLive},
		{desc: "no instance at all means no idle color", reason: previewNoLive},
		{desc: "an idle color with no OUT_OF_SERVICE instance has nothing to preview", insts: []registry.Instance{colored("b1", "blue", up), colored("g1", "green", registry.StatusDown)},
			idle: "green", reason: previewNoIdle},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			table := newTable([]Route{{Prefix: "/", Service: "web"}}, map[string]registry.Snapshot{"web": snapOf(3, tt.insts...)}, true)
			p, _ := table.Lookup("/")
			v := p.byColor()
			c, err := v.idle("web")
			if colorLabels[c] != tt.idle {
				t.Fatalf("idle color = %q, want %q (err %v)", colorLabels[c], tt.idle, err)
			}
			if tt.ids == nil {
				var pe *previewError
				if !errors.As(err, &pe) || pe.reason != tt.reason {
					t.Fatalf("err = %v, want reason %d", err, tt.reason)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if got := ids(v.pools[c]); !slices.Equal(got, tt.ids) {
				t.Fatalf("idle pool = %v, want %v", got, tt.ids)
			}
		})
	}
}

func TestStandbyLeavesLivePoolsAlone(t *testing.T) {
	insts := []registry.Instance{colored("b1", "blue", registry.StatusUp), colored("b2", "blue", registry.StatusUp), colored("g1", "green", registry.StatusOutOfService)}
	routes := []Route{{Prefix: "/", Service: "web"}}
	plain := NewTable(routes, map[string]registry.Snapshot{"web": snapOf(1, insts...)})
	kept := newTable(routes, map[string]registry.Snapshot{"web": snapOf(1, insts...)}, true)
	pp, _ := plain.Lookup("/")
	kp, _ := kept.Lookup("/")
	if !slices.Equal(ids(pp), ids(kp)) || !slices.Equal(ids(kp), []string{"b1", "b2"}) {
		t.Fatalf("live pool with standby = %v, without = %v; want [b1 b2] both", ids(kp), ids(pp))
	}
	if len(pp.standby) != 0 || len(kp.standby) != 1 {
		t.Fatalf("standby = %d without, %d with; want 0 and 1", len(pp.standby), len(kp.standby))
	}
	// A rebuild in which only the standby instances are the same shares
	// their list, as it shares the UP one.
	next := kept.with("web", snapOf(2, append(slices.Clone(insts), colored("b3", "blue", registry.StatusUp))...))
	np, _ := next.Lookup("/")
	if &np.standby[0] != &kp.standby[0] || np.standby[0] != kp.standby[0] {
		t.Fatal("an unchanged standby list was copied, not shared")
	}
}

// previewGateway runs a gateway with a live and a preview listener on
// loopback, following c, trusting 127.0.0.2 as a proxy, and returns the
// two base URLs.
func previewGateway(t *testing.T, c *registry.Client, noEngine bool) (*Gateway, string, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log, _ := quietLog()
	trusted := []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
	g, err := New(Config{ID: "gw", Listen: ln.Addr().String(), PreviewListen: pln.Addr().String(), Routes: parseRoutes(t, "/=web"),
		Source: c, Log: log, TrustedProxies: trusted, NoEngine: noEngine, ReportInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.ServeListeners(ctx, Listeners{Plain: ln, Preview: pln}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway: %v", err)
		}
	})
	return g, "http://" + ln.Addr().String(), "http://" + pln.Addr().String()
}

// fromAddr is a client whose connections come from ip, a loopback address.
func fromAddr(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: 10 * time.Second}
}

type answer struct {
	code           int
	body, preview  string
	contentType    string
	upstreamHeader string // the Switchyard-Color the instance saw
}

func ask(t *testing.T, hc *http.Client, url string, color ...string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range color {
		req.Header.Add(colorHeader, c)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{code: resp.StatusCode, body: strings.TrimSpace(string(b)), preview: resp.Header.Get(previewHeader),
		contentType: resp.Header.Get("Content-Type"), upstreamHeader: resp.Header.Get("X-Saw-Color")}
}

func registerColored(t *testing.T, c *registry.Client, id, color string, st registry.Status) {
	t.Helper()
	b := newBackend(t, id, func(w http.ResponseWriter, r *http.Request) {
		// The instance tells what Switchyard-Color reached it, if any.
		w.Header().Set("X-Saw-Color", strings.Join(r.Header.Values(colorHeader), ","))
		_, _ = io.WriteString(w, id)
	})
	host, port := splitHostPort(t, b.addr())
	if err := c.Register(context.Background(), registry.Instance{ID: id, Service: "web", Color: color, Address: host, Port: port, Status: st}); err != nil {
		t.Fatal(err)
	}
}

func TestPreviewListenerAndColorHeader(t *testing.T) {
	for _, mode := range []struct {
		desc     string
		noEngine bool
	}{{"with the engine", false}, {"with net/http only", true}} {
		t.Run(mode.desc, func(t *testing.T) { testPreview(t, mode.noEngine) })
	}
}

func testPreview(t *testing.T, noEngine bool) {
	c := startRegistry(t)
	registerColored(t, c, "blue-1", "blue", registry.StatusUp)
	registerColored(t, c, "blue-2", "blue", registry.StatusUp)
	registerColored(t, c, "green-1", "green", registry.StatusOutOfService)
	registerColored(t, c, "green-2", "green", registry.StatusOutOfService)
	g, live, preview := previewGateway(t, c, noEngine)
	waitApplied(t, g, "web", currentIndex(t, c, "web"))
	client, proxy := fromAddr("127.0.0.1"), fromAddr("127.0.0.2")

	t.Run("preview traffic reaches only the idle color", func(t *testing.T) {
		seen := map[string]int{}
		for range 10 {
			a := ask(t, client, preview+"/")
			if a.code != http.StatusOK || !strings.HasPrefix(a.body, "green-") || a.preview != "green" {
				t.Fatalf("preview answer = %+v; want 200 from green with Switchyard-Preview: green", a)
			}
			seen[a.body]++
		}
		if len(seen) != 2 {
			t.Fatalf("preview answers by instance = %v; want both green instances, round-robin", seen)
		}
	})
	t.Run("live traffic reaches only the live color", func(t *testing.T) {
		for range 10 {
			a := ask(t, client, live+"/")
			if a.code != http.StatusOK || !strings.HasPrefix(a.body, "blue-") || a.preview != "" {
				t.Fatalf("live answer = %+v; want 200 from blue without Switchyard-Preview", a)
			}
		}
	})
	t.Run("a trusted proxy sends a request to a color with the header, which is stripped", func(t *testing.T) {
		for range 4 {
			a := ask(t, proxy, live+"/", "green")
			if a.code != http.StatusOK || !strings.HasPrefix(a.body, "green-") || a.preview != "green" || a.upstreamHeader != "" {
				t.Fatalf("answer = %+v; want 200 from green, Switchyard-Preview: green, no header upstream", a)
			}
		}
		if a := ask(t, proxy, live+"/", "Blue"); a.code != http.StatusOK || !strings.HasPrefix(a.body, "blue-") {
			t.Fatalf("answer to Switchyard-Color: Blue = %+v; want 200 from blue", a)
		}
	})
	t.Run("anyone else's header is ignored and stripped", func(t *testing.T) {
		for range 4 {
			a := ask(t, client, live+"/", "green")
			if a.code != http.StatusOK || !strings.HasPrefix(a.body, "blue-") || a.preview != "" || a.upstreamHeader != "" {
				t.Fatalf("answer = %+v; want 200 from blue, no Switchyard-Preview, no header upstream", a)
			}
		}
		if a := ask(t, client, live+"/", "purple"); a.code != http.StatusOK || !strings.HasPrefix(a.body, "blue-") {
			t.Fatalf("untrusted bad value: answer = %+v; want 200 from blue", a)
		}
	})
	t.Run("the preview listener ignores and strips the header", func(t *testing.T) {
		a := ask(t, proxy, preview+"/", "blue")
		if a.code != http.StatusOK || !strings.HasPrefix(a.body, "green-") || a.upstreamHeader != "" {
			t.Fatalf("answer = %+v; want 200 from green, no header upstream", a)
		}
	})
	t.Run("a bad value from a trusted proxy gets 400", func(t *testing.T) {
		for _, v := range [][]string{{"purple"}, {""}, {"blue", "green"}} {
			a := ask(t, proxy, live+"/", v...)
			if a.code != http.StatusBadRequest || !strings.Contains(a.body, "Switchyard-Color must be given once, as blue or green") {
				t.Fatalf("Switchyard-Color %q: answer = %+v; want 400 naming the header", v, a)
			}
		}
	})

	// Every request above was check traffic but the ten live ones, two
	// ignored-header ones and the untrusted bad value ones: the figures
	// the controller compares colors by know only of those.
	t.Run("check traffic is counted apart", func(t *testing.T) {
		var blue, green uint64
		for _, ct := range g.metrics.colors() {
			switch ct.Color {
			case "blue":
				blue += ct.Requests
			case "green":
				green += ct.Requests
			}
		}
		if blue != 15 || green != 0 {
			t.Errorf("per-color report: blue %d, green %d requests; want 15 and 0", blue, green)
		}
		var byInstance uint64
		for id, tr := range g.traffic() {
			if strings.HasPrefix(id, "green-") {
				t.Errorf("instance traffic counts %s: %+v", id, tr)
			}
			byInstance += tr.Requests
		}
		if byInstance != 15 {
			t.Errorf("instance traffic: %d requests; want 15", byInstance)
		}
		if n := previewCount(t, g, "web", "2xx", "green"); n != 15 {
			t.Errorf("preview requests 2xx to green = %v; want 15", n)
		}
		if n := previewCount(t, g, "web", "2xx", "blue"); n != 1 {
			t.Errorf("preview requests 2xx to blue = %v; want 1", n)
		}
		if n := previewCount(t, g, "web", "4xx", ""); n != 3 {
			t.Errorf("preview requests 4xx without a color = %v; want 3", n)
		}
	})

	t.Run("a switch in flight has no idle color to preview", func(t *testing.T) {
		waitApplied(t, g, "web", setStatus(t, c, "green-1", registry.StatusUp))
		a := ask(t, client, preview+"/")
		if a.code != http.StatusServiceUnavailable || !strings.Contains(a.body, "UP instances of both blue and green") ||
			!strings.HasPrefix(a.contentType, "text/plain") {
			t.Fatalf("answer = %+v; want a plain-text 503 saying both colors are UP", a)
		}
		// The header still reaches green, UP and OUT_OF_SERVICE alike.
		seen := map[string]bool{}
		for range 4 {
			seen[ask(t, proxy, live+"/", "green").body] = true
		}
		if !seen["green-1"] || !seen["green-2"] || len(seen) != 2 {
			t.Fatalf("Switchyard-Color: green reached %v; want green-1 and green-2", seen)
		}
	})
	t.Run("after the flip the preview serves blue", func(t *testing.T) {
		setStatus(t, c, "green-2", registry.StatusUp)
		setStatus(t, c, "blue-1", registry.StatusOutOfService)
		waitApplied(t, g, "web", setStatus(t, c, "blue-2", registry.StatusOutOfService))
		for range 6 {
			if a := ask(t, client, preview+"/"); a.code != http.StatusOK || !strings.HasPrefix(a.body, "blue-") || a.preview != "blue" {
				t.Fatalf("preview answer = %+v; want 200 from blue", a)
			}
			if a := ask(t, client, live+"/"); a.code != http.StatusOK || !strings.HasPrefix(a.body, "green-") {
				t.Fatalf("live answer = %+v; want 200 from green", a)
			}
		}
	})
	t.Run("an idle color without an instance gets 503", func(t *testing.T) {
		setStatus(t, c, "blue-1", registry.StatusDown)
		waitApplied(t, g, "web", setStatus(t, c, "blue-2", registry.StatusDown))
		a := ask(t, client, preview+"/")
		if a.code != http.StatusServiceUnavailable || a.body != `no instance of the idle color to preview: service "web" has no OUT_OF_SERVICE instance of blue (green is live)` || a.preview != "blue" {
			t.Fatalf("answer = %+v; want 503 naming the idle color", a)
		}
		if a := ask(t, proxy, live+"/", "blue"); a.code != http.StatusServiceUnavailable || !strings.Contains(a.body, "no UP or OUT_OF_SERVICE instance of color blue") {
			t.Fatalf("Switchyard-Color: blue with no blue instance: answer = %+v; want 503", a)
		}
	})
	t.Run("no live color means no preview", func(t *testing.T) {
		setStatus(t, c, "green-1", registry.StatusOutOfService)
		waitApplied(t, g, "web", setStatus(t, c, "green-2", registry.StatusOutOfService))
		a := ask(t, client, preview+"/")
		if a.code != http.StatusServiceUnavailable || !strings.Contains(a.body, "no UP instance of either color") {
			t.Fatalf("answer = %+v; want 503 saying neither color is live", a)
		}
	})
}

// previewCount reads switchyard_gateway_preview_requests_total for
// service, code and color as a scrape would; 0 when absent.
func previewCount(t *testing.T, g *Gateway, service, code, color string) float64 {
	t.Helper()
	mfs, err := g.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"service": service, "code": code, "color": color}
	for _, mf := range mfs {
		if mf.GetName() != "switchyard_gateway_preview_requests_total" {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want[lp.GetName()] != lp.GetValue() {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func TestPreviewNeedsItsConfig(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log, _ := quietLog()
	g, err := New(Config{Routes: parseRoutes(t, "/=web"), Source: newFakeSource(), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	err = g.ServeListeners(context.Background(), Listeners{Preview: ln})
	if err == nil || !strings.Contains(err.Error(), "PreviewListen") {
		t.Fatalf("ServeListeners = %v; want an error naming PreviewListen", err)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("the refused listener is still open: %v", err)
	}
}

func TestAccessLogMarksCheckTraffic(t *testing.T) {
	e := AccessEntry{Time: time.Unix(0, 0), Method: "GET", Path: "/", Proto: "HTTP/1.1", Status: 200, Service: "web", Color: "green"}
	if line := string(appendAccessJSON(nil, &e)); strings.Contains(line, "preview") {
		t.Fatalf("live JSON line mentions preview: %s", line)
	}
	if line := string(appendAccessCommon(nil, &e)); strings.Contains(line, "preview") {
		t.Fatalf("live common line mentions preview: %s", line)
	}
	e.Preview = true
	var decoded map[string]any
	if err := json.Unmarshal(appendAccessJSON(nil, &e), &decoded); err != nil || decoded["preview"] != true {
		t.Fatalf("preview JSON line = %v (%v); want \"preview\":true", decoded, err)
	}
	if line := string(appendAccessCommon(nil, &e)); !strings.HasSuffix(line, " preview=1\n") {
		t.Fatalf("preview common line = %q; want it to end with preview=1", line)
	}
}
