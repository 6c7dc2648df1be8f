package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/zkstate"
)

// waitFlags are the flags of every command that requests a switch.
type waitFlags struct {
	wait    bool
	timeout time.Duration
}

func (w *waitFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&w.wait, "wait", false, "wait until the switch is done; exit non-zero if it is refused, fails or is superseded")
	cmd.Flags().DurationVar(&w.timeout, "timeout", 2*time.Minute, "how long --wait waits")
}

func switchCmd(c *common) *cobra.Command {
	var w waitFlags
	cmd := &cobra.Command{
		Use:   "switch blue|green",
		Short: "Make a color live by writing /active_color",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// A bad color is refused before anything connects or writes.
			color, err := zkstate.ParseColor([]byte(args[0]))
			if err != nil {
				return &exitError{2, err}
			}
			return c.switchTo(cmd.Context(), w, color)
		},
	}
	w.add(cmd)
	return cmd
}

func rollbackCmd(c *common) *cobra.Command {
	var w waitFlags
	cmd := &cobra.Command{
		Use:   "rollback",
		Short: "Switch back to the other color",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.switchTo(cmd.Context(), w, "")
		},
	}
	w.add(cmd)
	return cmd
}

// switchTo writes color, or for a rollback ("") the other color than the
// current one, and with --wait reports the leader's outcome.
func (c *common) switchTo(ctx context.Context, w waitFlags, color zkstate.Color) error {
	conn, paths, err := c.connectZK(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if color == "" {
		raw, _, err := conn.Get(paths.ActiveColor())
		if err != nil {
			return fmt.Errorf("read %s: %w", paths.ActiveColor(), err)
		}
		current, err := zkstate.ParseColor(raw)
		if err != nil {
			return fmt.Errorf("cannot roll back from %s: %w", paths.ActiveColor(), err)
		}
		color = current.Other()
	}
	id, err := zkstate.RequestSwitch(conn, paths, c.auth, string(color))
	if errors.Is(err, zkstate.ErrBadColor) {
		return &exitError{2, err}
	}
	if err != nil {
		return err
	}
	fmt.Printf("%s = %s\n", paths.ActiveColor(), color)
	if !w.wait {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	rec, err := zkstate.WaitSwitch(ctx, conn, paths, id, color)
	if err != nil {
		return err
	}
	fmt.Printf("switched to %s in %s\n", color, rec.Duration().Round(time.Millisecond))
	return nil
}
