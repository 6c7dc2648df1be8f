package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/gateway"
	"github.com/switchyard/switchyard/internal/retry"
	"github.com/switchyard/switchyard/registry"
)

// Wall-clock figures on this shared machine move by a third from one run
// to the next; instruction counts do not. PerRequest measures what one
// proxied HTTP/1.1 keep-alive request costs a proxy: the instructions it
// executes under callgrind, the syscalls it makes under strace, or, for
// the gateway, a pprof CPU and allocation profile of the same code run in
// this process. Each is taken over a fixed number of requests (h2load -n),
// never over a duration, so that two runs can be compared request for
// request.

// PerRequestOptions shape a PerRequest run.
type PerRequestOptions struct {
	Bin      string   // the switchyard binary (make build's bin/switchyard)
	Backend  []string // argv that serves the backends: Backend + "-serve-backends" + addresses
	Requests int      // N, the requests of one measured load
	Runs     int      // callgrind: how many times N and 2N are measured, for the mean
	Warmup   int      // requests before anything is measured
	Conns    int      // h2load's keep-alive connections
	Targets  []string // "gateway", "nginx", "caddy"
	Proto    string   // what clients speak: h1 (default), https (HTTP/1.1 over TLS), h2 (over TLS) or h2c
	Streams  int      // h2 and h2c: streams in flight per connection (h2load -m)
	Caddy    string   // the Caddy binary, for the caddy target
	cert     certFiles
	Mode     string   // "callgrind", "strace" or "pprof" (the gateway only)
	Env      []string // more environment for the gateway (GOMAXPROCS=1, GOGC=…)
	Args     []string // more flags for the gateway (a later --access-log wins)
	Dir      string   // where logs, dumps and profiles go
	Out      io.Writer
}

// backendBody is what every backend answers, about the size of hello's.
const backendBody = `{"service":"hello","color":"blue","version":"v1","instance":"hello-blue-1","timestamp":"2026-01-02T15:04:05Z"}` + "\n"

// ServeBackends answers every request on each of addrs with backendBody,
// until ctx ends. PerRequest runs it in a process of its own, so that a
// profile of the gateway holds none of the backends' work.
func ServeBackends(ctx context.Context, addrs []string) error {
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, backendBody)
	})
	errc := make(chan error, len(addrs))
	for _, a := range addrs {
		srv := &http.Server{Addr: a, Handler: h}
		go func() { errc <- srv.ListenAndServe() }()
		defer srv.Close()
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return nil
	}
}

