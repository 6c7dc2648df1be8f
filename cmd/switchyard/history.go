package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/zkstate"
)

// historyEntry is a past switch as history --json prints it: the record,
// with how long it took.
type historyEntry struct {
	zkstate.Switch
	DurationMS int64 `json:"duration_ms"`
}

func historyCmd(c *common) *cobra.Command {
	var (
		n      int
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "history",
		Short: "List past switches, newest first",
		Long: `List past switches, newest first: when each started, how long it took,
from and to which color, its outcome (done, refused, failed), who asked
for it and why it was refused or failed. "unknown" asker: the write was
not made with switchyard switch (zkCli.sh set, say). The controller keeps
the newest 200.`,
		Args:              cobra.NoArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if n < 1 {
				return usageError(fmt.Errorf("-n %d: want at least 1", n))
			}
			conn, paths, err := c.connectZK(cmd.Context())
			if err != nil {
				return err
			}
			defer conn.Close()
			recs, err := zkstate.ReadHistory(conn, paths, n)
			if recs == nil {
				return err
			}
			if err != nil {
				c.log.WithError(err).Warn("some switches of the history could not be read; listing the others")
			}
			if asJSON {
				out := make([]historyEntry, len(recs))
				for i, r := range recs {
					out[i] = historyEntry{Switch: r, DurationMS: r.Duration().Milliseconds()}
				}
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			return printHistory(os.Stdout, recs)
		},
	}
	cmd.Flags().IntVarP(&n, "n", "n", 20, "how many switches to list")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the records as a JSON array, each with duration_ms")
	return cmd
}

func printHistory(out io.Writer, recs []zkstate.Switch) error {
	if len(recs) == 0 {
		_, err := fmt.Fprintln(out, "no switch yet")
		return err
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "STARTED\tDURATION\tFROM\tTO\tOUTCOME\tASKED BY\tSTEPS\tSTREAMS\tSWITCH\tREASON")
	for _, r := range recs {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n",
			r.StartedAt.Local().Format(time.DateTime), duration(r.Duration()), orDash(string(r.From)), r.Target, outcomeOf(r),
			orUnknown(r.AskedBy), stepCounts(r), streams(r.Streams), r.ID, orDash(reasonOf(r)))
	}
	return w.Flush()
}

// stepCounts is "done/total", with the skipped steps when there are some.
func stepCounts(r zkstate.Switch) string {
	total, done, skipped, all := countSteps(r)
	switch {
	case total == 0:
		return "-"
	case !all:
		return fmt.Sprint(total)
	case skipped > 0:
		return fmt.Sprintf("%d/%d (%d skipped)", done, total, skipped)
	}
	return fmt.Sprintf("%d/%d", done, total)
}

func streams(s *zkstate.StreamMoves) string {
	if s == nil {
		return "-"
	}
	return fmt.Sprintf("%d moved, %d left", s.Moved, s.Left)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// outcomeOf is the phase, and the analysis's verdict when there is one:
// "done, verified", "done, rolled back".
func outcomeOf(r zkstate.Switch) string {
	if r.Verdict == "" {
		return string(r.Phase)
	}
	return string(r.Phase) + ", " + string(r.Verdict)
}

// reasonOf is why the switch ended as it did: the analysis's reason for a
// rollback comes first.
func reasonOf(r zkstate.Switch) string {
	if r.Analysis != nil && r.Analysis.Reason != "" {
		if r.Reason != "" {
			return r.Analysis.Reason + "; " + r.Reason
		}
		return r.Analysis.Reason
	}
	return r.Reason
}
