package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/agent"
	"github.com/switchyard/switchyard/zkstate"
)

func agentCmd(c *common) *cobra.Command {
	var cfg agent.Config
	var color string
	cmd := &cobra.Command{
		Use:   "agent --service NAME --color blue|green --app http://127.0.0.1:PORT [flags] [-- COMMAND ARGS...]",
		Short: "Run beside an application in any language and take part in switches for it",
		Long: `Run beside an application that does not embed the Go SDK, and do for it what
the SDK does: register it OUT_OF_SERVICE, announce it in ZooKeeper,
heartbeat, answer the controller's instructions on a control port of the
agent's own, health-check the application at --health, and drain it out of
traffic on SIGTERM before deregistering. Gateways send traffic to the
application's address directly, never through the agent.

After --, the agent supervises the application: it starts it, forwards
SIGHUP, SIGUSR1, SIGUSR2, SIGQUIT and SIGWINCH, and on SIGTERM or SIGINT
drains and deregisters before it stops it. If the application exits by
itself, the agent deregisters at once and exits with its code.

The agent registers only once the application answers 2xx at --health; an
application that does not within --startup-timeout, or a token the registry
refuses, ends the agent with a non-zero exit and nothing registered.`,
		Example: `  switchyard agent --service hello --color green --app http://127.0.0.1:8080 --health /healthz
  switchyard agent --service hello --color green --app http://127.0.0.1:8080 -- node server.js --port 8080`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 && cmd.ArgsLenAtDash() != 0 {
				return fmt.Errorf("unexpected arguments %q: the application to supervise goes after --", args)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := c.backend()
			if err != nil {
				return err
			}
			cfg.Color = zkstate.Color(color)
			cfg.Command = args
			cfg.ZK, cfg.ZKRoot, cfg.ZKAuth, cfg.Registry, cfg.Token, cfg.Log = c.zkServers(), c.zkRoot, c.auth, b, c.token, c.log
			// Scripts and the test harness read the control address here.
			cfg.Ready = func(control string) { fmt.Fprintln(cmd.OutOrStdout(), "AGENT "+control) }
			err = agent.Run(cmd.Context(), cfg)
			var exit *agent.ExitError
			switch {
			case errors.Is(err, agent.ErrConfig):
				return usageError(err)
			case errors.As(err, &exit) && exit.Code == 0:
				return nil
			case errors.As(err, &exit):
				return &exitError{exit.Code, err}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Service, "service", "", "service name (required)")
	f.StringVar(&color, "color", "", "blue or green (required)")
	f.StringVar(&cfg.App, "app", "", "the application's base URL, http://host:port (required)")
	f.StringVar(&cfg.Health, "health", "/", "path on --app that answers 2xx while the application can serve")
	f.StringVar(&cfg.Advertise, "advertise", "", "host:port gateways send traffic to (default: --app's host and port)")
	f.StringVar(&cfg.Listen, "listen", "", "where the agent serves the controller and GET /v1/state (default: the advertised host, a free port)")
	f.StringVar(&cfg.ID, "id", "", "instance id (default service-color-random; must match an instance token)")
	f.StringVar(&cfg.Version, "version", "", "version to announce")
	f.StringVar(&cfg.Protocol, "protocol", "", "what the application speaks: http1 (default) or h2c")
	f.DurationVar(&cfg.HeartbeatInterval, "heartbeat", time.Second, "registry heartbeat and application health check interval")
	f.DurationVar(&cfg.ZKSessionTimeout, "zk-session-timeout", 10*time.Second, "ZooKeeper session timeout")
	f.DurationVar(&cfg.DrainTimeout, "drain-timeout", 10*time.Second, "longest wait for the gateways to stop sending at a drain")
	f.DurationVar(&cfg.DrainGrace, "drain-grace", time.Second, "after the gateways confirmed a drain, how long requests they sent before get to finish")
	f.DurationVar(&cfg.StartupTimeout, "startup-timeout", time.Minute, "how long the application may take to answer its health check before the agent gives up")
	f.DurationVar(&cfg.HealthTimeout, "health-timeout", 2*time.Second, "one health check of the application")
	f.StringVar(&cfg.OnUp, "on-up", "", "shell command run when the instance goes UP (SWITCHYARD_STATE is set)")
	f.StringVar(&cfg.OnOut, "on-out", "", "shell command run when the instance leaves UP, and once at the start")
	f.StringVar(&cfg.Notify, "notify", "", "URL the new state is POSTed to as JSON on every change")
	f.DurationVar(&cfg.HookTimeout, "hook-timeout", 10*time.Second, "longest a hook may run")
	f.DurationVar(&cfg.StopTimeout, "stop-timeout", 10*time.Second, "in supervise mode, how long the application gets to exit on SIGTERM before SIGKILL")
	_ = cmd.MarkFlagRequired("service")
	_ = cmd.MarkFlagRequired("color")
	_ = cmd.MarkFlagRequired("app")
	_ = cmd.RegisterFlagCompletionFunc("color", cobra.FixedCompletions([]string{"blue", "green"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}
