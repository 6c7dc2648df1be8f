package deployments_test

// These tests validate ../docker-compose.yml and ./Dockerfile without a Docker
// engine: the compose file is loaded, interpolated and schema-validated with
// compose-go (the library docker compose itself uses), then checked against
// the switchyard CLI contract.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

const (
	composeFile    = "../docker-compose.yml"
	dockerfilePath = "Dockerfile"
	testProject    = "switchyard-test"

	zkAddr        = "zookeeper:2181"
	registryURL   = "http://registry:8761"
	tokenVar      = "SWITCHYARD_TOKEN"
	zkAuthVar     = "SWITCHYARD_ZK_AUTH"
	switchyardBin = "switchyard" // binary name for registry/controller/gateway
	helloBin      = "hello"
)

// switchyardServices are every service built from deployments/Dockerfile;
// all of them need ZooKeeper/registry addresses and the shared token.
var switchyardServices = []string{
	"registry",
	"controller-1", "controller-2",
	"gateway",
	"hello-blue-1", "hello-blue-2",
	"hello-green-1", "hello-green-2",
}

var allServices = append([]string{"zookeeper"}, switchyardServices...)

func randomToken(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "test-token-" + hex.EncodeToString(b)
}

// loadProject loads the compose file with exactly env as the interpolation
// environment (the process environment and any .env file are not consulted).
func loadProject(t *testing.T, env []string, extra ...cli.ProjectOptionsFn) (*types.Project, error) {
	t.Helper()
	wd, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	fns := append([]cli.ProjectOptionsFn{
		cli.WithName(testProject),
		cli.WithWorkingDirectory(wd),
		cli.WithEnv(env),
	}, extra...)
	opts, err := cli.NewProjectOptions([]string{composeFile}, fns...)
	if err != nil {
		t.Fatalf("NewProjectOptions: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return opts.LoadProject(ctx)
}

func mustLoad(t *testing.T, token string) *types.Project {
	t.Helper()
	p, err := loadProject(t, []string{tokenVar + "=" + token, zkAuthVar + "=switchyard:" + token})
	if err != nil {
		t.Fatalf("loading %s with %s set: %v", composeFile, tokenVar, err)
	}
	return p
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, ok := p.Services[name]
	if !ok {
		t.Fatalf("service %q missing; have %v", name, p.ServiceNames())
	}
	return s
}

// flagValue returns the value of flag in args ("--flag value" or "--flag=value").
func flagValue(args []string, flag string) (string, bool) {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1], true
		}
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v, true
		}
	}
	return "", false
}

func envValue(s types.ServiceConfig, key string) (string, bool) {
	v, ok := s.Environment[key]
	if !ok || v == nil {
		return "", false
	}
	return *v, true
}

func TestComposeParsesAndValidates(t *testing.T) {
	p := mustLoad(t, randomToken(t))
	if p.Name != testProject {
		t.Errorf("project name = %q, want %q", p.Name, testProject)
	}
	if err := p.CheckContainerNameUnicity(); err != nil {
		t.Errorf("container names: %v", err)
	}

	got := p.ServiceNames()
	sort.Strings(got)
	want := slices.Clone(allServices)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Fatalf("services = %v, want exactly %v", got, want)
	}
}

func TestComposeZookeeper(t *testing.T) {
	p := mustLoad(t, randomToken(t))
	zk := service(t, p, "zookeeper")
	if zk.Image != "zookeeper:3.8" {
		t.Errorf("zookeeper image = %q, want zookeeper:3.8", zk.Image)
	}
	if zk.Build != nil {
		t.Errorf("zookeeper must use the upstream image, not a build")
	}
	if zk.HealthCheck == nil || zk.HealthCheck.Disable || len(zk.HealthCheck.Test) < 2 {
		t.Fatalf("zookeeper needs a healthcheck, got %+v", zk.HealthCheck)
	}
	// The token is for switchyard's own components; don't leak it to a
	// third-party image.
	if _, ok := zk.Environment[tokenVar]; ok {
		t.Errorf("zookeeper must not receive %s", tokenVar)
	}
}

