// Package local runs switchyard's whole topology on one machine: a real
// ZooKeeper (and Consul) in a temp dir on free loopback ports, the registry,
// controllers, gateway and example instances as real processes, a load
// generator, and the flips. The end-to-end tests and `make demo` use it.
package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/internal/retry"
)

const zkHome = "/usr/share/zookeeper"

// ZooKeeper is a ZooKeeper started from the distribution's package,
// private to its directory: one standalone server, or an ensemble whose
// Members are servers of their own.
type ZooKeeper struct {
	// Addr is the connection string: the server's client address, or every
	// member's, comma-separated.
	Addr string
	// Members are an ensemble's servers; empty for a standalone server.
	Members []*ZooKeeper
	ID      int // an ensemble member's myid

	dir, cfgPath string
	// held keeps the server's ports reserved while it does not listen on
	// them; see holdPort.
	held []*os.File
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// RepoRoot finds the switchyard checkout from the working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/switchyard/switchyard\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("local: not inside the switchyard checkout")
		}
		dir = parent
	}
}

// EnsureZooKeeper installs ZooKeeper through the project's script when it is
// missing.
func EnsureZooKeeper(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(zkHome, "bin", "zkCli.sh")); err == nil {
		return nil
	}
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "bash", filepath.Join(root, "deployments", "install", "zookeeper.sh")).CombinedOutput()
	if err != nil {
		return fmt.Errorf("install zookeeper: %w: %s", err, out)
	}
	return nil
}

var (
	portsMu sync.Mutex
	given   = map[int]bool{}
)

// FreePort returns a loopback port nobody listens on right now. It never
// returns the same port twice in a process: the kernel may offer a port
// again as soon as the probe closes, and two parts started from two picks
// would then collide.
func FreePort() (int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if !given[port] {
			given[port] = true
			return port, nil
		}
	}
	return 0, errors.New("local: no fresh loopback port after 100 tries")
}

// holdPort reserves a free loopback port for a ZooKeeper server: it
// returns the port and the socket that holds it, bound with SO_REUSEADDR
// and never listening. A ZooKeeper server leaves its ports unbound for
// long (a member binds its quorum port only while it leads, a stopped
// server binds none), and a port merely found free by FreePort could be
// handed to any process that asks for port 0 meanwhile, as the example
// instances do. The member elected next could then not bind its quorum
// port, and the ensemble would have no leader while the other holds it.
// Linux gives a held port to no bind to port 0 and to no outgoing
// connection, yet ZooKeeper, which binds with SO_REUSEADDR, still can.
func holdPort() (int, *os.File, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, nil, fmt.Errorf("hold a port: %w", err)
	}
	f := os.NewFile(uintptr(fd), "held port")
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		f.Close()
		return 0, nil, fmt.Errorf("hold a port: %w", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		f.Close()
		return 0, nil, fmt.Errorf("hold a port: %w", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		f.Close()
		return 0, nil, fmt.Errorf("hold a port: %w", err)
	}
	port := sa.(*syscall.SockaddrInet4).Port
	portsMu.Lock()
	given[port] = true
	portsMu.Unlock()
	return port, f, nil
}

// holdPorts holds n ports for z; see holdPort.
func (z *ZooKeeper) holdPorts(n int) ([]int, error) {
	ports := make([]int, n)
	for i := range ports {
		port, f, err := holdPort()
		if err != nil {
			return nil, err
		}
		ports[i] = port
		z.held = append(z.held, f)
	}
	return ports, nil
}

// StartZooKeeper runs a standalone ZooKeeper in dir on a free loopback
// port and waits until it serves. tick sets the session timeout range to 2
// to 20 ticks.
func StartZooKeeper(ctx context.Context, dir string, tick time.Duration) (*ZooKeeper, error) {
	if err := EnsureZooKeeper(ctx); err != nil {
		return nil, err
	}
	z := &ZooKeeper{dir: dir}
	ports, err := z.holdPorts(1)
	if err != nil {
		z.Close()
		return nil, err
	}
	z.Addr = fmt.Sprintf("127.0.0.1:%d", ports[0])
	if err := z.configure(tick, ports[0], ""); err != nil {
		z.Close()
		return nil, err
	}
	if err := z.Start(ctx); err != nil {
		z.Close()
		return nil, err
	}
	return z, nil
}

