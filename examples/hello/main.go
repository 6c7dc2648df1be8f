// Command hello is switchyard's example service: an echo server that embeds
// the client SDK, answers GET / with who it is, and takes part in switches.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
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

func main() {
	var (
		color     = flag.String("color", "", "blue or green (required)")
		listen    = flag.String("listen", "127.0.0.1:0", "address to serve on")
		advertise = flag.String("advertise", "", "host gateways reach this instance at (default: the listen host)")
		service   = flag.String("service", "hello", "service name")
		version   = flag.String("version", "v1", "version to report")
		id        = flag.String("id", "", "instance id (default service-color-random)")
		zkAddr    = flag.String("zk", env("SWITCHYARD_ZK", "127.0.0.1:2181"), "ZooKeeper servers (SWITCHYARD_ZK)")
		regURL    = flag.String("registry", env("SWITCHYARD_REGISTRY", "http://127.0.0.1:8761"), "registry URL (SWITCHYARD_REGISTRY)")
		token     = flag.String("token", env("SWITCHYARD_TOKEN", ""), "shared secret (SWITCHYARD_TOKEN)")
		zkRoot    = flag.String("zk-root", env("SWITCHYARD_ZK_ROOT", "/"), "ZooKeeper root (SWITCHYARD_ZK_ROOT)")
		zkAuth    = flag.String("zk-auth", env("SWITCHYARD_ZK_AUTH", ""), "ZooKeeper digest user:password (SWITCHYARD_ZK_AUTH)")
		heartbeat = flag.Duration("heartbeat", time.Second, "registry heartbeat interval")
		session   = flag.Duration("zk-session-timeout", 10*time.Second, "ZooKeeper session timeout")
		drain     = flag.Duration("drain-timeout", 10*time.Second, "longest wait for gateways to stop sending at shutdown")
		healthy   = flag.Bool("healthy", true, "start healthy; SIGUSR1 toggles health, to rehearse a failing instance")
		slowCheck = flag.Duration("health-delay", 0, "answer health checks this much later, to rehearse a slow switch")
	)
	flag.Parse()
	log := logrus.StandardLogger()
	log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: "15:04:05.000"})
	var health atomic.Bool
	health.Store(*healthy)
	toggle := make(chan os.Signal, 1)
	signal.Notify(toggle, syscall.SIGUSR1)
	go func() {
		for range toggle {
			log.WithField("healthy", !health.Load()).Warn("health toggled by SIGUSR1")
			health.Store(!health.Load())
		}
	}()
	check := func(ctx context.Context) error {
		select {
		case <-time.After(*slowCheck):
		case <-ctx.Done():
			return ctx.Err()
		}
		if !health.Load() {
			return errors.New("unhealthy (toggled with SIGUSR1)")
		}
		return nil
	}
	auth, err := zkstate.ParseAuth(*zkAuth)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hello:", err)
		os.Exit(2)
	}
	if err := run(*color, *listen, *advertise, *service, *version, *id, *zkAddr, *regURL, *token, *zkRoot, auth, *heartbeat, *session, *drain, check, log); err != nil {
		fmt.Fprintln(os.Stderr, "hello:", err)
		os.Exit(1)
	}
}

func run(color, listen, advertise, service, version, id, zkAddr, regURL, token, zkRoot string, auth zkstate.Auth,
	heartbeat, session, drain time.Duration, health func(context.Context) error, log *logrus.Logger) error {
	reg, err := backends.Open(regURL, token)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	addr := ln.Addr().(*net.TCPAddr)
	host := advertise
	if host == "" {
		host = addr.IP.String()
		if addr.IP.IsUnspecified() {
			host = "127.0.0.1"
		}
	}
	inst, err := sdk.New(sdk.Config{
		Service: service, Color: zkstate.Color(color), ID: id, Version: version, Address: host, Port: addr.Port,
		ZK: strings.Split(zkAddr, ","), ZKRoot: zkRoot, ZKAuth: auth, ZKSessionTimeout: session,
		Registry: reg, Token: token, HeartbeatInterval: heartbeat, DrainTimeout: drain, Health: health, Log: log,
	})
	if err != nil {
		return err
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.Pre(sdkecho.Middleware(inst))
	e.GET("/*", func(c echo.Context) error {
		// ?sleep=50ms holds the request, to show draining in flight.
		if d, err := time.ParseDuration(c.QueryParam("sleep")); err == nil && d > 0 {
			select {
			case <-time.After(min(d, 10*time.Second)):
			case <-c.Request().Context().Done():
			}
		}
		c.Response().Header().Set("X-Switchyard-Color", color)
		return c.JSON(http.StatusOK, map[string]string{"service": service, "color": color, "instance": inst.ID(), "version": version})
	})
	// POST echoes the size and SHA-256 of its body, so a load can prove
	// that a body crossed the gateway intact.
	e.POST("/*", func(c echo.Context) error {
		h := sha256.New()
		n, err := io.Copy(h, http.MaxBytesReader(c.Response(), c.Request().Body, 1<<20))
		if err != nil {
			return echo.NewHTTPError(http.StatusRequestEntityTooLarge, "body over 1 MiB or unreadable: "+err.Error())
		}
		c.Response().Header().Set("X-Switchyard-Color", color)
		return c.JSON(http.StatusOK, map[string]any{"service": service, "color": color, "instance": inst.ID(), "version": version,
			"bytes": n, "sha256": hex.EncodeToString(h.Sum(nil))})
	})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The harness and scripts read the bound address from this line.
	fmt.Println("LISTEN " + net.JoinHostPort(addr.IP.String(), strconv.Itoa(addr.Port)) + " ID " + inst.ID())
	srv := &http.Server{Handler: e, ReadHeaderTimeout: 10 * time.Second}
	return inst.Serve(ctx, srv, ln)
}
