package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path"
	"slices"
	"strings"
	"syscall"

	"github.com/go-zookeeper/zk"
	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/zkstate"
)

// servicesHelp is the part of switch's and rollback's help about releases
// of several services.
const servicesHelp = `
With --services web,api it moves several services as one release. Each
service has its own ZooKeeper root, --zk-root/NAME (/web and /api with the
default root), with its own controllers. The services move one after the
other, in the order given, each to its outcome (--wait is implied), so put
a dependency first: --services api,web moves api, then web. With --verify,
each one's analysis must pass before the next one moves. --timeout bounds
each service, and each move back.

As soon as one is not done (refused, failed, superseded, timed out,
interrupted, or with --verify rolled back by its analysis), none of them
switches: the ones already moved are moved back, newest first, each to its
outcome, and so is the one that stopped the release, so that every
/active_color says the color that serves. A service someone else wrote
since is left as it is. A second interrupt stops the way back.

The exit code is the stopping service's (1 when it was refused, routing
unchanged), or 5 when a service could not be moved back: the command names
it, and its /active_color still says where the controllers take it.`

func (w *switchFlags) addServices(cmd *cobra.Command) {
	cmd.Flags().StringSliceVar(&w.services, "services", nil, "move these services as one release, in this order, each under --zk-root/NAME; any not done moves them all back (implies --wait)")
}

// releaseService is one service of a release: where its state is, the
// color it had before, and the release's write to its /active_color (0:
// none yet).
type releaseService struct {
	name    string
	paths   zkstate.Paths
	before  zkstate.Color
	written int64
}

// switchServices moves w.services to color (for a rollback, "", to the
// other color than the one they all have) as one release: see
// servicesHelp.
func (c *common) switchServices(ctx context.Context, w switchFlags, color zkstate.Color) error {
	svcs, err := c.releaseServices(w.services)
	if err != nil {
		return err
	}
	conn, _, err := c.connectZK(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	// Every service must tell its color before anything is written: one
	// that cannot would leave the release nothing to move it back to.
	for i := range svcs {
		s := &svcs[i]
		if s.before, err = zkstate.ReadActiveColor(conn, s.paths); err != nil {
			return fmt.Errorf("service %s: %w; nothing was written", s.name, err)
		}
	}
	if color == "" {
		for _, s := range svcs[1:] {
			if s.before != svcs[0].before {
				return usageError(fmt.Errorf("cannot roll back services on different colors (%s is %s, %s is %s); name the color with switchyard switch; nothing was written",
					svcs[0].name, svcs[0].before, s.name, s.before))
			}
		}
		color = svcs[0].before.Other()
	}
	if w.askedBy == "" {
		w.askedBy = defaultAsker()
	}
	names := strings.Join(w.services, ",")
	w.wait = true
	move := w
	move.askedBy = fmt.Sprintf("%s (release %s)", w.askedBy, names)
	fmt.Printf("release %s to %s: %d services, one after the other\n", names, color, len(svcs))

	stopped, code := -1, 0
	for i := range svcs {
		s := &svcs[i]
		// --timeout bounds each service, its analysis with --verify
		// included, not the release as a whole.
		sctx, cancel := context.WithTimeout(ctx, w.timeout)
		id, rc, err := c.flip(sctx, conn, s.paths, move, color, 0)
		cancel()
		if err != nil {
			stopped, code = i, codeError
			fmt.Fprintf(os.Stderr, "release %s: service %s: %v\n", names, s.name, err)
			break
		}
		s.written = id
		if rc != 0 {
			stopped, code = i, rc
			break
		}
	}
	if stopped < 0 {
		fmt.Printf("release %s: every service is on %s\n", names, color)
		return nil
	}
	// The way back must not inherit a timeout or an interrupt that
	// stopped the way there; a second interrupt stops it.
	back := move
	back.verify = false
	back.askedBy = fmt.Sprintf("%s (release %s: moved back, %s did not switch)", w.askedBy, names, svcs[stopped].name)
	bctx, stopBack := signal.NotifyContext(context.WithoutCancel(ctx), os.Interrupt, syscall.SIGTERM)
	defer stopBack()
	fmt.Fprintf(os.Stderr, "release %s: %s did not switch to %s (exit %d); moving every service back\n", names, svcs[stopped].name, color, code)
	stuck := moveBack(bctx, c, conn, svcs, back)
	if len(stuck) > 0 {
		fmt.Fprintf(os.Stderr, "release %s: %s not moved back: see switchyard status for each\n", names, strings.Join(stuck, ", "))
		return &reportedError{codeStuck}
	}
	fmt.Fprintf(os.Stderr, "release %s: every service is back where it was; routing is unchanged\n", names)
	return &reportedError{code}
}

// moveBack writes each written service's color before the release back,
// newest first, over the release's own write only (a later write by
// someone else stands), and follows each to its outcome within w.timeout.
// It returns the services that did not get back, each with why.
func moveBack(ctx context.Context, c *common, conn *zk.Conn, svcs []releaseService, w switchFlags) (stuck []string) {
	for i := len(svcs) - 1; i >= 0; i-- {
		s := svcs[i]
		if s.written == 0 {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, w.timeout)
		_, code, err := c.flip(sctx, conn, s.paths, w, s.before, s.written)
		cancel()
		switch {
		case errors.Is(err, zkstate.ErrWrittenSince):
			// Its own analysis may have rolled it back already; any other
			// later write is someone else's, and stands.
			if now, rerr := zkstate.ReadActiveColor(conn, s.paths); rerr == nil && now == s.before {
				fmt.Fprintf(os.Stderr, "service %s: already back on %s (%v)\n", s.name, now, err)
				continue
			}
			fmt.Fprintf(os.Stderr, "service %s: left as it is: %v\n", s.name, err)
			stuck = append(stuck, s.name+" (written by someone else since)")
		case err != nil:
			fmt.Fprintf(os.Stderr, "service %s: %v\n", s.name, err)
			stuck = append(stuck, s.name)
		case code != 0:
			stuck = append(stuck, s.name)
		}
	}
	return stuck
}

// releaseServices checks the names given to --services and finds each
// one's root under --zk-root. A name is a service name as the registry
// takes it, given once.
func (c *common) releaseServices(names []string) ([]releaseService, error) {
	base, err := zkstate.NewPaths(c.zkRoot)
	if err != nil {
		return nil, usageError(err)
	}
	var svcs []releaseService
	for i, n := range names {
		if err := registry.CheckName("--services: service", n); err != nil {
			return nil, usageError(err)
		}
		if n == "." || n == ".." {
			return nil, usageError(fmt.Errorf("--services: %q is not a service name", n))
		}
		if slices.Contains(names[:i], n) {
			return nil, usageError(fmt.Errorf("--services: %s is named twice", n))
		}
		p, err := zkstate.NewPaths(path.Join(base.Root(), n))
		if err != nil {
			return nil, usageError(err)
		}
		svcs = append(svcs, releaseService{name: n, paths: p})
	}
	if len(svcs) == 0 {
		return nil, usageError(errors.New("--services: name at least one service"))
	}
	return svcs, nil
}
