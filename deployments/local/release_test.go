package local

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/testutil"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/zkstate"
)

// purposeful is how a hello started with --fail-ratio says a 500 was on
// purpose: the bad release's own answers, as opposed to a failed switch.
const purposeful = "failing on purpose"

// startRelease starts a cluster with two blue instances live and two
// green ones started with greenFlags, and sets the release settings.
func startRelease(t *testing.T, ctx context.Context, greenFlags []string, release ...string) *Cluster {
	t.Helper()
	c, _ := startCluster(t, builtin(), 2, 0)
	for range 2 {
		if _, err := c.StartInstance(ctx, zkstate.Green, greenFlags...); err != nil {
			t.Fatal(err)
		}
	}
	if len(release) > 0 {
		if out, err := c.CLI(ctx, append([]string{"release", "set"}, release...)...); err != nil {
			t.Fatalf("switchyard release set: %v: %s", err, out)
		}
	}
	return c
}

// historyOf reads the history entry of switch id.
func historyOf(t *testing.T, c *Cluster, id int64) zkstate.Switch {
	t.Helper()
	hist, err := zkstate.ReadHistory(c.ZKConn(), c.Paths, 20)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hist {
		if h.ID == id {
			return h
		}
	}
	t.Fatalf("switch %d is not in the history", id)
	return zkstate.Switch{}
}

// splitFailures separates the bad release's own 500s from every other
// failure, which no switch may cause.
func splitFailures(results []Result) (bad, other []Result) {
	for _, r := range Failures(results) {
		if strings.Contains(r.Err, purposeful) {
			bad = append(bad, r)
		} else {
			other = append(other, r)
		}
	}
	return bad, other
}

// rollsBack flips to a green built to be bad and waits for the controller
// to switch back by itself, then checks the record, the history, the
// metric, and what the users saw.
func rollsBack(t *testing.T, greenFlags []string, decidedBy string) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := startRelease(t, ctx, greenFlags, "--analysis-window", "30s")
	load := StartLoad(ctx, c.GatewayURL+"/", 4, 2*time.Millisecond)
	// The baseline: blue's answers over the window before the flip, from
	// the leader's samples of the gateways' reports.
	waitSent(t, load, 1500)
	time.Sleep(3 * time.Second) // a hold, not a wait: the leader samples every 2 s
	id, flipped, err := c.Flip(ctx, string(zkstate.Green))
	if err != nil {
		t.Fatal(err)
	}
	back, err := c.WaitRecord(ctx, time.Minute, func(r zkstate.Switch) bool {
		return r.ID > id && r.Target == zkstate.Blue && r.Phase == zkstate.PhaseDone
	})
	if err != nil {
		rec, _ := c.Record()
		t.Fatalf("no rollback to blue: %v; the analysis: %+v", err, rec.Analysis)
	}
	if err := c.WaitServing(ctx, zkstate.Blue, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	results := load.Stop()
	rolledBack := back.FinishedAt.Sub(flipped)

	// ZooKeeper tells the truth, and the record says why.
	if got, _, err := c.ZKConn().Get("/active_color"); err != nil || string(got) != "blue" {
		t.Fatalf("/active_color after the rollback = %q %v, want blue", got, err)
	}
	h := historyOf(t, c, id)
	if h.Phase != zkstate.PhaseDone || h.Verdict != zkstate.VerdictRolledBack || h.Analysis == nil || !strings.Contains(h.Analysis.Reason, decidedBy) {
		t.Fatalf("history of the bad flip: phase %s verdict %q analysis %+v, want done, rolled back by %q", h.Phase, h.Verdict, h.Analysis, decidedBy)
	}
	if h.Analysis.Baseline.Requests == 0 {
		t.Errorf("the analysis had no baseline of blue before the flip: %+v", h.Analysis.Baseline)
	}
	if note, ok, err := zkstate.ReadRequest(c.ZKConn(), c.Paths, back.ID); err != nil || !ok || !strings.HasPrefix(note.AskedBy, "switchyard analysis: rolled back switch") {
		t.Errorf("the rollback's asker = %+v %v %v, want the analysis with its reason", note, ok, err)
	}
	if back.Verdict != "" {
		t.Errorf("the rollback was itself analyzed (%q); it returns to what served, unguarded", back.Verdict)
	}
	out, err := c.CLI(ctx, "history", "-n", "5")
	if err != nil || !strings.Contains(out, "done, rolled back") || !strings.Contains(out, decidedBy) {
		t.Errorf("switchyard history does not show the rollback: %v\n%s", err, out)
	}
	metrics := httpGet(t, c.ControllerAPIs[0]+"/metrics") + httpGet(t, c.ControllerAPIs[1]+"/metrics")
	if !strings.Contains(metrics, "switchyard_rollbacks_total 1") || !strings.Contains(metrics, `switchyard_analysis_verdicts_total{verdict="rolled back"} 1`) {
		t.Errorf("the leader's metrics do not count the rollback")
	}
	if !logged(t, c, `level=warning msg="post-switch analysis failed; rolling back"`) {
		t.Errorf("no warning line says the analysis rolled back")
	}

	// What users saw: the bad release's own 500s while it was live, and no
	// other failure through two switches.
	bad, other := splitFailures(results)
	if len(other) > 0 {
		t.Errorf("%d of %d requests failed other than by the bad release's own answers:\n%s", len(other), len(results), failuresText(other))
	}
	t.Logf("bad green (%s) live for %s before the controller switched back: %d of %d requests answered 500 by it; %s",
		strings.Join(greenFlags, " "), rolledBack.Round(time.Millisecond), len(bad), len(results), h.Analysis.Reason)
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	out, err := exec.Command("curl", "-sS", "--max-time", "5", url).Output()
	if err != nil {
		t.Fatalf("curl %s: %v", url, err)
	}
	return string(out)
}

