// Command switchyard runs the parts of switchyard (registry, controller,
// gateway) and the operator commands (status, switch, rollback). Each
// command only turns flags and SWITCHYARD_* variables into a config and
// calls one package.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/registry/backends"
	"github.com/switchyard/switchyard/zkstate"
)

// common holds what every command reads from SWITCHYARD_* or its flags.
type common struct {
	zk, registry, token, zkRoot, zkAuth, logLevel string
	log                                           *logrus.Logger
	auth                                          zkstate.Auth
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
func (e *exitError) Unwrap() error { return e.err }

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
			if c.auth, err = zkstate.ParseAuth(c.zkAuth); err != nil {
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
	root.AddCommand(registryCmd(c), controllerCmd(c), gatewayCmd(c), statusCmd(c), switchCmd(c), rollbackCmd(c), tokenCmd(c))

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
	b, err := backends.Open(c.registry, c.token)
	if err != nil {
		return nil, &exitError{2, err}
	}
	return b, nil
}

// connectZK opens a session for a short-lived command.
func (c *common) connectZK(ctx context.Context) (*zk.Conn, zkstate.Paths, error) {
	paths, err := zkstate.NewPaths(c.zkRoot)
	if err != nil {
		return nil, paths, &exitError{2, err}
	}
	conn, _, err := zkstate.Connect(ctx, c.zkServers(), zkSessionTimeout, c.auth, quietZK{})
	return conn, paths, err
}

// zkSessionTimeout is the session of a short-lived command: it ends with
// the command, so only its connect time matters.
const zkSessionTimeout = 10 * time.Second

type quietZK struct{}

func (quietZK) Printf(string, ...any) {}
