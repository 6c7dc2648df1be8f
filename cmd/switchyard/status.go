package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/zkstate"
)

func statusCmd(c *common) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the active color, leader, current switch and every instance",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := c.backend()
			if err != nil {
				return err
			}
			conn, paths, err := c.connectZK(cmd.Context())
			if err != nil {
				return err
			}
			defer conn.Close()
			v := zkstate.ReadView(cmd.Context(), conn, paths, b)
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(v)
			}
			return printView(os.Stdout, v)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printView(out io.Writer, v zkstate.View) error {
	fmt.Fprintf(out, "active color: %s", v.ActiveColor)
	if !v.Valid {
		fmt.Fprint(out, " (not a color: refused)")
	}
	fmt.Fprintln(out)
	if v.Serving != "" {
		fmt.Fprintf(out, "serving:      %s\n", v.Serving)
	}
	if v.Leader != nil {
		fmt.Fprintf(out, "leader:       %s %s\n", v.Leader.ID, v.Leader.API)
	} else {
		fmt.Fprintln(out, "leader:       none")
	}
	leaderSaw := map[string]bool{}
	if s := v.Switch; s != nil {
		fmt.Fprintf(out, "switch:       %d to %s, %s", s.ID, s.Target, s.Phase)
		if s.Phase.Finished() {
			fmt.Fprintf(out, " in %s", s.Duration().Round(time.Millisecond))
		}
		if s.Reason != "" {
			fmt.Fprintf(out, " (%s)", s.Reason)
		}
		fmt.Fprintln(out)
		fmt.Fprintf(out, "asked by:     %s\n", orUnknown(s.AskedBy))
		fmt.Fprintf(out, "steps:        %s\n", stepsSummary(*s))
		if st := s.Streams; st != nil {
			fmt.Fprintf(out, "streams:      %d open on the old color at the end, %d moved, %d left\n", st.Open, st.Moved, st.Left)
		}
		for _, q := range s.Quarantined {
			leaderSaw[q.Node] = true
			fmt.Fprintf(out, "quarantined %s: %s (the switch left it out)\n", q.Node, q.Reason)
		}
	}
	fmt.Fprintln(out)
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "INSTANCE\tSERVICE\tCOLOR\tSTATUS\tADDRESS\tVERSION")
	for _, in := range v.Instances {
		st := string(in.Status)
		switch {
		case in.Quarantine != "":
			st = "QUARANTINED"
		case !in.Registry:
			st = "(not registered)"
		case !in.InZK:
			st += " (no ZooKeeper node)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", in.ID, in.Service, in.Color, st, in.Address, in.Version)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, in := range v.Instances {
		if in.Quarantine != "" && !leaderSaw[string(in.Color)+"/"+in.ID] {
			fmt.Fprintf(out, "quarantined %s/%s: %s\n", in.Color, in.ID, in.Quarantine)
		}
	}
	for _, g := range v.Gateways {
		var applied []string
		for svc, idx := range g.Applied {
			applied = append(applied, fmt.Sprintf("%s at index %d", svc, idx))
		}
		sort.Strings(applied)
		fmt.Fprintf(out, "gateway %s has applied %s\n", g.ID, strings.Join(applied, ", "))
	}
	for _, e := range v.Errors {
		fmt.Fprintln(out, "error:", e)
	}
	return nil
}
