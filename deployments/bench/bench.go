// Package bench is switchyard's benchmark harness behind `make bench`. In
// one run on one machine it measures, side by side: the gateway's
// throughput and latency against the backends directly, nginx and Caddy
// (wrk, same backends and settings, interleaved rounds); how fast a
// ZooKeeper flip reaches every response under load, and how many requests
// fail, for each registry backend; the same proxies over HTTPS, HTTP/2 over
// TLS and h2c (wrk and h2load); the seed's own nginx reload method
// under the same load; how a switch grows with the number of instances and
// what 10,000 heartbeating leases cost the registry; and the memory of the
// processes it started. It prints the tables and writes them into
// BENCHMARKS.md.
package bench

import (
	"cmp"
	"context"
	"crypto/rand"
	"debug/buildinfo"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/procfs"

	"github.com/switchyard/switchyard/deployments/local"
)

// AllSections are the parts Options.Only may name, in the order they run.
var AllSections = []string{"gobench", "throughput", "tls", "propagation", "consul", "seed", "scale", "leases", "routes", "fleet", "rollback"}

// The settings every load shares; BENCHMARKS.md describes them.
const (
	conns     = 32                   // keep-alive connections of every load
	wrkTime   = 5 * time.Second      // one measured wrk run
	rounds    = 2                    // interleaved wrk rounds
	loadPause = 2 * time.Millisecond // think time per connection in the switch loads
)

// Options shape a run; cmd/bench sets every field.
type Options struct {
	Out        string        // the BENCHMARKS.md to write the results into; "" for none
	Only       []string      // sections to run; none for all
	Flips      int           // ZooKeeper flips per registry backend
	Switches   int           // switches of the seed's nginx method
	ScaleSizes []int         // total instances (half blue, half green) of the scale switches
	Leases     int           // heartbeating leases the registry holds
	LeaseRun   time.Duration // how long they heartbeat while measured
	// ConsulSizes are the instances per color of the Consul propagation
	// runs.
	ConsulSizes []int
	// FleetSizes are the fleet section's sizes, each switched behind
	// FleetGateways gateways.
	FleetSizes    []FleetSize
	FleetGateways int
	FleetLimit    time.Duration // how long a fleet switch may take before it is reported unfinished
}

type bencher struct {
	Options
	root, dir, bin, token string // the checkout, the temp dir, its binaries, the cluster token
	caddy, noCaddy        string // the Caddy binary, or why there is none
	r                     *Report
}

func (b *bencher) logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", a...)
}

func (b *bencher) wants(section string) bool {
	return len(b.Only) == 0 || slices.Contains(b.Only, section)
}

// Run measures the sections asked for, prints the tables and writes them
// into Out. A part that cannot run is listed under the tables, and the
// run goes on.
func Run(ctx context.Context, o Options) error {
	for _, s := range o.Only {
		if !slices.Contains(AllSections, s) {
			return fmt.Errorf("unknown section %q (want %s)", s, strings.Join(AllSections, ", "))
		}
	}
	root, err := local.RepoRoot()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "switchyard-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// nginx's workers run as nobody and must reach their temp paths.
	_ = os.Chmod(dir, 0o755)
	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	b := &bencher{Options: o, root: root, dir: dir, bin: filepath.Join(dir, "bin"), token: hex.EncodeToString(tok),
		r: &Report{Date: time.Now(), Conns: conns, WrkTime: wrkTime, Pause: loadPause, Only: o.Only}}
	started := time.Now()
	b.logf("building switchyard, hello and the seed's app into %s", b.bin)
	if err := local.Build(ctx, b.bin); err != nil {
		return err
	}
	if _, err := b.command(ctx, "go", "build", "-o", filepath.Join(b.bin, "seedapp"), "./deployments/bench/seedapp"); err != nil {
		return err
	}
	b.r.Machine = b.machine(ctx)

	for _, s := range []struct {
		name string
		want bool
		run  func(context.Context) error
	}{
		{"table rebuild benchmark", b.wants("gobench"), b.goBench},
		{"built-in registry cluster", b.wants("throughput") || b.wants("tls") || b.wants("propagation"), b.builtinCluster},
		{"consul", b.wants("consul"), b.consul},
		{"seed nginx blue/green", b.wants("seed"), b.seed},
		{"scale", b.wants("scale"), b.scale},
		{"registry leases", b.wants("leases"), b.leases},
		{"gateway memory per route", b.wants("routes"), b.routes},
		{"fleet", b.wants("fleet"), b.fleet},
		{"automatic rollback", b.wants("rollback"), b.rollback},
	} {
		if s.want {
			b.section(s.name, func() error { return s.run(ctx) })
		}
	}
	b.r.Took = time.Since(started).Round(time.Second)

	// A partial run is merged into the results already written.
	var old string
	if len(o.Only) > 0 && o.Out != "" {
		if raw, err := os.ReadFile(o.Out); err == nil {
			old = generated(string(raw))
		}
	}
	text, err := b.r.render(old)
	if err != nil {
		return err
	}
	fmt.Println(text)
	if o.Out != "" {
		if err := writeResults(o.Out, text); err != nil {
			return err
		}
		b.logf("results written into %s", o.Out)
	}
	return ctx.Err()
}

