package deployments_test

// These tests validate the CI examples in ci/: the GitHub Actions workflow is
// parsed as YAML and checked for what a safe deploy job needs, every
// switchyard call in it and in ci/deploy.sh is checked against the real
// CLI's subcommands and flags, the scripts pass bash -n and shellcheck, and
// deploy.sh's exit-code handling is run against a fake switchyard.

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

const (
	workflowPath = "ci/github-actions/deploy.yml"
	deployScript = "ci/deploy.sh"
)

type workflow struct {
	Name        string         `yaml:"name"`
	On          map[string]any `yaml:"on"`
	Permissions map[string]any `yaml:"permissions"`
	Concurrency struct {
		Group            string `yaml:"group"`
		CancelInProgress *bool  `yaml:"cancel-in-progress"`
	} `yaml:"concurrency"`
	Defaults struct {
		Run struct {
			Shell string `yaml:"shell"`
		} `yaml:"run"`
	} `yaml:"defaults"`
	Jobs map[string]job `yaml:"jobs"`
}

type job struct {
	RunsOn         string            `yaml:"runs-on"`
	TimeoutMinutes int               `yaml:"timeout-minutes"`
	Env            map[string]string `yaml:"env"`
	Steps          []step            `yaml:"steps"`
}

type step struct {
	ID   string            `yaml:"id"`
	Name string            `yaml:"name"`
	If   string            `yaml:"if"`
	Uses string            `yaml:"uses"`
	With map[string]string `yaml:"with"`
	Run  string            `yaml:"run"`
	Env  map[string]string `yaml:"env"`
}

func loadWorkflow(t *testing.T) workflow {
	t.Helper()
	raw, err := os.ReadFile(workflowPath)
	if err != nil {
		t.Fatal(err)
	}
	var wf workflow
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true) // a misspelt key (timeout-minute) is an error, not ignored
	if err := dec.Decode(&wf); err != nil {
		t.Fatalf("%s: %v", workflowPath, err)
	}
	return wf
}

func deployJob(t *testing.T, wf workflow) job {
	t.Helper()
	if len(wf.Jobs) != 1 {
		t.Fatalf("jobs = %d, want exactly one (deploy)", len(wf.Jobs))
	}
	j, ok := wf.Jobs["deploy"]
	if !ok {
		t.Fatalf("no job named deploy")
	}
	return j
}

// expr is a GitHub expression, ${{ ... }}.
var expr = regexp.MustCompile(`\$\{\{[^}]*\}\}`)

func TestCIWorkflowShape(t *testing.T) {
	wf := loadWorkflow(t)
	if _, ok := wf.On["workflow_dispatch"]; !ok {
		t.Errorf("on = %v, want workflow_dispatch (a deploy someone starts)", wf.On)
	}
	if len(wf.Permissions) != 1 || wf.Permissions["contents"] != "read" {
		t.Errorf("permissions = %v, want exactly contents: read", wf.Permissions)
	}
	if !strings.Contains(wf.Concurrency.Group, "inputs.service") {
		t.Errorf("concurrency group %q is not per service", wf.Concurrency.Group)
	}
	if c := wf.Concurrency.CancelInProgress; c == nil || *c {
		t.Errorf("cancel-in-progress = %v, want false: cancelling a deploy mid-switch leaves it to no one", c)
	}

	// Only an explicit bash shell runs with pipefail on GitHub.
	if wf.Defaults.Run.Shell != "bash" {
		t.Errorf("defaults.run.shell = %q, want bash (bash -eo pipefail)", wf.Defaults.Run.Shell)
	}

	j := deployJob(t, wf)
	if j.TimeoutMinutes <= 0 || j.TimeoutMinutes > 60 {
		t.Errorf("timeout-minutes = %d, want 1..60", j.TimeoutMinutes)
	}
	for _, secret := range []string{"SWITCHYARD_TOKEN", "SWITCHYARD_ZK_AUTH"} {
		if got, want := j.Env[secret], "${{ secrets."+secret+" }}"; got != want {
			t.Errorf("env %s = %q, want %q", secret, got, want)
		}
	}

	var names []string
	for i, s := range j.Steps {
		names = append(names, s.Name)
		if s.Uses != "" {
			_, ver, ok := strings.Cut(s.Uses, "@")
			if !ok || !regexp.MustCompile(`^(v\d+(\.\d+)*|[0-9a-f]{40})$`).MatchString(ver) {
				t.Errorf("step %d uses %q: pin a version tag or commit", i, s.Uses)
			}
		}
		// An expression inside run: is spliced into the script before the
		// shell sees it (script injection); values go through env:.
		if m := expr.FindString(s.Run); m != "" {
			t.Errorf("step %q: %s inside run:; pass it through env:", s.Name, m)
		}
		if strings.Contains(s.Run, "SWITCHYARD_TOKEN") || strings.Contains(s.Run, "SWITCHYARD_ZK_AUTH") {
			if !strings.Contains(s.Name, "Check configuration") {
				t.Errorf("step %q names a secret in its script; the CLI reads it from the environment", s.Name)
			}
		}
	}

	// The flow, in order.
	order := []struct{ desc, pattern string }{
		{"find the idle color", `switchyard status --json`},
		{"deploy hook", `deploy-idle\.sh`},
		{"wait for instances", `switchyard status --json \| jq`},
		{"switch", `switchyard switch "\$IDLE" --wait`},
		{"smoke check", `curl -fsS`},
		{"rollback", `switchyard rollback --wait`},
	}
	at := 0
	for _, o := range order {
		re := regexp.MustCompile(o.pattern)
		found := false
		for ; at < len(j.Steps); at++ {
			if re.MatchString(j.Steps[at].Run) {
				found = true
				break
			}
		}
		if !found {
			t.Fatalf("no step for %q (/%s/) after the previous ones; steps %q", o.desc, o.pattern, names)
		}
	}
	rb := j.Steps[at]
	if !strings.Contains(rb.If, "failure()") || !strings.Contains(rb.If, "steps.smoke.outcome == 'failure'") {
		t.Errorf("rollback step if = %q, want it to run only when the smoke check failed", rb.If)
	}
}

