package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/zkstate"
)

// run runs the CLI in this process as main would, and returns its exit
// code and what it wrote to stdout (cobra's own output) and stderr.
func run(args ...string) (code int, stdout, stderr string) {
	log := logrus.New()
	log.SetOutput(io.Discard)
	root := newRoot(&common{log: log})
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	// Nothing here may reach a ZooKeeper: every case fails before.
	root.SetArgs(append([]string{"--zk", "127.0.0.1:1"}, args...))
	cmd, err := root.ExecuteContextC(context.Background())
	code = exitCode(&errOut, cmd, err)
	return code, out.String(), errOut.String()
}

func TestUsageErrorsExit64AndSayHowToGetHelp(t *testing.T) {
	for _, tc := range []struct {
		desc string
		args []string
		say  string
	}{
		{desc: "an unknown command", args: []string{"swich", "green"}, say: `unknown command "swich"`},
		{desc: "an unknown flag", args: []string{"switch", "green", "--wiat"}, say: "unknown flag: --wiat"},
		{desc: "a color that is not one", args: []string{"switch", "purple"}, say: "not blue or green"},
		{desc: "switch without a color", args: []string{"switch"}, say: "accepts 1 arg(s)"},
		{desc: "rollback with an argument", args: []string{"rollback", "green"}, say: "unknown command"},
		{desc: "a bad duration", args: []string{"switch", "green", "--timeout", "soon"}, say: "invalid argument"},
		{desc: "a log format that does not exist", args: []string{"history", "--log-format", "xml"}, say: `--log-format "xml"`},
		{desc: "history of no switch", args: []string{"history", "-n", "0"}, say: "want at least 1"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			code, _, stderr := run(tc.args...)
			if code != codeUsage || !strings.Contains(stderr, tc.say) || !strings.Contains(stderr, "--help' for usage") {
				t.Fatalf("exit %d, stderr:\n%s\nwant %d, saying %q and how to get usage", code, stderr, codeUsage, tc.say)
			}
		})
	}
}

func TestCompletion(t *testing.T) {
	t.Run("switch completes the colors", func(t *testing.T) {
		code, out, stderr := run("__complete", "switch", "")
		if code != 0 || !strings.HasPrefix(out, "blue\ngreen\n") {
			t.Fatalf("exit %d: %s%s", code, out, stderr)
		}
	})
	t.Run("--log-format completes its values", func(t *testing.T) {
		code, out, stderr := run("__complete", "status", "--log-format", "")
		if code != 0 || !strings.HasPrefix(out, "text\njson\n") {
			t.Fatalf("exit %d: %s%s", code, out, stderr)
		}
	})
	for _, shell := range []string{"bash", "zsh", "fish"} {
		t.Run("the completion command writes a "+shell+" script", func(t *testing.T) {
			code, out, stderr := run("completion", shell)
			if code != 0 || !strings.Contains(out, "switchyard") || len(out) < 500 {
				t.Fatalf("exit %d: %.200s%s", code, out, stderr)
			}
		})
	}
}

func TestOutcomeExitCodes(t *testing.T) {
	t0 := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	t1 := t0.Add(1500 * time.Millisecond)
	tr := tracker{id: 7, target: zkstate.Green, expected: 2, begun: t0}
	rec := func(id int64, target zkstate.Color, phase zkstate.Phase, reason string) zkstate.Switch {
		return zkstate.Switch{ID: id, Target: target, Phase: phase, Reason: reason, StartedAt: t0, FinishedAt: &t1,
			Steps: []zkstate.Step{{Instance: "g1", Action: registry.StatusUp, State: zkstate.StepDone}}}
	}
	for _, tc := range []struct {
		desc string
		rec  zkstate.Switch
		err  error
		code int
		say  string
	}{
		{desc: "done exits 0", rec: rec(7, zkstate.Green, zkstate.PhaseDone, ""), code: 0, say: "switched to green in 1.5s (1 steps: 1 done, 0 skipped)"},
		{desc: "refused exits 1 with the reason", rec: rec(7, zkstate.Green, zkstate.PhaseRefused, "no healthy green instance of hello"),
			err: fmt.Errorf("%w: refused", zkstate.ErrNotDone), code: codeRefused, say: "switch 7 to green refused after 1.5s (1 steps: 1 done, 0 skipped): no healthy green instance of hello"},
		{desc: "failed exits 2", rec: rec(7, zkstate.Green, zkstate.PhaseFailed, "boom"),
			err: fmt.Errorf("%w: failed", zkstate.ErrNotDone), code: codeFailed, say: "failed after 1.5s"},
		{desc: "superseded exits 2 and names the later switch", rec: rec(9, zkstate.Blue, zkstate.PhaseSwitching, ""),
			err: zkstate.ErrSuperseded, code: codeFailed, say: "superseded by a later write: switch 9 to blue"},
		{desc: "a timeout exits 3 and says where the switch is", rec: rec(7, zkstate.Green, zkstate.PhaseSwitching, ""),
			err: fmt.Errorf("waiting: %w", context.DeadlineExceeded), code: codeTimeout, say: "is not finished (switching, 1 steps: 1 done, 0 skipped)"},
		{desc: "a timeout before the leader answered says so", rec: rec(6, zkstate.Blue, zkstate.PhaseDone, ""),
			err: context.DeadlineExceeded, code: codeTimeout, say: "the leader has not taken it up yet"},
		{desc: "an interruption exits 4", err: context.Canceled, code: codeError, say: "interrupted"},
		{desc: "a lost ZooKeeper exits 4", err: errors.New("watch /switchyard/switch: zk: connection closed"), code: codeError, say: "connection closed"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			code, say := outcome(tr, tc.rec, tc.err)
			if code != tc.code || !strings.Contains(say, tc.say) {
				t.Fatalf("outcome = %d %q; want %d saying %q", code, say, tc.code, tc.say)
			}
		})
	}
}

