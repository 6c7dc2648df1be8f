package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/switchyard/switchyard/zkstate"
)

// progress shows a switch as the leader records it: switch --wait hands it
// every record it reads, then the outcome.
type progress interface {
	seen(rec zkstate.Switch)
	end(rec zkstate.Switch, code int, summary string)
}

// tracker is what both views of a switch's progress keep: which switch,
// how many steps it should take and which steps were shown.
type tracker struct {
	id       int64
	target   zkstate.Color
	expected int       // steps planned from the instances at the start; 0 when unknown
	begun    time.Time // when the write was made, on this machine's clock
	noLeader bool      // no controller led when the write was made

	started time.Time // StartedAt of the switch whose steps are shown
	shown   int       // how many of its steps were shown
}

// newSteps returns the steps of rec not shown yet, the number of the first
// (from 1), and how many fell out of the record (it keeps the newest few
// hundred) before they could be shown.
func (t *tracker) newSteps(rec zkstate.Switch) (first int, steps []zkstate.Step, missed int) {
	if !rec.StartedAt.Equal(t.started) {
		t.started, t.shown = rec.StartedAt, 0
	}
	total := stepsTotal(rec)
	offset := total - len(rec.Steps) // the number of rec.Steps[0]
	if t.shown < offset {
		missed, t.shown = offset-t.shown, offset
	}
	first = t.shown + 1
	if t.shown < total {
		steps = rec.Steps[t.shown-offset:]
	}
	t.shown = total
	return first, steps, missed
}

// count numbers step k, out of the expected steps when it is within them.
func (t *tracker) count(k int) string {
	if k <= t.expected {
		return fmt.Sprintf("%d/%d", k, t.expected)
	}
	return strconv.Itoa(k)
}

func stepsTotal(rec zkstate.Switch) int { return max(rec.StepsTotal, len(rec.Steps)) }

// countSteps counts a record's steps by state; all is false when the
// record no longer holds every step, and only total is known.
func countSteps(rec zkstate.Switch) (total, done, skipped int, all bool) {
	total = stepsTotal(rec)
	for _, s := range rec.Steps {
		switch s.State {
		case zkstate.StepDone:
			done++
		case zkstate.StepSkipped:
			skipped++
		}
	}
	return total, done, skipped, total == len(rec.Steps)
}

// stepsSummary says how a switch's steps went.
func stepsSummary(rec zkstate.Switch) string {
	total, done, skipped, all := countSteps(rec)
	switch {
	case total == 0:
		return "no step"
	case !all:
		return fmt.Sprintf("%d steps", total)
	}
	return fmt.Sprintf("%d steps: %d done, %d skipped", total, done, skipped)
}

// outcome turns what FollowSwitch returned into an exit code and a summary
// line.
func outcome(t tracker, rec zkstate.Switch, err error) (int, string) {
	ours := rec.ID >= t.id && rec.Target == t.target
	switch {
	case err == nil:
		s := fmt.Sprintf("switched to %s in %s (%s)", t.target, duration(rec.Duration()), stepsSummary(rec))
		if rec.Reason != "" {
			s += ": " + rec.Reason
		}
		return 0, s
	case errors.Is(err, zkstate.ErrSuperseded):
		return codeFailed, fmt.Sprintf("switch %d to %s superseded by a later write: switch %d to %s; routing follows that one",
			t.id, t.target, rec.ID, rec.Target)
	case errors.Is(err, zkstate.ErrNotDone):
		code := codeFailed
		if rec.Phase == zkstate.PhaseRefused {
			code = codeRefused
		}
		return code, fmt.Sprintf("switch %d to %s %s after %s (%s): %s", t.id, t.target, rec.Phase, duration(rec.Duration()), stepsSummary(rec), rec.Reason)
	case errors.Is(err, context.DeadlineExceeded):
		state := "the leader has not taken it up yet"
		if ours {
			state = fmt.Sprintf("%s, %s", rec.Phase, stepsSummary(rec))
		}
		return codeTimeout, fmt.Sprintf("timed out after %s: switch %d to %s is not finished (%s); it goes on, see switchyard status",
			duration(time.Since(t.begun)), t.id, t.target, state)
	case errors.Is(err, context.Canceled):
		return codeError, fmt.Sprintf("interrupted: switch %d to %s goes on, see switchyard status", t.id, t.target)
	}
	return codeError, fmt.Sprintf("following switch %d to %s: %v", t.id, t.target, err)
}

func duration(d time.Duration) string {
	if d < time.Millisecond {
		return d.Round(time.Microsecond).String()
	}
	return d.Round(time.Millisecond).String()
}

// plainProgress prints one timestamped line per step and a summary line,
// for logs and CI, where nothing can be redrawn.
type plainProgress struct {
	tracker
	out, errOut io.Writer
	announced   bool
}

