package local

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/switchyard/switchyard/internal/retry"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/zkstate"
)

// App is an application in another language that runs under `switchyard
// agent`: Argv gives its command line to serve on port as color and id.
type App struct {
	Name string
	Argv func(root string, port int, color zkstate.Color, id string) []string
}

// NodeApp is examples/node-hello, Node.js's plain http module.
var NodeApp = App{Name: "node", Argv: func(root string, port int, color zkstate.Color, id string) []string {
	return []string{"node", filepath.Join(root, "examples", "node-hello", "server.js"), "--port", strconv.Itoa(port), "--color", string(color), "--id", id}
}}

// PythonApp is examples/python-hello, Python's http.server.
var PythonApp = App{Name: "python", Argv: func(root string, port int, color zkstate.Color, id string) []string {
	return []string{"python3", filepath.Join(root, "examples", "python-hello", "server.py"), "--port", strconv.Itoa(port), "--color", string(color), "--id", id}
}}

// AgentOptions shape one agent.
type AgentOptions struct {
	// Supervise runs the application as the agent's child (after --);
	// otherwise the harness starts it as a process of its own.
	Supervise bool
	// Token replaces the instance's own token, to rehearse a wrong one.
	Token string
	// Args are added to the agent's flags.
	Args []string
}

// Agent is an application and the `switchyard agent` beside it. Its Proc
// is the agent's; App is the application's own when not supervised.
type Agent struct {
	*Instance
	App *Proc
	// Control serves the agent's /v1/state and the controller's endpoints.
	Control string
}

// agents numbers the agents the harness starts, failed ones included, so
// that each has a log of its own.
var agents atomic.Int64

// StartAgent starts app of color on a free port with an agent beside it,
// and waits until the agent announces its control address. The agent's
// instance is one of the cluster's instances: Stop ends it first. When the
// agent exits instead, the error says why and the Agent is still returned
// for its exit code and log.
func (c *Cluster) StartAgent(ctx context.Context, app App, color zkstate.Color, opts AgentOptions) (*Agent, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	name := fmt.Sprintf("%s-%s-%d", app.Name, color, agents.Add(1))
	token := opts.Token
	if token == "" {
		token = registry.InstanceToken(c.opts.Token, name)
	}
	args := c.sy("agent", "--service", "hello", "--color", string(color), "--id", name, "--token", token,
		"--app", fmt.Sprintf("http://127.0.0.1:%d", port), "--health", "/health",
		"--version", map[zkstate.Color]string{zkstate.Blue: "v1", zkstate.Green: "v2"}[color])
	if c.opts.Fast {
		args = append(args, "--heartbeat", "300ms", "--zk-session-timeout", "2s", "--drain-timeout", "3s", "--drain-grace", "500ms", "--startup-timeout", "20s")
	}
	args = append(args, opts.Args...)
	a := &Agent{}
	appArgv := app.Argv(root, port, color, name)
	if opts.Supervise {
		args = append(append(args, "--"), appArgv...)
	} else {
		if a.App, err = c.start(name+"-app", appArgv...); err != nil {
			return nil, err
		}
	}
	p, err := c.start(name, args...)
	if err != nil {
		if a.App != nil {
			a.App.Kill()
		}
		return nil, err
	}
	a.Instance = &Instance{Proc: p, Color: color, ID: name, Addr: fmt.Sprintf("127.0.0.1:%d", port)}
	a.Control, err = waitLine(ctx, filepath.Join(c.opts.Dir, name+".log"), p, "AGENT ", 30*time.Second)
	if err != nil {
		p.Kill()
		if a.App != nil {
			a.App.Kill()
		}
		// The agent is returned too, for its exit code.
		return a, fmt.Errorf("%s: %w", name, err)
	}
	c.mu.Lock()
	c.Instances = append(c.Instances, a.Instance)
	c.mu.Unlock()
	return a, nil
}

// waitLine waits for a line starting with prefix in p's log and returns
// its first field after the prefix; it fails once p exited without one.
func waitLine(ctx context.Context, logPath string, p *Proc, prefix string, within time.Duration) (string, error) {
	var field string
	err := retry.Until(ctx, within, func() (bool, error) {
		b, _ := os.ReadFile(logPath)
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), prefix); ok && rest != "" {
				field = strings.Fields(rest)[0]
				return true, nil
			}
		}
		if !p.Alive() {
			return true, fmt.Errorf("exited before printing %q: %s", prefix, tail(b, 2500))
		}
		return false, nil
	})
	return field, err
}

// ExitCode is the process's exit code once it exited (-1 if a signal
// ended it), and -2 while it runs.
func (p *Proc) ExitCode() int {
	if p.Alive() {
		return -2
	}
	return p.cmd.ProcessState.ExitCode()
}
