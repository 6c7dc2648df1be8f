package zkstate

import (
	"fmt"
	"time"

	"github.com/switchyard/switchyard/registry"
)

// Phase is where a switch is.
type Phase string

// The phases of a switch.
const (
	PhaseSwitching Phase = "switching"
	PhaseDone      Phase = "done"
	PhaseRefused   Phase = "refused"
	PhaseFailed    Phase = "failed"
)

// Finished reports whether the phase is final.
func (p Phase) Finished() bool { return p != PhaseSwitching }

// String is the phase's name.
func (p Phase) String() string { return string(p) }

// StepState is where one step of a switch is.
type StepState int

// The states of a step. A step is pending until the instance acknowledged
// it (done) or the leader gave up on that instance (skipped).
const (
	StepPending StepState = iota
	StepDone
	StepSkipped
)

var stepStates = [...]string{StepPending: "pending", StepDone: "done", StepSkipped: "skipped"}

// String is the state's name, as the record stores it.
func (s StepState) String() string {
	if s >= 0 && int(s) < len(stepStates) {
		return stepStates[s]
	}
	return fmt.Sprintf("StepState(%d)", int(s))
}

// MarshalText stores the state by name.
func (s StepState) MarshalText() ([]byte, error) {
	if s < 0 || int(s) >= len(stepStates) {
		return nil, fmt.Errorf("zkstate: no step state %d", int(s))
	}
	return []byte(stepStates[s]), nil
}

// UnmarshalText reads a state by name.
func (s *StepState) UnmarshalText(b []byte) error {
	for i, name := range stepStates {
		if name == string(b) {
			*s = StepState(i)
			return nil
		}
	}
	return fmt.Errorf("zkstate: unknown step state %q", b)
}

// Step is one instruction of a switch.
type Step struct {
	Instance string          `json:"instance"`
	Service  string          `json:"service"`
	Color    Color           `json:"color"`
	Action   registry.Status `json:"action"` // UP or OUT_OF_SERVICE
	State    StepState       `json:"state"`
	Attempts int             `json:"attempts,omitempty"`
	Error    string          `json:"error,omitempty"`
	At       time.Time       `json:"at,omitzero"`
	// Batch numbers the batch the step went out in, from 1 for the canary:
	// the steps of one batch are instructed at once. 0 in records of
	// controllers that instructed one instance at a time.
	Batch int `json:"batch,omitempty"`
}

// Switch is the record the leader keeps in /switchyard/switch.
type Switch struct {
	// ID is the zxid of the /active_color write this switch answers, so a
	// writer can wait for the outcome of its own write.
	ID     int64 `json:"id"`
	Target Color `json:"target"`
	// Goal is the last valid color asked for, which the controller keeps
	// driving toward when /active_color holds a bad value.
	Goal Color `json:"goal,omitempty"`
	// Active is the color that serves: the target once done, the previous
	// color while switching or after a refusal.
	Active Color  `json:"active,omitempty"`
	From   Color  `json:"from,omitempty"`
	Phase  Phase  `json:"phase"`
	Reason string `json:"reason,omitempty"`
	Leader string `json:"leader,omitempty"`
	// AskedBy is who made the /active_color write this switch answers, as
	// `switchyard switch` noted it beside the write (Paths.Request); empty
	// when unknown, as for a zkCli write. The controller does not store
	// it: ReadView and ReadHistory fill it in.
	AskedBy string `json:"asked_by,omitempty"`
	// Steps are the newest steps, at most a few hundred; StepsTotal counts
	// them all.
	Steps      []Step `json:"steps"`
	StepsTotal int    `json:"steps_total,omitempty"`
	// Quarantined lists the nodes the switch did not trust, and why.
	Quarantined []Quarantined `json:"quarantined,omitempty"`
	// Streams accounts for the long-lived connections on the color the
	// switch took out; nil when no gateway reported any.
	Streams    *StreamMoves `json:"streams,omitempty"`
	StartedAt  time.Time    `json:"started_at"`
	FinishedAt *time.Time   `json:"finished_at,omitempty"`
	// Checks are the results of the pre-switch checks, when any ran;
	// RefusedBy is "checks" when one of them refused the switch, which
	// then waits for a new write rather than being retried.
	Checks    []CheckResult `json:"checks,omitempty"`
	RefusedBy string        `json:"refused_by,omitempty"`
	// Verdict is the post-switch analysis of a switch done: analyzing,
	// verified or rolled back; empty when none ran.
	Verdict  Verdict   `json:"verdict,omitempty"`
	Analysis *Analyzed `json:"analysis,omitempty"`
}

// RefusedByChecks marks a switch a pre-switch check refused.
const RefusedByChecks = "checks"

// CheckResult is how one pre-switch check went.
type CheckResult struct {
	Name   string   `json:"name"`
	OK     bool     `json:"ok"`
	Detail string   `json:"detail,omitempty"`
	Took   Duration `json:"took"`
}

// Verdict is the outcome of a post-switch analysis.
type Verdict string

// The verdicts.
const (
	VerdictAnalyzing  Verdict = "analyzing"
	VerdictVerified   Verdict = "verified"
	VerdictRolledBack Verdict = "rolled back"
	// VerdictSuperseded: a newer write came before the window ended.
	VerdictSuperseded Verdict = "superseded"
)

// Analyzed is what a post-switch analysis compared and decided.
type Analyzed struct {
	Window Duration  `json:"window"`
	Until  time.Time `json:"until"`
	// Baseline is the old color before the flip, New the new color since
	// the switch was done, as the gateways saw them.
	Baseline Figures `json:"baseline"`
	New      Figures `json:"new"`
	// Reason says which bound decided a rollback, with its figures.
	Reason string `json:"reason,omitempty"`
}

// Figures are one color's answers over an interval.
type Figures struct {
	Color    Color   `json:"color"`
	Requests uint64  `json:"requests"`
	Errors   uint64  `json:"errors"`
	P99      float64 `json:"p99_seconds"`
	Seconds  float64 `json:"seconds"`
}

// ErrorRate is the share of errors, 0 with no request.
func (f Figures) ErrorRate() float64 {
	if f.Requests == 0 {
		return 0
	}
	return float64(f.Errors) / float64(f.Requests)
}

// StreamMoves accounts for the long-lived connections (WebSocket, SSE,
// gRPC streams) that were on the instances a switch took out. Gateways end
// them after their grace period, so that their clients reconnect to the
// target; the controller follows the gateways' reports after the switch.
type StreamMoves struct {
	// Open is how many the gateways had on the taken-out instances when
	// the switch finished.
	Open int `json:"open"`
	// Moved is how many the gateways have ended since the switch started
	// because their instance left the UP set.
	Moved int `json:"moved"`
	// Left is how many are still open on the taken-out instances; 0 once
	// every one moved.
	Left int `json:"left"`
}

// Duration is how long the switch took, or has taken so far.
func (s Switch) Duration() time.Duration {
	if s.FinishedAt != nil {
		return s.FinishedAt.Sub(s.StartedAt)
	}
	return time.Since(s.StartedAt)
}

// GoalColor is the valid color the record drives toward.
func (s Switch) GoalColor() Color {
	if s.Goal != "" {
		return s.Goal
	}
	return s.Active
}