// StartEnsemble runs n ZooKeeper servers as one ensemble on loopback, each
// with its own config, data and ports under dir, and waits until every one
// serves.
func StartEnsemble(ctx context.Context, dir string, n int, tick time.Duration) (*ZooKeeper, error) {
	if err := EnsureZooKeeper(ctx); err != nil {
		return nil, err
	}
	e := &ZooKeeper{}
	var servers, addrs []string
	clientPorts := make([]int, n)
	for i := range n {
		// Each member holds its client, quorum and election ports.
		m := &ZooKeeper{ID: i + 1, dir: filepath.Join(dir, fmt.Sprintf("zk%d", i+1))}
		e.Members = append(e.Members, m)
		ports, err := m.holdPorts(3)
		if err != nil {
			e.Close()
			return nil, err
		}
		clientPorts[i] = ports[0]
		m.Addr = fmt.Sprintf("127.0.0.1:%d", ports[0])
		servers = append(servers, fmt.Sprintf("server.%d=127.0.0.1:%d:%d", i+1, ports[1], ports[2]))
		addrs = append(addrs, m.Addr)
	}
	for i, m := range e.Members {
		if err := m.configure(tick, clientPorts[i], "initLimit=10\nsyncLimit=5\n"+strings.Join(servers, "\n")+"\n"); err != nil {
			e.Close()
			return nil, err
		}
	}
	e.Addr = strings.Join(addrs, ",")
	for _, m := range e.Members {
		if err := m.launch(); err != nil {
			e.Close()
			return nil, err
		}
	}
	for _, m := range e.Members {
		if err := m.waitServing(ctx); err != nil {
			e.Close()
			return nil, err
		}
	}
	return e, nil
}