// PerRequest starts two backends, a registry holding them UP and each
// target in front of them, and measures each target as o.Mode says.
func PerRequest(ctx context.Context, o PerRequestOptions) error {
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return err
	}
	_ = os.Chmod(o.Dir, 0o755) // nginx may run as nobody
	backends := make([]string, 2)
	for i := range backends {
		a, err := freeAddr()
		if err != nil {
			return err
		}
		backends[i] = a
	}
	be, err := startProc(ctx, o.Dir, "backends", backends[1], nil, append(o.Backend, append([]string{"-serve-backends"}, backends...)...)...)
	if err != nil {
		return err
	}
	defer be.stop(syscall.SIGTERM, 5*time.Second)
	err = retry.Until(ctx, 10*time.Second, func() (bool, error) {
		c, err := net.DialTimeout("tcp", backends[0], 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("backend %s: %w", backends[0], err)
	}

	regAddr, err := freeAddr()
	if err != nil {
		return err
	}
	token := "per-request-bench-token"
	env := []string{"SWITCHYARD_TOKEN=" + token, "SWITCHYARD_REGISTRY=http://" + regAddr}
	reg, err := startProc(ctx, o.Dir, "registry", regAddr, env, o.Bin, "registry", "--listen", regAddr, "--lease-ttl", "1h", "--warmup", "10ms")
	if err != nil {
		return err
	}
	defer reg.stop(syscall.SIGTERM, 5*time.Second)
	rc := registry.NewClient("http://"+regAddr, token)
	for i, a := range backends {
		host, port, _ := net.SplitHostPort(a)
		p, _ := strconv.Atoi(port)
		id := fmt.Sprintf("hello-blue-%d", i+1)
		if err := rc.Register(ctx, registry.Instance{ID: id, Service: "hello", Color: "blue", Version: "v1", Address: host, Port: p, Status: registry.StatusUp}); err != nil {
			return fmt.Errorf("register %s: %w", id, err)
		}
		if _, err := rc.SetStatus(ctx, id, registry.StatusUp); err != nil {
			return fmt.Errorf("set %s UP: %w", id, err)
		}
	}

	switch o.Proto {
	case "":
		o.Proto = "h1"
	case "h1", "h2c":
	case "https", "h2":
		if o.cert, err = writeCert(o.Dir, "127.0.0.1"); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unknown protocol %q (want h1, https, h2 or h2c)", o.Proto)
	}
	tw := tabwriter.NewWriter(o.Out, 0, 0, 2, ' ', 0)
	defer tw.Flush()
	perReq := map[string]float64{}
	for _, t := range o.Targets {
		var err error
		switch {
		case o.Mode == "pprof" && t == "gateway":
			err = o.pprofGateway(ctx, registry.NewClient("http://"+regAddr, token), tw)
		case o.Mode == "pprof":
			err = errors.New("pprof profiles only the gateway")
		case o.Mode == "tail":
			if t == o.Targets[0] {
				err = o.tail(ctx, env, backends, tw)
			}
		case t == "gateway" || t == "nginx" || t == "caddy":
			perReq[t], err = o.measureProc(ctx, t, env, backends, tw)
		default:
			err = fmt.Errorf("unknown target %q (want gateway, nginx or caddy)", t)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", t, err)
		}
	}
	for _, peer := range []string{"nginx", "caddy"} {
		if g, n := perReq["gateway"], perReq[peer]; g > 0 && n > 0 {
			fmt.Fprintf(tw, "gateway/%s\t%s per request, %s\t%.2f×\t\n", peer, o.Mode, o.Proto, g/n)
		}
	}
	return nil
}

// valgrindGODEBUG is what a Go program needs to run under callgrind
// (3.19). Callgrind trips an assertion on the signal of Go's asynchronous
// preemption. And valgrind's CPUID offers RDTSCP whether or not the host
// has it, while its translator runs RDTSCP only where the host has it:
// on a VM that hides it (the AMD EPYC machines here), the runtime's
// cputicks dies of SIGILL as soon as sysmon takes a lock. Without RDTSCP
// the runtime reads the clock with fences and RDTSC, as it does natively
// on such a host. (golang.org/x/sys/cpu, which reads GODEBUG too, prints
// once that it does not know "rdtscp"; nothing else.)
const valgrindGODEBUG = "GODEBUG=asyncpreemptoff=1,cpu.rdtscp=off"

// startTarget starts target (the switchyard gateway or nginx) on addr,
// under wrap (valgrind's argv, or none), and waits until it answers with a
// backend.
func (o PerRequestOptions) startTarget(ctx context.Context, target, addr string, env, backends, wrap []string, sub string) (*proc, error) {
	dir := filepath.Join(o.Dir, sub)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var argv []string
	listen := addr // where the process accepts the measured connections
	tlsOn := o.Proto == "https" || o.Proto == "h2"
	switch target {
	case "gateway":
		// As `switchyard gateway` runs by default, JSON access log on, but
		// into a file, as nginx's.
		argv = []string{o.Bin, "gateway", "--admin", "", "--route", "/=hello",
			"--access-log", filepath.Join(dir, "access.log")}
		if tlsOn {
			plain, err := freeAddr()
			if err != nil {
				return nil, err
			}
			argv = append(argv, "--listen", plain, "--tls-listen", addr, "--tls-cert", o.cert.Cert, "--tls-key", o.cert.Key)
		} else {
			argv = append(argv, "--listen", addr)
		}
		argv = append(argv, o.Args...)
		env = slices.Concat(env, o.Env)
		if len(wrap) > 0 {
			env = append(env, valgrindGODEBUG)
		}
	case "caddy":
		if o.Caddy == "" {
			return nil, errors.New("no Caddy binary (-caddy)")
		}
		// As the gateway's and nginx's, its access log is on, into a file.
		site := caddySite("http://"+addr, backends, "bind 127.0.0.1", "log {\n\t\toutput file "+filepath.Join(dir, "access.log")+"\n\t}")
		if tlsOn {
			site = caddySite("https://"+addr, backends, "bind 127.0.0.1", "tls "+o.cert.Cert+" "+o.cert.Key, "log {\n\t\toutput file "+filepath.Join(dir, "access.log")+"\n\t}")
		}
		cfg, err := caddyConfig(dir, "\tservers {\n\t\tprotocols h1 h2 h2c\n\t}\n", site)
		if err != nil {
			return nil, err
		}
		argv = []string{o.Caddy, "run", "--config", cfg, "--adapter", "caddyfile"}
		env = slices.Concat(env, caddyEnv(dir))
		if len(wrap) > 0 {
			env = append(env, valgrindGODEBUG)
		}
	case "nginx":
		listenDirective := map[string]string{"h1": "listen " + addr, "https": "listen " + addr + " ssl", "h2": "listen " + addr + " ssl http2", "h2c": "listen " + addr + " http2"}[o.Proto]
		directives := []string{listenDirective}
		if tlsOn {
			directives = append(directives, "ssl_certificate "+o.cert.Cert, "ssl_certificate_key "+o.cert.Key, "ssl_protocols TLSv1.2 TLSv1.3",
				"ssl_prefer_server_ciphers on", "ssl_conf_command Ciphersuites "+tls13Suites)
		}
		directives = append(directives, "keepalive_requests "+strconv.Itoa(nginxKeepaliveRequests))
		conf := nginxOneProcessConf(dir, nginxKeepaliveServer(backends, directives...))
		if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
			return nil, err
		}
		argv = append([]string{nginxBin()}, nginxArgs(dir, "-g", "daemon off; master_process off;")...)
		if out, err := exec.CommandContext(ctx, argv[0], append(argv[1:], "-t")...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("nginx -t: %w: %s", err, out)
		}
	}
	p, err := startProc(ctx, dir, target, listen, env, append(wrap, argv...)...)
	if err != nil {
		return nil, err
	}
	hc := protoClient(o.cert.Pool, map[string]string{"h1": "http/1.1", "https": "http/1.1", "h2": "h2", "h2c": "h2c"}[o.Proto])
	err = retry.Until(ctx, 2*time.Minute, func() (bool, error) {
		resp, err := hc.Get(o.url(addr))
		if err != nil {
			return false, nil
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK && string(b) == backendBody, nil
	})
	if err != nil {
		p.stop(syscall.SIGKILL, time.Second)
		return nil, fmt.Errorf("never answered with a backend: %w", err)
	}
	return p, nil
}

// nginxOneProcessConf is nginxConf for one process that does it all
// (master_process off comes with -g): what callgrind and strace follow.
// Its access log is on, in nginx's default (combined) format and without
// a buffer, as the gateway's is on.
func nginxOneProcessConf(dir, server string) string {
	var temps strings.Builder
	for _, t := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&temps, "  %s_temp_path %s;\n", t, filepath.Join(dir, "tmp-"+t))
	}
	return fmt.Sprintf(`# generated by switchyard's bench
worker_processes 1;
pid %s;
error_log %s warn;
events { worker_connections 4096; }
http {
  access_log %s;
%s%s
}
`, filepath.Join(dir, "nginx.pid"), filepath.Join(dir, "error.log"), filepath.Join(dir, "access.log"), temps.String(), server)
}

