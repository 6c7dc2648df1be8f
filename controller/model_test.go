package controller

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The switch protocol is modelled in Promela in model/switch.pml and
// checked exhaustively with Spin on a bounded system (see
// model/README.md). This test runs three kinds of configurations:
//
//   - envelope: the real algorithm under the assumptions it needs; every
//     property must hold (no counterexample);
//   - gap: one assumption lifted; the model must find the known
//     counterexample to the named property (documented in the README), so
//     that a change to the model or the design that hides or fixes it is
//     noticed;
//   - mutant: the real algorithm with one guard removed; the model must
//     find a counterexample, which shows that the checks can fail.
//
// -model.full also checks the envelope with every kind of event at once
// (about 16 million states, a minute or two); -model.bfs makes the gap and
// mutant runs print their shortest counterexamples (-v shows them).
var (
	modelFull = flag.Bool("model.full", false, "also check the switch model with every kind of environment event at once (slow)")
	modelBFS  = flag.Bool("model.bfs", false, "search the gap and mutant runs breadth-first, for their shortest counterexamples (slower)")
)

// The properties, as the text pan prints for a failed assertion, or for a
// violated LTL claim.
const (
	propA       = "wasUp"            // (a) no instruction takes the last UP instance out
	propC       = "wantActed"        // (c) a leader never toggles
	propD       = "applied[j]"       // (d) an instance never applies an older epoch than one it applied
	propDGlobal = "maxApplied"       // (d) in its system-wide form
	propLTL     = "acceptance cycle" // (b) an LTL claim under weak fairness
)

type modelRun struct {
	name    string
	defines string // -D names for spin, space separated
	ltl     string // the LTL claim to check with -a -f; "" for a safety run
	want    string // "" if every property must hold, else the property that must fail
	big     bool   // explores millions of states: worth compiling pan with -O1
}

// budgets reads "leaders=1 health=0 ..." into -DMAX... flags; every budget
// left out is 0, so each run lists exactly the events it explores. Every
// run has two writes to /active_color (blue, green or not a color).
func budgets(s string) string {
	b := map[string]string{"WRITES": "2", "LEADERS": "0", "HEALTH": "0", "CHURN": "0", "PLANT": "0", "LOSS": "0"}
	for _, f := range strings.Fields(s) {
		k, v, _ := strings.Cut(f, "=")
		b[strings.ToUpper(k)] = v
	}
	var out []string
	for _, k := range []string{"WRITES", "LEADERS", "HEALTH", "CHURN", "PLANT", "LOSS"} {
		out = append(out, "MAX"+k+"="+b[k])
	}
	return strings.Join(out, " ")
}

