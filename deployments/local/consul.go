package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/switchyard/switchyard/internal/retry"
)

// Consul is a `consul agent -dev` private to its directory and bound to
// free loopback ports. A -dev agent keeps its state in memory only, so a
// Restart comes back empty, as a Consul that lost its data would.
type Consul struct {
	bin   string
	dir   string
	ports consulPorts
	// server runs a single server configured as in production
	// (StartConsulServer) instead of a -dev agent.
	server bool

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

type consulPorts struct{ http, serfLAN, serfWAN, server int }

// consulBin remembers EnsureConsul's answer for the life of the process.
var consulBin struct {
	sync.Mutex
	path string
}

// EnsureConsul builds Consul through the project's script unless it is
// cached already, and returns the binary's path. The script runs once per
// process.
func EnsureConsul(ctx context.Context) (string, error) {
	consulBin.Lock()
	defer consulBin.Unlock()
	if consulBin.path != "" {
		return consulBin.path, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "deployments", "install", "consul.sh"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("install consul: %w: %s", err, tail([]byte(stderr.String()), 2000))
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	bin := strings.TrimSpace(lines[len(lines)-1])
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("install consul: the script printed %q, which is not a file: %w", bin, err)
	}
	consulBin.path = bin
	return bin, nil
}

// StartConsul runs a Consul dev agent in dir and waits until it has a
// leader. Ports are picked free; should one be taken in the meantime, the
// start is tried again on other ports.
func StartConsul(ctx context.Context, dir string) (*Consul, error) {
	bin, err := EnsureConsul(ctx)
	if err != nil {
		return nil, err
	}
	return startConsul(ctx, bin, dir, false)
}

// StartConsulServer runs a single Consul server in dir configured as one
// runs in production, not in -dev mode: its raft log on disk in dir (so
// every write is fsynced, as ZooKeeper's are), and answers in compact
// JSON (a -dev agent indents every answer, which makes a service of 200
// instances 525 KB instead of 246 KB, for the agent to encode and every
// watcher to decode on each change). The benchmarks use it; the tests keep
// the -dev agent, which starts faster. Restart wipes its data, so that it
// too comes back empty, as a Consul that lost its data would.
func StartConsulServer(ctx context.Context, dir string) (*Consul, error) {
	bin, err := EnsureConsul(ctx)
	if err != nil {
		return nil, err
	}
	return startConsul(ctx, bin, dir, true)
}

func startConsul(ctx context.Context, bin, dir string, server bool) (*Consul, error) {
	var errs []error
	var err error
	for range 3 {
		c := &Consul{bin: bin, dir: dir, server: server}
		for _, p := range []*int{&c.ports.http, &c.ports.serfLAN, &c.ports.serfWAN, &c.ports.server} {
			if *p, err = FreePort(); err != nil {
				return nil, err
			}
		}
		err := c.start(ctx)
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if !errors.Is(err, errPortTaken) {
			break
		}
	}
	return nil, errors.Join(errs...)
}

var errPortTaken = errors.New("a port was taken")

// Addr is the HTTP API's host:port.
func (c *Consul) Addr() string { return "127.0.0.1:" + strconv.Itoa(c.ports.http) }

// URL names the agent as a switchyard registry.
func (c *Consul) URL() string { return "consul://" + c.Addr() }

// Stop kills the agent and waits for it. Stopping twice is harmless.
func (c *Consul) Stop() {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Restart kills the agent and starts a fresh one on the same ports and
// directory, then waits for its leader.
func (c *Consul) Restart(ctx context.Context) error {
	c.Stop()
	return c.start(ctx)
}

func (c *Consul) start(ctx context.Context) error {
	logPath := filepath.Join(c.dir, "consul.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	offset, _ := logf.Seek(0, io.SeekEnd)
	args := []string{"agent", "-dev", "-node=switchyard-dev"}
	if c.server {
		data := filepath.Join(c.dir, "data")
		if err := os.RemoveAll(data); err != nil {
			return err
		}
		args = []string{"agent", "-server", "-bootstrap-expect=1", "-data-dir=" + data, "-node=switchyard",
			// What HashiCorp recommends for production servers; the
			// default, 5, is for the smallest machines.
			"-hcl=performance { raft_multiplier = 1 }"}
	}
	cmd := exec.Command(c.bin, append(args,
		"-bind=127.0.0.1", "-client=127.0.0.1", "-advertise=127.0.0.1",
		"-http-port="+strconv.Itoa(c.ports.http),
		"-serf-lan-port="+strconv.Itoa(c.ports.serfLAN),
		"-serf-wan-port="+strconv.Itoa(c.ports.serfWAN),
		"-server-port="+strconv.Itoa(c.ports.server),
		"-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1",
		"-hcl=disable_update_check = true",
		// -dev logs at DEBUG, and every anti-entropy sync (one per status
		// change) then logs a line per service and check the agent holds:
		// with a few hundred instances that costs more than the change.
		"-log-level=info",
	)...)
	cmd.Dir = c.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start consul: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	c.mu.Lock()
	c.cmd, c.done = cmd, done
	c.mu.Unlock()

	client := &http.Client{Timeout: time.Second}
	var exited error
	err = retry.Until(ctx, 60*time.Second, func() (bool, error) {
		select {
		case <-done:
			b, _ := os.ReadFile(logPath)
			if int64(len(b)) > offset {
				b = b[offset:]
			}
			exited = fmt.Errorf("consul exited at start: %s", tail(b, 2000))
			if strings.Contains(string(b), "address already in use") {
				exited = fmt.Errorf("%w: %w", errPortTaken, exited)
			}
			return true, exited
		default:
		}
		return hasLeader(client, c.Addr()), nil
	})
	if err != nil && exited == nil {
		c.Stop()
		return fmt.Errorf("consul elected no leader (see %s): %w", logPath, err)
	}
	return err
}

// hasLeader reports whether the agent at addr answers with a leader; a
// dev agent elects itself within a second or two.
func hasLeader(client *http.Client, addr string) bool {
	resp, err := client.Get("http://" + addr + "/v1/status/leader")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	leader := strings.Trim(strings.TrimSpace(string(b)), `"`)
	return resp.StatusCode == http.StatusOK && leader != ""
}