var h2loadOK = regexp.MustCompile(`status codes: (\d+) 2xx`)

// load sends exactly n requests to addr with h2load, HTTP/1.1 keep-alive,
// and fails unless every one was answered 2xx.
func (o PerRequestOptions) load(ctx context.Context, addr string, n int) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, "h2load", o.h2loadArgs(addr, n)...).CombinedOutput()
	took := time.Since(start)
	if err != nil {
		return took, fmt.Errorf("h2load: %w: %s", err, out)
	}
	m := h2loadOK.FindSubmatch(out)
	if m == nil || string(m[1]) != strconv.Itoa(n) {
		return took, fmt.Errorf("h2load: not every request was answered 2xx:\n%s", out)
	}
	return took, nil
}

// url is where clients of o.Proto reach a proxy listening on addr.
func (o PerRequestOptions) url(addr string) string {
	if o.Proto == "https" || o.Proto == "h2" {
		return "https://" + addr + "/"
	}
	return "http://" + addr + "/"
}

// h2loadArgs sends n requests to addr in o.Proto: --h1 for HTTP/1.1 (in
// clear or over TLS), else HTTP/2 (ALPN h2 over TLS, or h2c with prior
// knowledge) with o.Streams streams in flight per connection.
func (o PerRequestOptions) h2loadArgs(addr string, n int, extra ...string) []string {
	args := []string{"-t1", "-c" + strconv.Itoa(o.Conns), "-n" + strconv.Itoa(n)}
	if o.Proto == "h1" || o.Proto == "https" || o.Proto == "" {
		args = append(args, "--h1")
	} else {
		args = append(args, "-m"+strconv.Itoa(max(o.Streams, 1)))
	}
	return append(append(args, extra...), o.url(addr))
}

