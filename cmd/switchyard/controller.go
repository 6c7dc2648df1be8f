package main

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/controller"
)

func controllerCmd(c *common) *cobra.Command {
	var cfg controller.Config
	cmd := &cobra.Command{
		Use:   "controller",
		Short: "Run a controller; run two or more, one leads",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := c.backend()
			if err != nil {
				return err
			}
			cfg.ZK, cfg.ZKRoot, cfg.ZKAuth, cfg.Registry, cfg.Token, cfg.Log = c.zkServers(), c.zkRoot, c.auth, b, c.token, c.log
			ctl, err := controller.New(cfg)
			if err != nil {
				return usageError(err)
			}
			return ctl.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:8090", "HTTP API address (GET /v1/status)")
	f.StringVar(&cfg.ID, "id", "", "controller id (default hostname-random)")
	f.DurationVar(&cfg.SessionTimeout, "session-timeout", 10*time.Second, "ZooKeeper session timeout")
	f.DurationVar(&cfg.HealthTimeout, "health-timeout", 5*time.Second, "how long an instance may take to pass its health check")
	f.DurationVar(&cfg.GatewayTimeout, "gateway-timeout", 5*time.Second, "how long to wait for gateways to apply a change")
	f.IntVar(&cfg.MaxBatch, "max-batch", controller.DefaultMaxBatch, "most instances a switch instructs at once, after its first one (a canary) alone; batches double up to it; 1 for one at a time")
	f.DurationVar(&cfg.Resync, "resync", 2*time.Second, "reconcile at least this often")
	f.BoolVar(&cfg.AllowLoopback, "allow-loopback", false, "accept instances on loopback addresses (a single-host deployment)")
	f.BoolVar(&cfg.AllowCommandChecks, "allow-command-checks", false, "run the release's command checks (switchyard release set); needs SWITCHYARD_ZK_AUTH, since whoever may write ZooKeeper names the command")
	f.DurationVar(&cfg.PreservationHold, "preservation-hold", 30*time.Second, "when over half of the instance nodes vanish at once, hold every status this long for them to return")
	return cmd
}
