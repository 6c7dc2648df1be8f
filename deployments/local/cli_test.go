package local

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/testutil"
	"github.com/switchyard/switchyard/zkstate"
)

// exitStatus is the exit code of a CLI run; 0 when it succeeded.
func exitStatus(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	t.Fatalf("switchyard did not run: %v", err)
	return -1
}

// A plain progress line: a UTC timestamp to the millisecond, then the event.
var (
	stepLine    = regexp.MustCompile(`^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) step (\d+)/(\d+): (\S+) \(hello, (blue|green)\) (UP|OUT_OF_SERVICE) (done|skipped)`)
	summaryLine = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z switched to green in \S+ \(4 steps: 4 done, 0 skipped\)$`)
)

func TestCLISwitchProgressHistoryAndJSONLogs(t *testing.T) {
	c, _ := startCluster(t, builtin(), 2, 2, func(o *Options) { o.Controllers = 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The leader from now on logs JSON; it takes over from the text one.
	c.Controllers[0].Stop(3 * time.Second)
	if _, err := c.StartController(ctx, "controller-json", "", "--log-format", "json"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "controller-json to lead", func() bool {
		resp, err := http.Get(c.ControllerAPIs[1] + "/healthz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var h struct{ Leading bool }
		return json.NewDecoder(resp.Body).Decode(&h) == nil && h.Leading
	})

	// The progress bar counts the steps from the instances that checked
	// out; wait until all four have.
	reg, err := c.Backend()
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "four instances announced and registered", func() bool {
		members := 0
		for _, in := range zkstate.ReadView(ctx, c.ZKConn(), c.Paths, reg).Instances {
			if in.InZK && in.Registry && in.Quarantine == "" {
				members++
			}
		}
		return members == 4
	})

	var greenID int64
	t.Run("switch --wait off a terminal prints one timestamped line per step and exits 0", func(t *testing.T) {
		out, err := c.CLI(ctx, "switch", "green", "--wait", "--asked-by", "cli-test")
		if code := exitStatus(t, err); code != 0 {
			t.Fatalf("exit %d:\n%s", code, out)
		}
		rec, err := c.Record()
		if err != nil || rec.Phase != zkstate.PhaseDone || rec.Target != zkstate.Green {
			t.Fatalf("record %+v, %v", rec, err)
		}
		greenID = rec.ID
		lines := strings.Split(strings.TrimSpace(out), "\n")
		var steps []string
		for _, l := range lines {
			m := stepLine.FindStringSubmatch(l)
			if m == nil {
				continue
			}
			if _, err := time.Parse(time.RFC3339, m[1]); err != nil {
				t.Errorf("bad timestamp in %q: %v", l, err)
			}
			if m[2] != strconv.Itoa(len(steps)+1) || m[3] != "4" {
				t.Errorf("step line %q is not step %d/4", l, len(steps)+1)
			}
			steps = append(steps, m[4]+" "+m[6])
		}
		var want []string
		for _, s := range rec.Steps {
			want = append(want, s.Instance+" "+string(s.Action))
		}
		if strings.Join(steps, ", ") != strings.Join(want, ", ") || len(steps) != 4 {
			t.Errorf("step lines %v; the record has %v:\n%s", steps, want, out)
		}
		if !strings.HasPrefix(lines[0], "/active_color = green (switch "+strconv.FormatInt(rec.ID, 10)+")") ||
			!summaryLine.MatchString(lines[len(lines)-1]) {
			t.Errorf("no write line first or no summary line last:\n%s", out)
		}
	})

	t.Run("--log-format json makes every log line JSON and each line about the switch names it", func(t *testing.T) {
		f, err := os.Open(filepath.Join(c.opts.Dir, "controller-json.log"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		about := map[string]int{}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var line map[string]any
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				t.Fatalf("not a JSON line: %s", sc.Text())
			}
			if _, ok := line["target"]; !ok {
				continue
			}
			if id, ok := line["switch"].(float64); !ok || int64(id) != greenID {
				t.Errorf("a line about the switch to green does not name switch %d: %s", greenID, sc.Text())
			}
			about[line["msg"].(string)]++
		}
		if about["switch started"] != 1 || about["instance UP"] != 2 || about["instance OUT_OF_SERVICE"] != 2 {
			t.Errorf("lines about the switch by message: %v", about)
		}
		// The instances' own lines about the switch name it too, so one
		// grep for switch=ID follows it across the processes.
		named := 0
		for _, in := range c.Instances {
			b, err := os.ReadFile(filepath.Join(c.opts.Dir, in.ID+".log"))
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Contains(l, "status applied on the controller's instruction") && strings.Contains(l, " switch="+strconv.FormatInt(greenID, 10)) {
					named++
				}
			}
		}
		if named != 4 {
			t.Errorf("%d instance log lines name switch %d, want 4: one per instruction", named, greenID)
		}
		// And so do the gateway's lines about the routing tables the
		// switch's instructions changed. The gateway logs in the format
		// the cluster's environment sets: text unless SWITCHYARD_LOG_FORMAT
		// says json.
		b, err := os.ReadFile(filepath.Join(c.opts.Dir, "gateway.log"))
		if err != nil {
			t.Fatal(err)
		}
		gateway := 0
		for _, l := range strings.Split(string(b), "\n") {
			var line struct {
				Msg    string `json:"msg"`
				Switch int64  `json:"switch"`
			}
			if json.Unmarshal([]byte(l), &line) == nil {
				if strings.HasPrefix(line.Msg, "routing table applied") && line.Switch == greenID {
					gateway++
				}
			} else if strings.Contains(l, `msg="routing table applied`) && strings.Contains(l, " switch="+strconv.FormatInt(greenID, 10)) {
				gateway++
			}
		}
		if gateway == 0 {
			t.Errorf("no gateway log line names switch %d:\n%s", greenID, b)
		}
	})

	flipID, _, err := c.Flip(ctx, string(zkstate.Blue)) // as CI with zkCli: nobody known asked
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitRecord(ctx, 20*time.Second, func(r zkstate.Switch) bool { return r.ID == flipID && r.Phase.Finished() }); err != nil {
		t.Fatal(err)
	}

	t.Run("history -n 2 --json lists the last two switches newest first, with durations and who asked", func(t *testing.T) {
		out, err := c.CLI(ctx, "history", "-n", "2", "--json")
		if err != nil {
			t.Fatalf("%v:\n%s", err, out)
		}
		var hist []struct {
			ID         int64         `json:"id"`
			From       zkstate.Color `json:"from"`
			Target     zkstate.Color `json:"target"`
			Phase      zkstate.Phase `json:"phase"`
			AskedBy    *string       `json:"asked_by"`
			DurationMS int64         `json:"duration_ms"`
			StartedAt  time.Time     `json:"started_at"`
			FinishedAt time.Time     `json:"finished_at"`
		}
		if err := json.Unmarshal([]byte(out), &hist); err != nil || len(hist) != 2 {
			t.Fatalf("%d switches, %v:\n%s", len(hist), err, out)
		}
		newest, older := hist[0], hist[1]
		if newest.ID != flipID || newest.Target != zkstate.Blue || newest.From != zkstate.Green || newest.AskedBy != nil {
			t.Errorf("newest = %+v; want the zkCli flip to blue (%d), asker unknown", newest, flipID)
		}
		if older.ID != greenID || older.Target != zkstate.Green || older.AskedBy == nil || *older.AskedBy != "cli-test" {
			t.Errorf("older = %+v; want the switch to green (%d) asked by cli-test", older, greenID)
		}
		for _, h := range hist {
			if h.Phase != zkstate.PhaseDone || h.DurationMS <= 0 || h.DurationMS != h.FinishedAt.Sub(h.StartedAt).Milliseconds() {
				t.Errorf("switch %d: %s in %d ms from %s to %s", h.ID, h.Phase, h.DurationMS, h.StartedAt, h.FinishedAt)
			}
		}
	})

	t.Run("history prints a table that says unknown for a zkCli write", func(t *testing.T) {
		out, err := c.CLI(ctx, "history", "-n", "2")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if err != nil || len(lines) != 3 || !strings.HasPrefix(lines[0], "STARTED") ||
			!strings.Contains(lines[1], "unknown") || !strings.Contains(lines[2], "cli-test") || !strings.Contains(lines[2], "4/4") {
			t.Errorf("history: %v\n%s", err, out)
		}
	})

	t.Run("status shows who asked for the current switch", func(t *testing.T) {
		out, err := c.CLI(ctx, "status")
		if err != nil || !strings.Contains(out, fmt.Sprintf("switch:       %d to blue, done", flipID)) || !strings.Contains(out, "asked by:     unknown") {
			t.Errorf("status: %v\n%s", err, out)
		}
	})

	t.Run("on a terminal switch --wait redraws a progress bar", func(t *testing.T) {
		script, err := exec.LookPath("script")
		if err != nil {
			t.Fatalf("script(1) gives the CLI a terminal here and is missing (%v); deployments/install/clients.sh installs it", err)
		}
		argv := c.sy("switch", "green", "--wait")
		for i, a := range argv {
			argv[i] = strconv.Quote(a)
		}
		cmd := exec.CommandContext(ctx, script, "-qefc", strings.Join(argv, " "), "/dev/null")
		cmd.Env = append(c.env(), "TERM=xterm", "COLUMNS=100")
		b, err := cmd.CombinedOutput()
		out := string(b)
		if code := exitStatus(t, err); code != 0 || !strings.Contains(out, "\r\x1b[K[") || !strings.Contains(out, "] 4/4") ||
			!strings.Contains(out, "✓ switched to green") || stepLine.MatchString(out) {
			t.Errorf("exit %d; want a redrawn bar reaching 4/4 and a ✓ summary:\n%q", code, out)
		}
	})

	t.Run("--timeout 1ms exits 3 and says the switch goes on", func(t *testing.T) {
		out, err := c.CLI(ctx, "switch", "blue", "--wait", "--timeout", "1ms")
		if code := exitStatus(t, err); code != 3 || !strings.Contains(out, "timed out") || !strings.Contains(out, "it goes on") {
			t.Errorf("exit %d:\n%s", code, out)
		}
		if _, err := c.WaitRecord(ctx, 20*time.Second, func(r zkstate.Switch) bool { return r.Target == zkstate.Blue && r.Phase == zkstate.PhaseDone }); err != nil {
			t.Errorf("the switch did not go on after the CLI gave up: %v", err)
		}
	})
}

func TestCLIRefusedSwitchExits1(t *testing.T) {
	c, _ := startCluster(t, builtin(), 1, 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.StartInstance(ctx, zkstate.Green, "--healthy=false"); err != nil {
		t.Fatal(err)
	}
	out, err := c.CLI(ctx, "switch", "green", "--wait", "--timeout", "30s")
	if code := exitStatus(t, err); code != 1 || !strings.Contains(out, "refused") || !strings.Contains(out, "no healthy green instance") {
		t.Fatalf("exit %d; want 1 with the reason:\n%s", code, out)
	}
	out, err = c.CLI(ctx, "history", "-n", "1")
	if err != nil || !strings.Contains(out, "refused") || !strings.Contains(out, "no healthy green instance") {
		t.Errorf("history does not show the refusal: %v\n%s", err, out)
	}
}