// measureProc measures a proxy process: callgrind's instruction count or
// strace's syscall count.
func (o PerRequestOptions) measureProc(ctx context.Context, target string, env, backends []string, tw io.Writer) (float64, error) {
	addr, err := freeAddr()
	if err != nil {
		return 0, err
	}
	dir := filepath.Join(o.Dir, target)
	var wrap []string
	if o.Mode == "callgrind" {
		wrap = []string{"valgrind", "--tool=callgrind", "--callgrind-out-file=" + filepath.Join(dir, "callgrind.out")}
	}
	p, err := o.startTarget(ctx, target, addr, env, backends, wrap, target)
	if err != nil {
		return 0, err
	}
	defer p.stop(syscall.SIGTERM, time.Minute)
	if _, err := o.load(ctx, addr, o.Warmup); err != nil {
		return 0, fmt.Errorf("warm-up: %w", err)
	}
	switch o.Mode {
	case "callgrind":
		return o.callgrind(ctx, target, addr, p.pid(), tw)
	case "strace":
		return o.strace(ctx, target, addr, p.pid(), tw)
	case "cpu":
		return o.cpu(ctx, target, addr, p.pid(), tw)
	}
	return 0, fmt.Errorf("unknown mode %q (want callgrind, strace, cpu or pprof)", o.Mode)
}

// callgrind counts the instructions of N and of 2N requests, each from
// zeroed counters, Runs times, and of an idle spell as long as an N run.
// The difference of the two loads is N requests' worth with everything
// fixed (startup, warm-up, connection setup, the dump itself) cancelled;
// the idle spell shows what the process does on its own meanwhile. The
// figure is the mean over the runs: with the garbage collector on, a run
// moves by a percent or two with how many collections fall into it.
func (o PerRequestOptions) callgrind(ctx context.Context, target, addr string, pid int, tw io.Writer) (float64, error) {
	dump := 0
	measure := func(work func() (time.Duration, error)) (ir uint64, took time.Duration, err error) {
		if err := callgrindControl(ctx, "-z", pid); err != nil {
			return 0, 0, err
		}
		if took, err = work(); err != nil {
			return 0, 0, err
		}
		if err := callgrindControl(ctx, "-d", pid); err != nil {
			return 0, 0, err
		}
		dump++
		ir, err = callgrindTotal(filepath.Join(o.Dir, target, "callgrind.out."+strconv.Itoa(dump)))
		return ir, took, err
	}
	n := o.Requests
	var runs []string
	var sum float64
	var tookN time.Duration
	for range max(o.Runs, 1) {
		irN, took, err := measure(func() (time.Duration, error) { return o.load(ctx, addr, n) })
		if err != nil {
			return 0, err
		}
		ir2N, _, err := measure(func() (time.Duration, error) { return o.load(ctx, addr, 2*n) })
		if err != nil {
			return 0, err
		}
		perReq := float64(ir2N-irN) / float64(n)
		sum += perReq
		runs = append(runs, strconv.FormatFloat(perReq, 'f', 0, 64))
		tookN = took
	}
	irIdle, _, err := measure(func() (time.Duration, error) { return tookN, retry.Sleep(ctx, tookN) })
	if err != nil {
		return 0, err
	}
	mean := sum / float64(len(runs))
	fmt.Fprintf(tw, "%s\tinstructions/request, (Ir(2N)−Ir(N))/N, N=%d\t%.0f\t(runs: %s)\n", target, n, mean, strings.Join(runs, ", "))
	fmt.Fprintf(tw, "%s\tinstructions while idle as long as an N run (%s), per request\t%.0f\t\n", target, tookN.Round(time.Millisecond), float64(irIdle)/float64(n))
	return mean, nil
}