func TestComposeCommands(t *testing.T) {
	p := mustLoad(t, randomToken(t))

	for _, tc := range []struct {
		desc    string
		service string
		bin     string
		sub     string            // subcommand ("" for hello)
		flags   map[string]string // flag -> exact value
		health  string            // healthcheck URL path ("" = none required)
		probes  string            // flag whose port the healthcheck probes; default --listen
	}{
		{
			desc: "registry listens on 8761", service: "registry",
			bin: switchyardBin, sub: "registry",
			flags:  map[string]string{"--listen": "0.0.0.0:8761"},
			health: "/healthz",
		},
		{
			desc: "controller-1 uses zk+registry", service: "controller-1",
			bin: switchyardBin, sub: "controller",
			flags:  map[string]string{"--zk": zkAddr, "--registry": registryURL, "--listen": "0.0.0.0:8090"},
			health: "/v1/status",
		},
		{
			desc: "controller-2 uses zk+registry", service: "controller-2",
			bin: switchyardBin, sub: "controller",
			flags:  map[string]string{"--zk": zkAddr, "--registry": registryURL, "--listen": "0.0.0.0:8090"},
			health: "/v1/status",
		},
		{
			desc: "gateway routes / to hello", service: "gateway",
			bin: switchyardBin, sub: "gateway",
			flags:  map[string]string{"--listen": "0.0.0.0:8088", "--admin": "127.0.0.1:8089", "--registry": registryURL, "--route": "/=hello"},
			health: "/healthz", probes: "--admin",
		},
		{
			desc: "hello-blue-1", service: "hello-blue-1", bin: helloBin,
			flags:  map[string]string{"--color": "blue", "--listen": "0.0.0.0:8080", "--advertise": "hello-blue-1", "--service": "hello"},
			health: "/_switchyard/health",
		},
		{
			desc: "hello-blue-2", service: "hello-blue-2", bin: helloBin,
			flags:  map[string]string{"--color": "blue", "--listen": "0.0.0.0:8080", "--advertise": "hello-blue-2", "--service": "hello"},
			health: "/_switchyard/health",
		},
		{
			desc: "hello-green-1", service: "hello-green-1", bin: helloBin,
			flags:  map[string]string{"--color": "green", "--listen": "0.0.0.0:8080", "--advertise": "hello-green-1", "--service": "hello"},
			health: "/_switchyard/health",
		},
		{
			desc: "hello-green-2", service: "hello-green-2", bin: helloBin,
			flags:  map[string]string{"--color": "green", "--listen": "0.0.0.0:8080", "--advertise": "hello-green-2", "--service": "hello"},
			health: "/_switchyard/health",
		},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			s := service(t, p, tc.service)
			cmd := []string(s.Command)
			if len(cmd) == 0 || cmd[0] != tc.bin {
				t.Fatalf("command = %q, want it to start with %q", cmd, tc.bin)
			}
			if tc.sub != "" && (len(cmd) < 2 || cmd[1] != tc.sub) {
				t.Errorf("command = %q, want subcommand %q", cmd, tc.sub)
			}
			for flag, want := range tc.flags {
				got, ok := flagValue(cmd, flag)
				if !ok {
					t.Errorf("command %q lacks %s", cmd, flag)
				} else if got != want {
					t.Errorf("%s = %q, want %q", flag, got, want)
				}
			}
			// The advertised name must resolve on the compose network.
			if adv, ok := flagValue(cmd, "--advertise"); ok && adv != tc.service && s.Hostname != adv {
				t.Errorf("--advertise %q is neither the service name nor its hostname", adv)
			}
			if tc.health == "" {
				return
			}
			hc := s.HealthCheck
			if hc == nil || hc.Disable || len(hc.Test) < 2 {
				t.Fatalf("want a healthcheck on %s, got %+v", tc.health, hc)
			}
			if tc.probes == "" {
				tc.probes = "--listen"
			}
			listen, _ := flagValue(cmd, tc.probes)
			_, port, _ := strings.Cut(listen, ":")
			probe := strings.Join(hc.Test[1:], " ")
			if !strings.Contains(probe, ":"+port+tc.health) {
				t.Errorf("healthcheck %q does not probe port %s path %s", hc.Test, port, tc.health)
			}
		})
	}
}

