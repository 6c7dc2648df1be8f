package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"

	sdk "github.com/switchyard/switchyard/client-sdk"
	"github.com/switchyard/switchyard/internal/retry"
	"github.com/switchyard/switchyard/registry"
)

// ExitError is how Run ends when the supervised application exited on its
// own: the agent has already removed the instance, and exits with Code.
type ExitError struct{ Code int }

func (e *ExitError) Error() string {
	return fmt.Sprintf("agent: the application exited with code %d", e.Code)
}

// Run takes part in switches for the application until ctx ends, then
// drains it out of traffic, deregisters, and stops the application it
// supervises. It returns an error when the application never became
// healthy, when it could not register (a wrong token), or, as *ExitError,
// when the supervised application exited by itself.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.check(); err != nil {
		return err
	}
	host, port, _ := splitHostPort(cfg.Advertise)
	log := cfg.Log.WithFields(logrus.Fields{"service": cfg.Service, "color": cfg.Color, "app": cfg.App})
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("agent: listen for the controller on %s: %w", cfg.Listen, err)
	}
	defer ln.Close()
	controlPort := ln.Addr().(*net.TCPAddr).Port
	if controlPort == port && (ln.Addr().(*net.TCPAddr).IP.IsUnspecified() || ln.Addr().(*net.TCPAddr).IP.String() == host) {
		return fmt.Errorf("%w: --listen %s is the application's own address", ErrConfig, cfg.Listen)
	}

	health := sdk.HTTPHealth(cfg.healthURL(), cfg.HealthTimeout)
	// The SDK checks the rest of the configuration (the token among it)
	// before anything starts.
	inst, err := sdk.New(sdk.Config{
		Service: cfg.Service, Color: cfg.Color, ID: cfg.ID, Version: cfg.Version, Protocol: cfg.Protocol,
		Address: host, Port: port, ControlPort: controlPort,
		ZK: cfg.ZK, ZKRoot: cfg.ZKRoot, ZKSessionTimeout: cfg.ZKSessionTimeout, ZKAuth: cfg.ZKAuth,
		Registry: cfg.Registry, Token: cfg.Token, HeartbeatInterval: cfg.HeartbeatInterval, DrainTimeout: cfg.DrainTimeout,
		Health: health, Log: cfg.Log,
	})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}

	var app *child
	if len(cfg.Command) > 0 {
		if app, err = startChild(cfg.Command, log); err != nil {
			return err
		}
		stop := forwardSignals(app, log)
		defer stop()
	}
	// stopApp stops the supervised application, if any, when Run fails
	// before the instance is registered: nothing points at it yet.
	stopApp := func() {
		if app != nil {
			app.stop(cfg.StopTimeout)
		}
	}

	if err := waitHealthy(ctx, cfg, health, app, log); err != nil {
		stopApp()
		return err
	}
	log = log.WithField("instance", inst.ID())
	if err := inst.Start(ctx); err != nil {
		stopApp()
		if errors.Is(err, registry.ErrUnauthorized) {
			return fmt.Errorf("agent: the registry refused the token: check SWITCHYARD_TOKEN, or that the instance token was made for id %q: %w", inst.ID(), err)
		}
		return fmt.Errorf("agent: %w", err)
	}

	control := net.JoinHostPort(host, strconv.Itoa(controlPort))
	mux := http.NewServeMux()
	mux.Handle(sdk.ControlPrefix, inst.ControlHandler())
	mux.HandleFunc("GET /v1/state", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(stateOf(cfg, inst.ID(), inst.Status()))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	hctx, endHooks := context.WithCancel(context.Background())
	hooksDone := make(chan struct{})
	go func() {
		defer close(hooksDone)
		runHooks(cfg, inst.ID(), inst.States(hctx), log)
	}()
	// The hooks see every state up to the end, the drain's OUT_OF_SERVICE
	// included, and get their timeout to finish.
	defer func() {
		endHooks()
		select {
		case <-hooksDone:
		case <-time.After(cfg.HookTimeout):
		}
	}()

	log.WithFields(logrus.Fields{"advertise": cfg.Advertise, "control": control}).
		Info("agent running: the application is registered OUT_OF_SERVICE; the controller reaches the agent at the control address")
	if cfg.Ready != nil {
		cfg.Ready(control)
	}

	select {
	case <-ctx.Done():
		return shutdown(cfg, inst, srv, app, log)
	case <-app.exitedC():
		code := app.code
		log.WithField("code", code).Error("the application exited; deregistering at once so that no gateway sends to it")
		lctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := inst.Leave(lctx); err != nil {
			log.WithError(err).Warn("could not remove the instance everywhere; its lease and ZooKeeper session will")
		}
		_ = srv.Close()
		return &ExitError{Code: code}
	case err := <-served:
		log.WithError(err).Error("the control endpoint stopped; leaving")
		lctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = inst.Shutdown(lctx, nil)
		if app != nil {
			app.stop(cfg.StopTimeout)
		}
		return fmt.Errorf("agent: serve the control endpoint: %w", err)
	}
}

