package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/controller"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/registry/backends"
	"github.com/switchyard/switchyard/zkstate"
)

// switchHelp is the part of switch's and rollback's help about --wait.
const switchHelp = `
With --wait it follows the leader's switch record until the outcome of this
write: on a terminal as a progress bar redrawn in place, otherwise (CI) as
one timestamped line per step and a summary line. It exits with

  0  done: the new color serves
  1  refused: routing is unchanged (e.g. no healthy instance of the color)
  2  failed, superseded by a later write to /active_color, or (with
     --verify) rolled back by the post-switch analysis
  3  timed out (--timeout) before the switch finished; it goes on
  4  error: ZooKeeper unreachable, no permission, or interrupted
  64 usage: a wrong flag or argument (switch purple); nothing was written

With --verify it then also waits for the post-switch analysis (switchyard
release) to end: 0 once the switch is verified, 2 when the analysis rolled
it back. --timeout covers both.

Without --wait it exits 0 once /active_color is written.`

// switchFlags are the flags of every command that requests a switch.
type switchFlags struct {
	wait    bool
	verify  bool
	timeout time.Duration
	askedBy string
	// services, with --services, names the services a release moves,
	// each under its own ZooKeeper root below --zk-root.
	services []string
}

func (w *switchFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&w.wait, "wait", false, "follow the switch until it is done; exit non-zero if it is refused, fails, is superseded or times out")
	cmd.Flags().BoolVar(&w.verify, "verify", false, "also wait for the post-switch analysis (implies --wait): exit 0 once verified, 2 if it rolled the switch back")
	cmd.Flags().DurationVar(&w.timeout, "timeout", 2*time.Minute, "how long --wait waits")
	cmd.Flags().StringVar(&w.askedBy, "asked-by", env("SWITCHYARD_ASKED_BY", ""), "who asks, as switchyard history shows it (SWITCHYARD_ASKED_BY; default user@host)")
}

// defaultAsker is user@host, or what of it is known.
func defaultAsker() string {
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	if host, err := os.Hostname(); err == nil && host != "" {
		return name + "@" + host
	}
	return name
}

func switchCmd(c *common) *cobra.Command {
	var w switchFlags
	cmd := &cobra.Command{
		Use:       "switch blue|green",
		Short:     "Make a color live by writing /active_color",
		Long:      "Make a color live by writing /active_color, as zkCli.sh set would.\n" + switchHelp + "\n" + servicesHelp,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{string(zkstate.Blue), string(zkstate.Green)},
		RunE: func(cmd *cobra.Command, args []string) error {
			// A bad color is refused before anything connects or writes.
			color, err := zkstate.ParseColor([]byte(args[0]))
			if err != nil {
				return usageError(err)
			}
			return c.switchTo(cmd.Context(), w, color)
		},
	}
	w.add(cmd)
	w.addServices(cmd)
	return cmd
}

func rollbackCmd(c *common) *cobra.Command {
	var w switchFlags
	cmd := &cobra.Command{
		Use:               "rollback",
		Short:             "Switch back to the other color",
		Long:              "Switch back to the other color than /active_color holds.\n" + switchHelp + "\n" + servicesHelp,
		Args:              cobra.NoArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.switchTo(cmd.Context(), w, "")
		},
	}
	w.add(cmd)
	w.addServices(cmd)
	return cmd
}

// viewTimeout bounds the read of the instances before a switch: it only
// sizes the progress bar, so it must not hold the switch up.
const viewTimeout = 3 * time.Second