// logged reports whether a controller logged line.
func logged(t *testing.T, c *Cluster, line string) bool {
	t.Helper()
	for i := range c.Controllers {
		b, err := os.ReadFile(filepath.Join(c.opts.Dir, fmt.Sprintf("controller-%d.log", i+1)))
		if err == nil && strings.Contains(string(b), line) {
			return true
		}
	}
	return false
}

func TestReleaseFailingGreenIsRolledBackByItself(t *testing.T) {
	rollsBack(t, []string{"--version", "v2", "--fail-ratio", "0.5"}, "error rate")
}

func TestReleaseSlowGreenIsRolledBackByItself(t *testing.T) {
	rollsBack(t, []string{"--version", "v2", "--latency", "60ms"}, "p99")
}

func TestReleaseHealthyGreenIsVerified(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := startRelease(t, ctx, []string{"--version", "v2"}, "--analysis-window", "5s")
	load := StartLoad(ctx, c.GatewayURL+"/", 2, 2*time.Millisecond)
	waitSent(t, load, 500)
	out, err := c.CLI(ctx, "switch", "green", "--wait", "--verify", "--timeout", "90s")
	if err != nil {
		t.Fatalf("switch green --wait --verify: %v\n%s", err, out)
	}
	if !strings.Contains(out, "verified") || !strings.Contains(out, "green:") {
		t.Fatalf("switch --verify did not print the verdict with its figures:\n%s", out)
	}
	rec, err := c.Record()
	if err != nil || rec.Verdict != zkstate.VerdictVerified || rec.Analysis == nil || rec.Analysis.New.Requests == 0 {
		t.Fatalf("record = %+v %v, want verified with green's figures", rec, err)
	}
	if h := historyOf(t, c, rec.ID); h.Verdict != zkstate.VerdictVerified {
		t.Fatalf("history verdict = %q, want verified", h.Verdict)
	}
	assertServed(t, load.Stop(), "through a verified switch")
}

func TestReleasePreSwitchCheckRefuses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := startRelease(t, ctx, []string{"--version", "v2"})
	green := c.Instances[len(c.Instances)-1]
	// The check asks green for a version it does not have.
	rel := fmt.Sprintf(`{"checks":[{"name":"green serves v3","http":{"url":"http://%s/","status":200,"body":"\"version\":\"v3\""},"timeout":"2s"}]}`, green.Addr)
	if out, err := c.CLI(ctx, "release", "set", "-f", writeTemp(t, rel)); err != nil {
		t.Fatalf("release set: %v: %s", err, out)
	}
	// Bad settings are refused before anything is written.
	if out, err := c.CLI(ctx, "release", "set", "-f", writeTemp(t, `{"checks":[{"name":"x","http":{"url":"file:///etc/passwd"}}]}`)); exitCode(err) != 64 || !strings.Contains(out, "not an http://") {
		t.Fatalf("release set with a file: URL: %v: %s", err, out)
	}
	load := StartLoad(ctx, c.GatewayURL+"/", 2, 2*time.Millisecond)
	waitSent(t, load, 200)
	before, err := c.Backend()
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.CLI(ctx, "switch", "green", "--wait", "--timeout", "60s")
	if code := exitCode(err); code != 1 || !strings.Contains(out, "pre-switch check failed: green serves v3") {
		t.Fatalf("switch green with a failing check: exit %d, want 1 with the check's reason:\n%s", code, out)
	}
	rec, err := c.Record()
	if err != nil || rec.Phase != zkstate.PhaseRefused || rec.RefusedBy != zkstate.RefusedByChecks || len(rec.Checks) != 1 || rec.Checks[0].OK {
		t.Fatalf("record = %+v %v, want refused by the check", rec, err)
	}
	// Nothing moved, and the refusal is not retried on every resync.
	time.Sleep(2 * time.Second) // a hold, not a wait: a retry must not come
	snap, err := before.Instances(ctx, "hello", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range snap.Instances {
		if want := map[string]registry.Status{"blue": registry.StatusUp, "green": registry.StatusOutOfService}[in.Color]; in.Status != want {
			t.Errorf("%s (%s) is %s after a refused switch, want %s", in.ID, in.Color, in.Status, want)
		}
	}
	if hist, _ := zkstate.ReadHistory(c.ZKConn(), c.Paths, 20); len(hist) > 0 {
		refusals := 0
		for _, h := range hist {
			if h.ID == rec.ID {
				refusals++
			}
		}
		if refusals != 1 {
			t.Errorf("the refused switch is in the history %d times, want once: it was retried", refusals)
		}
	}
	// Fixed settings let the next write through.
	if out, err := c.CLI(ctx, "release", "clear"); err != nil {
		t.Fatalf("release clear: %v: %s", err, out)
	}
	if out, err := c.CLI(ctx, "switch", "green", "--wait", "--timeout", "60s"); err != nil {
		t.Fatalf("switch green after clearing the checks: %v\n%s", err, out)
	}
	assertServed(t, load.Stop(), "through a refused and a passed switch")
}