func TestComposeColorsHaveTwoInstancesEach(t *testing.T) {
	p := mustLoad(t, randomToken(t))
	count := map[string][]string{}
	for name, s := range p.Services {
		if len(s.Command) == 0 || s.Command[0] != helloBin {
			continue
		}
		color, ok := flagValue(s.Command, "--color")
		if !ok {
			t.Errorf("%s: hello without --color", name)
			continue
		}
		count[color] = append(count[color], name)
	}
	if len(count) != 2 {
		t.Errorf("colors = %v, want exactly blue and green", count)
	}
	for _, color := range []string{"blue", "green"} {
		if n := len(count[color]); n != 2 {
			t.Errorf("%s instances = %v (%d), want 2", color, count[color], n)
		}
	}
}

func TestComposeTokenComesFromEnvironment(t *testing.T) {
	// Two loads with two different random tokens: a hardcoded literal could
	// match at most one of them.
	for _, token := range []string{randomToken(t), randomToken(t)} {
		p := mustLoad(t, token)
		for _, name := range switchyardServices {
			s := service(t, p, name)
			got, ok := envValue(s, tokenVar)
			if !ok {
				t.Errorf("%s: %s not set", name, tokenVar)
			} else if got != token {
				t.Errorf("%s: %s = %q, want the value from the environment %q", name, tokenVar, got, token)
			}
		}
	}
}

func TestComposeZKRootPassThrough(t *testing.T) {
	const rootVar = "SWITCHYARD_ZK_ROOT"
	for _, tc := range []struct {
		desc string
		env  []string
		want string // "" = must be absent so the binaries' default applies
	}{
		{desc: "unset on host: absent in containers", env: []string{tokenVar + "=x", zkAuthVar + "=u:p"}},
		{desc: "set on host: passed through", env: []string{tokenVar + "=x", zkAuthVar + "=u:p", rootVar + "=/staging"}, want: "/staging"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			p, err := loadProject(t, tc.env)
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range switchyardServices {
				got, ok := envValue(service(t, p, name), rootVar)
				if tc.want == "" && ok {
					t.Errorf("%s: %s = %q, want it absent", name, rootVar, got)
				}
				if tc.want != "" && got != tc.want {
					t.Errorf("%s: %s = %q, want %q", name, rootVar, got, tc.want)
				}
			}
		})
	}
}

func TestComposeMissingSecretsFail(t *testing.T) {
	for _, tc := range []struct {
		desc, missing string
		env           []string
	}{
		{desc: "token unset", missing: tokenVar, env: []string{zkAuthVar + "=u:p"}},
		{desc: "token empty", missing: tokenVar, env: []string{tokenVar + "=", zkAuthVar + "=u:p"}},
		{desc: "other vars only", missing: tokenVar, env: []string{"SWITCHYARD_ZK=elsewhere:2181", zkAuthVar + "=u:p"}},
		{desc: "ZooKeeper identity unset: ZooKeeper is never open by default", missing: zkAuthVar, env: []string{tokenVar + "=x"}},
		{desc: "ZooKeeper identity empty", missing: zkAuthVar, env: []string{tokenVar + "=x", zkAuthVar + "="}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			p, err := loadProject(t, tc.env)
			if err == nil {
				got, _ := envValue(p.Services["registry"], tc.missing)
				t.Fatalf("load succeeded without %s (registry got %q)", tc.missing, got)
			}
			// The :? message from the compose file should reach the user.
			msg := err.Error()
			if !strings.Contains(msg, tc.missing) || !strings.Contains(msg, "required") || !strings.Contains(msg, "set "+tc.missing) {
				t.Errorf("error should name %s as required, got: %v", tc.missing, err)
			}
			t.Logf("error (as expected): %v", err)
		})
	}
}

