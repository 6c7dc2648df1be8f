package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/deployments/local"
	"github.com/switchyard/switchyard/zkstate"
)

// Target names of the throughput table.
const (
	TargetDirect  = "backends directly"
	TargetGateway = "switchyard gateway"
	TargetNginx   = "nginx"
	TargetCaddy   = "Caddy"
)

// throughput runs wrk against the two blue hello backends directly, the
// cluster's gateway, nginx and Caddy, all in front of the same backends,
// in interleaved rounds.
func (b *bencher) throughput(ctx context.Context, c *local.Cluster) error {
	backends, err := blueBackends(c)
	if err != nil {
		return err
	}
	dir := filepath.Join(b.dir, "throughput")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	spread, err := wrkSpread(dir, backends)
	if err != nil {
		return err
	}
	gwPID, _ := pidOf(c.Gateway)
	t := &Throughput{Targets: []*Target{
		{Name: TargetDirect, Config: "one wrk thread per backend, 16 connections each", url: "http://" + backends[0] + "/", script: spread},
		{Name: TargetGateway, Config: "switchyard gateway, route / to hello", url: c.GatewayURL + "/", pid: gwPID},
	}}
	b.r.Throughput = t
	proxies := []struct {
		*Target
		start func(addr string) (*proc, error)
	}{
		{&Target{Name: TargetNginx, Config: "nginx " + b.r.Machine.Nginx + ", upstream keepalive 64, worker_processes auto"}, func(addr string) (*proc, error) {
			return startNginx(ctx, filepath.Join(dir, "nginx"), nginxKeepaliveServer(backends, "listen "+addr), addr)
		}},
		{&Target{Name: TargetCaddy, Config: "Caddy " + b.r.Machine.Caddy + ", reverse_proxy, lb_policy round_robin"}, func(addr string) (*proc, error) {
			if b.caddy == "" {
				return nil, errors.New(b.noCaddy)
			}
			return startCaddy(ctx, b.caddy, filepath.Join(dir, "caddy"), addr, "", caddySite("http://"+addr, backends))
		}},
	}
	for _, px := range proxies {
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		p, err := px.start(addr)
		if err == nil {
			defer p.stop(syscall.SIGQUIT, 5*time.Second) // nginx's graceful quit; Caddy's quick one
			px.url, px.pid = "http://"+addr+"/", p.pid()
			// Every proxy must answer with a backend before it is measured.
			var color zkstate.Color
			if color, err = local.GetColor(ctx, http.DefaultClient, px.url); err == nil && color != zkstate.Blue {
				err = fmt.Errorf("answered %q instead of a blue backend", color)
			}
		}
		if err != nil {
			b.note("throughput: %s not available: %v", px.Name, err)
			continue
		}
		t.Targets = append(t.Targets, px.Target)
	}
	b.measure(ctx, "throughput", t, "under wrk load (largest sample)", func(ctx context.Context, d time.Duration, tg *Target) (LoadResult, error) {
		return wrkRun(ctx, d, tg.url, tg.script)
	})
	return nil
}

// measure warms every target of t up once, then measures them with run in
// rounds whose order alternates, so that a slow phase of the shared
// machine does not land on one target. Each target's memory is sampled
// during its runs and reported as memWhen.
func (b *bencher) measure(ctx context.Context, label string, t *Throughput, memWhen string, run func(context.Context, time.Duration, *Target) (LoadResult, error)) {
	for _, tg := range t.Targets {
		if _, err := run(ctx, time.Second, tg); err != nil {
			b.logf("%s: warm-up of %s failed: %v", label, tg.Name, err)
		}
	}
	for round := range rounds {
		order := slices.Clone(t.Targets)
		if round%2 == 1 {
			slices.Reverse(order)
		}
		var names []string
		for _, tg := range order {
			names = append(names, tg.Name)
			peak := func() Mem { return Mem{} }
			if tg.pid != 0 {
				peak = peakMem(tg.pid)
			}
			cpu := treeCPU(tg.pid)
			w, err := run(ctx, wrkTime, tg)
			m, cpu := peak(), treeCPU(tg.pid)-cpu
			if err != nil {
				b.logf("%s: %s round %d: %v", label, tg.Name, round+1, err)
				continue
			}
			if n := w.RPS * wrkTime.Seconds(); tg.pid != 0 && n > 0 {
				w.CPUPerRequest = time.Duration(float64(cpu) / n)
			}
			tg.Runs = append(tg.Runs, w)
			b.logf("%s: round %d %-20s %8.0f rps  p50 %-8s p99 %-8s errors %d  rss %s  cpu/request %s",
				label, round+1, tg.Name, w.RPS, w.P50, w.P99, w.Errors, mb(m.RSS), w.CPUPerRequest)
			b.r.addMem(tg.Name, memWhen, m)
		}
		t.Order = append(t.Order, strings.Join(names, " → "))
	}
}

