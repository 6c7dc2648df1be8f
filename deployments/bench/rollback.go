package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/switchyard/switchyard/deployments/local"
	"github.com/switchyard/switchyard/internal/retry"
	"github.com/switchyard/switchyard/zkstate"
)

// rollbackRPS is the load the automatic rollback is measured under, as
// the issue names it.
const (
	rollbackRPS   = 1000
	rollbackConns = 8
)

// RollbackRow is one bad release flipped live under a steady load until
// the post-switch analysis switched back by itself.
type RollbackRow struct {
	Bad      string  // how green is bad
	Rate     float64 // requests a second the load achieved from the flip to the end
	Requests int     // sent from the flip until a second after the rollback was done
	// BadAnswers are the bad release's own 500s let through; Other every
	// other failure (none may come from the switches themselves).
	BadAnswers, Other int
	OtherKinds        string
	// Decided is the flip until the rollback's switch started; Done until
	// it finished, blue serving alone again.
	Decided, Done time.Duration
	Reason        string // the analysis's reason, with its figures
}

// rollback flips, under a steady rollbackRPS load, to a green built to
// fail (hello --fail-ratio) with the release settings' defaults, and counts
// what the users got until the controller switched back by itself.
func (b *bencher) rollback(ctx context.Context) error {
	for _, ratio := range []string{"0.5", "1"} {
		if err := b.rollbackOnce(ctx, ratio); err != nil {
			return fmt.Errorf("--fail-ratio %s: %w", ratio, err)
		}
	}
	return nil
}

func (b *bencher) rollbackOnce(ctx context.Context, ratio string) error {
	name := "rollback-" + strings.ReplaceAll(ratio, ".", "")
	if err := os.MkdirAll(filepath.Join(b.dir, name), 0o755); err != nil {
		return err
	}
	c, err := b.startCluster(ctx, name, "", 0)
	if err != nil {
		return err
	}
	defer c.Stop()
	for _, color := range []zkstate.Color{zkstate.Blue, zkstate.Blue, zkstate.Green, zkstate.Green} {
		var extra []string
		if color == zkstate.Green {
			extra = []string{"--fail-ratio", ratio}
		}
		if _, err := c.StartInstance(ctx, color, extra...); err != nil {
			return err
		}
	}
	reg, err := c.Backend()
	if err == nil {
		err = waitUp(ctx, reg, zkstate.Blue, 2, 4, time.Minute)
	}
	if err == nil {
		err = c.WaitServing(ctx, zkstate.Blue, time.Minute)
	}
	if err != nil {
		return err
	}
	ld := startPacedLoad(ctx, strings.TrimPrefix(c.GatewayURL, "http://"), rollbackConns, 0, rollbackRPS)
	defer ld.Stop()
	// The baseline: the leader samples the gateways' reports every 2 s.
	_ = retry.Sleep(ctx, 5*time.Second)
	// The write is made with ZooKeeper's Go client rather than zkCli.sh:
	// its answer carries the write's mtime to the millisecond, which the
	// rollback may overwrite before a zkCli JVM has even exited.
	stat, err := c.ZKConn().Set(c.Paths.ActiveColor(), []byte(zkstate.Green), -1)
	if err != nil {
		return err
	}
	id, at := stat.Mzxid, time.UnixMilli(stat.Mtime)
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	// The switch to green may be over, and rolled back, before this
	// looks: its verdict is then read from the history.
	if _, err := c.WaitRecord(wctx, time.Minute, func(r zkstate.Switch) bool {
		return r.ID > id || r.ID == id && r.Phase.Finished()
	}); err != nil {
		return fmt.Errorf("the switch to green: %w", err)
	}
	v, err := zkstate.FollowVerdict(wctx, c.ZKConn(), c.Paths, id)
	if err != nil {
		return err
	}
	if v.Verdict != zkstate.VerdictRolledBack {
		return fmt.Errorf("switch %d to a green failing %s of its answers: verdict %q, want rolled back", id, ratio, v.Verdict)
	}
	back, err := c.WaitRecord(wctx, time.Minute, func(r zkstate.Switch) bool {
		return r.ID > id && r.Target == zkstate.Blue && r.Phase.Finished()
	})
	if err != nil {
		return fmt.Errorf("the rollback's switch: %w", err)
	}
	if back.Phase != zkstate.PhaseDone || back.FinishedAt == nil {
		return fmt.Errorf("the rollback's switch %d finished %s: %s", back.ID, back.Phase, back.Reason)
	}
	_ = retry.Sleep(ctx, time.Second)
	end := time.Now()
	rs := between(ld.Stop(), at, end)
	row := &RollbackRow{Bad: "green answers 500 to " + ratio + " of its requests (`hello --fail-ratio " + ratio + "`)",
		Requests: len(rs), Decided: back.StartedAt.Sub(at), Done: back.FinishedAt.Sub(at)}
	if len(rs) > 0 {
		row.Rate = float64(len(rs)) / end.Sub(at).Seconds()
	}
	if v.Analysis != nil {
		row.Reason = v.Analysis.Reason
	}
	var other []local.Result
	for _, f := range local.Failures(rs) {
		if f.Err == "HTTP 500 Internal Server Error" {
			row.BadAnswers++
		} else {
			other = append(other, f)
		}
	}
	row.Other, row.OtherKinds = len(other), errorKinds(other)
	b.r.Rollbacks = append(b.r.Rollbacks, row)
	b.logf("rollback (fail ratio %s): %d of %d requests were the bad release's 500s, %d other failures; decided %s, done %s after the flip",
		ratio, row.BadAnswers, row.Requests, row.Other, row.Decided.Round(time.Millisecond), row.Done.Round(time.Millisecond))
	if row.Other > 0 {
		return errors.New("requests failed other than by the bad release's own answers: " + row.OtherKinds)
	}
	return nil
}
