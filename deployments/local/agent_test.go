package local

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/testutil"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/zkstate"
)

// startAgent starts an agent that must come up, and stops its
// application at the end when the harness started it.
func startAgent(t *testing.T, ctx context.Context, c *Cluster, app App, color zkstate.Color, opts AgentOptions) *Agent {
	t.Helper()
	a, err := c.StartAgent(ctx, app, color, opts)
	if a != nil && a.App != nil {
		t.Cleanup(func() { a.App.Stop(5 * time.Second) })
	}
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// agentState reads GET /v1/state from an agent.
func agentState(a *Agent) (string, error) {
	resp, err := http.Get("http://" + a.Control + "/v1/state")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var s struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return "", err
	}
	return s.Status, nil
}

// registered returns the registry's status of id, or "" when it has none.
func registered(ctx context.Context, t *testing.T, c *Cluster, id string) registry.Status {
	t.Helper()
	reg, err := c.Backend()
	if err != nil {
		t.Fatal(err)
	}
	snap, err := reg.Instances(ctx, "hello", 0, 0)
	if err != nil {
		return "unreadable: " + registry.Status(err.Error())
	}
	for _, in := range snap.Instances {
		if in.ID == id {
			return in.Status
		}
	}
	return ""
}

// listening reports whether something accepts connections on addr.
func listening(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		conn.Close()
	}
	return err == nil
}

// hookLog collects the states an agent POSTs to --notify.
type hookLog struct {
	mu     sync.Mutex
	states []string
}

func (h *hookLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var s struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	_ = json.NewDecoder(r.Body).Decode(&s)
	h.mu.Lock()
	h.states = append(h.states, s.ID+"="+s.Status)
	h.mu.Unlock()
}

func (h *hookLog) got() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return strings.Join(h.states, ",")
}

func TestAgentFlipsUnderLoad(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		c, _ := startCluster(t, b, 0, 0)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		notified := &hookLog{}
		ns := httptest.NewServer(notified)
		defer ns.Close()
		hooks := filepath.Join(t.TempDir(), "hooks")
		// Node and Python, blue and green; one of each color supervised.
		startAgent(t, ctx, c, NodeApp, zkstate.Blue, AgentOptions{Supervise: true})
		startAgent(t, ctx, c, PythonApp, zkstate.Blue, AgentOptions{})
		greenNode := startAgent(t, ctx, c, NodeApp, zkstate.Green, AgentOptions{Args: []string{
			"--notify", ns.URL, "--on-up", "echo UP >>" + hooks, "--on-out", "echo $SWITCHYARD_STATE >>" + hooks}})
		startAgent(t, ctx, c, PythonApp, zkstate.Green, AgentOptions{Supervise: true})
		if err := c.WaitServing(ctx, zkstate.Blue, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		load := StartLoad(ctx, c.GatewayURL+"/", 8, time.Millisecond)
		waitSent(t, load, 100)
		for _, color := range []zkstate.Color{zkstate.Green, zkstate.Blue, zkstate.Green} {
			flipAndMeasure(t, ctx, c, color)
			waitSent(t, load, load.Sent()+100)
		}
		results := load.Stop()
		assertServed(t, results, "through three flips of agents' applications")
		served := map[string]bool{}
		for _, r := range results {
			served[r.Instance] = true
		}
		for _, in := range c.Instances {
			if !served[in.ID] {
				t.Errorf("%s never answered a request through the gateway", in.ID)
			}
		}
		if st, err := agentState(greenNode); err != nil || st != string(registry.StatusUp) {
			t.Errorf("GET /v1/state of %s = %q, %v; want UP with green active", greenNode.ID, st, err)
		}
		// The hooks saw the start (out), and each flip in order.
		want := "OUT_OF_SERVICE\nUP\nOUT_OF_SERVICE\nUP\n"
		testutil.EventuallyWhy(t, 10*time.Second, "the hooks to run for every state", func() (bool, string) {
			b, _ := os.ReadFile(hooks)
			return string(b) == want, "--on-up/--on-out wrote " + strconv.Quote(string(b))
		})
		id := greenNode.ID
		wantNotified := strings.Join([]string{id + "=OUT_OF_SERVICE", id + "=UP", id + "=OUT_OF_SERVICE", id + "=UP"}, ",")
		testutil.EventuallyWhy(t, 10*time.Second, "--notify to POST every state", func() (bool, string) {
			return notified.got() == wantNotified, "--notify got " + notified.got()
		})
		t.Logf("%s: %d requests through 3 flips across node and python, %d failed", b.name, len(results), len(Failures(results)))
	})
}

