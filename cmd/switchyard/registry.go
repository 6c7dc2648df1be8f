package main

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/registry/server"
)

func registryCmd(c *common) *cobra.Command {
	var cfg server.Config
	cmd := &cobra.Command{
		Use:   "registry",
		Short: "Run the built-in registry server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Token, cfg.Log = c.token, c.log
			srv, err := server.New(cfg)
			if err != nil {
				return usageError(err)
			}
			return srv.Serve(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&cfg.Listen, "listen", "127.0.0.1:8761", "address to serve on")
	cmd.Flags().DurationVar(&cfg.LeaseTTL, "lease-ttl", 10*time.Second, "evict an instance that has not heartbeaten for this long")
	cmd.Flags().DurationVar(&cfg.Warmup, "warmup", 3*time.Second, "after a start, how long to wait for instances to register again before views count")
	cmd.Flags().IntVar(&cfg.MaxWaiters, "max-waiters", 4096, "blocking queries held at once; more get 429")
	cmd.Flags().IntVar(&cfg.MaxWaitersPerClient, "max-waiters-per-client", 512, "blocking queries one client address may hold; more get 429")
	return cmd
}