// shellFields splits a line as the shell would into words, keeping quotes'
// contents together; good enough for the calls in these scripts.
func shellFields(s string) []string {
	var out []string
	var cur strings.Builder
	var quote rune
	inWord := false
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out
}

// callStart finds switchyard where the shell runs it: at the start of a
// line, after ; | & ( or $(, or after then/do/else.
var callStart = regexp.MustCompile(`(?:^\s*|[;&|(!]\s*|\$\(|\b(?:then|do|else)\s+)switchyard\s+(.*)$`)

// unquoted returns s with every byte inside quotes (and any comment) as _,
// the same length, so that a message ("... (switchyard status)") or a
// comment is not taken for a call. A call inside a quoted "$(...)" is
// missed; these scripts have none.
func unquoted(s string) string {
	b := []byte(s)
	var quote byte
	comment := false
	for i, c := range b {
		switch {
		case comment:
			if c == '\n' {
				comment = false
			} else {
				b[i] = '_'
			}
		case quote != 0:
			if c == quote {
				quote = 0
			} else if c != '\n' {
				b[i] = '_'
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '#' && (i == 0 || b[i-1] == ' ' || b[i-1] == '\t' || b[i-1] == '\n'):
			comment = true
			b[i] = '_'
		}
	}
	return string(b)
}

// switchyardCalls returns every switchyard invocation in a shell script as
// its words after "switchyard", up to the end of the command.
func switchyardCalls(script string) [][]string {
	script = strings.ReplaceAll(script, "\\\n", " ")
	script = expr.ReplaceAllString(script, "EXPR")
	lines := strings.Split(script, "\n")
	masked := strings.Split(unquoted(script), "\n")
	var calls [][]string
	for i, line := range lines {
		m := callStart.FindStringSubmatchIndex(masked[i])
		if m == nil {
			continue
		}
		var words []string
		for _, w := range shellFields(line[m[2]:]) {
			if slices.Contains([]string{"|", "||", "&&", ";", ")"}, w) || strings.HasPrefix(w, ">") || strings.HasPrefix(w, "2>") {
				break
			}
			if v, ok := strings.CutSuffix(w, ")"); ok {
				words = append(words, v)
				break
			}
			words = append(words, w)
		}
		calls = append(calls, words)
	}
	return calls
}

// cliFlags runs `switchyard SUB --help` and returns the subcommand's flags,
// local and global, as --name (and -x for shorthands).
func cliFlags(t *testing.T, bin, sub string) (map[string]bool, error) {
	t.Helper()
	out, err := exec.Command(bin, sub, "--help").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("switchyard %s --help: %v\n%s", sub, err, out)
	}
	// An unknown subcommand makes cobra print the root's help, exit 0.
	if !strings.Contains(string(out), "switchyard "+sub) {
		return nil, fmt.Errorf("switchyard has no subcommand %q", sub)
	}
	flags := map[string]bool{}
	re := regexp.MustCompile(`(?m)^\s+(?:-(\w), )?--([\w-]+)`)
	for _, m := range re.FindAllStringSubmatch(string(out), -1) {
		flags["--"+m[2]] = true
		if m[1] != "" {
			flags["-"+m[1]] = true
		}
	}
	if !flags["--help"] {
		return nil, fmt.Errorf("switchyard %s --help lists no flags:\n%s", sub, out)
	}
	return flags, nil
}