func TestAgentSupervisedSIGTERMLosesNoRequest(t *testing.T) {
	c, _ := startCluster(t, builtin(), 0, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	leaving := startAgent(t, ctx, c, PythonApp, zkstate.Blue, AgentOptions{Supervise: true})
	startAgent(t, ctx, c, NodeApp, zkstate.Blue, AgentOptions{Supervise: true})
	if err := c.WaitServing(ctx, zkstate.Blue, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	load := StartLoad(ctx, c.GatewayURL+"/", 8, time.Millisecond)
	waitSent(t, load, 200)
	if err := leaving.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "the agent to exit after draining", func() bool { return !leaving.Alive() })
	if code := leaving.ExitCode(); code != 0 {
		t.Errorf("the agent exited %d after SIGTERM, want 0", code)
	}
	if listening(leaving.Addr) {
		t.Errorf("the supervised application still listens on %s after its agent stopped", leaving.Addr)
	}
	if st := registered(ctx, t, c, leaving.ID); st != "" {
		t.Errorf("the registry still has %s as %s after its agent stopped", leaving.ID, st)
	}
	waitSent(t, load, load.Sent()+200)
	results := load.Stop()
	assertServed(t, results, "through SIGTERM to a supervising agent")
	log, _ := os.ReadFile(filepath.Join(c.opts.Dir, leaving.ID+".log"))
	drained := strings.Index(string(log), "instance stopped")
	stopped := strings.Index(string(log), "stopping the application")
	if drained < 0 || stopped < 0 || stopped < drained {
		t.Errorf("the agent did not deregister before stopping the application (deregistered at byte %d, stopped at %d)", drained, stopped)
	}
	t.Logf("%d requests through a SIGTERM, %d failed", len(results), len(Failures(results)))
}

func TestAgentKilledApplicationLeavesRouting(t *testing.T) {
	c, _ := startCluster(t, builtin(), 0, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	beside := startAgent(t, ctx, c, NodeApp, zkstate.Blue, AgentOptions{})
	supervising := startAgent(t, ctx, c, PythonApp, zkstate.Blue, AgentOptions{Supervise: true})
	well := startAgent(t, ctx, c, NodeApp, zkstate.Blue, AgentOptions{Supervise: true})
	if err := c.WaitServing(ctx, zkstate.Blue, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	// GET only: a POST in flight to a killed process cannot be resent
	// safely, so the gateway answers 502 for it, as nginx does.
	load := StartLoadMethods(ctx, c.GatewayURL+"/", 8, time.Millisecond, http.MethodGet)
	waitSent(t, load, 100)

	// An application run beside its agent: the agent's health checks
	// report it DOWN, within a heartbeat or two, well inside the lease.
	beside.App.Kill()
	testutil.EventuallyWhy(t, 3*time.Second, "the killed application to leave routing within the lease (3s)", func() (bool, string) {
		st := registered(ctx, t, c, beside.ID)
		return st != registry.StatusUp, "registry says " + string(st)
	})
	if !beside.Alive() {
		t.Errorf("the agent beside a dead application exited; it should keep it DOWN until it is back")
	}

	// A supervised application: the agent deregisters at once and exits
	// with the application's code.
	pid := childOf(t, supervising.Proc)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 3*time.Second, "the agent of a killed application to exit", func() bool { return !supervising.Alive() })
	if code := supervising.ExitCode(); code != 128+int(syscall.SIGKILL) {
		t.Errorf("the agent exited %d when its application was killed, want %d", code, 128+int(syscall.SIGKILL))
	}
	if st := registered(ctx, t, c, supervising.ID); st != "" {
		t.Errorf("the registry still has %s as %s after its application died", supervising.ID, st)
	}
	waitSent(t, load, load.Sent()+200)
	results := load.Stop()
	assertServed(t, results, "through two killed applications", http.MethodGet)
	for _, r := range results[len(results)-100:] {
		if r.Instance != well.ID {
			t.Fatalf("after both kills, %s answered; only %s is alive", r.Instance, well.ID)
		}
	}
}

// childOf is the pid of p's only child process.
func childOf(t *testing.T, p *Proc) int {
	t.Helper()
	pid := p.cmd.Process.Pid
	// The runtime may have forked from any thread: look at all of them.
	tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/children")
	var kids []string
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		kids = append(kids, strings.Fields(string(b))...)
	}
	if len(kids) != 1 {
		t.Fatalf("agent %d has children %v, want one", pid, kids)
	}
	child, _ := strconv.Atoi(kids[0])
	return child
}

func TestAgentRefusesBadInput(t *testing.T) {
	c, _ := startCluster(t, builtin(), 0, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	exits := App{Name: "exits", Argv: func(string, int, zkstate.Color, string) []string { return []string{"sh", "-c", "exit 3"} }}
	for _, tc := range []struct {
		desc string
		app  App
		opts AgentOptions
		code int
		want string
	}{
		{desc: "a health path answering 500 is never registered", app: NodeApp,
			opts: AgentOptions{Supervise: true, Args: []string{"--health", "/status/500", "--startup-timeout", "2s"}},
			code: codeErr, want: "answered 500 Internal Server Error"},
		{desc: "an application that never comes up is never registered", app: PythonApp,
			opts: AgentOptions{Args: []string{"--app", "http://127.0.0.1:1", "--startup-timeout", "2s"}},
			code: codeErr, want: "connection refused"},
		{desc: "an application that exits at start ends the agent with its code", app: exits,
			opts: AgentOptions{Supervise: true}, code: 3, want: "exited before it became healthy"},
		{desc: "a wrong token is refused by the registry", app: PythonApp,
			opts: AgentOptions{Supervise: true, Token: token()}, code: codeErr, want: "the registry refused the token"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			a, err := c.StartAgent(ctx, tc.app, zkstate.Blue, tc.opts)
			if a != nil && a.App != nil {
				defer a.App.Stop(5 * time.Second)
			}
			if err == nil {
				t.Fatalf("the agent came up")
			}
			<-a.done
			if code := a.ExitCode(); code != tc.code {
				t.Errorf("exit code %d, want %d", code, tc.code)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("the agent's log does not say %q:\n%v", tc.want, err)
			}
			if st := registered(ctx, t, c, a.ID); st != "" {
				t.Errorf("the registry has %s as %s", a.ID, st)
			}
			if tc.opts.Supervise && listening(a.Addr) {
				t.Errorf("the supervised application still listens on %s", a.Addr)
			}
		})
	}
}

// codeErr is the CLI's exit code for a command that could not do its work.
const codeErr = 4

func TestAgentUnhealthyApplicationIsNeverSwitchedTo(t *testing.T) {
	c, _ := startCluster(t, builtin(), 0, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	startAgent(t, ctx, c, NodeApp, zkstate.Blue, AgentOptions{Supervise: true})
	green := startAgent(t, ctx, c, PythonApp, zkstate.Green, AgentOptions{Supervise: true})
	if err := c.WaitServing(ctx, zkstate.Blue, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	// The agent forwards SIGUSR1 to its application, which then answers
	// 500 at /health.
	if err := green.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the application to answer 500 at /health", func() bool {
		resp, err := http.Get("http://" + green.Addr + "/health")
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusInternalServerError
	})
	load := StartLoad(ctx, c.GatewayURL+"/", 4, 2*time.Millisecond)
	out, err := c.CLI(ctx, "switch", "green", "--wait", "--timeout", "30s")
	if err == nil || !strings.Contains(out, "no healthy green instance") {
		t.Errorf("a switch to an unhealthy agent's application was not refused: %v\n%s", err, out)
	}
	if st, err := agentState(green); err != nil || st != string(registry.StatusOutOfService) {
		t.Errorf("GET /v1/state = %q, %v; want OUT_OF_SERVICE", st, err)
	}
	// Healthy again, the wanted switch goes ahead.
	if err := green.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitServing(ctx, zkstate.Green, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	results := load.Stop()
	assertServed(t, results, "while the switch was refused and then went ahead")
}