var modelRuns = []modelRun{
	// The envelope: each run explores every interleaving of the events it
	// allows, with two writes to /active_color and the green instances
	// healthy or not at the start.
	// The liveness run checks every assertion too, on all its states.
	{name: "envelope/converges", ltl: "converges", defines: budgets("leaders=1 health=1 loss=1"), big: true},
	{name: "envelope/two-leader-changes", defines: budgets("leaders=2 loss=1")},
	{name: "envelope/membership", defines: budgets("health=1 churn=1 plant=1"), big: true},
	{name: "envelope/mixed", defines: budgets("leaders=1 churn=1 plant=1"), big: true},
	// With late delivery, the fencing holds per instance once the SDK
	// checks the epoch and writes the registry in one step.
	{name: "envelope/late-delivery-one-step-handler-fences", defines: "FINDING_LATE_DELIVERY ATOMIC_HANDLER NOCHECK_A " + budgets("leaders=1")},

	// Known gaps of the real design (model/README.md has the trails).
	{name: "gap/late-instruction-after-client-timeout", want: propA,
		defines: "FINDING_LATE_DELIVERY NOCHECK_D " + budgets("")},
	{name: "gap/late-instruction-from-deposed-leader", want: propA,
		defines: "FINDING_LATE_DELIVERY LATE_NO_TIMEOUT NOCHECK_D " + budgets("leaders=1 health=1")},
	{name: "gap/epoch-check-then-registry-write-race", want: propD,
		defines: "FINDING_LATE_DELIVERY NOCHECK_A " + budgets("leaders=1")},
	{name: "gap/fencing-orders-per-instance-only", want: propDGlobal,
		defines: "FINDING_LATE_DELIVERY ATOMIC_HANDLER NOCHECK_A CHECK_GLOBAL_EPOCH " + budgets("leaders=1")},
	{name: "gap/target-fails-between-make-and-break", want: propA,
		defines: "FINDING_HEALTH_MIDSWITCH " + budgets("health=1 churn=1")},
	{name: "gap/unwritten-switch-record-lets-next-leader-toggle", want: propC,
		defines: "FINDING_RECORD_LAG " + budgets("leaders=1")},
	{name: "gap/record-stays-refused-with-wrong-active", want: propLTL, ltl: "converges_recorded",
		defines: budgets("leaders=1 health=1 loss=1")},
	{name: "gap/bad-value-after-unread-write-stalls-leader", want: propLTL, ltl: "converges",
		defines: "QUIET_ON_BAD_VALUE " + budgets("churn=2")},

	// Mutants: each removes one guard of the real algorithm.
	{name: "mutant/count-quarantined-nodes", want: propA, defines: "BUG_COUNT_QUARANTINED " + budgets("plant=1")},
	{name: "mutant/break-before-make", want: propA, defines: "BUG_BREAK_BEFORE_MAKE " + budgets("health=1")},
	{name: "mutant/take-out-last-up", want: propA, defines: "BUG_NO_LAST_UP_GUARD " + budgets("health=1 churn=1 plant=1")},
	{name: "mutant/no-epoch-check", want: propD,
		defines: "BUG_NO_EPOCH_CHECK FINDING_LATE_DELIVERY ATOMIC_HANDLER NOCHECK_A " + budgets("leaders=1")},
	{name: "mutant/new-leader-toggles", want: propC, defines: "BUG_TOGGLE " + budgets("leaders=1")},
	{name: "mutant/refused-switch-never-retried", want: propLTL, ltl: "converges", defines: "BUG_NO_RETRY " + budgets("health=1")},
	// The break phase's batch must wait for all its instructions before the
	// pass gives way to a newer target (inParallel in controller/batch.go).
	{name: "mutant/batch-gives-way-before-its-instructions-return", want: propA, defines: "BUG_BATCH_NO_JOIN " + budgets("health=1")},
}

func TestSwitchModel(t *testing.T) {
	for _, tool := range []string{"spin", "gcc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required to check controller/model/switch.pml: run deployments/install/spin.sh (apt-get install -y spin gcc)", tool)
		}
	}
	model, err := filepath.Abs(filepath.Join("model", "switch.pml"))
	if err != nil {
		t.Fatal(err)
	}
	runs := modelRuns
	if *modelFull {
		all := budgets("leaders=1 health=1 loss=1 churn=1 plant=1")
		runs = append(runs,
			modelRun{name: "envelope/full", defines: all, big: true},
			modelRun{name: "envelope/full-converges", ltl: "converges", defines: all, big: true})
	}
	for _, r := range runs {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			checkModel(t, model, r)
		})
	}
}

var (
	errorsRE = regexp.MustCompile(`errors: (\d+)`)
	statesRE = regexp.MustCompile(`(\d+) states, stored`)
)

