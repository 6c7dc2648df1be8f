package zkstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/go-zookeeper/zk"
)

// ErrSuperseded means a later write to /active_color replaced the one
// being waited for.
var ErrSuperseded = errors.New("zkstate: switch superseded by a later write to /active_color")

// ErrNotDone wraps the outcome of a switch that finished without being
// done: refused or failed. The error says why.
var ErrNotDone = errors.New("zkstate: switch not done")

// Connect opens a session and waits until it is established, then logs in
// with auth. A first connect may take longer than the session timeout on a
// loaded machine, so it gets at least 30 s. The returned channel carries
// the session's later events; nobody has to read it. The library's own log
// lines go to log.
func Connect(ctx context.Context, servers []string, sessionTimeout time.Duration, auth Auth, log zk.Logger) (*zk.Conn, <-chan zk.Event, error) {
	conn, events, err := zk.Connect(servers, sessionTimeout, zk.WithLogInfo(false), zk.WithLogger(log))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to zookeeper: %w", err)
	}
	within := max(30*time.Second, sessionTimeout)
	timeout := time.NewTimer(within)
	defer timeout.Stop()
	for {
		select {
		case ev := <-events:
			if ev.State != zk.StateHasSession {
				continue
			}
			if err := auth.Login(conn); err != nil {
				conn.Close()
				return nil, nil, err
			}
			return conn, events, nil
		case <-timeout.C:
			conn.Close()
			return nil, nil, fmt.Errorf("no ZooKeeper session with %v within %s", servers, within)
		case <-ctx.Done():
			conn.Close()
			return nil, nil, ctx.Err()
		}
	}
}

// ReadSwitch reads the switch record; ok is false when there is none yet.
func ReadSwitch(c *zk.Conn, p Paths) (rec Switch, ok bool, err error) {
	b, _, err := c.Get(p.Switch())
	return decodeSwitch(p, b, err)
}

// decodeSwitch is the record in b, as a read of it answered (err).
func decodeSwitch(p Paths, b []byte, err error) (rec Switch, ok bool, _ error) {
	if errors.Is(err, zk.ErrNoNode) {
		return rec, false, nil
	}
	if err != nil {
		return rec, false, fmt.Errorf("read %s: %w", p.Switch(), err)
	}
	if len(b) == 0 {
		return rec, false, nil
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, false, fmt.Errorf("decode %s: %w", p.Switch(), err)
	}
	return rec, true, nil
}

// ReadActiveColor reads the color /active_color holds. A value that is
// not a color is an error wrapping ErrBadColor; any other error is the
// read's.
func ReadActiveColor(conn *zk.Conn, paths Paths) (Color, error) {
	raw, _, err := conn.Get(paths.ActiveColor())
	if err != nil {
		return "", fmt.Errorf("read %s: %w", paths.ActiveColor(), err)
	}
	color, err := ParseColor(raw)
	if err != nil {
		return "", fmt.Errorf("%s: %w", paths.ActiveColor(), err)
	}
	return color, nil
}

// RequestSwitch writes color to /active_color, as zkCli.sh set would, and
// returns the write's zxid to wait on. A bad color is refused before
// anything is written.
func RequestSwitch(conn *zk.Conn, paths Paths, auth Auth, color string) (int64, error) {
	if _, err := ParseColor([]byte(color)); err != nil {
		return 0, err
	}
	stat, err := conn.Set(paths.ActiveColor(), []byte(color), -1)
	if errors.Is(err, zk.ErrNoAuth) {
		return 0, fmt.Errorf("write %s: %w (set SWITCHYARD_ZK_AUTH to the switchyard identity)", paths.ActiveColor(), err)
	}
	if errors.Is(err, zk.ErrNoNode) {
		if err := EnsurePath(conn, paths.Root(), auth.ACL()); err != nil {
			return 0, err
		}
		if _, err := conn.Create(paths.ActiveColor(), []byte(color), 0, auth.ACL()); err != nil {
			return 0, fmt.Errorf("create %s: %w", paths.ActiveColor(), err)
		}
		_, stat, err = conn.Get(paths.ActiveColor())
	}
	if err != nil {
		return 0, fmt.Errorf("write %s: %w", paths.ActiveColor(), err)
	}
	return stat.Mzxid, nil
}

// ErrWrittenSince means /active_color was written after the write a
// conditional request (RequestSwitchOver) was to replace.
var ErrWrittenSince = errors.New("zkstate: /active_color was written since")

// RequestSwitchOver is RequestSwitch only if the last write to
// /active_color is still the one with zxid over: what undoes a write of
// one's own without overwriting anyone else's later one.
func RequestSwitchOver(conn *zk.Conn, paths Paths, color string, over int64) (int64, error) {
	if _, err := ParseColor([]byte(color)); err != nil {
		return 0, err
	}
	_, stat, err := conn.Get(paths.ActiveColor())
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", paths.ActiveColor(), err)
	}
	if stat.Mzxid != over {
		return 0, fmt.Errorf("%w: by write %d, after %d", ErrWrittenSince, stat.Mzxid, over)
	}
	st, err := conn.Set(paths.ActiveColor(), []byte(color), stat.Version)
	if errors.Is(err, zk.ErrBadVersion) {
		return 0, fmt.Errorf("%w: while writing %s over %d", ErrWrittenSince, color, over)
	}
	if err != nil {
		return 0, fmt.Errorf("write %s: %w", paths.ActiveColor(), err)
	}
	return st.Mzxid, nil
}

