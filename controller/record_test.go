package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/deployments/local"
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

// A record write that ZooKeeper refuses is tried again: a switch waits for
// its first record to be written before it instructs anyone, and used to
// wait until leadership ended.
func TestTheRecorderTriesARefusedWriteAgain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	z, err := local.StartZooKeeper(ctx, t.TempDir(), 250*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(z.Stop)
	log := logrus.New()
	log.SetOutput(io.Discard)
	conn, _, err := zkstate.Connect(ctx, []string{z.Addr}, 5*time.Second, "", zkLogger{log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	paths, _ := zkstate.NewPaths("/team")
	if err := zkstate.EnsurePath(conn, paths.Switch(), zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	// Readable, not writable, until the ACL is opened again.
	path := paths.Switch()
	if _, err := conn.SetACL(path, zk.WorldACL(zk.PermRead|zk.PermAdmin), -1); err != nil {
		t.Fatal(err)
	}
	r := newRecorder(conn, path, log)
	go r.Run(ctx)
	rec := zkstate.Switch{ID: 7, Target: zkstate.Green, Phase: zkstate.PhaseSwitching}
	seq := r.Queue(rec)
	flushed := make(chan struct{})
	go func() { r.Flush(ctx, seq); close(flushed) }()
	select {
	case <-flushed:
		t.Fatal("Flush returned while ZooKeeper refused the write")
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := conn.SetACL(path, zk.WorldACL(zk.PermAll), -1); err != nil {
		t.Fatal(err)
	}
	select {
	case <-flushed:
	case <-time.After(15 * time.Second):
		t.Fatal("the refused record was not written again once ZooKeeper took it")
	}
	got, ok, err := zkstate.ReadSwitch(conn, paths)
	if err != nil || !ok || got.ID != rec.ID || got.Target != rec.Target {
		t.Fatalf("record in ZooKeeper: %+v (found %v, %v); want switch %d toward %s", got, ok, err, rec.ID, rec.Target)
	}
}