func checkModel(t *testing.T, model string, r modelRun) {
	dir := t.TempDir()
	src, err := os.ReadFile(model)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "switch.pml"), src, 0o644); err != nil {
		t.Fatal(err)
	}
	var spinArgs []string
	for _, d := range strings.Fields(r.defines) {
		spinArgs = append(spinArgs, "-D"+d)
	}
	if r.ltl == "" {
		spinArgs = append(spinArgs, "-DNOLTL")
	}
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil && name != "./pan" {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
		}
		return out.String()
	}
	start := time.Now()
	run("spin", append(append([]string{}, spinArgs...), "-a", "switch.pml")...)
	// Compiling with -O1 costs seconds; it pays off only for big runs.
	gccArgs := []string{"-O0", "-o", "pan", "pan.c"}
	if r.big || (r.ltl != "" && r.want == "") {
		gccArgs[0] = "-O1"
	}
	panArgs := []string{"-m200000"}
	if r.ltl == "" {
		gccArgs = append(gccArgs, "-DSAFETY")
		if *modelBFS && r.want != "" {
			gccArgs = append(gccArgs, "-DBFS")
		}
	} else {
		gccArgs = append(gccArgs, "-DNFAIR=3")
		panArgs = append(panArgs, "-a", "-f", "-N", r.ltl)
	}
	run("gcc", gccArgs...)
	compiled := time.Since(start)
	out := run("./pan", panArgs...)
	took := time.Since(start)

	m := errorsRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("pan gave no verdict:\n%s", out)
	}
	states := "?"
	if s := statesRE.FindStringSubmatch(out); s != nil {
		states = s[1]
	}
	t.Logf("%s states, %s (compile %s) [%s]", states, took.Round(10*time.Millisecond), compiled.Round(10*time.Millisecond), r.defines)
	for _, bad := range []string{"max search depth too small", "out of memory", "search not completed"} {
		if strings.Contains(out, bad) && r.want == "" {
			t.Fatalf("the search was truncated (%s), so it proves nothing:\n%s", bad, out)
		}
	}
	if r.want == "" {
		if m[1] != "0" {
			t.Errorf("the model found a counterexample (%s):\n%s\ntrail:\n%s", firstViolation(out), out, trail(t, dir, spinArgs))
		}
		return
	}
	if m[1] == "0" {
		t.Fatalf("expected a counterexample to %q, found none: the checks no longer catch this (or the model changed; update model/README.md):\n%s", r.want, out)
	}
	if v := firstViolation(out); !strings.Contains(v, r.want) {
		t.Fatalf("expected a counterexample to %q, got %q", r.want, v)
	}
	t.Logf("counterexample to %s, as expected:\n%s", r.want, trail(t, dir, spinArgs))
}

// firstViolation is pan's line naming the violated assertion or claim.
func firstViolation(out string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "pan:1:") || strings.Contains(l, "assertion violated") {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

// trail replays the counterexample and renders the model's TRAIL lines:
// the environment's events, the leader's decisions and instructions, and
// the registry and switch record after each change.
func trail(t *testing.T, dir string, spinArgs []string) string {
	cmd := exec.Command("spin", append(append([]string{}, spinArgs...), "-T", "-t", "switch.pml")...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Sprintf("(replay failed: %v)\n%s", err, out)
	}
	var b strings.Builder
	for _, l := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(l, "TRAIL "):
			b.WriteString("    " + trailLine(strings.Fields(l)[1:]) + "\n")
		case strings.Contains(l, "START OF CYCLE"):
			b.WriteString("    ---- from here on, this repeats forever ----\n")
		case strings.Contains(l, "assertion violated"):
			b.WriteString("    " + strings.TrimSpace(l) + "\n")
		}
	}
	return b.String()
}

