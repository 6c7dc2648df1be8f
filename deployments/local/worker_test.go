package local

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/switchyard/switchyard/internal/retry"
	"github.com/switchyard/switchyard/zkstate"
)

// workerDone is what examples/worker records for a job.
type workerDone struct {
	Job       string    `json:"job"`
	Color     string    `json:"color"`
	Instance  string    `json:"instance"`
	ClaimedAt time.Time `json:"claimed_at"`
}

// TestWorkerConsumesOnlyWhileLive runs examples/worker, two blue and two
// green, on a queue fed steadily across a flip to green and back: every
// job is done exactly once, green takes none before it is brought UP, and
// blue none once it was taken out.
func TestWorkerConsumesOnlyWhileLive(t *testing.T) {
	c, _ := startCluster(t, builtin(), 1, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const queue = "/worker-test"
	for _, color := range []zkstate.Color{zkstate.Blue, zkstate.Blue, zkstate.Green, zkstate.Green} {
		if _, err := c.startExample(ctx, "worker", color, "--queue", queue, "--job-time", "5ms"); err != nil {
			t.Fatal(err)
		}
	}
	conn := c.ZKConn()
	// The workers made the queue's nodes before they listened.
	const jobs = 600
	produced := make(chan error, 1)
	go func() {
		for range jobs {
			if _, err := conn.Create(fmt.Sprintf("%s/jobs/job-", queue), nil, zk.FlagSequence, zk.WorldACL(zk.PermAll)); err != nil {
				produced <- err
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		produced <- nil
	}()
	time.Sleep(time.Second) // a hold, not a wait: blue works alone for a while
	toGreen, _, err := c.Flip(ctx, string(zkstate.Green))
	if err != nil {
		t.Fatal(err)
	}
	green, err := c.WaitRecord(ctx, time.Minute, func(r zkstate.Switch) bool { return r.ID == toGreen && r.Phase == zkstate.PhaseDone })
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // green works alone for a while
	toBlue, _, err := c.Flip(ctx, string(zkstate.Blue))
	if err != nil {
		t.Fatal(err)
	}
	blue, err := c.WaitRecord(ctx, time.Minute, func(r zkstate.Switch) bool { return r.ID == toBlue && r.Phase == zkstate.PhaseDone })
	if err != nil {
		t.Fatal(err)
	}
	if err := <-produced; err != nil {
		t.Fatal(err)
	}
	// Every job gets done: the queue empties and each has its record.
	var done []string
	if err := retry.Until(ctx, time.Minute, func() (bool, error) {
		left, _, err := conn.Children(queue + "/jobs")
		if err != nil {
			return false, err
		}
		done, _, err = conn.Children(queue + "/done")
		return len(left) == 0 && len(done) == jobs, err
	}); err != nil {
		t.Fatalf("%d of %d jobs done: %v", len(done), jobs, err)
	}

	// When each color was live, from the switches' own steps: a worker
	// learns its status when the registry confirms it, which is when a step
	// is recorded done; a job claimed within slack after that was in hand.
	const slack = 250 * time.Millisecond
	stepAt := func(rec zkstate.Switch, color zkstate.Color, action string) (first, last time.Time) {
		for _, s := range rec.Steps {
			if string(s.Color) != string(color) || string(s.Action) != action || s.Service != "worker" {
				continue
			}
			if first.IsZero() || s.At.Before(first) {
				first = s.At
			}
			if s.At.After(last) {
				last = s.At
			}
		}
		return first, last
	}
	greenUp, _ := stepAt(green, zkstate.Green, "UP")
	_, blueOut := stepAt(green, zkstate.Blue, "OUT_OF_SERVICE")
	blueUp, _ := stepAt(blue, zkstate.Blue, "UP")
	_, greenOut := stepAt(blue, zkstate.Green, "OUT_OF_SERVICE")
	if greenUp.IsZero() || blueOut.IsZero() || blueUp.IsZero() || greenOut.IsZero() {
		t.Fatalf("the switches did not move the workers: %+v %+v", green.Steps, blue.Steps)
	}
	by := map[string]int{}
	for _, name := range done {
		b, _, err := conn.Get(queue + "/done/" + name)
		if err != nil {
			t.Fatal(err)
		}
		var d workerDone
		if err := json.Unmarshal(b, &d); err != nil || d.Job != name {
			t.Fatalf("job %s recorded as %q: %v", name, b, err)
		}
		by[d.Color]++
		switch at := d.ClaimedAt; d.Color {
		case "green":
			if at.Before(greenUp) || at.After(greenOut.Add(slack)) {
				t.Errorf("green took %s at %s, while it was not live (UP %s, OUT %s)", name, at.Format("15:04:05.000"), greenUp.Format("15:04:05.000"), greenOut.Format("15:04:05.000"))
			}
		case "blue":
			if at.After(blueOut.Add(slack)) && at.Before(blueUp) {
				t.Errorf("blue took %s at %s, while it was out (OUT %s, UP again %s)", name, at.Format("15:04:05.000"), blueOut.Format("15:04:05.000"), blueUp.Format("15:04:05.000"))
			}
		default:
			t.Errorf("job %s done by color %q", name, d.Color)
		}
	}
	if by["blue"] == 0 || by["green"] == 0 {
		t.Fatalf("jobs by color: %v, want both colors to have worked in turn", by)
	}
	t.Logf("%d jobs, each done once, across two switches: %v", jobs, by)
}