// checkCall says why a call is not a real command of the CLI, or nil.
func checkCall(t *testing.T, bin string, call []string) error {
	t.Helper()
	if len(call) == 0 || strings.HasPrefix(call[0], "-") {
		return fmt.Errorf("switchyard %q: no subcommand first", call)
	}
	flags, err := cliFlags(t, bin, call[0])
	if err != nil {
		return err
	}
	for _, w := range call[1:] {
		if !strings.HasPrefix(w, "-") {
			continue
		}
		name, _, _ := strings.Cut(w, "=")
		if !flags[name] {
			return fmt.Errorf("switchyard %s: unknown flag %s", call[0], name)
		}
	}
	return nil
}

func buildSwitchyard(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "switchyard")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/switchyard").CombinedOutput(); err != nil {
		t.Fatalf("go build ../cmd/switchyard: %v\n%s", err, out)
	}
	return bin
}

func runScripts(t *testing.T) map[string]string {
	t.Helper()
	scripts := map[string]string{}
	for i, s := range deployJob(t, loadWorkflow(t)).Steps {
		if s.Run != "" {
			scripts[fmt.Sprintf("%s step %d (%s)", workflowPath, i, s.Name)] = s.Run
		}
	}
	raw, err := os.ReadFile(deployScript)
	if err != nil {
		t.Fatal(err)
	}
	scripts[deployScript] = string(raw)
	return scripts
}

func TestCISwitchyardCallsAreReal(t *testing.T) {
	bin := buildSwitchyard(t)

	// The checker itself must reject what does not exist, or the test
	// below proves nothing.
	for _, bad := range [][]string{{"switch", "green", "--wiat"}, {"rollbak", "--wait"}, {"status", "--json", "--asked-by", "x"}} {
		if err := checkCall(t, bin, bad); err == nil {
			t.Errorf("checkCall(%q) = nil, want an error", bad)
		}
	}
	if err := checkCall(t, bin, []string{"history", "-n", "5", "--json", "--zk=x"}); err != nil {
		t.Errorf("checkCall on a valid call: %v", err)
	}

	// The extractor finds indented and substituted calls, and skips
	// messages and comments.
	got := switchyardCalls("echo \"failed (switchyard nope)\"\n\tn=$(switchyard status --json | jq .)\n# switchyard bogus\n  switchyard rollback \\\n    --wait ||\n")
	if want := [][]string{{"status", "--json"}, {"rollback", "--wait"}}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("switchyardCalls = %q, want %q", got, want)
	}

	perSource := map[string]map[string][]string{workflowPath: {}, deployScript: {}}
	for name, script := range runScripts(t) {
		src := deployScript
		if strings.HasPrefix(name, workflowPath) {
			src = workflowPath
		}
		for _, call := range switchyardCalls(script) {
			if err := checkCall(t, bin, call); err != nil {
				t.Errorf("%s: %v", name, err)
			}
			if len(call) > 0 {
				perSource[src][call[0]] = append(perSource[src][call[0]], strings.Join(call, " "))
			}
		}
	}
	for src, subs := range perSource {
		t.Logf("%s calls %v", src, subs)
		for _, want := range []string{"status", "switch", "rollback"} {
			if len(subs[want]) == 0 {
				t.Errorf("%s never calls switchyard %s", src, want)
			}
		}
		// The switch, and asking for the old color again after a refusal
		// or timeout.
		if n := len(subs["switch"]); n < 2 {
			t.Errorf("%s: %d switch calls, want the switch and the way back", src, n)
		}
		for _, sub := range []string{"switch", "rollback"} {
			for _, c := range subs[sub] {
				for _, flag := range []string{"--wait", "--timeout", "--asked-by"} {
					if !slices.Contains(strings.Fields(c), flag) {
						t.Errorf("%s: switchyard %s without %s", src, c, flag)
					}
				}
			}
		}
	}
}

