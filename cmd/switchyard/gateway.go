package main

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/gateway"
)

func gatewayCmd(c *common) *cobra.Command {
	var cfg gateway.Config
	var routes []string
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Run the edge reverse proxy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, r := range routes {
				rt, err := gateway.ParseRoute(r)
				if err != nil {
					return &exitError{2, err}
				}
				cfg.Routes = append(cfg.Routes, rt)
			}
			b, err := c.backend()
			if err != nil {
				return err
			}
			cfg.Source, cfg.Log = b, c.log
			gw, err := gateway.New(cfg)
			if err != nil {
				return &exitError{2, err}
			}
			return gw.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&cfg.Listen, "listen", "127.0.0.1:8088", "address to serve traffic on")
	cmd.Flags().StringArrayVar(&routes, "route", nil, "PREFIX=SERVICE, repeatable; the longest prefix wins")
	cmd.Flags().StringVar(&cfg.ID, "id", "", "gateway id in reports (default hostname and listen address)")
	cmd.Flags().StringVar(&cfg.Admin, "admin", "127.0.0.1:8089", "address of /metrics, /healthz and /v1/routes; empty for none")
	cmd.Flags().DurationVar(&cfg.ConnectTimeout, "connect-timeout", 5*time.Second, "longest wait to connect to an instance")
	cmd.Flags().DurationVar(&cfg.ResponseHeaderTimeout, "response-header-timeout", 60*time.Second, "longest wait for an instance's answer to begin; then 504")
	cmd.Flags().DurationVar(&cfg.UpstreamIdleTimeout, "upstream-idle-timeout", 60*time.Second, "how long an idle keep-alive connection to an instance is kept")
	return cmd
}