// WaitSwitch waits for the leader's outcome of the write with zxid id to
// target. It returns the finished record; a refused or failed switch is
// returned with an error wrapping ErrNotDone that carries its reason, and
// a later write with one wrapping ErrSuperseded.
func WaitSwitch(ctx context.Context, conn *zk.Conn, paths Paths, id int64, target Color) (Switch, error) {
	return FollowSwitch(ctx, conn, paths, id, target, nil)
}

// FollowSwitch is WaitSwitch that also hands seen every record it reads
// that answers the write or a later one, as the record changes, so that a
// caller can show the switch's progress. seen runs on the caller's
// goroutine; nil is allowed.
func FollowSwitch(ctx context.Context, conn *zk.Conn, paths Paths, id int64, target Color, seen func(Switch)) (Switch, error) {
	return watchSwitch(ctx, conn, paths, "the switch to "+string(target), func(rec Switch, ok bool) (Switch, bool, error) {
		if !ok || rec.ID < id {
			return rec, false, nil
		}
		if seen != nil {
			seen(rec)
		}
		switch {
		case rec.Target != target && rec.ID > id && rec.Goal != target:
			return rec, true, fmt.Errorf("%w (now %s)", ErrSuperseded, rec.Target)
		case rec.Target == target && rec.Phase == PhaseDone:
			return rec, true, nil
		case rec.Target == target && rec.Phase.Finished():
			return rec, true, fmt.Errorf("%w: switch to %s %s: %s", ErrNotDone, target, rec.Phase, rec.Reason)
		}
		return rec, false, nil
	})
}

// watchSwitch reads the switch record each time it changes, and at least
// every second (a watch may be lost with a reconnect, and the history
// changes without one), until check says it is done, and returns what
// check returned then. waiting names what is waited for in the error of a
// context that ends first.
func watchSwitch(ctx context.Context, conn *zk.Conn, paths Paths, waiting string, check func(rec Switch, ok bool) (Switch, bool, error)) (Switch, error) {
	for {
		b, _, watch, err := conn.GetW(paths.Switch())
		rec, ok, err := decodeSwitch(paths, b, err)
		if err != nil {
			return rec, err
		}
		if out, done, err := check(rec, ok); done {
			return out, err
		}
		select {
		case <-ctx.Done():
			return rec, fmt.Errorf("waiting for %s: %w", waiting, ctx.Err())
		case <-watch:
		case <-time.After(time.Second):
		}
	}
}

// ErrNothingToAbort says there is no switch in flight to abort.
var ErrNothingToAbort = errors.New("no switch in flight")

// Abort stops the switch in flight by writing its previous color back to
// /active_color, only if no other write came in between, and notes
// askedBy as who asked. The leader then returns every instance to where it
// was before the switch began, make-before-break, and files the aborted
// switch as failed, "aborted". It returns the write's zxid and the color
// written.
func Abort(conn *zk.Conn, paths Paths, auth Auth, askedBy string) (int64, Color, error) {
	rec, ok, err := ReadSwitch(conn, paths)
	if err != nil {
		return 0, "", err
	}
	if !ok || rec.Phase != PhaseSwitching {
		if ok {
			return 0, "", fmt.Errorf("%w: the last switch, %d to %s, is %s", ErrNothingToAbort, rec.ID, rec.Target, rec.Phase)
		}
		return 0, "", ErrNothingToAbort
	}
	if rec.From == "" {
		return 0, "", fmt.Errorf("%w: switch %d to %s has no color before it to return to", ErrNothingToAbort, rec.ID, rec.Target)
	}
	id, err := RequestSwitchOver(conn, paths, string(rec.From), rec.ID)
	if errors.Is(err, ErrWrittenSince) {
		return 0, "", fmt.Errorf("%w: /active_color was written again after switch %d; the leader is converging on that write (%w)", ErrNothingToAbort, rec.ID, err)
	}
	if err != nil {
		return 0, "", err
	}
	// Best effort, as for a switch: the abort stands without its note.
	_ = NoteRequest(conn, paths, auth, id, "abort by "+askedBy)
	return id, rec.From, nil
}

// FollowVerdict waits for the post-switch analysis of switch id to end,
// and returns the switch with its verdict: from the record while it is
// current, from the history once a later switch (the rollback) replaced
// it. A switch without an analysis is returned as it is.
func FollowVerdict(ctx context.Context, conn *zk.Conn, paths Paths, id int64) (Switch, error) {
	return watchSwitch(ctx, conn, paths, fmt.Sprintf("the analysis of switch %d", id), func(rec Switch, ok bool) (Switch, bool, error) {
		if ok && rec.ID == id {
			return rec, rec.Verdict != VerdictAnalyzing, nil
		}
		hist, _ := ReadHistory(conn, paths, 20)
		for _, h := range hist {
			if h.ID == id && h.Verdict != VerdictAnalyzing {
				return h, true, nil
			}
		}
		return rec, false, nil
	})
}