// section runs one part of the benchmark; its failure is noted in the
// report and the run goes on.
func (b *bencher) section(name string, f func() error) {
	start := time.Now()
	b.logf("== %s", name)
	if err := f(); err != nil {
		b.note("%s: %v", name, err)
	}
	b.logf("== %s took %s", name, time.Since(start).Round(100*time.Millisecond))
}

// note logs a part that did not complete and keeps it for the report.
func (b *bencher) note(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	b.logf("%s", msg)
	b.r.Notes = append(b.r.Notes, firstLine(msg))
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	if len(line) > 300 {
		line = line[:300] + "..."
	}
	return line
}

// command runs a command in the checkout and returns its standard output.
func (b *bencher) command(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = b.root
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s%s", name, strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out), nil
}

// Machine is what the figures were measured on.
type Machine struct {
	CPUs                         int
	CPU, Kernel, Go              string
	Nginx, Caddy, Wrk, ZooKeeper string
	H2load                       string
}

// machine describes this machine and the tools, and finds Caddy: the
// install script builds it once, then only prints the cached binary's
// path.
func (b *bencher) machine(ctx context.Context) Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), CPU: "unknown", Kernel: "unknown", Caddy: "not installed"}
	if fs, err := procfs.NewDefaultFS(); err == nil {
		if cpus, err := fs.CPUInfo(); err == nil && len(cpus) > 0 {
			m.CPU = cpus[0].ModelName
		}
	}
	if raw, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(raw))
	}
	// The install script comes first, so that the versions are those of
	// the tools it installed on a fresh machine.
	out, err := b.command(ctx, "bash", filepath.Join("deployments", "install", "bench-deps.sh"))
	m.Nginx = strings.TrimPrefix(toolVersion(nginxBin(), "-v"), "nginx version: ")
	m.Wrk = strings.Fields(toolVersion("wrk", "-v") + " ?")[1]
	m.H2load = strings.TrimPrefix(toolVersion("h2load", "--version"), "h2load ")
	m.ZooKeeper = toolVersion("dpkg-query", "-W", "-f", "${Version}", "zookeeper")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	b.caddy = strings.TrimSpace(lines[len(lines)-1])
	// `caddy version` says "unknown" for a go-installed main module; the
	// build info names the module version.
	bi, berr := buildinfo.ReadFile(b.caddy)
	if err = cmp.Or(err, berr); err != nil {
		b.caddy, b.noCaddy = "", "bench-deps.sh gave no Caddy binary: "+firstLine(err.Error())
		return m
	}
	m.Caddy = bi.Main.Version
	return m
}

// toolVersion runs a version command and returns its first line.
func toolVersion(name string, args ...string) string {
	out, _ := exec.Command(name, args...).CombinedOutput()
	if line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n"); line != "" {
		return line
	}
	return "unknown"
}
