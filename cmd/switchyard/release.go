package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/zkstate"
)

func abortCmd(c *common) *cobra.Command {
	var w switchFlags
	cmd := &cobra.Command{
		Use:   "abort",
		Short: "Stop the switch in flight and return every instance to where it was",
		Long: `Stop the switch in flight: write its previous color back to /active_color
(only if nothing else was written since), so that the leader returns every
instance to where it was before the switch began, one at a time and never
with 0 UP. The aborted switch is filed as failed, "aborted".

Exits 1 when there is no switch in flight. With --wait, it follows the way
back as switch --wait does, with its progress.`,
		Args:              cobra.NoArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: c.zkRun(func(cmd *cobra.Command, conn *zk.Conn, paths zkstate.Paths) error {
			if w.askedBy == "" {
				w.askedBy = defaultAsker()
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), w.timeout)
			defer cancel()
			var view zkstate.View
			if w.following() {
				view = c.viewBefore(ctx, conn, paths)
			}
			id, back, err := zkstate.Abort(conn, paths, c.auth, w.askedBy)
			if errors.Is(err, zkstate.ErrNothingToAbort) {
				return &exitError{codeRefused, err}
			}
			if err != nil {
				return err
			}
			fmt.Printf("%s = %s (switch %d: abort)\n", paths.ActiveColor(), back, id)
			if !w.following() {
				return nil
			}
			if code := follow(ctx, conn, paths, w, id, back, view); code != 0 {
				return &reportedError{code}
			}
			return nil
		}),
	}
	w.add(cmd)
	return cmd
}

func releaseCmd(c *common) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "release",
		Short: "Show or set how switches are guarded: pre-switch checks and post-switch analysis",
		Long: `Show or set the release settings in ZooKeeper (/release beside
/active_color). They apply to every switch, a raw zkCli.sh write included.

checks run before any instance of the target goes UP; one that fails refuses
the switch (switch --wait exits 1) and routing stays as it is. A check is an
HTTP request with an expected status and body, usually against the gateway's
preview listener, or a command (run only by a controller started with
--allow-command-checks and SWITCHYARD_ZK_AUTH) that must exit 0.

analysis watches the new color for a window after each flip and compares its
error rate and p99, as the gateways saw them, with the old color's before
the flip; when a bound is crossed, the controller switches back by itself.

  {
    "checks": [
      {"name": "home", "http": {"url": "http://gateway:8089/", "status": 200, "body": "ok"}, "timeout": "5s"},
      {"name": "smoke", "command": ["/opt/smoke.sh"], "timeout": "60s"}
    ],
    "analysis": {"window": "60s", "max_error_rate": 0.05, "min_errors": 20,
                 "max_p99_ratio": 2, "min_requests": 100, "disabled": false}
  }`,
	}
	show := &cobra.Command{
		Use:   "show",
		Short: "Print the release settings, defaults filled in",
		Args:  cobra.NoArgs,
		RunE: c.zkRun(func(cmd *cobra.Command, conn *zk.Conn, paths zkstate.Paths) error {
			r, err := zkstate.ReadRelease(conn, paths)
			if err != nil {
				return err
			}
			r.Analysis = r.Analysis.WithDefaults()
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(r)
		}),
	}
	var (
		file      string
		window    time.Duration
		errRate   float64
		p99Ratio  float64
		noAnalyze bool
	)
	set := &cobra.Command{
		Use:   "set [-f FILE|-]",
		Short: "Replace the release settings with a JSON file (or stdin), or change the analysis's bounds",
		Args:  cobra.NoArgs,
		RunE: c.zkRun(func(cmd *cobra.Command, conn *zk.Conn, paths zkstate.Paths) error {
			r, err := zkstate.ReadRelease(conn, paths)
			if err != nil && file == "" {
				return fmt.Errorf("%w; replace them whole with -f", err)
			}
			if file != "" {
				var b []byte
				if file == "-" {
					b, err = io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
				} else {
					b, err = os.ReadFile(file)
				}
				if err != nil {
					return usageError(err)
				}
				if r, err = zkstate.ParseRelease(b); err != nil {
					return usageError(err)
				}
			}
			f := cmd.Flags()
			if f.Changed("analysis-window") {
				r.Analysis.Window = zkstate.Duration(window)
			}
			if f.Changed("max-error-rate") {
				r.Analysis.MaxErrorRate = errRate
			}
			if f.Changed("max-p99-ratio") {
				r.Analysis.MaxP99Ratio = p99Ratio
			}
			if f.Changed("no-analysis") {
				r.Analysis.Disabled = noAnalyze
			}
			if err := r.Validate(); err != nil {
				return usageError(err)
			}
			if err := zkstate.WriteRelease(conn, paths, c.auth, r); err != nil {
				return err
			}
			fmt.Printf("%s: %d check(s), analysis %s\n", paths.Release(), len(r.Checks), analysisSummary(r.Analysis))
			return nil
		}),
	}
	sf := set.Flags()
	sf.StringVarP(&file, "file", "f", "", "JSON release settings to store whole; - for stdin")
	sf.DurationVar(&window, "analysis-window", zkstate.DefaultAnalysisWindow, "how long the new color is watched after a flip")
	sf.Float64Var(&errRate, "max-error-rate", zkstate.DefaultMaxErrorRate, "share of 5xx (0 to 1) above which a flip is rolled back")
	sf.Float64Var(&p99Ratio, "max-p99-ratio", zkstate.DefaultMaxP99Ratio, "times the old color's p99 above which a flip is rolled back")
	sf.BoolVar(&noAnalyze, "no-analysis", false, "turn the post-switch analysis off (--no-analysis=false turns it on)")
	clr := &cobra.Command{
		Use:   "clear",
		Short: "Remove every check and restore the analysis's defaults",
		Args:  cobra.NoArgs,
		RunE: c.zkRun(func(cmd *cobra.Command, conn *zk.Conn, paths zkstate.Paths) error {
			if err := zkstate.WriteRelease(conn, paths, c.auth, zkstate.Release{}); err != nil {
				return err
			}
			fmt.Printf("%s: no checks, analysis %s\n", paths.Release(), analysisSummary(zkstate.Analysis{}))
			return nil
		}),
	}
	cmd.AddCommand(show, set, clr)
	return cmd
}

func analysisSummary(a zkstate.Analysis) string {
	if a.Disabled {
		return "off"
	}
	a = a.WithDefaults()
	return fmt.Sprintf("on for %s (5xx over %.1f%% with %d+ errors, or p99 over %.1f× the old color's)",
		time.Duration(a.Window), 100*a.MaxErrorRate, a.MinErrors, a.MaxP99Ratio)
}