func TestCIScriptsLint(t *testing.T) {
	shellcheck, err := exec.LookPath("shellcheck")
	if err != nil {
		t.Fatalf("shellcheck is missing (%v); deployments/install/clients.sh installs it", err)
	}
	dir := t.TempDir()
	for name, script := range runScripts(t) {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, regexp.MustCompile(`\W+`).ReplaceAllString(name, "_")+".sh")
			// GitHub runs run: with bash -eo pipefail; stand the expressions in for
			// what they expand to, a word.
			body := expr.ReplaceAllString(script, "EXPR")
			if name != deployScript {
				body = "#!/usr/bin/env bash\nset -eo pipefail\n" + body
			}
			if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("bash", "-n", path).CombinedOutput(); err != nil {
				t.Errorf("bash -n: %v\n%s", err, out)
			}
			if out, err := exec.Command(shellcheck, "-s", "bash", path).CombinedOutput(); err != nil {
				t.Errorf("shellcheck: %v\n%s", err, out)
			}
		})
	}
}

// fakeSwitchyard stands in for the CLI in deploy.sh's flow: it logs its
// arguments, prints the status JSON, and the first switch exits with
// $FAKE_SWITCH_RC (later ones, putting the old color back, succeed).
const fakeSwitchyard = `#!/usr/bin/env bash
echo "$*" >> "$FAKE_LOG"
case $1 in
status) cat "$FAKE_STATUS" ;;
switch)
	if [ ! -e "$FAKE_LOG.switched" ]; then
		touch "$FAKE_LOG.switched"
		exit "${FAKE_SWITCH_RC:-0}"
	fi
	;;
esac
`

const statusBlueServing = `{"active_color":"blue","active_color_valid":true,"serving":"blue",
 "switch":{"phase":"done"},
 "instances":[
  {"id":"b1","service":"hello","color":"blue","status":"UP","version":"v1","in_zookeeper":true,"registered":true},
  {"id":"g1","service":"hello","color":"green","status":"OUT_OF_SERVICE","version":"v2","in_zookeeper":true,"registered":true},
  {"id":"g2","service":"hello","color":"green","status":"STARTING","version":"v2","in_zookeeper":true,"registered":true}]}`