// shutdown drains the instance out of traffic, gives requests already
// sent their grace, deregisters, and only then stops the application.
func shutdown(cfg Config, inst *sdk.Instance, srv *http.Server, app *child, log logrus.FieldLogger) error {
	log.Info("stopping: draining the application out of traffic before anything stops")
	ctx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout+cfg.DrainGrace+30*time.Second)
	defer cancel()
	var errs []error
	if err := inst.Drain(ctx); err != nil {
		errs = append(errs, err)
	}
	// The gateways send nothing new; what they sent before may still be
	// running in the application, where the agent cannot count it.
	select {
	case <-time.After(cfg.DrainGrace):
	case <-app.exitedC():
		log.WithField("code", app.code).Warn("the application exited while draining")
	}
	if err := inst.Shutdown(ctx, srv); err != nil {
		errs = append(errs, err)
	}
	if app != nil {
		if err := app.stop(cfg.StopTimeout); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("agent: stop: %w", err)
	}
	return nil
}

// waitHealthy waits until the application answers its health check, for
// at most StartupTimeout: the agent never registers an application that
// does not come up.
func waitHealthy(ctx context.Context, cfg Config, health func(context.Context) error, app *child, log logrus.FieldLogger) error {
	log.WithField("health", cfg.healthURL()).Info("waiting for the application to answer its health check before registering")
	var last error
	err := retry.Until(ctx, cfg.StartupTimeout, func() (bool, error) {
		select {
		case <-app.exitedC():
			return true, &ExitError{Code: app.code}
		default:
		}
		last = health(ctx)
		return last == nil, nil
	})
	var ee *ExitError
	switch {
	case errors.As(err, &ee):
		log.WithField("code", ee.Code).Error("the application exited before it became healthy; nothing was registered")
		return ee
	case err != nil && ctx.Err() != nil:
		return fmt.Errorf("agent: stopped before the application became healthy; nothing was registered: %w", ctx.Err())
	case err != nil:
		log.WithError(last).Error("the application never became healthy; nothing was registered")
		return fmt.Errorf("agent: the application did not become healthy within %s (last check: %v); nothing was registered", cfg.StartupTimeout, last)
	}
	return nil
}

// State is what GET /v1/state answers and --notify POSTs.
type State struct {
	ID        string          `json:"id"`
	Service   string          `json:"service"`
	Color     string          `json:"color"`
	Status    registry.Status `json:"status"`
	App       string          `json:"app"`
	Advertise string          `json:"advertise"`
}

func stateOf(cfg Config, id string, st registry.Status) State {
	return State{ID: id, Service: cfg.Service, Color: string(cfg.Color), Status: st, App: cfg.App, Advertise: cfg.Advertise}
}