func callgrindControl(ctx context.Context, op string, pid int) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "callgrind_control", op, strconv.Itoa(pid)).CombinedOutput(); err != nil {
		return fmt.Errorf("callgrind_control %s: %w: %s", op, err, out)
	}
	return nil
}

// callgrindTotal reads the "totals:" line of a callgrind dump.
func callgrindTotal(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "totals: "); ok {
			return strconv.ParseUint(strings.Fields(v)[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("%s: no totals line", path)
}

// cpu is the process's CPU time (utime+stime, from /proc) over N requests,
// Runs times: the wall-clock counterpart of callgrind's figure, kernel
// included, and as noisy as the shared machine.
func (o PerRequestOptions) cpu(ctx context.Context, target, addr string, pid int, tw io.Writer) (float64, error) {
	var runs []string
	var sum float64
	for range max(o.Runs, 1) {
		before := treeCPU(pid)
		took, err := o.load(ctx, addr, o.Requests)
		if err != nil {
			return 0, err
		}
		us := float64((treeCPU(pid) - before).Microseconds()) / float64(o.Requests)
		sum += us
		runs = append(runs, fmt.Sprintf("%.1f µs (%.0f requests/s)", us, float64(o.Requests)/took.Seconds()))
	}
	mean := sum / float64(len(runs))
	fmt.Fprintf(tw, "%s\tCPU per request\t%.1f µs\t(runs: %s)\n", target, mean, strings.Join(runs, ", "))
	return mean, nil
}

// strace counts the syscalls of every thread of pid over N requests.
func (o PerRequestOptions) strace(ctx context.Context, target, addr string, pid int, tw io.Writer) (float64, error) {
	out := filepath.Join(o.Dir, target, "strace.txt")
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "strace", "-c", "-f", "-o", out, "-p", strconv.Itoa(pid))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("strace: %w", err)
	}
	// strace says when it has attached to the process's threads.
	attached := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			if !once && strings.Contains(sc.Text(), "attached") {
				once = true
				time.Sleep(200 * time.Millisecond) // the rest of the threads
				close(attached)
			}
		}
	}()
	select {
	case <-attached:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		return 0, errors.New("strace did not attach")
	}
	_, lerr := o.load(ctx, addr, o.Requests)
	_ = cmd.Process.Signal(os.Interrupt)
	_ = cmd.Wait()
	if lerr != nil {
		return 0, lerr
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return 0, err
	}
	var total float64
	var top []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[0] == "%" || strings.HasPrefix(f[0], "-") {
			continue
		}
		calls, err := strconv.ParseFloat(f[3], 64)
		if err != nil {
			continue
		}
		name := f[len(f)-1]
		if name == "total" {
			total = calls / float64(o.Requests)
			continue
		}
		if calls/float64(o.Requests) >= 0.01 {
			top = append(top, fmt.Sprintf("%s %.2f", name, calls/float64(o.Requests)))
		}
	}
	fmt.Fprintf(tw, "%s\tsyscalls/request\t%.2f\t%s\n", target, total, strings.Join(top, ", "))
	return total, nil
}