func TestCIDeployScriptFlow(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Switchyard-Color", "green")
	}))
	defer up.Close()
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "broken", http.StatusBadGateway)
	}))
	defer down.Close()
	script, err := filepath.Abs(deployScript)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		desc     string
		status   string
		switchRC string
		smoke    string
		unset    string
		env      []string
		wantRC   int
		wantLog  []string // exactly these switchyard calls, in order
		wantHook bool
		wantErr  string
	}{
		{
			desc: "switch done, smoke passes", status: statusBlueServing, smoke: up.URL, wantRC: 0, wantHook: true,
			env:     []string{"SMOKE_COLOR_HEADER=X-Switchyard-Color"},
			wantLog: []string{"status --json", "status --json", "switch green --wait --timeout 2m --asked-by ci-test"},
		},
		{
			desc: "smoke fails: rollback", status: statusBlueServing, smoke: down.URL, wantRC: 1, wantHook: true,
			wantLog: []string{"status --json", "status --json", "switch green --wait --timeout 2m --asked-by ci-test", "rollback --wait --timeout 2m --asked-by ci-test"},
			wantErr: "rolling back to blue",
		},
		{
			desc: "smoke response without the new color: rollback", status: statusBlueServing, smoke: up.URL, wantRC: 1, wantHook: true,
			env:     []string{"SMOKE_COLOR_HEADER=X-Switchyard-Other"},
			wantLog: []string{"status --json", "status --json", "switch green --wait --timeout 2m --asked-by ci-test", "rollback --wait --timeout 2m --asked-by ci-test"},
		},
		{
			desc: "refused: the old color asked for again", status: statusBlueServing, switchRC: "1", smoke: up.URL, wantRC: 1, wantHook: true,
			wantLog: []string{"status --json", "status --json", "switch green --wait --timeout 2m --asked-by ci-test", "switch blue --wait --timeout 2m --asked-by ci-test"},
			wantErr: "refused",
		},
		{
			desc: "timed out: the old color asked for again", status: statusBlueServing, switchRC: "3", smoke: up.URL, wantRC: 3, wantHook: true,
			wantLog: []string{"status --json", "status --json", "switch green --wait --timeout 2m --asked-by ci-test", "switch blue --wait --timeout 2m --asked-by ci-test"},
			wantErr: "timed out",
		},
		{
			desc: "failed or superseded: routing left alone", status: statusBlueServing, switchRC: "2", smoke: up.URL, wantRC: 2, wantHook: true,
			wantLog: []string{"status --json", "status --json", "switch green --wait --timeout 2m --asked-by ci-test"},
			wantErr: "superseded",
		},
		{
			desc: "not enough ready instances: no switch", status: statusBlueServing, smoke: up.URL, wantRC: 1, wantHook: true,
			env:     []string{"MIN_INSTANCES=2", "REGISTER_TIMEOUT=0"},
			wantLog: []string{"status --json", "status --json"},
			wantErr: "only 1 of 2 green instances",
		},
		{
			desc: "a pending switch: nothing deployed", smoke: up.URL, wantRC: 1,
			status:  `{"active_color":"green","active_color_valid":true,"serving":"blue","switch":{"phase":"refused"},"instances":[]}`,
			wantLog: []string{"status --json"},
			wantErr: "pending",
		},
		{
			desc: "missing secret: nothing called", status: statusBlueServing, smoke: up.URL, wantRC: 1,
			unset: "SWITCHYARD_ZK_AUTH", wantErr: "SWITCHYARD_ZK_AUTH is not set",
		},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			dir := t.TempDir()
			for name, body := range map[string]string{
				"bin/switchyard": fakeSwitchyard,
				"deploy-idle.sh": "#!/bin/sh\necho \"$@\" > \"$0.ran\"\n",
				"status.json":    tc.status,
			} {
				p := filepath.Join(dir, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			logPath := filepath.Join(dir, "calls.log")
			env := []string{
				"PATH=" + filepath.Join(dir, "bin") + ":" + os.Getenv("PATH"),
				"HOME=" + dir,
				"FAKE_LOG=" + logPath,
				"FAKE_STATUS=" + filepath.Join(dir, "status.json"),
				"FAKE_SWITCH_RC=" + tc.switchRC,
				"SWITCHYARD_ZK=127.0.0.1:1", "SWITCHYARD_REGISTRY=http://127.0.0.1:1",
				"SWITCHYARD_TOKEN=t", "SWITCHYARD_ZK_AUTH=u:p",
				"SERVICE=hello", "DEPLOY_VERSION=v2", "SMOKE_URL=" + tc.smoke,
				"DEPLOY_HOOK=" + filepath.Join(dir, "deploy-idle.sh"),
				"SMOKE_ATTEMPTS=2", "SMOKE_INTERVAL=0", "ASKED_BY=ci-test",
			}
			env = slices.DeleteFunc(env, func(kv string) bool { return tc.unset != "" && strings.HasPrefix(kv, tc.unset+"=") })
			cmd := exec.Command("bash", script)
			cmd.Dir = dir
			cmd.Env = append(env, tc.env...)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			rc := 0
			if ee, ok := err.(*exec.ExitError); ok {
				rc = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			t.Logf("stdout:\n%sstderr:\n%s", out, stderr.String())
			if rc != tc.wantRC {
				t.Errorf("exit %d, want %d", rc, tc.wantRC)
			}
			if tc.wantErr != "" && !strings.Contains(stderr.String(), tc.wantErr) {
				t.Errorf("stderr lacks %q", tc.wantErr)
			}
			raw, _ := os.ReadFile(logPath)
			var got []string
			if s := strings.TrimSpace(string(raw)); s != "" {
				got = strings.Split(s, "\n")
			}
			if !slices.Equal(got, tc.wantLog) {
				t.Errorf("switchyard calls:\n got %q\nwant %q", got, tc.wantLog)
			}
			ran, err := os.ReadFile(filepath.Join(dir, "deploy-idle.sh.ran"))
			if tc.wantHook && (err != nil || strings.TrimSpace(string(ran)) != "green v2") {
				t.Errorf("deploy hook ran with %q (%v), want \"green v2\"", ran, err)
			}
			if !tc.wantHook && err == nil {
				t.Errorf("deploy hook ran (%q), want it not to", ran)
			}
		})
	}
}
