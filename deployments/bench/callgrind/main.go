// Command callgrind measures what one proxied HTTP/1.1 keep-alive request
// costs the gateway and nginx, over a fixed number of requests:
// instructions under callgrind (the repeatable figure), syscalls under
// strace, or a pprof CPU and allocation profile of the gateway. See
// BENCHMARKS.md, "How each figure is measured", and callgrind.sh.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/switchyard/switchyard/deployments/bench"
)

func main() {
	var o bench.PerRequestOptions
	serve := flag.Bool("serve-backends", false, "serve the backends on the addresses given as arguments (used by the bench itself)")
	targets := flag.String("targets", "gateway,nginx", "comma-separated: gateway, nginx, caddy")
	flag.StringVar(&o.Bin, "bin", "bin/switchyard", "the switchyard binary (make build)")
	flag.IntVar(&o.Requests, "n", 20000, "requests of one measured load (callgrind also runs 2n)")
	flag.IntVar(&o.Runs, "runs", 3, "callgrind: how many times N and 2N are measured (the figure is the mean)")
	flag.IntVar(&o.Warmup, "warmup", 2000, "requests before anything is measured")
	flag.IntVar(&o.Conns, "c", 32, "keep-alive connections")
	flag.StringVar(&o.Mode, "mode", "callgrind", "callgrind, strace, cpu (from /proc, unwrapped), tail (latency distribution: nginx and the gateway with GC and GOMAXPROCS variants) or pprof (the gateway in this process)")
	flag.StringVar(&o.Proto, "proto", "h1", "what the clients speak: h1, https (HTTP/1.1 over TLS), h2 (over TLS, ALPN) or h2c (prior knowledge)")
	flag.IntVar(&o.Streams, "m", 10, "h2 and h2c: streams in flight per connection")
	flag.StringVar(&o.Caddy, "caddy", "", "the Caddy binary, for -targets caddy (deployments/install/bench-deps.sh builds it)")
	flag.StringVar(&o.Dir, "dir", "", "where logs, dumps and profiles go (default a new temp dir, kept)")
	env := flag.String("env", "", "comma-separated KEY=VALUE to add to the gateway's environment")
	args := flag.String("args", "", "space-separated flags to add to the gateway's command line")
	flag.Parse()
	if *env != "" {
		o.Env = strings.Split(*env, ",")
	}
	o.Args = strings.Fields(*args)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *serve {
		if err := bench.ServeBackends(ctx, flag.Args()); err != nil {
			fmt.Fprintln(os.Stderr, "backends:", err)
			os.Exit(1)
		}
		return
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "callgrind:", err)
		os.Exit(1)
	}
	if o.Bin, err = filepath.Abs(o.Bin); err != nil {
		fmt.Fprintln(os.Stderr, "callgrind:", err)
		os.Exit(1)
	}
	if o.Dir == "" {
		if o.Dir, err = os.MkdirTemp("", "switchyard-per-request-"); err != nil {
			fmt.Fprintln(os.Stderr, "callgrind:", err)
			os.Exit(1)
		}
	}
	o.Backend, o.Targets, o.Out = []string{self}, strings.Split(*targets, ","), os.Stdout
	fmt.Printf("mode %s, %d requests (h2load, %s, -c%d), output in %s\n", o.Mode, o.Requests, o.Proto, o.Conns, o.Dir)
	if err := bench.PerRequest(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "callgrind:", err)
		os.Exit(1)
	}
}
