package local

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/switchyard/switchyard/zkstate"
)

// dashboardOut is where the browser test leaves its screenshots:
// SWITCHYARD_TEST_OUTPUT, or bin/test-output in the checkout.
func dashboardOut(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("SWITCHYARD_TEST_OUTPUT")
	if dir == "" {
		root, err := RepoRoot()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(root, "bin", "test-output")
	}
	dir = filepath.Join(dir, "dashboard")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// browserDeps installs Chromium and axe-core through the project's script
// and returns axe-core's source.
func browserDeps(t *testing.T) string {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("bash", filepath.Join(root, "deployments", "install", "browser.sh")).Output()
	if err != nil {
		t.Fatalf("deployments/install/browser.sh: %v", err)
	}
	src, err := os.ReadFile(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	return string(src)
}

// follower returns the API of a controller that does not lead: the page
// must work on every controller, not only on the leader.
func follower(t *testing.T, c *Cluster) string {
	t.Helper()
	for _, api := range c.ControllerAPIs {
		res, err := http.Get(api + "/healthz")
		if err != nil {
			continue
		}
		var h struct{ Leading bool }
		err = json.NewDecoder(res.Body).Decode(&h)
		res.Body.Close()
		if err == nil && !h.Leading {
			return api
		}
	}
	t.Fatal("no controller is a follower")
	return ""
}

func text(sel string) string {
	return fmt.Sprintf(`((document.querySelector(%q) || {}).textContent || "")`, sel)
}

// waitJS polls expr in the page until it is true.
func waitJS(ctx context.Context, t *testing.T, expr, what string) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		ok, err := chromedp.Run(wctx, chromedp.Evaluate[bool](expr))
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		select {
		case <-wctx.Done():
			notice, _ := chromedp.Run(ctx, chromedp.Evaluate[string](text("#notice")))
			active, _ := chromedp.Run(ctx, chromedp.Evaluate[string](text("#active")))
			t.Fatalf("the page never showed %s (live color %q, notice %q)", what, active, notice)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func screenshot(ctx context.Context, t *testing.T, path string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// axeCheck runs axe-core's WCAG 2 A and AA rules on the page as it is now
// and fails on any violation, with the elements it names.
func axeCheck(ctx context.Context, t *testing.T, axe, when string) {
	t.Helper()
	loaded, err := chromedp.Run(ctx, chromedp.Evaluate[bool](axe+"\n;typeof axe === 'object'"))
	if err != nil || !loaded {
		t.Fatalf("load axe-core: %v", err)
	}
	type violation struct {
		ID, Impact, Help string
		Nodes            []struct{ Target []any }
	}
	run := `axe.run(document, {runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}).then(r => r.violations)`
	violations, err := chromedp.Run(ctx, chromedp.Evaluate[[]violation](run, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("axe.run: %v", err)
	}
	for _, v := range violations {
		var where []string
		for _, n := range v.Nodes {
			where = append(where, fmt.Sprint(n.Target...))
		}
		t.Errorf("accessibility (%s): %s [%s, %s]: %s", when, v.Help, v.ID, v.Impact, strings.Join(where, "; "))
	}
}

// TestDashboardInChromium drives the controller's page in headless
// Chromium: a zkCli flip shows at once without a reload, Switch without the
// token or with a wrong one changes nothing and says why, Switch with it
// switches, and the page passes axe-core's WCAG 2.1 AA rules at desktop and
// phone widths. It leaves screenshots of both widths in dashboardOut.
func TestDashboardInChromium(t *testing.T) {
	axe := browserDeps(t)
	c, _ := startCluster(t, builtin(), 2, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	load := StartLoad(ctx, c.GatewayURL+"/", 2, 5*time.Millisecond)
	defer load.Stop()
	out := dashboardOut(t)
	api := follower(t, c)

	actx, acancel := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath("chromium"),
		chromedp.NoSandbox, // the test may run as root, where Chromium's sandbox refuses to start
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"), // loopback only
	)...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	var (
		consoleMu     sync.Mutex
		consoleErrors []string
	)
	if err := chromedp.Listen(bctx, func(ev any) {
		if e, ok := ev.(*runtime.EventExceptionThrown); ok {
			consoleMu.Lock()
			consoleErrors = append(consoleErrors, fmt.Sprintf("%s (line %d)", e.ExceptionDetails.Text, e.ExceptionDetails.LineNumber))
			consoleMu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(bctx, chromedp.Navigate(api+"/")); err != nil {
		t.Fatal(err)
	}
	waitJS(bctx, t, text("#conn")+` === "live" && `+text("#active")+` === "blue"`, "blue live over the event stream")
	if me := evalString(bctx, t, text("#me")); !strings.HasSuffix(me, "(follower)") {
		t.Fatalf("this controller = %q, want a follower", me)
	}
	// The gateways' reports carry each instance's traffic.
	waitJS(bctx, t, `[...document.querySelectorAll(".c-blue .card dd")].some(d => / req\/s/.test(d.textContent) && !d.textContent.startsWith("0.0 "))`, "blue instances' request rates")

	// A flip with zkCli shows without a reload: the mark set now survives,
	// and the page notes when the live color changed.
	if _, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`window.__mark = 1; window.__shown = 0;
		new MutationObserver(() => { if (!window.__shown && document.getElementById("active").textContent === "green") window.__shown = Date.now(); })
			.observe(document.getElementById("active"), {childList: true, characterData: true, subtree: true}); true`)); err != nil {
		t.Fatal(err)
	}
	id, at, err := c.Flip(ctx, string(zkstate.Green))
	if err != nil {
		t.Fatal(err)
	}
	waitJS(bctx, t, `window.__shown > 0 && window.__mark === 1`, "green, without a reload")
	shown := time.UnixMilli(int64(evalFloat(bctx, t, `window.__shown`)))
	t.Logf("the zkCli write at %s showed on the page %s later", at.Format("15:04:05.000"), shown.Sub(at))
	if d := shown.Sub(at); d > time.Second {
		t.Errorf("the flip showed on the page %s after the write, want within 1s", d)
	}
	if _, err := c.WaitRecord(ctx, time.Minute, func(r zkstate.Switch) bool { return r.ID >= id && r.Phase.Finished() }); err != nil {
		t.Fatal(err)
	}
	waitJS(bctx, t, text("#switch-summary .phase")+` === "done" && `+text("#switch-summary")+`.includes("→ green") && document.querySelectorAll("#history tbody tr").length >= 1 && document.querySelector("#progress").value === document.querySelector("#progress").max`,
		"the switch done, complete, and in the history")
	waitJS(bctx, t, `document.querySelectorAll(".c-green .st-UP").length === 2 && document.querySelectorAll(".c-blue .st-OUT_OF_SERVICE").length === 2`, "green UP and blue OUT on the cards")
	waitJS(bctx, t, `[...document.querySelectorAll(".c-green .card dd")].some(d => / req\/s/.test(d.textContent) && !d.textContent.startsWith("0.0 "))`, "green instances' request rates")
	screenshot(bctx, t, filepath.Join(out, "desktop.png"))
	axeCheck(bctx, t, axe, "desktop")

	// Switch without a token: the controller refuses, the page says why.
	click := func(sel string) {
		t.Helper()
		if err := chromedp.Do(bctx, chromedp.Click(chromedp.CSS(sel))); err != nil {
			t.Fatalf("click %s: %v", sel, err)
		}
	}
	if err := chromedp.Do(bctx, chromedp.SetValue(chromedp.CSS("#target"), "blue")); err != nil {
		t.Fatal(err)
	}
	click("#switch")
	waitJS(bctx, t, `document.getElementById("token-dialog").open`, "the token dialog")
	axeCheck(bctx, t, axe, "token dialog")
	click("#token-ok")
	waitJS(bctx, t, text("#notice")+`.includes("a token is required")`, "why a switch without a token was refused")
	if !strings.Contains(evalString(bctx, t, text("#notice")), "nothing was changed") {
		t.Errorf("notice = %q, want it to say nothing was changed", evalString(bctx, t, text("#notice")))
	}
	click("#switch")
	waitJS(bctx, t, `document.getElementById("token-dialog").open`, "the token dialog")
	if err := chromedp.Do(bctx, chromedp.SendKeys(chromedp.CSS("#token"), "not-the-token-0123456789")); err != nil {
		t.Fatal(err)
	}
	click("#token-ok")
	waitJS(bctx, t, text("#notice")+`.includes("the token is wrong")`, "why a switch with a wrong token was refused")
	if got, _, err := c.ZKConn().Get("/active_color"); err != nil || string(got) != "green" {
		t.Fatalf("/active_color after refused clicks = %q %v, want green still", got, err)
	}

	// With the token, the click switches.
	click("#switch")
	waitJS(bctx, t, `document.getElementById("token-dialog").open`, "the token dialog")
	if err := chromedp.Do(bctx, chromedp.SendKeys(chromedp.CSS("#token"), c.opts.Token)); err != nil {
		t.Fatal(err)
	}
	click("#token-ok")
	waitJS(bctx, t, text("#notice")+`.includes("requested")`, "the switch requested")
	waitJS(bctx, t, text("#active")+` === "blue" && `+text("#switch-summary .phase")+` === "done" && `+text("#switch-summary")+`.includes("→ blue")`, "blue live and its switch done")
	if got, _, err := c.ZKConn().Get("/active_color"); err != nil || string(got) != "blue" {
		t.Fatalf("/active_color after a click with the token = %q %v, want blue", got, err)
	}
	rec, err := c.Record()
	if err != nil || rec.Target != zkstate.Blue || rec.Phase != zkstate.PhaseDone {
		t.Fatalf("record after the click = %+v %v, want done to blue", rec, err)
	}
	waitJS(bctx, t, `[...document.querySelectorAll("#history tbody tr")].some(r => r.textContent.includes("dashboard 127.0.0.1"))`, "the click in the history, asked by the dashboard")

	// A phone: one column, nothing wider than the screen.
	if err := chromedp.Do(bctx,
		chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(3), chromedp.EmulatePortrait, chromedp.EmulateMobile, chromedp.EmulateTouch),
		chromedp.Reload(),
	); err != nil {
		t.Fatal(err)
	}
	waitJS(bctx, t, text("#conn")+` === "live" && `+text("#active")+` === "blue"`, "the page at phone width")
	if w := evalFloat(bctx, t, `document.documentElement.scrollWidth - window.innerWidth`); w > 0 {
		t.Errorf("at phone width the page is %.0f px wider than the screen", w)
	}
	screenshot(bctx, t, filepath.Join(out, "phone.png"))
	axeCheck(bctx, t, axe, "phone")
	consoleMu.Lock()
	if len(consoleErrors) > 0 {
		t.Errorf("script errors on the page: %v", consoleErrors)
	}
	consoleMu.Unlock()
	assertServed(t, load.Stop(), "while the dashboard switched")
}

func evalString(ctx context.Context, t *testing.T, expr string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func evalFloat(ctx context.Context, t *testing.T, expr string) float64 {
	t.Helper()
	f, err := chromedp.Run(ctx, chromedp.Evaluate[float64](expr))
	if err != nil {
		t.Fatal(err)
	}
	return f
}
