package controller

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/switchyard/switchyard/zkstate"
)

func TestRecordOfAHugeSwitchStaysUnderZooKeepersLimit(t *testing.T) {
	rec := zkstate.Switch{ID: 1, Target: "green", Phase: zkstate.PhaseDone}
	for i := range 20000 {
		rec.Steps = append(rec.Steps, zkstate.Step{Instance: fmt.Sprintf("hello-green-%06d", i), Service: "hello", Color: "green", Action: "UP", State: zkstate.StepDone})
	}
	b := encode(rec)
	if len(b) >= 1<<20 {
		t.Fatalf("a 20,000-step record encodes to %d bytes; ZooKeeper refuses 1 MB", len(b))
	}
	var got zkstate.Switch
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.StepsTotal != 20000 || len(got.Steps) != maxRecordSteps || got.Steps[len(got.Steps)-1].Instance != "hello-green-019999" {
		t.Fatalf("steps_total %d, %d steps kept, last %q; want the newest %d of 20000", got.StepsTotal, len(got.Steps), got.Steps[len(got.Steps)-1].Instance, maxRecordSteps)
	}
	if len(rec.Steps) != 20000 {
		t.Fatal("encode changed the caller's record")
	}
}
