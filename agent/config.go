// Package agent runs beside an application that does not embed the client
// SDK, in any language, and takes part in blue/green switches on its
// behalf: it runs the SDK for the application's address, answers the
// controller on a control port of its own, health-checks the application
// over HTTP, tells it its state through hooks, and, in supervise mode,
// starts and stops it. Traffic goes from the gateways to the application
// directly; the agent is never on the data path.
package agent

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	sdk "github.com/switchyard/switchyard/client-sdk"
	"github.com/switchyard/switchyard/zkstate"
)

// Config is what `switchyard agent` turns its flags into.
type Config struct {
	Service  string
	Color    zkstate.Color
	ID       string // default service-color-random, as the SDK's
	Version  string
	Protocol string // what the application speaks, as sdk.Config.Protocol

	// App is the application's base URL, http://host:port, where the agent
	// checks its health.
	App string
	// Health is the path on App that answers 2xx while the application can
	// serve; default "/".
	Health string
	// Advertise is host:port where gateways send the application's
	// traffic; default App's host and port.
	Advertise string
	// Listen is where the agent serves the controller's instructions, its
	// health gate and GET /v1/state; default the advertised host, port 0.
	// The controller reaches it at the advertised host and this port.
	Listen string

	ZK               []string
	ZKRoot           string
	ZKSessionTimeout time.Duration
	ZKAuth           zkstate.Auth
	Registry         sdk.Registry
	Token            string

	HeartbeatInterval time.Duration
	DrainTimeout      time.Duration // cap on waiting for the gateways at a drain
	// DrainGrace is how long requests that gateways sent before they
	// confirmed the drain get to finish before the agent deregisters and
	// stops the application; the agent cannot see them. Default 1s.
	DrainGrace time.Duration
	// StartupTimeout bounds the wait for the application's first healthy
	// answer; the agent registers only after it. Default 60s.
	StartupTimeout time.Duration
	HealthTimeout  time.Duration // one health check; default 2s

	// OnUp and OnOut are shell commands run when the instance goes UP and
	// when it leaves UP; Notify is a URL the new state is POSTed to.
	OnUp, OnOut, Notify string
	HookTimeout         time.Duration // one hook; default 10s

	// Command, when set, is the application to supervise: the agent starts
	// it, forwards signals to it, and stops it after draining.
	Command []string
	// StopTimeout is how long the supervised application gets to exit on
	// SIGTERM before SIGKILL. Default 10s.
	StopTimeout time.Duration

	Log logrus.FieldLogger
	// Ready, when set, is called with the control address once the agent
	// listens (the harness reads it from the log line instead).
	Ready func(control string)
}

// ErrConfig marks a configuration that cannot work; nothing was started.
var ErrConfig = errors.New("agent: bad configuration")

// check fills defaults and says what is wrong, before anything starts.
func (c *Config) check() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, a...))
	}
	if c.Service == "" {
		return bad("--service is required")
	}
	if _, err := zkstate.ParseColor([]byte(c.Color)); err != nil {
		return bad("--color: %v", err)
	}
	u, err := url.Parse(c.App)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Port() == "" {
		return bad("--app %q: want the application's URL with its port, like http://127.0.0.1:8080", c.App)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" {
		return bad("--app %q: give the base URL only; the health path goes in --health", c.App)
	}
	if c.Health == "" {
		c.Health = "/"
	}
	if !strings.HasPrefix(c.Health, "/") {
		return bad("--health %q: want a path starting with /", c.Health)
	}
	if c.Advertise == "" {
		c.Advertise = u.Host
	}
	host, port, err := splitHostPort(c.Advertise)
	if err != nil {
		return bad("--advertise %q: %v", c.Advertise, err)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return bad("advertised address %s is unspecified: gateways cannot reach it; set --advertise HOST:PORT", c.Advertise)
	}
	if c.Listen == "" {
		c.Listen = net.JoinHostPort(host, "0")
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return bad("--listen %q: %v", c.Listen, err)
	}
	_ = port
	if c.Registry == nil || len(c.ZK) == 0 {
		return bad("a registry and ZooKeeper servers are required")
	}
	if c.Token == "" {
		return bad("a token is required (SWITCHYARD_TOKEN, or the instance's own from `switchyard token instance ID`)")
	}
	if c.DrainGrace <= 0 {
		c.DrainGrace = time.Second
	}
	if c.StartupTimeout <= 0 {
		c.StartupTimeout = time.Minute
	}
	if c.HealthTimeout <= 0 {
		c.HealthTimeout = 2 * time.Second
	}
	if c.HookTimeout <= 0 {
		c.HookTimeout = 10 * time.Second
	}
	if c.StopTimeout <= 0 {
		c.StopTimeout = 10 * time.Second
	}
	if c.Notify != "" {
		if n, err := url.Parse(c.Notify); err != nil || (n.Scheme != "http" && n.Scheme != "https") || n.Host == "" {
			return bad("--notify %q: want an http:// URL", c.Notify)
		}
	}
	if c.Log == nil {
		c.Log = logrus.StandardLogger()
	}
	return nil
}

// healthURL is the application's health endpoint.
func (c *Config) healthURL() string {
	return strings.TrimSuffix(c.App, "/") + c.Health
}

// splitHostPort splits an advertised address and checks its port.
func splitHostPort(hp string) (string, int, error) {
	host, p, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port <= 0 || port > 65535 {
		return "", 0, fmt.Errorf("port %q out of range", p)
	}
	if host == "" {
		return "", 0, errors.New("no host")
	}
	return host, port, nil
}
