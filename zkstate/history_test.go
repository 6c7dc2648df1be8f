package zkstate_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/switchyard/switchyard/deployments/local"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/zkstate"
)

type quiet struct{}

func (quiet) Printf(string, ...any) {}

func startZK(t *testing.T) (*zk.Conn, zkstate.Paths) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	z, err := local.StartZooKeeper(ctx, t.TempDir(), 250*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(z.Stop)
	conn, _, err := zkstate.Connect(ctx, []string{z.Addr}, 5*time.Second, "", quiet{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	paths, _ := zkstate.NewPaths("/team/shop")
	if err := zkstate.EnsurePath(conn, paths.History(), zkstate.Auth("").ACL()); err != nil {
		t.Fatal(err)
	}
	return conn, paths
}

// file appends rec to the history as the controller does.
func file(t *testing.T, conn *zk.Conn, paths zkstate.Paths, rec zkstate.Switch) {
	t.Helper()
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Create(paths.History()+"/s_", b, zk.FlagSequence, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
}

func TestHistory(t *testing.T) {
	conn, paths := startZK(t)
	auth := zkstate.Auth("")
	t0 := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	var ids []int64
	for i, color := range []zkstate.Color{zkstate.Green, zkstate.Blue, zkstate.Green} {
		id, err := zkstate.RequestSwitch(conn, paths, auth, string(color))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		if i != 1 { // the second write is made as zkCli makes it: without a note
			if err := zkstate.NoteRequest(conn, paths, auth, id, fmt.Sprintf("ci-%d", i)); err != nil {
				t.Fatal(err)
			}
		}
		done := t0.Add(time.Duration(i)*time.Minute + 40*time.Millisecond)
		file(t, conn, paths, zkstate.Switch{ID: id, Target: color, From: color.Other(), Phase: zkstate.PhaseDone,
			StartedAt: t0.Add(time.Duration(i) * time.Minute), FinishedAt: &done, Steps: []zkstate.Step{}})
	}

	t.Run("the newest n come first, with who asked when it is known", func(t *testing.T) {
		recs, err := zkstate.ReadHistory(conn, paths, 2)
		if err != nil || len(recs) != 2 {
			t.Fatalf("ReadHistory = %d records, %v", len(recs), err)
		}
		if recs[0].ID != ids[2] || recs[0].AskedBy != "ci-2" || recs[1].ID != ids[1] || recs[1].AskedBy != "" {
			t.Fatalf("got %d by %q then %d by %q; want %d by ci-2 then %d by nobody known", recs[0].ID, recs[0].AskedBy, recs[1].ID, recs[1].AskedBy, ids[2], ids[1])
		}
		if d := recs[0].Duration(); d != 40*time.Millisecond {
			t.Fatalf("duration %s", d)
		}
	})

	t.Run("an unreadable node is reported and the others are listed", func(t *testing.T) {
		if _, err := conn.Create(paths.History()+"/s_", []byte("not json"), zk.FlagSequence, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatal(err)
		}
		recs, err := zkstate.ReadHistory(conn, paths, 0)
		if err == nil || !strings.Contains(err.Error(), `"not json"`) || len(recs) != 3 {
			t.Fatalf("ReadHistory = %d records, %v; want 3 and the bad node reported", len(recs), err)
		}
	})

	t.Run("the view names who asked for the current switch", func(t *testing.T) {
		done := t0.Add(time.Hour)
		b, _ := json.Marshal(zkstate.Switch{ID: ids[2], Target: zkstate.Green, Phase: zkstate.PhaseDone, StartedAt: t0, FinishedAt: &done})
		if err := zkstate.EnsurePath(conn, paths.Switch(), auth.ACL()); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Set(paths.Switch(), b, -1); err != nil {
			t.Fatal(err)
		}
		v := zkstate.ReadView(context.Background(), conn, paths, noRegistry{})
		if v.Switch == nil || v.Switch.AskedBy != "ci-2" {
			t.Fatalf("view switch = %+v", v.Switch)
		}
	})

	t.Run("a planted note is described, not printed raw", func(t *testing.T) {
		const id = 1 << 40
		if _, err := conn.Create(paths.Request(id), []byte(`{"asked_by":"evil\u001b[2Jme"}`), 0, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatal(err)
		}
		r, ok, err := zkstate.ReadRequest(conn, paths, id)
		if err != nil || !ok || strings.ContainsRune(r.AskedBy, 0x1b) {
			t.Fatalf("ReadRequest = %q, %v, %v", r.AskedBy, ok, err)
		}
	})

	t.Run("notes beyond the newest kept are pruned", func(t *testing.T) {
		for i := range zkstate.RequestsKept + 5 {
			if err := zkstate.NoteRequest(conn, paths, auth, int64(1<<41+i), "ci"); err != nil {
				t.Fatal(err)
			}
		}
		names, _, err := conn.Children(paths.Requests())
		if err != nil || len(names) != zkstate.RequestsKept {
			t.Fatalf("%d notes kept, %v; want %d", len(names), err, zkstate.RequestsKept)
		}
		if _, ok, _ := zkstate.ReadRequest(conn, paths, 1<<41+zkstate.RequestsKept+4); !ok {
			t.Fatal("the newest note was pruned")
		}
	})
}

type noRegistry struct{}

func (noRegistry) Instances(context.Context, string, uint64, time.Duration) (snap registry.Snapshot, err error) {
	return snap, errors.New("no registry in this test")
}

func (noRegistry) Gateways(context.Context) ([]registry.GatewayReport, error) {
	return nil, errors.New("no registry in this test")
}

// TestRequestSwitchOverUndoesOnlyItsOwnWrite: a release moves a service
// back over its own write, never over a later one.
func TestRequestSwitchOverUndoesOnlyItsOwnWrite(t *testing.T) {
	conn, paths := startZK(t)
	auth := zkstate.Auth("")
	mine, err := zkstate.RequestSwitch(conn, paths, auth, "green")
	if err != nil {
		t.Fatal(err)
	}
	back, err := zkstate.RequestSwitchOver(conn, paths, "blue", mine)
	if err != nil || back <= mine {
		t.Fatalf("over its own write: %d, %v", back, err)
	}
	if got, _, _ := conn.Get(paths.ActiveColor()); string(got) != "blue" {
		t.Fatalf("/active_color = %q, want blue", got)
	}
	// Someone else writes after; the release's undo of its own write (now
	// two writes old) changes nothing.
	theirs, err := zkstate.RequestSwitch(conn, paths, auth, "green")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zkstate.RequestSwitchOver(conn, paths, "blue", back); !errors.Is(err, zkstate.ErrWrittenSince) {
		t.Fatalf("over a later write: %v, want ErrWrittenSince", err)
	}
	got, stat, _ := conn.Get(paths.ActiveColor())
	if string(got) != "green" || stat.Mzxid != theirs {
		t.Fatalf("/active_color = %q (write %d), want their green (write %d)", got, stat.Mzxid, theirs)
	}
	if _, err := zkstate.RequestSwitchOver(conn, paths, "purple", theirs); !errors.Is(err, zkstate.ErrBadColor) {
		t.Fatalf("a bad color: %v, want ErrBadColor", err)
	}
}