// stamp renders an event's time in UTC, to the millisecond.
func stamp(t time.Time) string {
	if t.IsZero() {
		t = time.Now()
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

func (p *plainProgress) seen(rec zkstate.Switch) {
	if rec.Target != p.target {
		return
	}
	if !p.announced && rec.Phase == zkstate.PhaseSwitching {
		p.announced = true
		expect := "steps unknown"
		if p.expected > 0 {
			expect = fmt.Sprintf("%d steps expected", p.expected)
		}
		fmt.Fprintf(p.out, "%s switch %d to %s started by %s: %s\n", stamp(rec.StartedAt), rec.ID, rec.Target, rec.Leader, expect)
	}
	first, steps, missed := p.newSteps(rec)
	if missed > 0 {
		fmt.Fprintf(p.out, "%s %d steps not shown: the record keeps only the newest\n", stamp(time.Time{}), missed)
	}
	for i, s := range steps {
		fmt.Fprintf(p.out, "%s step %s: %s (%s, %s) %s %s%s\n", stamp(s.At), p.count(first+i), s.Instance, s.Service, s.Color, s.Action, s.State, stepDetail(s))
	}
}

func stepDetail(s zkstate.Step) string {
	var d string
	if s.Attempts > 1 {
		d = fmt.Sprintf(" after %d attempts", s.Attempts)
	}
	if s.Error != "" {
		d += ": " + s.Error
	}
	return d
}

func (p *plainProgress) end(rec zkstate.Switch, code int, summary string) {
	at := time.Time{}
	if rec.Target == p.target && rec.FinishedAt != nil && code != codeTimeout {
		at = *rec.FinishedAt
	}
	out := p.out
	if code != 0 {
		out = p.errOut
	}
	fmt.Fprintf(out, "%s %s\n", stamp(at), summary)
}

// ttyProgress keeps one line at the bottom of a terminal redrawn in place:
// a bar of the steps done out of those expected, the time since the write
// and what the switch is doing; each step scrolls up above it as it is
// recorded.
type ttyProgress struct {
	tracker
	out, errOut io.Writer
	width       int

	mu   sync.Mutex
	last *zkstate.Switch
	stop chan struct{}
	done chan struct{}
}

// redraw is how often the elapsed time moves.
const redraw = 100 * time.Millisecond

func newTTYProgress(t tracker, out, errOut io.Writer, width int) *ttyProgress {
	p := &ttyProgress{tracker: t, out: out, errOut: errOut, width: width, stop: make(chan struct{}), done: make(chan struct{})}
	p.draw()
	go func() {
		defer close(p.done)
		tick := time.NewTicker(redraw)
		defer tick.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
				p.mu.Lock()
				p.draw()
				p.mu.Unlock()
			}
		}
	}()
	return p
}

func (p *ttyProgress) seen(rec zkstate.Switch) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if rec.Target != p.target {
		return
	}
	first, steps, missed := p.newSteps(rec)
	if missed > 0 || len(steps) > 0 {
		fmt.Fprint(p.out, "\r\x1b[K")
	}
	if missed > 0 {
		fmt.Fprintf(p.out, "  … %d steps not shown\n", missed)
	}
	for i, s := range steps {
		mark := "✓"
		if s.State != zkstate.StepDone {
			mark = "✗"
		}
		fmt.Fprintf(p.out, "  %s %-5s %-24s %-15s %s%s  +%s\n", mark, p.count(first+i), s.Instance, s.Action, s.State, stepDetail(s), duration(s.At.Sub(rec.StartedAt)))
	}
	p.last = &rec
	p.draw()
}

func (p *ttyProgress) end(_ zkstate.Switch, code int, summary string) {
	close(p.stop)
	<-p.done
	fmt.Fprint(p.out, "\r\x1b[K")
	if code == 0 {
		fmt.Fprintf(p.out, "✓ %s\n", summary)
		return
	}
	fmt.Fprintf(p.errOut, "✗ %s\n", summary)
}

// draw redraws the status line; callers hold mu, or own p alone.
func (p *ttyProgress) draw() {
	fmt.Fprint(p.out, "\r\x1b[K"+truncate(p.status(time.Since(p.begun)), p.width-1))
}

// status is the redrawn line.
func (p *ttyProgress) status(elapsed time.Duration) string {
	done, what := 0, "waiting for the leader"
	if p.noLeader {
		what += " (no controller leads now)"
	}
	if p.last != nil {
		rec := *p.last
		done = stepsTotal(rec)
		switch {
		case done == 0:
			what = fmt.Sprintf("health-checking the %s instances", p.target)
		case p.expected > 0 && done >= p.expected:
			what = "waiting for the gateways"
		default:
			s := rec.Steps[len(rec.Steps)-1]
			what = fmt.Sprintf("%s %s %s", s.Instance, s.Action, s.State)
		}
	}
	el := elapsed.Truncate(100 * time.Millisecond).String()
	if p.expected == 0 {
		return fmt.Sprintf("%d steps  %s  to %s: %s", done, el, p.target, what)
	}
	return fmt.Sprintf("%s %d/%d  %s  to %s: %s", bar(done, p.expected, 20), done, p.expected, el, p.target, what)
}

// bar draws done out of total in width cells.
func bar(done, total, width int) string {
	filled := min(width, done*width/max(total, 1))
	b := "[" + strings.Repeat("=", filled)
	if filled < width {
		b += ">" + strings.Repeat(" ", width-filled-1)
	}
	return b + "]"
}

func truncate(s string, width int) string {
	if r := []rune(s); width > 0 && len(r) > width {
		return string(r[:width-1]) + "…"
	}
	return s
}

// isTerminal reports whether f is a terminal that can redraw a line. A
// character device is one, or /dev/null, which takes anything.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0 && os.Getenv("TERM") != "dumb"
}

// terminalWidth is $COLUMNS when the shell exports it, else 80.
func terminalWidth() int {
	if n, err := strconv.Atoi(os.Getenv("COLUMNS")); err == nil && n > 20 {
		return n
	}
	return 80
}
