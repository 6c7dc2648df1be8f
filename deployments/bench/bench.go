// Package bench is switchyard's benchmark harness behind `make bench`. In
// one run on one machine it measures, side by side: the gateway's
// throughput and latency against the backends directly, nginx and Caddy
// (wrk, same backends and settings, interleaved rounds); how fast a
// ZooKeeper flip reaches every response under load, and how many requests
// fail, for each registry backend; the seed's own nginx reload method
// under the same load; how a switch grows with the number of instances and
// what 10,000 heartbeating leases cost the registry; and the memory of the
// processes it started. It prints the tables and writes them into
// BENCHMARKS.md.
package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/switchyard/switchyard/deployments/local"
)

// Sections that Options.Only may name.
const (
	SectionGoBench     = "gobench"
	SectionThroughput  = "throughput"
	SectionPropagation = "propagation"
	SectionConsul      = "consul"
	SectionSeed        = "seed"
	SectionScale       = "scale"
	SectionLeases      = "leases"
)

// AllSections is every section, in the order they run.
var AllSections = []string{SectionGoBench, SectionThroughput, SectionPropagation, SectionConsul, SectionSeed, SectionScale, SectionLeases}

// Options shape a run; the zero value of a field means its default.
type Options struct {
	// Out is the BENCHMARKS.md to write the results into; "" writes none.
	Out string
	// Command is the command recorded beside the results.
	Command string
	// Stdout gets the final tables, Progress the running commentary.
	Stdout, Progress io.Writer

	Conns     int           // keep-alive connections of every load; default 32
	WrkTime   time.Duration // one wrk run; default 5s, at least 5s
	Rounds    int           // interleaved wrk rounds; default 2
	LoadPause time.Duration // think time per connection in the switch loads; default 2ms
	Flips     int           // ZooKeeper flips per registry backend; default 30
	Switches  int           // seed nginx switches; default 20
	// ScaleSizes are the total instance counts (half blue, half green) of
	// the scale switches; default 10, 100, 1000.
	ScaleSizes []int
	Leases     int           // registry leases; default 10000
	LeaseRun   time.Duration // how long they heartbeat while measured; default 15s
	Only       []string      // sections to run; default all
}

func (o *Options) defaults() {
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Progress == nil {
		o.Progress = os.Stderr
	}
	if o.Conns <= 0 {
		o.Conns = 32
	}
	if o.WrkTime < 5*time.Second {
		o.WrkTime = 5 * time.Second
	}
	if o.Rounds <= 0 {
		o.Rounds = 2
	}
	if o.LoadPause <= 0 {
		o.LoadPause = 2 * time.Millisecond
	}
	if o.Flips <= 0 {
		o.Flips = 30
	}
	if o.Switches <= 0 {
		o.Switches = 20
	}
	if len(o.ScaleSizes) == 0 {
		o.ScaleSizes = []int{10, 100, 1000}
	}
	if o.Leases <= 0 {
		o.Leases = 10000
	}
	if o.LeaseRun <= 0 {
		o.LeaseRun = 15 * time.Second
	}
	if len(o.Only) == 0 {
		o.Only = AllSections
	}
	if o.Command == "" {
		o.Command = "make bench"
	}
}

type bencher struct {
	opts   Options
	root   string // the checkout
	dir    string // everything temporary
	bin    string // switchyard, hello, seedapp
	token  string
	report *Report
}

func (b *bencher) logf(format string, a ...any) {
	fmt.Fprintf(b.opts.Progress, "bench: "+format+"\n", a...)
}

func (b *bencher) wants(section string) bool { return slices.Contains(b.opts.Only, section) }

