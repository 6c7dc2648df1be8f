package local

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/switchyard/switchyard/internal/retry"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/registry/backends"
	"github.com/switchyard/switchyard/registry/server"
	"github.com/switchyard/switchyard/zkstate"
)

// Build compiles switchyard, hello and hello-grpc into dir.
func Build(ctx context.Context, dir string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	for name, pkg := range map[string]string{"switchyard": "./cmd/switchyard", "hello": "./examples/hello", "hello-grpc": "./examples/hello-grpc", "worker": "./examples/worker"} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, name), pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %w: %s", pkg, err, out)
		}
	}
	return nil
}

// Proc is a process the harness started; only these are ever signalled.
type Proc struct {
	Name string
	Args []string
	cmd  *exec.Cmd
	done chan struct{}
}

// Alive reports whether the process still runs.
func (p *Proc) Alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL and waits.
func (p *Proc) Kill() { p.signal(syscall.SIGKILL, 0) }

// Stop sends SIGTERM and waits up to grace before SIGKILL.
func (p *Proc) Stop(grace time.Duration) { p.signal(syscall.SIGTERM, grace) }

// Signal sends sig without waiting.
func (p *Proc) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

func (p *Proc) signal(sig syscall.Signal, grace time.Duration) {
	if !p.Alive() {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	if grace > 0 {
		select {
		case <-p.done:
			return
		case <-time.After(grace):
			_ = p.cmd.Process.Kill()
		}
	}
	<-p.done
}

// Instance is a running hello.
type Instance struct {
	*Proc
	Color zkstate.Color
	ID    string
	Addr  string
}

// Options shape a local cluster.
type Options struct {
	Bin         string // holds switchyard and hello
	Dir         string // logs and data
	Token       string
	Controllers int
	Blue, Green int
	// RegistryURL, when set, names an external registry (Consul) to use
	// instead of starting the built-in server.
	RegistryURL string
	// Fast timings for tests: short sessions, leases and heartbeats.
	Fast bool
	// Env is added to every process's environment.
	Env []string
	// ZKAuth, when set, runs in digest mode: every process logs in with it.
	ZKAuth string
	// Ensemble, when above 1, runs ZooKeeper as an ensemble of that many
	// servers instead of a standalone one.
	Ensemble int
	// InstanceZK, when set, maps the ZooKeeper connection string to the
	// one instances use, so that a test can put proxies in between.
	InstanceZK func(zkAddr string) (string, error)
	// GatewayArgs are added to the gateway's flags (more routes, TLS,
	// grace periods, trusted proxies).
	GatewayArgs []string
	// PreviewListen gives the gateway a preview listener on a free
	// loopback port (Cluster.PreviewURL).
	PreviewListen bool
	// Fixed listen addresses; empty means a free loopback port.
	GatewayAddr, RegistryAddr string
	ControllerAddrs           []string
}

func addrOr(fixed string) (string, error) {
	if fixed != "" {
		return fixed, nil
	}
	port, err := FreePort()
	return fmt.Sprintf("127.0.0.1:%d", port), err
}

// Cluster is ZooKeeper, a registry, controllers, a gateway and instances.
type Cluster struct {
	opts           Options
	ZK             *ZooKeeper
	Registry       *Proc // nil with an external registry
	RegistryURL    string
	registryArg    []string
	Controllers    []*Proc
	ControllerAPIs []string // http://host:port of each controller's API
	Gateway        *Proc
	GatewayURL     string
	PreviewURL     string // the idle color, with Options.PreviewListen; "" without
	// GatewayAdminURL serves the gateway's /metrics, /healthz and /v1/routes.
	GatewayAdminURL string
	mu              sync.Mutex
	Instances       []*Instance
	zk              *zk.Conn
	Paths           zkstate.Paths
}

// Start brings the whole topology up and waits until the active color (blue)
// serves through the gateway.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if opts.Controllers == 0 {
		opts.Controllers = 2
	}
	c := &Cluster{opts: opts}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	if opts.Ensemble > 1 {
		c.ZK, err = StartEnsemble(ctx, filepath.Join(opts.Dir, "zookeeper"), opts.Ensemble, 250*time.Millisecond)
	} else {
		c.ZK, err = StartZooKeeper(ctx, filepath.Join(opts.Dir, "zookeeper"), 250*time.Millisecond)
	}
	if err != nil {
		return nil, err
	}
	c.Paths, _ = zkstate.NewPaths("/")
	if opts.ZKAuth != "" {
		c.opts.Env = append(c.opts.Env, "SWITCHYARD_ZK_AUTH="+opts.ZKAuth)
	}
	conn, events, err := zk.Connect(strings.Split(c.ZK.Addr, ","), 5*time.Second, zk.WithLogInfo(false), zk.WithLogger(quiet{}))
	if err != nil {
		return nil, err
	}
	c.zk = conn
	for ev := range events {
		if ev.State == zk.StateHasSession {
			break
		}
	}
	go func() {
		for range events {
		}
	}()
	if opts.RegistryURL != "" {
		c.RegistryURL = opts.RegistryURL
	} else {
		addr, err := addrOr(opts.RegistryAddr)
		if err != nil {
			return nil, err
		}
		c.RegistryURL = "http://" + addr
		c.registryArg = []string{"registry", "--listen", addr}
		if opts.Fast {
			c.registryArg = append(c.registryArg, "--lease-ttl", "3s", "--warmup", "1500ms")
		}
		if err := c.StartRegistry(ctx); err != nil {
			return nil, err
		}
	}
	for i := range opts.Controllers {
		fixed := ""
		if i < len(opts.ControllerAddrs) {
			fixed = opts.ControllerAddrs[i]
		}
		if _, err := c.StartController(ctx, fmt.Sprintf("controller-%d", i+1), fixed); err != nil {
			return nil, err
		}
	}
	gaddr, err := addrOr(opts.GatewayAddr)
	if err != nil {
		return nil, err
	}
	c.GatewayURL = "http://" + gaddr
	admin, err := addrOr("")
	if err != nil {
		return nil, err
	}
	c.GatewayAdminURL = "http://" + admin
	// A gateway needs only the read token: it cannot change an instance.
	gargs := c.sy("gateway", "--listen", gaddr, "--admin", admin, "--id", "gateway-1", "--token", registry.ReadToken(c.opts.Token))
	if !slices.Contains(opts.GatewayArgs, "--config") {
		gargs = append(gargs, "--route", "/=hello")
	}
	if opts.PreviewListen {
		paddr, err := addrOr("")
		if err != nil {
			return nil, err
		}
		c.PreviewURL = "http://" + paddr
		gargs = append(gargs, "--preview-listen", paddr)
	}
	if c.Gateway, err = c.start("gateway", append(gargs, opts.GatewayArgs...)...); err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, c.GatewayURL+"/", 10*time.Second, 0); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	for range opts.Blue {
		if _, err := c.StartInstance(ctx, zkstate.Blue); err != nil {
			return nil, err
		}
	}
	for range opts.Green {
		if _, err := c.StartInstance(ctx, zkstate.Green); err != nil {
			return nil, err
		}
	}
	if opts.Blue > 0 {
		if err := c.WaitServing(ctx, zkstate.Blue, 30*time.Second); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// ZKConn is the harness's own ZooKeeper session.
func (c *Cluster) ZKConn() *zk.Conn { return c.zk }

// sy prefixes the flags every switchyard process takes.
func (c *Cluster) sy(args ...string) []string {
	return append([]string{filepath.Join(c.opts.Bin, "switchyard")}, append(args, "--zk", c.ZK.Addr, "--registry", c.RegistryURL)...)
}

func (c *Cluster) env() []string {
	return append(append(os.Environ(), "SWITCHYARD_TOKEN="+c.opts.Token, "SWITCHYARD_ZK_ROOT=/"), c.opts.Env...)
}

func (c *Cluster) start(name string, argv ...string) (*Proc, error) {
	logf, err := os.OpenFile(filepath.Join(c.opts.Dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = c.env()
	cmd.Stdout, cmd.Stderr = logf, logf
	// Nothing the harness starts may outlive it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, Args: argv, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	return p, nil
}

// StartRegistry starts (or restarts) the built-in registry on its port.
func (c *Cluster) StartRegistry(ctx context.Context) error {
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The old process's port may take a moment to be free again.
		c.Registry, err = c.start("registry", append([]string{filepath.Join(c.opts.Bin, "switchyard")}, c.registryArg...)...)
		if err != nil {
			return err
		}
		if err = waitHTTP(ctx, c.RegistryURL+"/healthz", 5*time.Second, http.StatusOK); err == nil {
			return nil
		}
		c.Registry.Kill()
		if time.Now().After(deadline) {
			return fmt.Errorf("registry: %w", err)
		}
	}
}

// StartController starts a controller with id, on addr or a free port;
// extra flags come last and win (e.g. another --zk).
func (c *Cluster) StartController(ctx context.Context, id, addr string, extra ...string) (*Proc, error) {
	addr, err := addrOr(addr)
	if err != nil {
		return nil, err
	}
	// Every instance of the harness lives on loopback.
	args := c.sy("controller", "--id", id, "--listen", addr, "--allow-loopback")
	if c.opts.Fast {
		args = append(args, "--session-timeout", "2s", "--health-timeout", "2s", "--resync", "500ms", "--preservation-hold", "10s")
	}
	p, err := c.start(id, append(args, extra...)...)
	if err != nil {
		return nil, err
	}
	c.Controllers = append(c.Controllers, p)
	c.ControllerAPIs = append(c.ControllerAPIs, "http://"+addr)
	return p, waitHTTP(ctx, "http://"+addr+"/healthz", 10*time.Second, http.StatusOK)
}

// StartInstance starts a hello of color and waits until it listens.
func (c *Cluster) StartInstance(ctx context.Context, color zkstate.Color, extra ...string) (*Instance, error) {
	return c.startExample(ctx, "hello", color, extra...)
}

// StartService runs controllers more controllers for service kept under a
// ZooKeeper root of its own, /<service>, as a release of several services
// (switch --services) has it; its instances come from
// StartServiceInstance.
func (c *Cluster) StartService(ctx context.Context, service string, controllers int) error {
	for i := range controllers {
		if _, err := c.StartController(ctx, fmt.Sprintf("%s-controller-%d", service, i+1), "", "--zk-root", "/"+service); err != nil {
			return err
		}
	}
	return nil
}

// StartServiceInstance starts a hello of service, under the service's own
// root (StartService), and waits until it listens.
func (c *Cluster) StartServiceInstance(ctx context.Context, service string, color zkstate.Color, extra ...string) (*Instance, error) {
	return c.StartInstance(ctx, color, append([]string{"--service", service, "--zk-root", "/" + service}, extra...)...)
}

// StartGRPCInstance starts a hello-grpc of color, service hello-grpc, and
// waits until it listens. Its Addr takes gRPC over h2c and HTTP/1.1.
func (c *Cluster) StartGRPCInstance(ctx context.Context, color zkstate.Color, extra ...string) (*Instance, error) {
	return c.startExample(ctx, "hello-grpc", color, extra...)
}

// startExample starts the example binary of color with the cluster's
// settings, named after the binary, and waits until it listens.
func (c *Cluster) startExample(ctx context.Context, binary string, color zkstate.Color, extra ...string) (*Instance, error) {
	c.mu.Lock()
	n := len(c.Instances) + 1
	c.mu.Unlock()
	name := fmt.Sprintf("%s-%s-%d", binary, color, n)
	zkAddr := c.ZK.Addr
	if c.opts.InstanceZK != nil {
		var err error
		if zkAddr, err = c.opts.InstanceZK(zkAddr); err != nil {
			return nil, err
		}
	}
	// Each instance holds only its own token: it can act for itself alone.
	args := []string{filepath.Join(c.opts.Bin, binary), "--color", string(color), "--id", name, "--zk", zkAddr, "--registry", c.RegistryURL,
		"--token", registry.InstanceToken(c.opts.Token, name),
		"--version", map[zkstate.Color]string{zkstate.Blue: "v1", zkstate.Green: "v2"}[color]}
	if c.opts.Fast {
		args = append(args, "--heartbeat", "300ms", "--zk-session-timeout", "2s", "--drain-timeout", "3s")
	}
	args = append(args, extra...)
	logPath := filepath.Join(c.opts.Dir, name+".log")
	p, err := c.start(name, args...)
	if err != nil {
		return nil, err
	}
	// hello prints a LISTEN line once bound.
	addr, err := waitLine(ctx, logPath, p, "LISTEN ", 15*time.Second)
	if err != nil {
		p.Kill()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	inst := &Instance{Proc: p, Color: color, ID: name, Addr: addr}
	c.mu.Lock()
	c.Instances = append(c.Instances, inst)
	c.mu.Unlock()
	return inst, nil
}

// waitHTTP polls url until it answers (with want, when want is not 0).
func waitHTTP(ctx context.Context, url string, within time.Duration, want int) error {
	err := retry.Until(ctx, within, func() (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return true, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if want == 0 || resp.StatusCode == want {
			return true, nil
		}
		return false, fmt.Errorf("%s answered %s", url, resp.Status)
	})
	if err != nil {
		return fmt.Errorf("%s not ready: %w", url, err)
	}
	return nil
}

// WaitServing waits until every response through the gateway is color.
func (c *Cluster) WaitServing(ctx context.Context, color zkstate.Color, within time.Duration) error {
	err := retry.Until(ctx, within, func() (bool, error) {
		// Twenty answers in a row from color.
		for range 20 {
			if got, err := GetColor(ctx, http.DefaultClient, c.GatewayURL+"/"); err != nil || got != color {
				return false, err
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("gateway did not serve only %s: %w", color, err)
	}
	return nil
}

// GetColor fetches url and returns the X-Switchyard-Color of a 200.
func GetColor(ctx context.Context, hc *http.Client, url string) (zkstate.Color, error) {
	color, _, err := Send(ctx, hc, http.MethodGet, url)
	return color, err
}

// Flip writes /active_color with the real zkCli.sh, as CI does (logging
// in first in digest mode), and returns the write's zxid and server time.
// zkCli prints the write's own stat (set -s): by the time its JVM has
// exited, the controller may have written /active_color again (an
// automatic rollback takes a few hundred milliseconds), so the node's
// stat read afterwards gives the write's millisecond mtime only while it
// is still the newest write; otherwise the printed one, to the second.
func (c *Cluster) Flip(ctx context.Context, value string) (int64, time.Time, error) {
	var (
		out string
		err error
	)
	if c.opts.ZKAuth != "" {
		out, err = ZkCliScript(ctx, c.ZK.Addr, "addauth digest "+c.opts.ZKAuth, "set -s /active_color "+value)
		if err == nil && strings.Contains(out, "Insufficient permission") {
			err = fmt.Errorf("zkCli.sh set /active_color: %s", out)
		}
	} else {
		out, err = ZkCli(ctx, c.ZK.Addr, "set", "-s", "/active_color", value)
	}
	if err != nil {
		return 0, time.Time{}, err
	}
	_, stat, err := c.zk.Get("/active_color")
	if err != nil {
		return 0, time.Time{}, err
	}
	zxid, at, ok := printedStat(out)
	if !ok || zxid == stat.Mzxid {
		return stat.Mzxid, time.UnixMilli(stat.Mtime), nil
	}
	return zxid, at, nil
}

// printedStat reads the mZxid and mtime lines zkCli.sh prints for a node.
func printedStat(out string) (zxid int64, mtime time.Time, ok bool) {
	var haveZxid, haveTime bool
	for _, line := range strings.Split(out, "\n") {
		k, v, found := strings.Cut(line, " = ")
		switch {
		case !found:
		case strings.HasSuffix(k, "mZxid"):
			n, err := strconv.ParseInt(strings.TrimPrefix(strings.TrimSpace(v), "0x"), 16, 64)
			zxid, haveZxid = n, err == nil
		case strings.HasSuffix(k, "mtime"):
			t, err := time.Parse("Mon Jan 02 15:04:05 MST 2006", strings.TrimSpace(v))
			mtime, haveTime = t, err == nil
		}
	}
	return zxid, mtime, haveZxid && haveTime
}

// Record reads /switchyard/switch.
func (c *Cluster) Record() (zkstate.Switch, error) {
	rec, _, err := zkstate.ReadSwitch(c.zk, c.Paths)
	return rec, err
}

// WaitRecord polls the switch record until ok accepts it.
func (c *Cluster) WaitRecord(ctx context.Context, within time.Duration, ok func(zkstate.Switch) bool) (zkstate.Switch, error) {
	var rec zkstate.Switch
	err := retry.Until(ctx, within, func() (bool, error) {
		r, err := c.Record()
		if err != nil {
			return false, err
		}
		rec = r
		return ok(r), nil
	})
	if err != nil {
		return rec, fmt.Errorf("switch record not as expected (last: %+v): %w", rec, err)
	}
	return rec, nil
}

// CLI runs the switchyard command with the cluster's settings.
func (c *Cluster) CLI(ctx context.Context, args ...string) (string, error) {
	argv := c.sy(args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = c.env()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Backend opens the cluster's registry as a client would.
func (c *Cluster) Backend() (registry.Backend, error) {
	return backends.Open(c.RegistryURL, c.opts.Token)
}

// Stop ends every process the harness started, instances first so they
// can deregister.
func (c *Cluster) Stop() {
	var wg sync.WaitGroup
	c.mu.Lock()
	for _, in := range c.Instances {
		wg.Add(1)
		go func() { defer wg.Done(); in.Stop(5 * time.Second) }()
	}
	c.mu.Unlock()
	wg.Wait()
	for _, p := range append([]*Proc{c.Gateway, c.Registry}, c.Controllers...) {
		if p != nil {
			p.Stop(3 * time.Second)
		}
	}
	if c.zk != nil {
		c.zk.Close()
	}
	if c.ZK != nil {
		c.ZK.Close()
	}
}

type quiet struct{}

func (quiet) Printf(string, ...any) {}

// ServeRegistry runs a built-in registry server in this process on a free
// loopback port until ctx ends, and returns its URL and a channel closed
// once it has stopped.
func ServeRegistry(ctx context.Context, cfg server.Config) (string, <-chan struct{}, error) {
	srv, err := server.New(cfg)
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	done := make(chan struct{})
	go func() { _ = srv.ServeListener(ctx, ln); close(done) }()
	return "http://" + ln.Addr().String(), done, nil
}
