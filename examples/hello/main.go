// Command hello is switchyard's example service: an echo server that embeds
// the client SDK, answers GET / with who it is, and takes part in switches.
// Beside plain requests it serves what an edge router must carry through a
// switch: a WebSocket echo, a Server-Sent Events stream, slow answers and
// chosen status codes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/sirupsen/logrus"

	sdk "github.com/switchyard/switchyard/client-sdk"
	"github.com/switchyard/switchyard/client-sdk/sdkecho"
	"github.com/switchyard/switchyard/registry/backends"
	"github.com/switchyard/switchyard/zkstate"
)

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// config is what the flags and environment say.
type config struct {
	color, listen, advertise, service, version, id string
	zk, registry, token, zkRoot                    string
	zkAuth                                         zkstate.Auth
	heartbeat, session, drain                      time.Duration
	health                                         func(context.Context) error
	// failRatio and latency make a bad release to rehearse the
	// controller's post-switch analysis with.
	failRatio float64
	latency   time.Duration
}

func main() {
	var (
		cfg       config
		zkAuth    string
		healthy   bool
		slowCheck time.Duration
	)
	flag.StringVar(&cfg.color, "color", "", "blue or green (required)")
	flag.StringVar(&cfg.listen, "listen", "127.0.0.1:0", "address to serve on")
	flag.StringVar(&cfg.advertise, "advertise", "", "host gateways reach this instance at (default: the listen host)")
	flag.StringVar(&cfg.service, "service", "hello", "service name")
	flag.StringVar(&cfg.version, "version", "v1", "version to report")
	flag.StringVar(&cfg.id, "id", "", "instance id (default service-color-random)")
	flag.StringVar(&cfg.zk, "zk", env("SWITCHYARD_ZK", "127.0.0.1:2181"), "ZooKeeper servers (SWITCHYARD_ZK)")
	flag.StringVar(&cfg.registry, "registry", env("SWITCHYARD_REGISTRY", "http://127.0.0.1:8761"), "registry URL (SWITCHYARD_REGISTRY)")
	flag.StringVar(&cfg.token, "token", env("SWITCHYARD_TOKEN", ""), "shared secret (SWITCHYARD_TOKEN)")
	flag.StringVar(&cfg.zkRoot, "zk-root", env("SWITCHYARD_ZK_ROOT", "/"), "ZooKeeper root (SWITCHYARD_ZK_ROOT)")
	flag.StringVar(&zkAuth, "zk-auth", env("SWITCHYARD_ZK_AUTH", ""), "ZooKeeper digest user:password (SWITCHYARD_ZK_AUTH)")
	flag.DurationVar(&cfg.heartbeat, "heartbeat", time.Second, "registry heartbeat interval")
	flag.DurationVar(&cfg.session, "zk-session-timeout", 10*time.Second, "ZooKeeper session timeout")
	flag.DurationVar(&cfg.drain, "drain-timeout", 10*time.Second, "longest wait for gateways to stop sending at shutdown")
	flag.BoolVar(&healthy, "healthy", true, "start healthy; SIGUSR1 toggles health, to rehearse a failing instance")
	flag.DurationVar(&slowCheck, "health-delay", 0, "answer health checks this much later, to rehearse a slow switch")
	flag.Float64Var(&cfg.failRatio, "fail-ratio", 0, "answer this share (0 to 1) of requests with 500, to rehearse a bad release; health checks still pass")
	flag.DurationVar(&cfg.latency, "latency", 0, "answer every request this much later, to rehearse a slow release")
	flag.Parse()
	if cfg.failRatio < 0 || cfg.failRatio > 1 {
		fmt.Fprintln(os.Stderr, "hello: --fail-ratio must be between 0 and 1")
		os.Exit(2)
	}
	log := logrus.StandardLogger()
	log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: "15:04:05.000"})
	var health atomic.Bool
	health.Store(healthy)
	toggle := make(chan os.Signal, 1)
	signal.Notify(toggle, syscall.SIGUSR1)
	go func() {
		for range toggle {
			log.WithField("healthy", !health.Load()).Warn("health toggled by SIGUSR1")
			health.Store(!health.Load())
		}
	}()
	cfg.health = func(ctx context.Context) error {
		select {
		case <-time.After(slowCheck):
		case <-ctx.Done():
			return ctx.Err()
		}
		if !health.Load() {
			return errors.New("unhealthy (toggled with SIGUSR1)")
		}
		return nil
	}
	var err error
	if cfg.zkAuth, err = zkstate.ParseAuth(zkAuth); err != nil {
		fmt.Fprintln(os.Stderr, "hello:", err)
		os.Exit(2)
	}
	if err := run(cfg, log); err != nil {
		fmt.Fprintln(os.Stderr, "hello:", err)
		os.Exit(1)
	}
}

func run(cfg config, log *logrus.Logger) error {
	reg, err := backends.Open(cfg.registry, cfg.token)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return err
	}
	addr := ln.Addr().(*net.TCPAddr)
	host := cfg.advertise
	if host == "" {
		host = addr.IP.String()
		if addr.IP.IsUnspecified() {
			host = "127.0.0.1"
		}
	}
	inst, err := sdk.New(sdk.Config{
		Service: cfg.service, Color: zkstate.Color(cfg.color), ID: cfg.id, Version: cfg.version, Address: host, Port: addr.Port,
		ZK: strings.Split(cfg.zk, ","), ZKRoot: cfg.zkRoot, ZKAuth: cfg.zkAuth, ZKSessionTimeout: cfg.session,
		Registry: reg, Token: cfg.token, HeartbeatInterval: cfg.heartbeat, DrainTimeout: cfg.drain, Health: cfg.health, Log: log,
	})
	if err != nil {
		return err
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second}
	// WebSockets and event streams never end by themselves, and Shutdown
	// does not wait for hijacked connections: they end on this signal,
	// once the SDK has drained the gateways.
	shutdown, closing := context.WithCancel(context.Background())
	defer closing()
	srv.RegisterOnShutdown(closing)
	srv.Handler = newHandler(inst, &app{service: cfg.service, color: cfg.color, version: cfg.version, id: inst.ID(), shutdown: shutdown,
		failRatio: cfg.failRatio, latency: cfg.latency})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The harness and scripts read the bound address from this line.
	fmt.Println("LISTEN " + net.JoinHostPort(addr.IP.String(), strconv.Itoa(addr.Port)) + " ID " + inst.ID())
	return inst.Serve(ctx, srv, ln)
}

// newHandler serves the SDK's control endpoints before echo's router, and
// app's routes, each answer naming the color.
func newHandler(inst *sdk.Instance, a *app) http.Handler {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.Pre(sdkecho.Middleware(inst))
	e.Use(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			c.Response().Header().Set("X-Switchyard-Color", a.color)
			return next(c)
		}
	})
	e.Use(a.rehearse)
	a.routes(e)
	return e
}
