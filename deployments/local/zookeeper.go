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

// ZooKeeper is a standalone ZooKeeper server started from the distribution's
// package, private to its directory.
type ZooKeeper struct {
	Addr string // 127.0.0.1:port
	dir  string
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

// StartZooKeeper runs a ZooKeeper in dir on a free loopback port and waits
// until it serves. tickTime sets the session timeout range to 2 to 20 ticks.
func StartZooKeeper(ctx context.Context, dir string, tick time.Duration) (*ZooKeeper, error) {
	if err := EnsureZooKeeper(ctx); err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	if tick <= 0 {
		tick = 500 * time.Millisecond
	}
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`tickTime=%d
dataDir=%s
clientPort=%d
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,mntr
`, tick.Milliseconds(), data, port)
	cfgPath := filepath.Join(dir, "zoo.cfg")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "zookeeper.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command("java", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
		"-Dzookeeper.log.dir="+dir, "-Dzookeeper.admin.enableServer=false",
		"-cp", dir+":"+"/etc/zookeeper/conf:/usr/share/java/zookeeper.jar",
		"org.apache.zookeeper.server.ZooKeeperServerMain", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start zookeeper: %w", err)
	}
	z := &ZooKeeper{Addr: fmt.Sprintf("127.0.0.1:%d", port), dir: dir, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(z.done) }()
	err = retry.Until(ctx, 60*time.Second, func() (bool, error) {
		select {
		case <-z.done:
			b, _ := os.ReadFile(logf.Name())
			return true, fmt.Errorf("zookeeper exited at start: %s", tail(b, 2000))
		default:
		}
		return ruok(z.Addr), nil
	})
	if err != nil {
		z.Stop()
		return nil, fmt.Errorf("zookeeper did not answer ruok: %w", err)
	}
	return z, nil
}

func ruok(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("ruok")); err != nil {
		return false
	}
	buf := make([]byte, 4)
	n, _ := c.Read(buf)
	return string(buf[:n]) == "imok"
}

// Stop ends the server and waits for it.
func (z *ZooKeeper) Stop() {
	if z.cmd.Process != nil {
		_ = z.cmd.Process.Kill()
	}
	<-z.done
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