// Run measures every section the options ask for, prints the tables to
// Stdout and writes them into Out. A section that cannot run is reported
// as such; Run fails only when nothing could be measured at all.
func Run(ctx context.Context, opts Options) error {
	opts.defaults()
	for _, s := range opts.Only {
		if !slices.Contains(AllSections, s) {
			return fmt.Errorf("bench: unknown section %q (want %s)", s, strings.Join(AllSections, ", "))
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
	b := &bencher{opts: opts, root: root, dir: dir, bin: filepath.Join(dir, "bin"), token: hex.EncodeToString(tok),
		report: &Report{Date: time.Now(), Command: opts.Command}}
	started := time.Now()
	b.logf("building switchyard, hello and the seed's app into %s", b.bin)
	if err := b.build(ctx); err != nil {
		return err
	}
	b.report.Machine = machineFacts(b)

	if b.wants(SectionGoBench) {
		b.runSection("table rebuild benchmark", func() error { return b.goBench(ctx) })
	}
	if b.wants(SectionThroughput) || b.wants(SectionPropagation) {
		b.runSection("built-in registry cluster", func() error { return b.builtinCluster(ctx) })
	}
	if b.wants(SectionConsul) {
		b.runSection("consul", func() error { return b.consul(ctx) })
	}
	if b.wants(SectionSeed) {
		b.runSection("seed nginx blue/green", func() error { return b.seed(ctx) })
	}
	if b.wants(SectionScale) {
		b.runSection("scale", func() error { return b.scale(ctx) })
	}
	if b.wants(SectionLeases) {
		b.runSection("registry leases", func() error { return b.leases(ctx) })
	}
	b.report.Took = time.Since(started)

	text := b.report.Markdown()
	fmt.Fprintln(opts.Stdout, text)
	if opts.Out != "" {
		if err := writeResults(opts.Out, text); err != nil {
			return err
		}
		b.logf("results written into %s", opts.Out)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return nil
}

// runSection runs one part of the benchmark; its failure is noted in the
// report and the run goes on.
func (b *bencher) runSection(name string, f func() error) {
	start := time.Now()
	b.logf("== %s", name)
	if err := f(); err != nil {
		b.logf("%s failed: %v", name, err)
		b.report.Notes = append(b.report.Notes, fmt.Sprintf("%s: %v", name, firstLine(err.Error())))
	}
	b.logf("== %s took %s", name, time.Since(start).Round(100*time.Millisecond))
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	if len(line) > 300 {
		line = line[:300] + "..."
	}
	return line
}

func (b *bencher) build(ctx context.Context) error {
	if err := os.MkdirAll(b.bin, 0o755); err != nil {
		return err
	}
	if err := local.Build(ctx, b.bin); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(b.bin, "seedapp"), "./deployments/bench/seedapp")
	cmd.Dir = b.root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build seedapp: %w: %s", err, out)
	}
	return nil
}

// ensureCaddy runs the install script, which builds Caddy once and then
// only prints the cached binary's path.
func (b *bencher) ensureCaddy(ctx context.Context) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(b.root, "deployments", "install", "bench-deps.sh"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("bench-deps.sh: %w: %s", err, firstLine(stderr.String()))
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	bin := strings.TrimSpace(lines[len(lines)-1])
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("bench-deps.sh printed %q, which is not a file", bin)
	}
	return bin, nil
}

// Machine is what the figures were measured on.
type Machine struct {
	CPUs                    int
	CPU, Kernel, Go         string
	Nginx, Caddy, Wrk       string
	ZooKeeper, ConsulBinary string
}

func machineFacts(b *bencher) Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), CPU: "unknown", Kernel: "unknown"}
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if raw, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(raw))
	}
	m.Nginx = strings.TrimPrefix(toolVersion("nginx", "-v"), "nginx version: ")
	m.Wrk = strings.Fields(toolVersion("wrk", "-v") + " ?")[1]
	m.ZooKeeper = toolVersion("dpkg-query", "-W", "-f", "${Version}", "zookeeper")
	m.Caddy = "not installed"
	if bin, err := b.ensureCaddy(context.Background()); err == nil {
		m.Caddy = caddyVersion(bin)
	}
	return m
}

// caddyVersion reads the module version from the binary's build info:
// `caddy version` says "unknown" for a go-installed main module.
func caddyVersion(bin string) string {
	out, _ := exec.Command("go", "version", "-m", bin).Output()
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == "mod" && f[1] == "github.com/caddyserver/caddy/v2" {
			return f[2]
		}
	}
	return "unknown"
}