// switchTo writes color, or for a rollback ("") the other color than the
// current one, and with --wait follows the leader's switch to its outcome.
// With --services it moves several services as one release (release).
func (c *common) switchTo(ctx context.Context, w switchFlags, color zkstate.Color) error {
	if w.services != nil { // --services given, even empty
		return c.switchServices(ctx, w, color)
	}
	conn, paths, err := c.connectZK(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if color == "" {
		current, err := zkstate.ReadActiveColor(conn, paths)
		if err != nil {
			return fmt.Errorf("cannot roll back: %w", err)
		}
		color = current.Other()
	}
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	_, code, err := c.flip(ctx, conn, paths, w, color, 0)
	if err != nil {
		return err
	}
	if code != 0 {
		return &reportedError{code}
	}
	return nil
}

// flip writes color to paths' /active_color (with over > 0, only over the
// write with that zxid: zkstate.RequestSwitchOver), notes who asked, and
// with --wait (or --verify) follows the switch to its outcome. It returns
// the write's id and the exit code of the outcome; an error means nothing
// was written.
func (c *common) flip(ctx context.Context, conn *zk.Conn, paths zkstate.Paths, w switchFlags, color zkstate.Color, over int64) (int64, int, error) {
	// The instances are read before the write: the statuses the switch
	// starts from say how many steps it takes.
	var view zkstate.View
	if w.following() {
		view = c.viewBefore(ctx, conn, paths)
	}
	var id int64
	var err error
	if over > 0 {
		id, err = zkstate.RequestSwitchOver(conn, paths, string(color), over)
	} else {
		id, err = zkstate.RequestSwitch(conn, paths, c.auth, string(color))
	}
	if errors.Is(err, zkstate.ErrBadColor) {
		return 0, 0, usageError(err)
	}
	if err != nil {
		return 0, 0, err
	}
	log := c.log.WithFields(logrus.Fields{"switch": id, "target": color})
	if w.askedBy == "" {
		w.askedBy = defaultAsker()
	}
	if err := zkstate.NoteRequest(conn, paths, c.auth, id, w.askedBy); err != nil {
		log.WithError(err).Warn("could not note who asked for the switch; switchyard history will show unknown")
	}
	fmt.Printf("%s = %s (switch %d)\n", paths.ActiveColor(), color, id)
	if !w.following() {
		return id, 0, nil
	}
	return id, follow(ctx, conn, paths, w, id, color, view), nil
}

// following tells whether the command follows its switch: --verify
// implies --wait.
func (w switchFlags) following() bool { return w.wait || w.verify }

// follow follows switch id to color, printing its progress, to its
// outcome (and with --verify, its verdict), and returns the exit code.
// view is the instances before the write, for the steps expected.
func follow(ctx context.Context, conn *zk.Conn, paths zkstate.Paths, w switchFlags, id int64, color zkstate.Color, view zkstate.View) int {
	t := tracker{id: id, target: color, expected: expectedSteps(view, color), begun: time.Now(), noLeader: view.Leader == nil}
	var p progress = &plainProgress{tracker: t, out: os.Stdout, errOut: os.Stderr}
	if isTerminal(os.Stdout) {
		p = newTTYProgress(t, os.Stdout, os.Stderr, terminalWidth())
	}
	rec, err := zkstate.FollowSwitch(ctx, conn, paths, id, color, p.seen)
	code, summary := outcome(t, rec, err)
	p.end(rec, code, summary)
	if code == 0 && w.verify {
		code = verify(ctx, conn, paths, rec)
	}
	return code
}

// verify waits for the post-switch analysis of rec and prints its verdict.
func verify(ctx context.Context, conn *zk.Conn, paths zkstate.Paths, rec zkstate.Switch) int {
	if rec.Verdict == "" {
		fmt.Printf("switch %d: no post-switch analysis (disabled, or a rollback)\n", rec.ID)
		return 0
	}
	if rec.Analysis != nil {
		fmt.Printf("switch %d: analyzing %s until %s\n", rec.ID, rec.Target, rec.Analysis.Until.Local().Format(time.TimeOnly))
	}
	v, err := zkstate.FollowVerdict(ctx, conn, paths, rec.ID)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		fmt.Fprintf(os.Stderr, "timed out waiting for the analysis of switch %d; it goes on, see switchyard history\n", rec.ID)
		return codeTimeout
	case err != nil:
		fmt.Fprintf(os.Stderr, "following the analysis of switch %d: %v\n", rec.ID, err)
		return codeError
	}
	line := fmt.Sprintf("switch %d: %s", v.ID, v.Verdict)
	if a := v.Analysis; a != nil {
		line += fmt.Sprintf(" (%s: %d requests, %d errors, p99 %.1f ms; %s before the flip: %d requests, %d errors, p99 %.1f ms)",
			a.New.Color, a.New.Requests, a.New.Errors, 1000*a.New.P99, a.Baseline.Color, a.Baseline.Requests, a.Baseline.Errors, 1000*a.Baseline.P99)
		if a.Reason != "" {
			line += ": " + a.Reason
		}
	}
	if v.Verdict == zkstate.VerdictVerified {
		fmt.Println(line)
		return 0
	}
	fmt.Fprintln(os.Stderr, line)
	return codeFailed
}

// viewBefore reads the state a switch starts from. It sizes the progress
// bar only, so a registry that cannot be read (no token, unreachable)
// leaves ZooKeeper's nodes to go by.
func (c *common) viewBefore(ctx context.Context, conn *zk.Conn, paths zkstate.Paths) zkstate.View {
	var reg zkstate.RegistryReader
	if b, err := backends.Open(c.registry, c.token); err != nil {
		reg = noRegistry{err}
	} else {
		reg = b
	}
	ctx, cancel := context.WithTimeout(ctx, viewTimeout)
	defer cancel()
	v := zkstate.ReadView(ctx, conn, paths, reg)
	for _, e := range v.Errors {
		c.log.WithField("error", e).Debug("could not read all of the state; the progress bar is an estimate")
	}
	return v
}

type noRegistry struct{ err error }

func (r noRegistry) Instances(context.Context, string, uint64, time.Duration) (registry.Snapshot, error) {
	return registry.Snapshot{}, r.err
}

func (r noRegistry) Gateways(context.Context) ([]registry.GatewayReport, error) { return nil, r.err }

// expectedSteps is how many steps a switch to target takes, planned as the
// leader plans it from the instances that checked out. Without the
// registry's statuses every announced instance counts: a full switch moves
// each one once.
func expectedSteps(v zkstate.View, target zkstate.Color) int {
	var members []zkstate.Member
	announced := 0
	for _, in := range v.Instances {
		if !in.InZK {
			continue
		}
		announced++
		if in.Registry && in.Quarantine == "" {
			members = append(members, zkstate.Member{ID: in.ID, Service: in.Service, Color: in.Color, Status: in.Status})
		}
	}
	if len(members) == 0 {
		return announced
	}
	ups, outs := controller.Plan(target, members)
	return len(ups) + len(outs)
}