func TestAbortReturnsEveryInstance(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Green's health checks answer after 2 s, so the switch is in flight
	// long enough to abort.
	c := startRelease(t, ctx, []string{"--version", "v2", "--health-delay", "1500ms"}, "--no-analysis")
	load := StartLoad(ctx, c.GatewayURL+"/", 2, 2*time.Millisecond)
	waitSent(t, load, 200)
	if out, err := c.CLI(ctx, "abort"); exitCode(err) != 1 || !strings.Contains(out, "no switch in flight") {
		t.Fatalf("abort with nothing in flight: %v: %s", err, out)
	}
	id, _, err := c.Flip(ctx, string(zkstate.Green))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitRecord(ctx, 30*time.Second, func(r zkstate.Switch) bool { return r.ID == id && r.Phase == zkstate.PhaseSwitching }); err != nil {
		t.Fatal(err)
	}
	out, err := c.CLI(ctx, "abort", "--wait", "--timeout", "60s")
	if err != nil {
		t.Fatalf("abort --wait: %v\n%s", err, out)
	}
	if got, _, err := c.ZKConn().Get("/active_color"); err != nil || string(got) != "blue" {
		t.Fatalf("/active_color after the abort = %q %v, want blue", got, err)
	}
	if err := c.WaitServing(ctx, zkstate.Blue, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	h := historyOf(t, c, id)
	if h.Phase != zkstate.PhaseFailed || !strings.Contains(h.Reason, "aborted") {
		t.Fatalf("the aborted switch's history: %s %q, want failed, aborted", h.Phase, h.Reason)
	}
	assertServed(t, load.Stop(), "through an aborted switch")
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "release.json")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestReleaseOfTwoServices moves api and web, each under its own root
// with its own controller, as one release (switch --services api,web):
// when web's gate refuses, api, already moved, is moved back and both stay
// on blue; once the gate passes, both move. Load runs through the gateway
// to both services the whole time, and no request fails.
func TestReleaseOfTwoServices(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, _ := startCluster(t, builtin(), 0, 0, func(o *Options) {
		o.Controllers = 1
		o.GatewayArgs = []string{"--route", "/api/=api", "--route", "/web/=web"}
	})
	services := []string{"api", "web"}
	greens := map[string]*Instance{}
	for _, svc := range services {
		if err := c.StartService(ctx, svc, 1); err != nil {
			t.Fatal(err)
		}
		for _, color := range []zkstate.Color{zkstate.Blue, zkstate.Green} {
			inst, err := c.StartServiceInstance(ctx, svc, color)
			if err != nil {
				t.Fatal(err)
			}
			if color == zkstate.Green {
				greens[svc] = inst
			}
		}
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	serves := func(color zkstate.Color) {
		t.Helper()
		for _, svc := range services {
			testutil.EventuallyWhy(t, 30*time.Second, svc+" serves "+string(color)+" through the gateway", func() (bool, string) {
				got, err := GetColor(ctx, hc, c.GatewayURL+"/"+svc+"/")
				return err == nil && got == color, fmt.Sprintf("%s, %v", got, err)
			})
		}
	}
	serves(zkstate.Blue)
	paths := map[string]zkstate.Paths{}
	for _, svc := range services {
		paths[svc], _ = zkstate.NewPaths("/" + svc)
	}
	activeColors := func() map[string]string {
		got := map[string]string{}
		for _, svc := range services {
			raw, _, err := c.ZKConn().Get(paths[svc].ActiveColor())
			if err != nil {
				t.Fatal(err)
			}
			got[svc] = string(raw)
		}
		return got
	}
	// web's gate: a pre-switch check its green fails.
	rel := fmt.Sprintf(`{"checks":[{"name":"web green serves v3","http":{"url":"http://%s/","status":200,"body":"\"version\":\"v3\""},"timeout":"2s"}]}`, greens["web"].Addr)
	if out, err := c.CLI(ctx, "release", "set", "-f", writeTemp(t, rel), "--zk-root", "/web"); err != nil {
		t.Fatalf("release set: %v: %s", err, out)
	}
	loads := map[string]*Load{}
	for _, svc := range services {
		loads[svc] = StartLoad(ctx, c.GatewayURL+"/"+svc+"/", 2, 2*time.Millisecond)
		waitSent(t, loads[svc], 200)
	}

	// Names are checked before anything is written.
	for _, bad := range []string{"api,api", "api,../web", ""} {
		out, err := c.CLI(ctx, "switch", "green", "--services", bad)
		if exitCode(err) != 64 {
			t.Errorf("switch green --services %q: exit %d, want 64:\n%s", bad, exitCode(err), out)
		}
	}
	if out, err := c.CLI(ctx, "switch", "green", "--services", "api,nosuch"); exitCode(err) != 4 || !strings.Contains(out, "nothing was written") {
		t.Errorf("a release naming a service without a root: exit %d:\n%s", exitCode(err), out)
	}
	if got := activeColors(); got["api"] != "blue" || got["web"] != "blue" {
		t.Fatalf("refused releases wrote: %v", got)
	}

	out, err := c.CLI(ctx, "switch", "green", "--services", "api,web", "--timeout", "90s", "--asked-by", "release-test")
	if code := exitCode(err); code != 1 ||
		!strings.Contains(out, "/api/active_color = green") || !strings.Contains(out, "pre-switch check failed: web green serves v3") ||
		!strings.Contains(out, "/api/active_color = blue") || !strings.Contains(out, "every service is back where it was") {
		t.Fatalf("release api,web with web's gate failing: exit %d, want 1, api moved and moved back:\n%s", code, out)
	}
	if got := activeColors(); got["api"] != "blue" || got["web"] != "blue" {
		t.Errorf("/active_color after the release was moved back: %v, want blue for both", got)
	}
	// api went to green and back, each done, and the history says why.
	hist, err := zkstate.ReadHistory(c.ZKConn(), paths["api"], 20)
	if err != nil {
		t.Fatal(err)
	}
	var toGreen, back bool
	for _, h := range hist {
		toGreen = toGreen || h.Target == zkstate.Green && h.Phase == zkstate.PhaseDone && h.AskedBy == "release-test (release api,web)"
		back = back || h.Target == zkstate.Blue && h.Phase == zkstate.PhaseDone && strings.Contains(h.AskedBy, "moved back, web did not switch")
	}
	if !toGreen || !back {
		t.Errorf("api's history has no done switch to green asked by the release (%v) or no move back (%v): %+v", toGreen, back, hist)
	}
	rec, ok, err := zkstate.ReadSwitch(c.ZKConn(), paths["web"])
	if err != nil || !ok || rec.Target != zkstate.Blue || rec.Phase != zkstate.PhaseDone {
		t.Errorf("web's record = %+v %v: want done, to blue", rec, err)
	}
	b, err := c.Backend()
	if err != nil {
		t.Fatal(err)
	}
	for _, svc := range services {
		snap, err := b.Instances(ctx, svc, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range snap.Instances {
			if want := map[string]registry.Status{"blue": registry.StatusUp, "green": registry.StatusOutOfService}[in.Color]; in.Status != want {
				t.Errorf("%s (%s, %s) is %s after the release was moved back, want %s", in.ID, svc, in.Color, in.Status, want)
			}
		}
	}
	serves(zkstate.Blue)

	// With web's gate passing, the same release moves both.
	if out, err := c.CLI(ctx, "release", "clear", "--zk-root", "/web"); err != nil {
		t.Fatalf("release clear: %v: %s", err, out)
	}
	out, err = c.CLI(ctx, "switch", "green", "--services", "api,web", "--timeout", "90s")
	if err != nil || !strings.Contains(out, "every service is on green") {
		t.Fatalf("release api,web: exit %d:\n%s", exitCode(err), out)
	}
	if got := activeColors(); got["api"] != "green" || got["web"] != "green" {
		t.Errorf("/active_color after the release: %v, want green for both", got)
	}
	serves(zkstate.Green)
	for _, svc := range services {
		assertServed(t, loads[svc].Stop(), "to "+svc+" through two releases")
	}
}
