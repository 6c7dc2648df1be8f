package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/controller/layout"
	"github.com/switchyard/switchyard/deployments/local"
)

// SeedResult is the baseline: the seed's nginx blue/green script, step by
// step, under the same load as switchyard's flips.
type SeedResult struct {
	Switches    int
	Requests    int
	Failed      int
	FailKinds   string
	PerSwitch   []int           // failed requests in each switch's window
	Propagation []time.Duration // the reload until every response is the new color
	Durations   []time.Duration // new process started until the old one exited
	Missing     string
}

// seedInclude is the file the seed's script rewrites:
// /etc/nginx/conf.d/service-url.inc.
func seedInclude(addr string) string { return "set $service_url http://" + addr + ";\n" }

// seedServer is the seed's nginx site: proxy_pass to the variable the
// include sets, so every request opens a new connection to the backend.
func seedServer(listen, include string) string {
	return fmt.Sprintf(`  server {
    listen %s;
    include %s;
    location / {
      proxy_pass $service_url;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header Host $http_host;
    }
  }
`, listen, include)
}

// seed runs the seed's deploy script (000_ce5deee7d65dfb4a) Switches
// times: start the new version on the idle port, health-check it up to 10
// times by grepping for "timestamp", rewrite the include, `nginx -s
// reload`, then `kill -15` the old process. Its sleeps (10 s before and
// between health checks, 5 s after the kill) only pace the script and are
// shortened; every action is the same.
func (b *bencher) seed(ctx context.Context) error {
	r := &SeedResult{}
	b.report.Seed = r
	dir := filepath.Join(b.dir, "seed")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ports := [2]string{}
	for i := range ports {
		a, err := freeAddr()
		if err != nil {
			return err
		}
		ports[i] = a
	}
	app := func(addr, color string) (*proc, error) {
		return startProc(dir, "seedapp-"+color+"-"+strings.ReplaceAll(addr, ":", "_"), nil,
			filepath.Join(b.bin, "seedapp"), "--listen", addr, "--color", color)
	}
	current, err := app(ports[0], layout.Blue)
	if err != nil {
		return err
	}
	defer func() { current.stop(syscall.SIGTERM, 5*time.Second) }()
	if err := seedHealthCheck(ctx, ports[0], 50, 100*time.Millisecond); err != nil {
		return err
	}
	include := filepath.Join(dir, "service-url.inc")
	if err := os.WriteFile(include, []byte(seedInclude(ports[0])), 0o644); err != nil {
		return err
	}
	listen, err := freeAddr()
	if err != nil {
		return err
	}
	ng, err := startNginx(ctx, filepath.Join(dir, "nginx"), seedServer(listen, include), listen)
	if err != nil {
		r.Missing = firstLine(err.Error())
		return nil
	}
	defer ng.Stop()

	ld := startLoad(ctx, LoadConfig{Addr: listen, Conns: b.opts.Conns, Pause: b.opts.LoadPause, MaxDuration: 5 * time.Minute})
	stopped := false
	defer func() {
		if !stopped {
			ld.Stop()
		}
	}()
	time.Sleep(time.Second)

	type sw struct {
		color         string
		begin, reload time.Time
		end           time.Time
	}
	var sws []sw
	idle, color := 1, layout.Blue
	for i := range b.opts.Switches {
		color = layout.Other(color)
		s := sw{color: color, begin: time.Now()}
		next, err := app(ports[idle], color)
		if err != nil {
			return err
		}
		if err := seedHealthCheck(ctx, ports[idle], 10, 200*time.Millisecond); err != nil {
			next.stop(syscall.SIGKILL, time.Second)
			return fmt.Errorf("switch %d: %w", i+1, err)
		}
		if err := os.WriteFile(include, []byte(seedInclude(ports[idle])), 0o644); err != nil {
			return err
		}
		s.reload = time.Now()
		if err := ng.Reload(ctx); err != nil {
			return err
		}
		// kill -15 right after the reload, as the script does.
		_ = current.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-current.done:
		case <-time.After(35 * time.Second):
			current.stop(syscall.SIGKILL, time.Second)
		}
		s.end = time.Now()
		current, idle = next, 1-idle
		sws = append(sws, s)
		b.logf("seed: switch %2d to %-5s new version up and old one gone in %s", i+1, color, s.end.Sub(s.begin).Round(time.Millisecond))
		// The script sleeps 5 s here; a second is enough for the old
		// workers to finish.
		time.Sleep(time.Second)
	}
	time.Sleep(500 * time.Millisecond)
	rs := ld.Stop()
	stopped = true

	fs := local.Failures(rs)
	r.Switches, r.Requests, r.Failed, r.FailKinds = len(sws), len(rs), len(fs), errorKinds(fs)
	for i, s := range sws {
		until := time.Now()
		if i+1 < len(sws) {
			until = sws[i+1].begin
		}
		r.PerSwitch = append(r.PerSwitch, len(local.Failures(between(rs, s.begin, until))))
		r.Durations = append(r.Durations, s.end.Sub(s.begin))
		if p, ok := local.Propagation(rs, s.reload, until, s.color); ok {
			r.Propagation = append(r.Propagation, p)
		}
	}
	b.logf("seed: %d switches, %d requests, %d failed (%s)", r.Switches, r.Requests, r.Failed, r.FailKinds)
	return nil
}

// seedHealthCheck is the script's loop: GET the idle port and look for
// "timestamp" in the page, up to tries times.
func seedHealthCheck(ctx context.Context, addr string, tries int, every time.Duration) error {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for range tries {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
		if resp, err := hc.Do(req); err == nil {
			found := false
			sc := bufio.NewScanner(io.LimitReader(resp.Body, 64<<10))
			for sc.Scan() {
				if strings.Contains(sc.Text(), "timestamp") {
					found = true
				}
			}
			resp.Body.Close()
			if found {
				return nil
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(every)
	}
	return errors.New("health check failed: no \"timestamp\" at " + addr)
}