// trailLine renders one "TRAIL <event> <numbers>" line of switch.pml.
func trailLine(f []string) string {
	if len(f) == 0 {
		return ""
	}
	n := make([]int, len(f))
	for i, s := range f[1:] {
		fmt.Sscan(s, &n[i+1])
	}
	arg := func(i int) int {
		if i < len(n) {
			return n[i]
		}
		return -1
	}
	inst := func(i int) string {
		if i >= 0 && i < 4 {
			return [...]string{"b0", "b1", "g0", "g1"}[i]
		}
		return "?"
	}
	color := func(c int) string {
		if c >= 0 && c < 3 {
			return [...]string{"blue", "green", "not-a-color"}[c]
		}
		return "?"
	}
	status := func(s int) string {
		if s >= 0 && s < 4 {
			return [...]string{"unregistered", "OUT_OF_SERVICE", "UP", "DOWN"}[s]
		}
		return "?"
	}
	phase := func(p int) string {
		if p >= 0 && p < 3 {
			return [...]string{"switching", "done", "refused"}[p]
		}
		return "?"
	}
	action := func(a int) string {
		if a >= 0 && a < 6 {
			return [...]string{"wait", "refuse-value", "acknowledge", "maintain", "retry-refused", "switch"}[a]
		}
		return "?"
	}
	switch f[0] {
	case "state":
		var healthy []string
		for i := range 4 {
			if arg(5+i) == 1 {
				healthy = append(healthy, inst(i))
			}
		}
		return fmt.Sprintf("    registry: b0 %s, b1 %s, g0 %s, g1 %s; healthy: %s; /active_color=%s; record: id %d, goal %s, active %s, %s",
			status(arg(1)), status(arg(2)), status(arg(3)), status(arg(4)), strings.Join(healthy, " "),
			color(arg(9)), arg(10), color(arg(11)), color(arg(12)), phase(arg(13)))
	case "write":
		return fmt.Sprintf("/active_color := %s (zxid %d)", color(arg(1)), arg(2))
	case "leader":
		return fmt.Sprintf("leadership moves to another controller (epoch %d); the old one stops", arg(1))
	case "health":
		return fmt.Sprintf("%s becomes %s", inst(arg(1)), map[bool]string{true: "healthy", false: "unhealthy"}[arg(2) == 1])
	case "down":
		return fmt.Sprintf("%s fails its health check and reports DOWN", inst(arg(1)))
	case "upagain":
		return fmt.Sprintf("%s recovers and reports UP again", inst(arg(1)))
	case "leave":
		return fmt.Sprintf("%s leaves (node and registration gone)", inst(arg(1)))
	case "join":
		return fmt.Sprintf("%s joins as a new process, OUT_OF_SERVICE (healthy %d)", inst(arg(1)), arg(2))
	case "plant":
		return "a node green/b0 is planted: b0's id is under both colors, both nodes are quarantined"
	case "unplant":
		return "the planted node is removed"
	case "quiet":
		return "from here on: no more writes, leader changes, health changes, churn or plants"
	case "decide":
		return fmt.Sprintf("leader (epoch %d) reads /active_color=%s and decides %s toward %s (write %d)",
			arg(1), color(arg(2)), action(arg(3)), color(arg(4)), arg(5))
	case "send":
		return fmt.Sprintf("leader (epoch %d) sends %s to %s (toward %s)", arg(1), status(arg(2)), inst(arg(3)), color(arg(4)))
	case "preempted":
		return fmt.Sprintf("leader (epoch %d): /active_color changed, the switch gives way", arg(1))
	case "orphan":
		return fmt.Sprintf("the batch gives way without waiting for its instruction to %s, which is still on its way", inst(arg(1)))
	case "timeout":
		return fmt.Sprintf("leader (epoch %d) times out waiting for %s; the instruction is still on its way", arg(1), inst(arg(2)))
	case "accept":
		return fmt.Sprintf("%s accepts %s of epoch %d (epoch checked; its registry write follows)", inst(arg(1)), status(arg(2)), arg(3))
	case "apply":
		late := ""
		switch arg(4) {
		case 1, 3:
			late = ", late: its sender was deposed or gave up on it"
		case 4:
			late = ", after the pass that sent it gave way without waiting for it"
		}
		return fmt.Sprintf("%s applies %s (epoch %d%s)", inst(arg(1)), status(arg(2)), arg(3), late)
	case "refuse":
		return fmt.Sprintf("%s refuses an instruction of epoch %d (it has accepted epoch %d)", inst(arg(1)), arg(2), arg(3))
	case "lost":
		return fmt.Sprintf("the instruction to %s is lost", inst(arg(1)))
	case "lostanswer":
		return fmt.Sprintf("%s applied it, but its answer is lost", inst(arg(1)))
	case "lostlate":
		return fmt.Sprintf("the late instruction to %s is lost", inst(arg(1)))
	case "recorder":
		return "the recorder writes the queued switch record"
	case "record":
		return fmt.Sprintf("switch record written: %s", phase(arg(1)))
	}
	return strings.Join(f, " ")
}
