// Command hello-grpc is switchyard's example gRPC service. One port speaks
// gRPC over h2c (the standard health service and grpc-go's TestService as
// an echo) and HTTP/1.1 for the SDK's control endpoints, so a controller
// health-checks it and a gateway routes to it like any other instance.
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

	"github.com/sirupsen/logrus"

	sdk "github.com/switchyard/switchyard/client-sdk"
	"github.com/switchyard/switchyard/registry"
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
	healthy                                        bool
}

func main() {
	var (
		cfg    config
		zkAuth string
	)
	flag.StringVar(&cfg.color, "color", "", "blue or green (required)")
	flag.StringVar(&cfg.listen, "listen", "127.0.0.1:0", "address to serve on")
	flag.StringVar(&cfg.advertise, "advertise", "", "host gateways reach this instance at (default: the listen host)")
	flag.StringVar(&cfg.service, "service", "hello-grpc", "service name, also the gRPC health service name")
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
	flag.BoolVar(&cfg.healthy, "healthy", true, "start healthy; SIGUSR1 toggles health, to rehearse a failing instance")
	flag.Parse()
	var err error
	if cfg.zkAuth, err = zkstate.ParseAuth(zkAuth); err != nil {
		fmt.Fprintln(os.Stderr, "hello-grpc:", err)
		os.Exit(2)
	}
	log := logrus.StandardLogger()
	log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: "15:04:05.000"})
	if err := run(cfg, log); err != nil {
		fmt.Fprintln(os.Stderr, "hello-grpc:", err)
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
	var healthy atomic.Bool
	healthy.Store(cfg.healthy)
	inst, err := sdk.New(sdk.Config{
		Service: cfg.service, Color: zkstate.Color(cfg.color), ID: cfg.id, Version: cfg.version, Address: host, Port: addr.Port,
		Protocol: registry.ProtocolH2C,
		ZK:       strings.Split(cfg.zk, ","), ZKRoot: cfg.zkRoot, ZKAuth: cfg.zkAuth, ZKSessionTimeout: cfg.session,
		Registry: reg, Token: cfg.token, HeartbeatInterval: cfg.heartbeat, DrainTimeout: cfg.drain, Log: log,
		Health: func(context.Context) error {
			if !healthy.Load() {
				return errors.New("unhealthy (toggled with SIGUSR1)")
			}
			return nil
		},
	})
	if err != nil {
		return err
	}

	// Streams (a health Watch, a bidi echo) never end by themselves: they
	// end on this signal, once the SDK has drained the gateways.
	shutdown, closing := context.WithCancel(context.Background())
	defer closing()
	svc := newServer(cfg.service, cfg.color, cfg.version, inst.ID(), shutdown)
	defer svc.grpc.Stop()
	if !cfg.healthy {
		svc.setServing(false)
	}
	toggle := make(chan os.Signal, 1)
	signal.Notify(toggle, syscall.SIGUSR1)
	go func() {
		for range toggle {
			now := !healthy.Load()
			healthy.Store(now)
			svc.setServing(now)
			log.WithField("healthy", now).Warn("health toggled by SIGUSR1")
		}
	}()

	// One port, two protocols: gRPC arrives as HTTP/2 with prior
	// knowledge; the controller's health checks and instructions as
	// HTTP/1.1. Shutdown sends every HTTP/2 connection a GOAWAY. The SDK's
	// handler wraps gRPC calls too: it counts them in flight for the
	// drain, and the Connection: close it sets while the instance is out
	// of service becomes a GOAWAY on HTTP/2, which moves the client's
	// connection elsewhere.
	srv := &http.Server{Handler: inst.Handler(svc), ReadHeaderTimeout: 10 * time.Second, Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	srv.RegisterOnShutdown(closing)

	sig, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// gRPC health goes NOT_SERVING before the SDK starts draining, so that
	// gRPC-aware clients and balancers move away as early as possible.
	ctx, drain := context.WithCancel(context.Background())
	defer drain()
	stopDrain := context.AfterFunc(sig, func() {
		svc.health.Shutdown()
		log.Info("gRPC health is NOT_SERVING; draining")
		drain()
	})
	defer stopDrain()
	// The harness and scripts read the bound address from this line.
	fmt.Println("LISTEN " + net.JoinHostPort(addr.IP.String(), strconv.Itoa(addr.Port)) + " ID " + inst.ID())
	return inst.Serve(ctx, srv, ln)
}
