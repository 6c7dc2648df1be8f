package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/registry"
)

func tokenCmd(c *common) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token read | token instance ID",
		Short: "Print a least-privilege credential derived from SWITCHYARD_TOKEN",
		Long: `token read prints the read token: it may read the built-in registry and
report a gateway's progress, but change no instance. Give it to gateways.

token instance ID prints the instance token of ID: it may register and set
the status of that instance only, and verifies the controller's
instructions to it. Give it to the instance (or its agent) as its
SWITCHYARD_TOKEN, with --id ID.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if c.token == "" {
				return usageError(errors.New("set SWITCHYARD_TOKEN (or --token) to the shared secret first"))
			}
			switch {
			case args[0] == "read" && len(args) == 1:
				fmt.Println(registry.ReadToken(c.token))
			case args[0] == "instance" && len(args) == 2:
				if err := registry.CheckName("instance id", args[1]); err != nil {
					return usageError(err)
				}
				fmt.Println(registry.InstanceToken(c.token, args[1]))
			default:
				return usageError(fmt.Errorf("usage: switchyard %s", cmd.Use))
			}
			return nil
		},
	}
	return cmd
}
