package deployments_test

// These tests check deployments/monitoring: the alert rules pass promtool,
// the dashboard's queries parse as PromQL, and every metric either names
// is one a real registry, controller and gateway export.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/switchyard/switchyard/deployments/local"
	"github.com/switchyard/switchyard/zkstate"
)

const (
	alertsFile    = "monitoring/alerts.yml"
	dashboardFile = "monitoring/grafana-dashboard.json"
)

// promtool is the path of promtool, which deployments/install/prometheus.sh
// installs.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is missing: run deployments/install/prometheus.sh")
	}
	return p
}

func checkRules(t *testing.T, file string) {
	t.Helper()
	out, err := exec.Command(promtool(t), "check", "rules", file).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules %s: %v\n%s", file, err, out)
	}
}

// ruleExprs reads the alert rules' expressions.
func ruleExprs(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	exprs := map[string]string{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			exprs["alert "+r.Alert] = r.Expr
		}
	}
	return exprs
}

type dashboard struct {
	SchemaVersion int `json:"schemaVersion"`
	Inputs        []struct {
		Name     string `json:"name"`
		PluginID string `json:"pluginId"`
	} `json:"__inputs"`
	Panels []struct {
		Title      string `json:"title"`
		Datasource struct {
			UID string `json:"uid"`
		} `json:"datasource"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// panelExprs reads the dashboard's queries, with Grafana's interval
// variable replaced by a duration PromQL accepts.
func panelExprs(d dashboard) map[string]string {
	exprs := map[string]string{}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			exprs[fmt.Sprintf("panel %q %s", p.Title, tg.RefID)] = strings.ReplaceAll(tg.Expr, "$__rate_interval", "5m")
		}
	}
	return exprs
}

func TestAlertRulesPassPromtool(t *testing.T) {
	checkRules(t, alertsFile)
	if n := len(ruleExprs(t)); n < 7 {
		t.Errorf("%s has %d alerts, want at least 7", alertsFile, n)
	}
}

func TestDashboardIsImportableAndItsQueriesParse(t *testing.T) {
	d := readDashboard(t)
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d, want 36 or later", d.SchemaVersion)
	}
	if !slices.ContainsFunc(d.Inputs, func(in struct {
		Name     string `json:"name"`
		PluginID string `json:"pluginId"`
	}) bool {
		return in.Name == "DS_PROMETHEUS" && in.PluginID == "prometheus"
	}) {
		t.Error("the dashboard lacks its DS_PROMETHEUS input")
	}
	for _, p := range d.Panels {
		if p.Datasource.UID != "${DS_PROMETHEUS}" || len(p.Targets) == 0 {
			t.Errorf("panel %q: datasource %q, %d queries; want ${DS_PROMETHEUS} and a query", p.Title, p.Datasource.UID, len(p.Targets))
		}
	}
	// promtool parses a rule file's expressions with Prometheus' own
	// parser: the queries go through it as recording rules.
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	i := 0
	for _, e := range panelExprs(d) {
		q, _ := json.Marshal(e) // a JSON string is a YAML string
		fmt.Fprintf(&b, "      - record: dashboard:query%d\n        expr: %s\n", i, q)
		i++
	}
	file := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	checkRules(t, file)
}

var metricName = regexp.MustCompile(`\bswitchyard_[a-z0-9_]+`)

// unknownMetrics lists, for each expression, the switchyard metrics it
// names that are not in exported.
func unknownMetrics(exprs map[string]string, exported map[string]bool) []string {
	var bad []string
	for where, e := range exprs {
		for _, name := range metricName.FindAllString(e, -1) {
			if !exported[name] {
				bad = append(bad, fmt.Sprintf("%s names %s", where, name))
			}
		}
	}
	slices.Sort(bad)
	return bad
}

// scrape adds the samples of a /metrics page to sums, by name.
func scrape(ctx context.Context, url string, sums map[string]float64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, _, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			return fmt.Errorf("%s: %q: %w", url, line, err)
		}
		sums[name] += v
	}
	return sc.Err()
}

// TestMonitoringNamesOnlyExportedMetrics runs a real cluster through a
// switch, so that the series made on first use exist, and checks every
// metric the rules and the dashboard name against what it exports.
func TestMonitoringNamesOnlyExportedMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("starts ZooKeeper and a cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	bin := t.TempDir()
	if err := local.Build(ctx, bin); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c, err := local.Start(ctx, local.Options{Bin: bin, Dir: dir, Token: "monitoring-test-token", Blue: 1, Green: 1, Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	if err := c.WaitServing(ctx, zkstate.Blue, time.Minute); err != nil {
		t.Fatal(err)
	}
	id, _, err := c.Flip(ctx, string(zkstate.Green))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitRecord(ctx, time.Minute, func(r zkstate.Switch) bool {
		return r.ID >= id && r.Target == zkstate.Green && r.Phase == zkstate.PhaseDone
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitServing(ctx, zkstate.Green, time.Minute); err != nil {
		t.Fatal(err)
	}

	sums := map[string]float64{}
	urls := []string{c.RegistryURL + "/metrics", c.GatewayAdminURL + "/metrics"}
	for _, api := range c.ControllerAPIs {
		urls = append(urls, api+"/metrics")
	}
	for _, u := range urls {
		if err := scrape(ctx, u, sums); err != nil {
			t.Fatal(err)
		}
	}
	exported := map[string]bool{}
	for name := range sums {
		exported[name] = true
	}
	// Every switch done (the cluster's first, to blue, and the flip) was
	// seen through to every gateway's confirmation.
	if n, done := sums["switchyard_controller_propagation_seconds_count"], sums["switchyard_switch_duration_seconds_count"]; n < 1 || n != done {
		t.Errorf("switchyard_controller_propagation_seconds_count = %g over the controllers, want the %g switches done", n, done)
	}
	for _, must := range []string{
		"switchyard_gateway_requests_total", "switchyard_controller_propagation_seconds_bucket",
		"switchyard_registry_leases", "switchyard_registry_service_index", "switchyard_switches_total",
	} {
		if !exported[must] {
			t.Errorf("no %s in the cluster's /metrics", must)
		}
	}

	exprs := ruleExprs(t)
	for where, e := range panelExprs(readDashboard(t)) {
		exprs[where] = e
	}
	// The check itself must catch a name nobody exports.
	if bad := unknownMetrics(map[string]string{"probe": "rate(switchyard_no_such_metric_total[5m])"}, exported); len(bad) != 1 {
		t.Fatalf("a made-up metric went unnoticed: %v", bad)
	}
	if bad := unknownMetrics(exprs, exported); len(bad) > 0 {
		t.Errorf("the monitoring files name metrics nothing exports:\n%s", strings.Join(bad, "\n"))
	}
	if t.Failed() {
		names := make([]string, 0, len(exported))
		for n := range exported {
			if strings.HasPrefix(n, "switchyard_") {
				names = append(names, n)
			}
		}
		slices.Sort(names)
		t.Logf("exported: %s", strings.Join(names, " "))
	}
}