// pprofGateway runs the gateway in this process, configured as `switchyard
// gateway` runs by default, and profiles N requests: CPU, then allocations
// (every one sampled) and malloc counts over another N.
func (o PerRequestOptions) pprofGateway(ctx context.Context, src gateway.Source, tw io.Writer) error {
	dir := filepath.Join(o.Dir, "gateway")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(dir, "gateway.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	log := logrus.New()
	log.SetOutput(logf)
	access, err := gateway.OpenAccessLog(filepath.Join(dir, "access.log"), "json", gateway.AccessLogOptions{Log: log})
	if err != nil {
		return err
	}
	route, err := gateway.ParseRoute("/=hello")
	if err != nil {
		return err
	}
	g, err := gateway.New(gateway.Config{Listen: addr, Routes: []gateway.Route{route}, Source: src, Log: log, AccessLog: access})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	defer func() { cancel(); <-done }()
	err = retry.Until(ctx, time.Minute, func() (bool, error) {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			return false, nil
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		return err
	}
	if _, err := o.load(ctx, addr, o.Warmup); err != nil {
		return err
	}

	cpu, err := os.Create(filepath.Join(dir, "cpu.pprof"))
	if err != nil {
		return err
	}
	defer cpu.Close()
	if err := pprof.StartCPUProfile(cpu); err != nil {
		return err
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	peak := samplePeaks(100 * time.Millisecond)
	took, err := o.load(ctx, addr, o.Requests)
	mem := peak()
	runtime.ReadMemStats(&after)
	pprof.StopCPUProfile()
	if err != nil {
		return err
	}
	fmt.Fprintf(tw, "gateway\tin-process, largest sample under load: heap in use, stacks, goroutines\t%.1f MB, %.1f MB, %d\t\n",
		float64(mem.heap)/1e6, float64(mem.stack)/1e6, mem.goroutines)
	fmt.Fprintf(tw, "gateway\tin-process: mallocs/request, bytes/request, µs wall/request\t%.1f, %.0f, %.1f\t\n",
		float64(after.Mallocs-before.Mallocs)/float64(o.Requests), float64(after.TotalAlloc-before.TotalAlloc)/float64(o.Requests),
		float64(took.Microseconds())/float64(o.Requests))

	// A runtime/trace of a quarter as many requests: the scheduler's view.
	tracePath := filepath.Join(dir, "trace.out")
	tf, err := os.Create(tracePath)
	if err != nil {
		return err
	}
	defer tf.Close()
	if err := trace.Start(tf); err != nil {
		return err
	}
	_, err = o.load(ctx, addr, max(o.Requests/4, 1))
	trace.Stop()
	if err != nil {
		return err
	}
	if _, err := tf.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if err := traceSummary(bufio.NewReader(tf), tw); err != nil {
		return fmt.Errorf("read %s: %w", tracePath, err)
	}

	runtime.MemProfileRate = 1
	defer func() { runtime.MemProfileRate = 512 * 1024 }()
	runtime.GC()
	if err := writeProfile("allocs", filepath.Join(dir, "allocs-base.pprof")); err != nil {
		return err
	}
	if _, err := o.load(ctx, addr, o.Requests); err != nil {
		return err
	}
	runtime.GC()
	if err := writeProfile("allocs", filepath.Join(dir, "allocs.pprof")); err != nil {
		return err
	}
	fmt.Fprintf(tw, "gateway\tprofiles\t%s/{cpu,allocs,allocs-base}.pprof\t\n", dir)
	return nil
}

// peaks is the largest of each figure samplePeaks saw.
type peaks struct {
	heap, stack uint64 // HeapInuse, StackInuse
	goroutines  int
}

// samplePeaks reads the runtime's memory figures every interval (every)
// until the function it returns is called, which samples once more, for a
// load shorter than interval, and answers the largest of each.
func samplePeaks(interval time.Duration) func() peaks {
	var p peaks
	sample := func() {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		p = peaks{max(p.heap, ms.HeapInuse), max(p.stack, ms.StackInuse), max(p.goroutines, runtime.NumGoroutine())}
	}
	end := every(interval, sample)
	return func() peaks { end(); sample(); return p }
}

func writeProfile(name, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return pprof.Lookup(name).WriteTo(f, 0)
}