// configure writes the server's config (and myid for a member).
func (z *ZooKeeper) configure(tick time.Duration, port int, ensemble string) error {
	if tick <= 0 {
		tick = 500 * time.Millisecond
	}
	data := filepath.Join(z.dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	if z.ID > 0 {
		if err := os.WriteFile(filepath.Join(data, "myid"), []byte(fmt.Sprint(z.ID)), 0o644); err != nil {
			return err
		}
	}
	cfg := fmt.Sprintf(`tickTime=%d
dataDir=%s
clientPort=%d
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,mntr
%s`, tick.Milliseconds(), data, port, ensemble)
	z.cfgPath = filepath.Join(z.dir, "zoo.cfg")
	return os.WriteFile(z.cfgPath, []byte(cfg), 0o644)
}

// Start starts the server (again, with the same config and data) and waits
// until it serves. An ensemble member serves only once a quorum is up.
func (z *ZooKeeper) Start(ctx context.Context) error {
	if err := z.launch(); err != nil {
		return err
	}
	if err := z.waitServing(ctx); err != nil {
		z.Stop()
		return err
	}
	return nil
}

func (z *ZooKeeper) launch() error {
	logf, err := os.OpenFile(filepath.Join(z.dir, "zookeeper.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	main := "org.apache.zookeeper.server.ZooKeeperServerMain"
	if z.ID > 0 {
		main = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
	}
	args := []string{"-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
		"-Dzookeeper.log.dir=" + z.dir, "-Dzookeeper.admin.enableServer=false"}
	if z.ID > 0 {
		// Leader election backs off between rounds of notifications up to
		// maxNotificationInterval, 60 s by default: an ensemble that lost its
		// leader could then sit without one for a minute, longer than a
		// fault test waits. On loopback, 2 s between rounds and 1 s to
		// connect to a peer are plenty.
		args = append(args, "-Dzookeeper.fastleader.maxNotificationInterval=2000", "-Dzookeeper.cnxTimeout=1000")
	}
	// zookeeper.jar names slf4j's API but no binding, so without one the
	// server logs nothing. log4j 1.2 and its slf4j binding come with the
	// package's dependencies; the config in the member's dir gives every
	// line a timestamp and the member's id.
	logCfg := filepath.Join(z.dir, "log4j.properties")
	if err := os.WriteFile(logCfg, []byte(log4jConfig), 0o644); err != nil {
		return err
	}
	args = append(args, "-Dlog4j.configuration=file:"+logCfg,
		"-cp", "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar", main, z.cfgPath)
	cmd := exec.Command("java", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start zookeeper: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	z.mu.Lock()
	z.cmd, z.done = cmd, done
	z.mu.Unlock()
	return nil
}

// log4jConfig sends ZooKeeper's log to standard output, which launch
// appends to the server's zookeeper.log.
const log4jConfig = `log4j.rootLogger=INFO, CONSOLE
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} [myid:%X{myid}] %-5p [%t:%C{1}@%L] - %m%n
`

// LogTail is the end of the server's log, at most n bytes of each
// member's for an ensemble, each headed by the member's address.
func (z *ZooKeeper) LogTail(n int) string {
	if len(z.Members) == 0 {
		b, _ := os.ReadFile(filepath.Join(z.dir, "zookeeper.log"))
		return tail(b, n)
	}
	var out strings.Builder
	for _, m := range z.Members {
		fmt.Fprintf(&out, "==== zookeeper member %d (%s)\n%s\n", m.ID, m.Addr, m.LogTail(n))
	}
	return out.String()
}

func (z *ZooKeeper) waitServing(ctx context.Context) error {
	z.mu.Lock()
	done := z.done
	z.mu.Unlock()
	err := retry.Until(ctx, 90*time.Second, func() (bool, error) {
		select {
		case <-done:
			b, _ := os.ReadFile(filepath.Join(z.dir, "zookeeper.log"))
			return true, fmt.Errorf("zookeeper exited at start: %s", tail(b, 2000))
		default:
		}
		if z.ID > 0 {
			// An ensemble member reports a mode once it follows, before it
			// has synced with the leader; killing the leader then would
			// take the ensemble's quorum with it.
			return strings.HasSuffix(z.peerState(), "broadcast"), nil
		}
		return z.Mode() != "", nil
	})
	if err != nil {
		return fmt.Errorf("zookeeper %s does not serve: %w", z.Addr, err)
	}
	return nil
}

// Mode is what the server's srvr command says it is: standalone, leader
// or follower; "" while it does not serve (no quorum) or does not answer.
func (z *ZooKeeper) Mode() string { return z.fourLetter("srvr", "Mode: ") }

// peerState is what the server's mntr command says of its part in the
// ensemble: "following - broadcast" or "leading - broadcast" once it is in
// sync, another phase before; "" when it does not answer.
func (z *ZooKeeper) peerState() string { return z.fourLetter("mntr", "zk_peer_state\t") }

// fourLetter sends the four-letter command cmd and returns the value of
// its answer's line that starts with prefix; "" when the server does not
// answer or says no such line.
func (z *ZooKeeper) fourLetter(cmd, prefix string) string {
	c, err := net.DialTimeout("tcp", z.Addr, time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(cmd)); err != nil {
		return ""
	}
	b, _ := io.ReadAll(c)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// Leader is the ensemble member that leads now, or nil.
func (z *ZooKeeper) Leader() *ZooKeeper {
	for _, m := range z.Members {
		if m.Mode() == "leader" {
			return m
		}
	}
	return nil
}

// Alive reports whether the server's process runs.
func (z *ZooKeeper) Alive() bool {
	z.mu.Lock()
	done := z.done
	z.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// PID is the server's process id, 0 when it does not run.
func (z *ZooKeeper) PID() int {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.cmd == nil || z.cmd.Process == nil {
		return 0
	}
	return z.cmd.Process.Pid
}

// Stop kills the server, or every member of an ensemble, and waits.
// Stopping twice is harmless; Start brings a server back, on the ports it
// holds until Close.
func (z *ZooKeeper) Stop() {
	for _, m := range z.Members {
		m.Stop()
	}
	z.mu.Lock()
	cmd, done := z.cmd, z.done
	z.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Close stops the server, or every member of an ensemble, for good: it
// also gives up the ports held for it.
func (z *ZooKeeper) Close() {
	z.Stop()
	for _, m := range z.Members {
		m.Close()
	}
	for _, f := range z.held {
		f.Close()
	}
	z.held = nil
}

// ZkCli runs the real zkCli.sh against addr, as CI would, and returns its
// output.
func ZkCli(ctx context.Context, addr string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(zkHome, "bin", "zkCli.sh"), append([]string{"-server", addr}, args...)...)
	cmd.Env = append(os.Environ(), "ZOO_LOG_DIR="+os.TempDir(), "CLIENT_JVMFLAGS=-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("zkCli.sh %s: %w: %s", strings.Join(args, " "), err, tail(out, 500))
	}
	return string(out), nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// ZkCliScript feeds commands to one zkCli.sh session on its standard input,
// as CI does to log in before a write: "addauth digest user:pass", "set ...".
func ZkCliScript(ctx context.Context, addr string, commands ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(zkHome, "bin", "zkCli.sh"), "-server", addr)
	cmd.Env = append(os.Environ(), "ZOO_LOG_DIR="+os.TempDir(), "CLIENT_JVMFLAGS=-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
	cmd.Stdin = strings.NewReader(strings.Join(append(commands, "quit"), "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("zkCli.sh script: %w: %s", err, tail(out, 500))
	}
	return string(out), nil
}
