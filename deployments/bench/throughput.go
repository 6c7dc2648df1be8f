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
	var backends []string
	for _, in := range c.Instances {
		if in.Color == zkstate.Blue {
			backends = append(backends, in.Addr)
		}
	}
	if len(backends) < 2 {
		return fmt.Errorf("want two blue backends, have %d", len(backends))
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
			return startNginx(ctx, filepath.Join(dir, "nginx"), nginxKeepaliveServer(addr, backends), addr)
		}},
		{&Target{Name: TargetCaddy, Config: "Caddy " + b.r.Machine.Caddy + ", reverse_proxy, lb_policy round_robin"}, func(addr string) (*proc, error) {
			if b.caddy == "" {
				return nil, errors.New(b.noCaddy)
			}
			return startCaddy(ctx, b.caddy, filepath.Join(dir, "caddy"), addr, backends)
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
	// Warm every target up once, then measure in rounds whose order
	// alternates, so that a slow phase of the shared machine does not land
	// on one target.
	for _, tg := range t.Targets {
		if _, err := wrkRun(ctx, time.Second, tg.url, tg.script); err != nil {
			b.logf("throughput: warm-up of %s failed: %v", tg.Name, err)
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
			w, err := wrkRun(ctx, wrkTime, tg.url, tg.script)
			m := peak()
			if err != nil {
				b.logf("throughput: %s round %d: %v", tg.Name, round+1, err)
				continue
			}
			tg.Runs = append(tg.Runs, w)
			b.logf("throughput: round %d %-20s %8.0f rps  p50 %-8s p99 %-8s errors %d  rss %s",
				round+1, tg.Name, w.RPS, w.P50, w.P99, w.Errors, mb(m.RSS))
			b.r.addMem(tg.Name, "under wrk load (largest sample)", m)
		}
		t.Order = append(t.Order, strings.Join(names, " → "))
	}
	return nil
}

// WrkResult is what one wrk run reports.
type WrkResult struct {
	RPS      float64
	P50, P99 time.Duration
	// Errors counts socket errors (connect, read, write, timeout) and
	// responses that were not 2xx or 3xx.
	Errors int64
}

// wrkRun runs `wrk -t2 --latency` with the shared connection count against
// url for d, optionally with a Lua script, and parses its report.
func wrkRun(ctx context.Context, d time.Duration, url, script string) (WrkResult, error) {
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
		return WrkResult{}, fmt.Errorf("wrk %s: %w: %s", strings.Join(args, " "), err, out)
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
func parseWrk(out string) (WrkResult, error) {
	var r WrkResult
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
  access_log off;
%s%s
}
`, filepath.Join(dir, "nginx.pid"), filepath.Join(dir, "error.log"), temps.String(), server)
}

// nginxArgs keep nginx inside dir; -e sends even the first log lines,
// before the config is read, to the private error log.
func nginxArgs(dir string, extra ...string) []string {
	return append([]string{"-p", dir + "/", "-c", filepath.Join(dir, "nginx.conf"), "-e", filepath.Join(dir, "error.log")}, extra...)
}

// nginxKeepaliveServer proxies to an upstream of backends with keep-alive
// connections, as nginx is run in front of a pool.
func nginxKeepaliveServer(listen string, backends []string) string {
	return fmt.Sprintf(`  upstream hello {
    server %s;
    keepalive 64;
  }
  server {
    listen %s;
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
`, strings.Join(backends, ";\n    server "), listen)
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

// startCaddy starts a private Caddy with its admin API off and its state
// in dir.
func startCaddy(ctx context.Context, bin, dir, listen string, backends []string) (*proc, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`# generated by switchyard's bench
{
	admin off
	auto_https off
	persist_config off
	storage file_system %s
}

http://%s {
	reverse_proxy %s {
		lb_policy round_robin
	}
}
`, filepath.Join(dir, "data"), listen, strings.Join(backends, " "))
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	env := []string{"HOME=" + dir, "XDG_DATA_HOME=" + filepath.Join(dir, "data"), "XDG_CONFIG_HOME=" + filepath.Join(dir, "config")}
	return startProc(ctx, dir, "caddy", listen, env, bin, "run", "--config", path, "--adapter", "caddyfile")
}
