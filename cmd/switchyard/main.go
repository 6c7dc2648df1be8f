// Command switchyard runs the parts of switchyard (registry, controller,
// gateway) and the operator commands (status, switch, rollback).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/controller"
	"github.com/switchyard/switchyard/controller/layout"
	"github.com/switchyard/switchyard/gateway"
	"github.com/switchyard/switchyard/registry"
)

// common holds what every command reads from SWITCHYARD_* or its flags.
type common struct {
	zk, registry, token, zkRoot, zkAuth, logLevel string
	log                                           *logrus.Logger
	auth                                          layout.Auth
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

// exitError carries a process exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

func main() {
	// The standard logger, so that libraries logging through it (the
	// Consul backend) print the same way.
	c := &common{log: logrus.StandardLogger()}
	root := &cobra.Command{
		Use:           "switchyard",
		Short:         "Zero-downtime blue/green switching on ZooKeeper",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			lvl, err := logrus.ParseLevel(c.logLevel)
			if err != nil {
				return &exitError{2, err}
			}
			if c.auth, err = layout.ParseAuth(c.zkAuth); err != nil {
				return &exitError{2, err}
			}
			c.log.SetLevel(lvl)
			c.log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: "15:04:05.000"})
			return nil
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&c.zk, "zk", env("SWITCHYARD_ZK", "127.0.0.1:2181"), "ZooKeeper servers, comma-separated (SWITCHYARD_ZK)")
	pf.StringVar(&c.registry, "registry", env("SWITCHYARD_REGISTRY", "http://127.0.0.1:8761"), "registry URL (SWITCHYARD_REGISTRY)")
	pf.StringVar(&c.token, "token", env("SWITCHYARD_TOKEN", ""), "shared secret for state-changing calls (SWITCHYARD_TOKEN)")
	pf.StringVar(&c.zkRoot, "zk-root", env("SWITCHYARD_ZK_ROOT", "/"), "ZooKeeper root of this deployment (SWITCHYARD_ZK_ROOT)")
	pf.StringVar(&c.zkAuth, "zk-auth", env("SWITCHYARD_ZK_AUTH", ""), "ZooKeeper digest user:password; locks switchyard's nodes to it (SWITCHYARD_ZK_AUTH)")
	pf.StringVar(&c.logLevel, "log-level", env("SWITCHYARD_LOG_LEVEL", "info"), "debug, info, warn or error")
	root.AddCommand(registryCmd(c), controllerCmd(c), gatewayCmd(c), statusCmd(c), switchCmd(c), rollbackCmd(c))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := root.ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "switchyard:", err)
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}

func (c *common) zkServers() []string { return strings.Split(c.zk, ",") }

func (c *common) backend() (registry.Backend, error) {
	b, err := registry.Open(c.registry, c.token)
	if err != nil {
		return nil, &exitError{2, err}
	}
	return b, nil
}

// connectZK opens a session for a short-lived command and waits for it.
func (c *common) connectZK(ctx context.Context) (*zk.Conn, layout.Paths, error) {
	paths, err := layout.NewPaths(c.zkRoot)
	if err != nil {
		return nil, paths, &exitError{2, err}
	}
	conn, events, err := zk.Connect(c.zkServers(), 10*time.Second, zk.WithLogInfo(false), zk.WithLogger(quietZK{}))
	if err != nil {
		return nil, paths, err
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev := <-events:
			if ev.State == zk.StateHasSession {
				if err := c.auth.Login(conn); err != nil {
					conn.Close()
					return nil, paths, err
				}
				return conn, paths, nil
			}
		case <-deadline:
			conn.Close()
			return nil, paths, fmt.Errorf("no ZooKeeper session with %s within 10s", c.zk)
		case <-ctx.Done():
			conn.Close()
			return nil, paths, ctx.Err()
		}
	}
}

type quietZK struct{}

func (quietZK) Printf(string, ...any) {}