// steps makes n done steps, the first at t0 and one every 10 ms.
func steps(t0 time.Time, from, n int) []zkstate.Step {
	var s []zkstate.Step
	for i := from; i < from+n; i++ {
		s = append(s, zkstate.Step{Instance: fmt.Sprintf("hello-%d", i), Service: "hello", Color: zkstate.Green,
			Action: registry.StatusUp, State: zkstate.StepDone, Attempts: 1, At: t0.Add(time.Duration(i) * 10 * time.Millisecond)})
	}
	return s
}

func TestPlainProgressPrintsEachStepOnceWithATimestamp(t *testing.T) {
	t0 := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	var out, errOut bytes.Buffer
	p := &plainProgress{tracker: tracker{id: 7, target: zkstate.Green, expected: 3, begun: t0}, out: &out, errOut: &errOut}
	sw := zkstate.Switch{ID: 7, Target: zkstate.Green, Phase: zkstate.PhaseSwitching, Leader: "controller-1", StartedAt: t0}
	p.seen(zkstate.Switch{ID: 6, Target: zkstate.Blue, Phase: zkstate.PhaseDone}) // the previous switch: not ours
	p.seen(sw)
	sw.Steps, sw.StepsTotal = steps(t0, 0, 2), 2
	p.seen(sw)
	p.seen(sw) // read again after a reconnect: nothing new
	sw.Steps, sw.StepsTotal = steps(t0, 0, 3), 3
	sw.Steps[2].State, sw.Steps[2].Error = zkstate.StepSkipped, "failed its health check"
	done := t0.Add(time.Second)
	sw.Phase, sw.FinishedAt = zkstate.PhaseDone, &done
	p.seen(sw)
	code, summary := outcome(p.tracker, sw, nil)
	p.end(sw, code, summary)
	want := `2026-05-01T10:00:00.000Z switch 7 to green started by controller-1: 3 steps expected
2026-05-01T10:00:00.000Z step 1/3: hello-0 (hello, green) UP done
2026-05-01T10:00:00.010Z step 2/3: hello-1 (hello, green) UP done
2026-05-01T10:00:00.020Z step 3/3: hello-2 (hello, green) UP skipped: failed its health check
2026-05-01T10:00:01.000Z switched to green in 1s (3 steps: 2 done, 1 skipped)
`
	if out.String() != want || errOut.Len() != 0 {
		t.Fatalf("stdout:\n%s\nstderr:\n%s\nwant stdout:\n%s", out.String(), errOut.String(), want)
	}
}

func TestStepsThatFellOutOfTheRecordAreCountedNotLost(t *testing.T) {
	t0 := time.Now()
	tr := tracker{id: 7, target: zkstate.Green}
	sw := zkstate.Switch{ID: 7, Target: zkstate.Green, StartedAt: t0, Steps: steps(t0, 0, 3), StepsTotal: 3}
	if first, s, missed := tr.newSteps(sw); first != 1 || len(s) != 3 || missed != 0 {
		t.Fatalf("first read: %d, %d steps, %d missed", first, len(s), missed)
	}
	// The record keeps the newest 4 of 10: steps 4 to 6 were never seen.
	sw.Steps, sw.StepsTotal = steps(t0, 6, 4), 10
	first, s, missed := tr.newSteps(sw)
	if first != 7 || len(s) != 4 || s[0].Instance != "hello-6" || missed != 3 {
		t.Fatalf("second read: first %d, %d steps from %s, %d missed", first, len(s), s[0].Instance, missed)
	}
	// A new switch (a new start) starts counting again.
	sw.StartedAt, sw.Steps, sw.StepsTotal = t0.Add(time.Minute), steps(t0, 0, 1), 1
	if first, s, missed := tr.newSteps(sw); first != 1 || len(s) != 1 || missed != 0 {
		t.Fatalf("new switch: %d, %d steps, %d missed", first, len(s), missed)
	}
}

func TestTTYProgressRedrawsOneLine(t *testing.T) {
	t0 := time.Now()
	var out, errOut bytes.Buffer
	p := &ttyProgress{tracker: tracker{id: 7, target: zkstate.Green, expected: 4, begun: t0}, out: &out, errOut: &errOut, width: 80}
	if got := p.status(0); got != "waiting for the leader" && !strings.Contains(got, "waiting for the leader") {
		t.Fatalf("before the leader answered: %q", got)
	}
	sw := zkstate.Switch{ID: 7, Target: zkstate.Green, Phase: zkstate.PhaseSwitching, StartedAt: t0, Steps: steps(t0, 0, 1), StepsTotal: 1}
	p.newSteps(sw)
	p.last = &sw
	if got, want := p.status(1200*time.Millisecond), "[=====>              ] 1/4  1.2s  to green: hello-0 UP done"; got != want {
		t.Fatalf("status = %q\nwant     %q", got, want)
	}
	sw.Steps, sw.StepsTotal = steps(t0, 0, 4), 4
	p.last = &sw
	if got := p.status(2 * time.Second); !strings.HasPrefix(got, "[====================] 4/4") || !strings.HasSuffix(got, "waiting for the gateways") {
		t.Fatalf("all steps done: %q", got)
	}
	if got := truncate(strings.Repeat("x", 100), 79); len([]rune(got)) != 79 {
		t.Fatalf("truncated to %d runes", len([]rune(got)))
	}
}