func TestComposeSwitchyardWiring(t *testing.T) {
	p := mustLoad(t, randomToken(t))
	var image string
	for _, name := range switchyardServices {
		t.Run(name, func(t *testing.T) {
			s := service(t, p, name)
			for key, want := range map[string]string{
				"SWITCHYARD_ZK":       zkAddr,
				"SWITCHYARD_REGISTRY": registryURL,
			} {
				if got, ok := envValue(s, key); !ok || got != want {
					t.Errorf("%s = %q (set=%v), want %q", key, got, ok, want)
				}
			}
			if s.Restart != types.RestartPolicyUnlessStopped {
				t.Errorf("restart = %q, want %q", s.Restart, types.RestartPolicyUnlessStopped)
			}
			if s.StopGracePeriod == nil || time.Duration(*s.StopGracePeriod) < 30*time.Second {
				t.Errorf("stop_grace_period = %v, want >= 30s for graceful drain", s.StopGracePeriod)
			}
			if image == "" {
				image = s.Image
			} else if s.Image != image {
				t.Errorf("image = %q, want the shared switchyard image %q", s.Image, image)
			}

			// Build context + Dockerfile must exist on disk.
			if s.Build == nil {
				t.Fatalf("no build section")
			}
			ctxDir := s.Build.Context
			if !filepath.IsAbs(ctxDir) {
				ctxDir = filepath.Join(p.WorkingDir, ctxDir)
			}
			df := s.Build.Dockerfile
			if !filepath.IsAbs(df) {
				df = filepath.Join(ctxDir, df)
			}
			if _, err := os.Stat(filepath.Join(ctxDir, "go.mod")); err != nil {
				t.Errorf("build context %s is not the module root: %v", ctxDir, err)
			}
			wantDF, _ := filepath.Abs(dockerfilePath)
			if filepath.Clean(df) != wantDF {
				t.Errorf("dockerfile = %s, want %s", df, wantDF)
			}
			if fi, err := os.Stat(df); err != nil || fi.IsDir() {
				t.Errorf("dockerfile %s does not exist: %v", df, err)
			}
		})
	}
}

func TestComposeDependsOn(t *testing.T) {
	p := mustLoad(t, randomToken(t))
	for _, tc := range []struct {
		desc     string
		services []string
		needs    map[string]string // dependency -> condition
	}{
		{
			desc:     "controllers wait for healthy zookeeper and registry",
			services: []string{"controller-1", "controller-2"},
			needs:    map[string]string{"zookeeper": types.ServiceConditionHealthy, "registry": types.ServiceConditionHealthy},
		},
		{
			desc:     "hellos wait for healthy zookeeper and registry",
			services: []string{"hello-blue-1", "hello-blue-2", "hello-green-1", "hello-green-2"},
			needs:    map[string]string{"zookeeper": types.ServiceConditionHealthy, "registry": types.ServiceConditionHealthy},
		},
		{
			desc:     "gateway waits for a healthy registry",
			services: []string{"gateway"},
			needs:    map[string]string{"registry": types.ServiceConditionHealthy},
		},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			for _, name := range tc.services {
				s := service(t, p, name)
				for dep, cond := range tc.needs {
					d, ok := s.DependsOn[dep]
					if !ok {
						t.Errorf("%s: no depends_on %s", name, dep)
					} else if d.Condition != cond {
						t.Errorf("%s: depends_on %s condition = %q, want %q", name, dep, d.Condition, cond)
					}
				}
			}
		})
	}
	// Every service_healthy dependency must point at a service with a healthcheck.
	for name, s := range p.Services {
		for dep, d := range s.DependsOn {
			if d.Condition != types.ServiceConditionHealthy {
				continue
			}
			if hc := p.Services[dep].HealthCheck; hc == nil || hc.Disable {
				t.Errorf("%s waits for %s to be healthy but %s has no healthcheck", name, dep, dep)
			}
		}
	}
}

func TestComposePortsLoopbackOnly(t *testing.T) {
	p := mustLoad(t, randomToken(t))
	// The gateway's traffic and each controller's dashboard (its --listen),
	// on distinct host ports; nothing else leaves the compose network.
	want := map[string]struct {
		published string
		listen    string // the flag whose port is the target
	}{
		"gateway":      {"8088", "--listen"},
		"controller-1": {"8090", "--listen"},
		"controller-2": {"8091", "--listen"},
	}
	published := 0
	for name, s := range p.Services {
		for _, port := range s.Ports {
			published++
			if port.HostIP != "127.0.0.1" {
				t.Errorf("%s: port %d published on %q, want 127.0.0.1 only", name, port.Target, port.HostIP)
			}
			if _, ok := want[name]; !ok {
				t.Errorf("%s: publishes port %d; only the gateway and the controllers should", name, port.Target)
			}
		}
	}
	for name, w := range want {
		s := service(t, p, name)
		listen, _ := flagValue(s.Command, w.listen)
		_, port, _ := strings.Cut(listen, ":")
		if len(s.Ports) != 1 {
			t.Errorf("%s ports = %+v, want exactly 127.0.0.1:%s:%s", name, s.Ports, w.published, port)
			continue
		}
		if pt := s.Ports[0]; strconv.Itoa(int(pt.Target)) != port || pt.Published != w.published || pt.HostIP != "127.0.0.1" {
			t.Errorf("%s port = %+v, want 127.0.0.1:%s:%s (%s %s)", name, pt, w.published, port, w.listen, listen)
		}
	}
	if published != len(want) {
		t.Errorf("published ports = %d, want %d", published, len(want))
	}
}