func registryCmd(c *common) *cobra.Command {
	var cfg registry.ServerConfig
	cmd := &cobra.Command{
		Use:   "registry",
		Short: "Run the built-in registry server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Token, cfg.Log = c.token, c.log
			srv, err := registry.NewServer(cfg)
			if err != nil {
				return &exitError{2, err}
			}
			return srv.Serve(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&cfg.Listen, "listen", "127.0.0.1:8761", "address to serve on")
	cmd.Flags().DurationVar(&cfg.LeaseTTL, "lease-ttl", 10*time.Second, "evict an instance that has not heartbeaten for this long")
	cmd.Flags().DurationVar(&cfg.Warmup, "warmup", 3*time.Second, "after a start, how long to wait for instances to register again before views count")
	return cmd
}

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
				return &exitError{2, err}
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
	f.DurationVar(&cfg.Resync, "resync", 2*time.Second, "reconcile at least this often")
	return cmd
}

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
	return cmd
}

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
			v := controller.ReadView(cmd.Context(), conn, paths, b)
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(v)
			}
			printView(v)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printView(v controller.View) {
	fmt.Printf("active color: %s", v.ActiveColor)
	if !v.Valid {
		fmt.Print(" (not a color: refused)")
	}
	fmt.Println()
	if v.Serving != "" {
		fmt.Printf("serving:      %s\n", v.Serving)
	}
	if v.Leader != nil {
		fmt.Printf("leader:       %s %s\n", v.Leader.ID, v.Leader.API)
	} else {
		fmt.Println("leader:       none")
	}
	if s := v.Switch; s != nil {
		fmt.Printf("switch:       to %s, %s", s.Target, s.Phase)
		if s.Phase.Finished() {
			fmt.Printf(" in %s", s.Duration().Round(time.Millisecond))
		}
		if s.Reason != "" {
			fmt.Printf(" (%s)", s.Reason)
		}
		fmt.Println()
	}
	fmt.Println()
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "INSTANCE\tSERVICE\tCOLOR\tSTATUS\tADDRESS\tVERSION")
	for _, in := range v.Instances {
		st := string(in.Status)
		switch {
		case !in.Registry:
			st = "(not registered)"
		case !in.InZK:
			st += " (no ZooKeeper node)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", in.ID, in.Service, in.Color, st, in.Address, in.Version)
	}
	_ = w.Flush()
	for _, g := range v.Gateways {
		var applied []string
		for svc, idx := range g.Applied {
			applied = append(applied, fmt.Sprintf("%s at index %d", svc, idx))
		}
		sort.Strings(applied)
		fmt.Printf("gateway %s has applied %s\n", g.ID, strings.Join(applied, ", "))
	}
	for _, e := range v.Errors {
		fmt.Println("error:", e)
	}
}

// switchTo writes color and, with wait, reports the outcome.
func switchTo(ctx context.Context, c *common, color string, wait bool, timeout time.Duration) error {
	conn, paths, err := c.connectZK(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return writeAndWait(ctx, conn, paths, c.auth, color, wait, timeout)
}

func writeAndWait(ctx context.Context, conn *zk.Conn, paths layout.Paths, auth layout.Auth, color string, wait bool, timeout time.Duration) error {
	id, err := controller.RequestSwitch(conn, paths, auth, color)
	if errors.Is(err, layout.ErrBadColor) {
		return &exitError{2, err}
	}
	if err != nil {
		return err
	}
	fmt.Printf("%s = %s\n", paths.ActiveColor(), color)
	if !wait {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rec, err := controller.WaitSwitch(ctx, conn, paths, id, color)
	if err != nil {
		return err
	}
	fmt.Printf("switched to %s in %s\n", color, rec.Duration().Round(time.Millisecond))
	return nil
}

func switchCmd(c *common) *cobra.Command {
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "switch blue|green",
		Short: "Make a color live by writing /active_color",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return switchTo(cmd.Context(), c, args[0], wait, timeout)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the switch is done; exit non-zero if it is refused or fails")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "how long --wait waits")
	return cmd
}

func rollbackCmd(c *common) *cobra.Command {
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "rollback",
		Short: "Switch back to the previous color",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, paths, err := c.connectZK(cmd.Context())
			if err != nil {
				return err
			}
			defer conn.Close()
			raw, _, err := conn.Get(paths.ActiveColor())
			if err != nil {
				return fmt.Errorf("read %s: %w", paths.ActiveColor(), err)
			}
			current, err := layout.ParseColor(raw)
			if err != nil {
				return fmt.Errorf("cannot roll back from %s: %w", paths.ActiveColor(), err)
			}
			return writeAndWait(cmd.Context(), conn, paths, c.auth, layout.Other(current), wait, timeout)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the switch is done")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "how long --wait waits")
	return cmd
}