// LoadResult is what one run of a load generator (wrk, h2load) reports.
type LoadResult struct {
	RPS      float64
	P50, P99 time.Duration
	// Errors counts socket errors (connect, read, write, timeout) and
	// responses that were not 2xx or 3xx; h2load's failed requests.
	Errors int64
	// CPUPerRequest is the target's CPU time (utime+stime of the process
	// and its children) over the run divided by its requests; 0 when the
	// bench does not know its process.
	CPUPerRequest time.Duration
	// Proto and TLS are what h2load negotiated (h2 or h2c; TLS version,
	// cipher and key exchange); wrk does not say.
	Proto, TLS string
}

// wrkRun runs `wrk -t2 --latency` with the shared connection count against
// url for d, optionally with a Lua script, and parses its report.
func wrkRun(ctx context.Context, d time.Duration, url, script string) (LoadResult, error) {
	args := []string{"-t2", "-c" + strconv.Itoa(conns), "-d" + strconv.Itoa(int(d.Seconds())) + "s", "--latency", "--timeout", "5s"}
	if script != "" {
		args = append(args, "-s", script)
	}
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "wrk", append(args, url)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return LoadResult{}, fmt.Errorf("wrk %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return parseWrk(string(out))
}

var (
	wrkRPS     = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	wrkLatency = regexp.MustCompile(`(?m)^\s*(50|99)%\s+(\S+)\s*$`)
	wrkErrors  = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)|Non-2xx or 3xx responses: (\d+)`)
)

// parseWrk reads wrk's --latency report; its latency units (us, ms, s, m)
// are Go's.
func parseWrk(out string) (LoadResult, error) {
	var r LoadResult
	rps, lat := wrkRPS.FindStringSubmatch(out), wrkLatency.FindAllStringSubmatch(out, -1)
	if rps == nil || len(lat) != 2 {
		return r, fmt.Errorf("wrk: report lacks Requests/sec or the 50%%/99%% latencies:\n%s", out)
	}
	r.RPS, _ = strconv.ParseFloat(rps[1], 64)
	for _, l := range lat {
		d, err := time.ParseDuration(l[2])
		if err != nil {
			return r, fmt.Errorf("wrk: latency: %w", err)
		}
		if l[1] == "50" {
			r.P50 = d
		} else {
			r.P99 = d
		}
	}
	for _, m := range wrkErrors.FindAllStringSubmatch(out, -1) {
		for _, s := range m[1:] {
			n, _ := strconv.ParseInt(s, 10, 64)
			r.Errors += n
		}
	}
	return r, nil
}

// wrkSpread writes a Lua script that points each wrk thread at the next
// of addrs, so one wrk run loads several backends with the same settings
// as a run against one proxy.
func wrkSpread(dir string, addrs []string) (string, error) {
	var list []string
	for _, a := range addrs {
		host, port, ok := strings.Cut(a, ":")
		if !ok {
			return "", fmt.Errorf("address %q is not host:port", a)
		}
		list = append(list, fmt.Sprintf("{%q, %q}", host, port))
	}
	script := "-- generated by switchyard's bench: thread i talks to addrs[i mod n]\nlocal addrs = {" + strings.Join(list, ", ") +
		"}\nlocal n = 0\nfunction setup(thread)\n  local a = addrs[n % #addrs + 1]\n  n = n + 1\n  thread.addr = wrk.lookup(a[1], a[2])[1]\nend\n"
	path := filepath.Join(dir, "spread.lua")
	return path, os.WriteFile(path, []byte(script), 0o644)
}

// nginxBin is Debian's nginx, also where root's PATH lacks /usr/sbin.
func nginxBin() string {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	return "/usr/sbin/nginx"
}

// nginxConf is a private nginx's whole config: its own pid file, logs and
// temp paths in dir (Debian's build points them at /var/lib/nginx), and
// server, the server{} block. A system nginx is never touched.
func nginxConf(dir, server string) string {
	var temps strings.Builder
	for _, t := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&temps, "  %s_temp_path %s;\n", t, filepath.Join(dir, "tmp-"+t))
	}
	return fmt.Sprintf(`# generated by switchyard's bench
daemon off;
master_process on;
worker_processes auto;
pid %s;
error_log %s warn;
events { worker_connections 4096; }
http {
  access_log %s;
%s%s
}
`, filepath.Join(dir, "nginx.pid"), filepath.Join(dir, "error.log"), filepath.Join(dir, "access.log"), temps.String(), server)
}

// nginxArgs keep nginx inside dir; -e sends even the first log lines,
// before the config is read, to the private error log.
func nginxArgs(dir string, extra ...string) []string {
	return append([]string{"-p", dir + "/", "-c", filepath.Join(dir, "nginx.conf"), "-e", filepath.Join(dir, "error.log")}, extra...)
}

// nginxKeepaliveServer proxies to an upstream of backends with keep-alive
// connections, as nginx is run in front of a pool; directives (listen,
// ssl_certificate, ...) go into its server block.
func nginxKeepaliveServer(backends []string, directives ...string) string {
	return fmt.Sprintf(`  upstream hello {
    server %s;
    keepalive 64;
  }
  server {
    %s;
    location / {
      proxy_pass http://hello;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
    }
  }
`, strings.Join(backends, ";\n    server "), strings.Join(directives, ";\n    "))
}

// startNginx checks and starts a private nginx in dir serving server on
// listen.
func startNginx(ctx context.Context, dir, server, listen string) (*proc, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(nginxConf(dir, server)), 0o644); err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, nginxBin(), nginxArgs(dir, "-t")...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("nginx -t: %w: %s", err, out)
	}
	return startProc(ctx, dir, "nginx", listen, nil, append([]string{nginxBin()}, nginxArgs(dir)...)...)
}

// caddySite is a Caddyfile site block for address that proxies to
// backends round robin; directives (bind, tls) come first.
func caddySite(address string, backends []string, directives ...string) string {
	var d strings.Builder
	for _, x := range directives {
		d.WriteString("\t" + x + "\n")
	}
	return fmt.Sprintf("%s {\n%s\treverse_proxy %s {\n\t\tlb_policy round_robin\n\t}\n}\n", address, d.String(), strings.Join(backends, " "))
}

// startCaddy starts a private Caddy with its admin API off, its state in
// dir and sites, and waits until it listens on listen; global adds global
// options.
func startCaddy(ctx context.Context, bin, dir, listen, global string, sites ...string) (*proc, error) {
	path, err := caddyConfig(dir, global, sites...)
	if err != nil {
		return nil, err
	}
	return startProc(ctx, dir, "caddy", listen, caddyEnv(dir), bin, "run", "--config", path, "--adapter", "caddyfile")
}

// caddyConfig writes a private Caddyfile (admin API off, state in dir) of
// sites with the global options global, and returns its path.
func caddyConfig(dir, global string, sites ...string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	cfg := fmt.Sprintf(`# generated by switchyard's bench
{
	admin off
	auto_https off
	persist_config off
	storage file_system %s
%s}

%s`, filepath.Join(dir, "data"), global, strings.Join(sites, "\n"))
	path := filepath.Join(dir, "Caddyfile")
	return path, os.WriteFile(path, []byte(cfg), 0o644)
}

// caddyEnv keeps Caddy's state in dir.
func caddyEnv(dir string) []string {
	return []string{"HOME=" + dir, "XDG_DATA_HOME=" + filepath.Join(dir, "data"), "XDG_CONFIG_HOME=" + filepath.Join(dir, "config")}
}