// dockerInstructions is a light Dockerfile reader: comments dropped,
// backslash continuations joined, one entry per instruction.
func dockerInstructions(t *testing.T, path string) []string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(string(raw), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasPrefix(trimmed, "#") { // comment inside a continuation
			continue
		}
		if body, ok := strings.CutSuffix(trimmed, "\\"); ok {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(trimmed)
		out = append(out, strings.Join(strings.Fields(cur.String()), " "))
		cur.Reset()
	}
	if cur.Len() > 0 {
		out = append(out, strings.TrimSpace(cur.String()))
	}
	return out
}

func TestDockerfile(t *testing.T) {
	ins := dockerInstructions(t, dockerfilePath)

	// Global ARG defaults (before the first FROM) for ${VAR} in FROM lines.
	args := map[string]string{}
	var froms []string
	var runs, copies []string
	var user string
	for _, in := range ins {
		kw, rest, _ := strings.Cut(in, " ")
		switch strings.ToUpper(kw) {
		case "ARG":
			if len(froms) == 0 {
				if k, v, ok := strings.Cut(rest, "="); ok {
					args[k] = strings.Trim(v, `"`)
				}
			}
		case "FROM":
			froms = append(froms, os.Expand(rest, func(k string) string { return args[k] }))
		case "RUN":
			runs = append(runs, rest)
		case "COPY":
			copies = append(copies, rest)
		case "USER":
			user = rest
		}
	}

	if len(froms) < 2 {
		t.Fatalf("want a multi-stage build, got FROM %q", froms)
	}
	if !strings.HasPrefix(froms[0], "golang:1.26") {
		t.Errorf("builder stage = %q, want golang:1.26", froms[0])
	}
	builder := ""
	if f := strings.Fields(froms[0]); len(f) == 3 && strings.EqualFold(f[1], "AS") {
		builder = f[2]
	} else {
		t.Fatalf("builder stage %q is not named (FROM golang:1.26 AS name)", froms[0])
	}
	runtime := strings.Fields(froms[len(froms)-1])[0]
	if !strings.HasPrefix(runtime, "gcr.io/distroless/static") && !strings.HasPrefix(runtime, "debian:") {
		t.Errorf("runtime stage = %q, want distroless/static or debian-slim", runtime)
	}
	if strings.HasPrefix(runtime, "debian:") && !strings.Contains(runtime, "slim") {
		t.Errorf("runtime stage = %q, want a -slim debian image", runtime)
	}

	for _, tc := range []struct {
		desc string
		pkg  string
		bin  string
	}{
		{desc: "switchyard CLI", pkg: "./cmd/switchyard", bin: "/usr/local/bin/switchyard"},
		{desc: "hello example", pkg: "./examples/hello", bin: "/usr/local/bin/hello"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if _, err := os.Stat(filepath.Join("..", filepath.FromSlash(tc.pkg))); err != nil {
				t.Logf("note: %s not on disk yet (%v); checking the Dockerfile only", tc.pkg, err)
			}
			built := false
			for _, r := range runs {
				for _, step := range strings.Split(r, "&&") {
					if strings.Contains(step, "go build") && slices.Contains(strings.Fields(step), tc.pkg) {
						built = true
					}
				}
			}
			if !built {
				t.Errorf("no RUN ... go build ... %s", tc.pkg)
			}
			copied := false
			for _, c := range copies {
				f := strings.Fields(c)
				if len(f) >= 3 && f[0] == "--from="+builder && f[len(f)-1] == tc.bin {
					copied = true
				}
			}
			if !copied {
				t.Errorf("no COPY --from=%s ... %s", builder, tc.bin)
			}
		})
	}

	if user == "" || user == "root" || user == "0" || strings.HasPrefix(user, "0:") {
		t.Errorf("runtime USER = %q, want a non-root user", user)
	}
}
