// Command switchyard runs the parts of switchyard (registry, controller,
// gateway) and the operator commands (status, switch, rollback). Each
// command only turns flags and SWITCHYARD_* variables into a config and
// calls one package.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
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
	zk, registry, token, zkRoot, zkAuth, logLevel, logFormat string
	log                                                      *logrus.Logger
	auth                                                     zkstate.Auth
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

// The exit codes. A switch's outcome has its own code, so that CI can
// tell a refusal (nothing changed) from a failure and from a timeout.
const (
	codeRefused = 1  // the leader refused the switch; routing is unchanged
	codeFailed  = 2  // the switch failed, or a later write superseded it
	codeTimeout = 3  // --timeout passed before the switch finished
	codeError   = 4  // the command could not do its work (ZooKeeper unreachable, no permission, interrupted)
	codeStuck   = 5  // a release of several services (--services) could not move every service back
	codeUsage   = 64 // as sysexits' EX_USAGE: a wrong command, flag or argument; nothing was done
)

// exitError carries a process exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageError(err error) error { return &exitError{codeUsage, err} }

// reportedError is an outcome the command has already printed; it only
// sets the exit code.
type reportedError struct{ code int }

func (e *reportedError) Error() string { return fmt.Sprintf("exit %d", e.code) }

func main() {
	// The standard logger, so that libraries logging through it (the
	// Consul backend) print the same way.
	root := newRoot(&common{log: logrus.StandardLogger()})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	cmd, err := root.ExecuteContextC(ctx)
	stop()
	os.Exit(exitCode(os.Stderr, cmd, err))
}

// exitCode prints err and says how the process exits. Errors of a command's
// own work carry their code (see typed); an error without one comes from
// cobra's parsing, so it is a usage error.
func exitCode(stderr io.Writer, cmd *cobra.Command, err error) int {
	if err == nil {
		return 0
	}
	var re *reportedError
	if errors.As(err, &re) {
		return re.code
	}
	code := codeUsage
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	fmt.Fprintln(stderr, "switchyard:", err)
	if code == codeUsage && cmd != nil {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}

func newRoot(c *common) *cobra.Command {
	root := &cobra.Command{
		Use:   "switchyard",
		Short: "Zero-downtime blue/green switching on ZooKeeper",
		Long: `Zero-downtime blue/green switching on ZooKeeper.

Exit codes: 0 done; 1 refused (switch --wait: routing is unchanged);
2 failed, rolled back by the post-switch analysis (--verify), or
superseded by a later write; 3 timed out (--timeout);
4 error (ZooKeeper or the registry unreachable, no permission, interrupted);
5 a release of several services (--services) that stopped could not move
every service back; 64 usage (a wrong command, flag or argument; nothing was done).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			lvl, err := logrus.ParseLevel(c.logLevel)
			if err != nil {
				return usageError(err)
			}
			if c.auth, err = zkstate.ParseAuth(c.zkAuth); err != nil {
				return usageError(err)
			}
			c.log.SetLevel(lvl)
			switch c.logFormat {
			case "text":
				c.log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: "15:04:05.000"})
			case "json":
				c.log.SetFormatter(&logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano})
			default:
				return usageError(fmt.Errorf("--log-format %q: want text or json", c.logFormat))
			}
			return nil
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError(err) })
	pf := root.PersistentFlags()
	pf.StringVar(&c.zk, "zk", env("SWITCHYARD_ZK", "127.0.0.1:2181"), "ZooKeeper servers, comma-separated (SWITCHYARD_ZK)")
	pf.StringVar(&c.registry, "registry", env("SWITCHYARD_REGISTRY", "http://127.0.0.1:8761"), "registry URL (SWITCHYARD_REGISTRY)")
	pf.StringVar(&c.token, "token", env("SWITCHYARD_TOKEN", ""), "shared secret for state-changing calls (SWITCHYARD_TOKEN)")
	pf.StringVar(&c.zkRoot, "zk-root", env("SWITCHYARD_ZK_ROOT", "/"), "ZooKeeper root of this deployment (SWITCHYARD_ZK_ROOT)")
	pf.StringVar(&c.zkAuth, "zk-auth", env("SWITCHYARD_ZK_AUTH", ""), "ZooKeeper digest user:password; locks switchyard's nodes to it (SWITCHYARD_ZK_AUTH)")
	pf.StringVar(&c.logLevel, "log-level", env("SWITCHYARD_LOG_LEVEL", "info"), "debug, info, warn or error (SWITCHYARD_LOG_LEVEL)")
	pf.StringVar(&c.logFormat, "log-format", env("SWITCHYARD_LOG_FORMAT", "text"), "text or json, one object a line (SWITCHYARD_LOG_FORMAT)")
	_ = root.RegisterFlagCompletionFunc("log-level", cobra.FixedCompletions([]string{"debug", "info", "warn", "error"}, cobra.ShellCompDirectiveNoFileComp))
	_ = root.RegisterFlagCompletionFunc("log-format", cobra.FixedCompletions([]string{"text", "json"}, cobra.ShellCompDirectiveNoFileComp))
	root.AddCommand(registryCmd(c), controllerCmd(c), gatewayCmd(c), statusCmd(c), historyCmd(c), switchCmd(c), rollbackCmd(c), abortCmd(c), releaseCmd(c), tokenCmd(c), agentCmd(c))
	for _, cmd := range root.Commands() {
		typed(cmd)
	}
	return root
}

// typed gives every error of cmd's own work an exit code: wrong arguments
// are usage errors, and anything else that went wrong in its run is
// codeError unless it says otherwise. What is left untyped comes from
// cobra itself (an unknown command or flag), which main takes for usage.
func typed(cmd *cobra.Command) {
	if args := cmd.Args; args != nil {
		cmd.Args = func(cmd *cobra.Command, a []string) error {
			if err := args(cmd, a); err != nil {
				return usageError(err)
			}
			return nil
		}
	}
	if run := cmd.RunE; run != nil {
		cmd.RunE = func(cmd *cobra.Command, a []string) error {
			err := run(cmd, a)
			var ee *exitError
			var re *reportedError
			if err == nil || errors.As(err, &ee) || errors.As(err, &re) {
				return err
			}
			return &exitError{codeError, err}
		}
	}
	for _, sub := range cmd.Commands() {
		typed(sub)
	}
}

func (c *common) zkServers() []string { return strings.Split(c.zk, ",") }

func (c *common) backend() (registry.Backend, error) {
	b, err := backends.Open(c.registry, c.token)
	if err != nil {
		return nil, usageError(err)
	}
	return b, nil
}

// zkRun is a RunE that opens a ZooKeeper session for run and closes it
// after.
func (c *common) zkRun(run func(cmd *cobra.Command, conn *zk.Conn, paths zkstate.Paths) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		conn, paths, err := c.connectZK(cmd.Context())
		if err != nil {
			return err
		}
		defer conn.Close()
		return run(cmd, conn, paths)
	}
}

// connectZK opens a session for a short-lived command.
func (c *common) connectZK(ctx context.Context) (*zk.Conn, zkstate.Paths, error) {
	paths, err := zkstate.NewPaths(c.zkRoot)
	if err != nil {
		return nil, paths, usageError(err)
	}
	conn, _, err := zkstate.Connect(ctx, c.zkServers(), zkSessionTimeout, c.auth, quietZK{})
	return conn, paths, err
}

// zkSessionTimeout is the session of a short-lived command: it ends with
// the command, so only its connect time matters.
const zkSessionTimeout = 10 * time.Second

type quietZK struct{}

func (quietZK) Printf(string, ...any) {}
