// Package sdk is what a service embeds to take part in blue/green switches:
// it registers the instance OUT_OF_SERVICE, announces it in ZooKeeper under
// its color, heartbeats, applies the controller's UP and OUT_OF_SERVICE
// instructions in the registry, and drains gracefully on shutdown.
package sdk

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/internal/retry"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/signing"
	"github.com/switchyard/switchyard/zkstate"
)

// Paths under which the SDK serves its control endpoints on the service's
// own port. The gateway never proxies this prefix.
const (
	ControlPrefix = "/_switchyard/"
	HealthPath    = ControlPrefix + "health"
	StatusPath    = ControlPrefix + "status"
)

// Registry is what the SDK needs of a registry backend.
type Registry interface {
	Register(ctx context.Context, inst registry.Instance) error
	Heartbeat(ctx context.Context, id string) error
	SetStatus(ctx context.Context, id string, status registry.Status) (uint64, error)
	Deregister(ctx context.Context, id string) error
	Gateways(ctx context.Context) ([]registry.GatewayReport, error)
}

// Config describes the instance.
type Config struct {
	Service string
	Color   zkstate.Color
	ID      string // default: service-color-random
	Version string
	Address string // advertised host, reachable by gateways and controllers
	Port    int    // advertised port, where gateways send traffic
	// ControlPort is the port on Address where the controller reaches this
	// SDK's control endpoints (ControlHandler), when they are not served on
	// Port with the traffic: `switchyard agent` runs the SDK beside an
	// application that does not embed it. 0 means Port.
	ControlPort int
	// Protocol is what the service speaks on Port, announced to gateways:
	// registry.ProtocolHTTP1 (the default) or registry.ProtocolH2C for a
	// server that takes HTTP/2 with prior knowledge, such as gRPC.
	Protocol string

	ZK               []string
	ZKRoot           string
	ZKSessionTimeout time.Duration // default 10s
	ZKAuth           zkstate.Auth  // digest credentials, when the ensemble is locked

	Registry Registry
	// Token is the shared secret ("current[,previous]" during a key
	// rotation), or, better, this instance's own token from `switchyard
	// token instance ID`, which needs ID set. Either verifies the
	// controller's instructions to this instance and authenticates its
	// registry calls; an instance token can act for this instance only.
	Token             string
	HeartbeatInterval time.Duration // default 1s
	DrainTimeout      time.Duration // cap on waiting for gateways at shutdown; default 10s
	// Health reports whether the instance can serve; nil means always.
	// HTTPHealth checks an application's URL.
	Health func(context.Context) error
	Log    logrus.FieldLogger
}

// Instance is a running, registered service instance.
type Instance struct {
	cfg      Config
	paths    zkstate.Paths
	log      logrus.FieldLogger
	verifier *signing.Verifier
	// epoch is the newest leader epoch an accepted instruction carried;
	// an instruction from an older leader is refused.
	epoch atomic.Int64

	status   atomic.Value // registry.Status the registry last confirmed
	desired  atomic.Value // registry.Status the controller last asked for
	draining atomic.Bool
	stopping atomic.Bool
	inflight sync.WaitGroup
	states   watchers // the host program's States channels

	drainMu  sync.Mutex // one drain, whether Drain or Shutdown asks first
	drained  bool
	drainErr error

	regMu sync.Mutex // serialises registry writes: instructions, re-registration
	zk    *zk.Conn
	stop  context.CancelFunc
	done  chan struct{}
}

// New checks cfg and returns an instance that has not started yet.
func New(cfg Config) (*Instance, error) {
	if _, err := zkstate.ParseColor([]byte(cfg.Color)); err != nil {
		return nil, fmt.Errorf("sdk: %w", err)
	}
	if cfg.Service == "" || cfg.Address == "" || cfg.Port <= 0 || cfg.Port > 65535 {
		return nil, errors.New("sdk: service, address and port are required")
	}
	if cfg.ControlPort < 0 || cfg.ControlPort > 65535 {
		return nil, fmt.Errorf("sdk: control port %d out of range", cfg.ControlPort)
	}
	if cfg.ControlPort == cfg.Port {
		cfg.ControlPort = 0
	}
	if cfg.Registry == nil || len(cfg.ZK) == 0 {
		return nil, errors.New("sdk: a registry and ZooKeeper servers are required")
	}
	if _, err := signing.ParseKeys(cfg.Token); err != nil {
		return nil, fmt.Errorf("sdk: a token is required to verify the controller's instructions: %w", err)
	}
	if strings.HasPrefix(cfg.Token, registry.InstancePrefix) && cfg.ID == "" {
		return nil, errors.New("sdk: an instance token is made for one instance id: set ID to it")
	}
	paths, err := zkstate.NewPaths(cfg.ZKRoot)
	if err != nil {
		return nil, fmt.Errorf("sdk: %w", err)
	}
	if cfg.ID == "" {
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		cfg.ID = fmt.Sprintf("%s-%s-%s", cfg.Service, cfg.Color, hex.EncodeToString(b))
	}
	if err := registry.CheckName("instance id", cfg.ID); err != nil {
		return nil, fmt.Errorf("sdk: %w", err)
	}
	if err := registry.CheckName("service", cfg.Service); err != nil {
		return nil, fmt.Errorf("sdk: %w", err)
	}
	if p := cfg.Protocol; p != "" && p != registry.ProtocolHTTP1 && p != registry.ProtocolH2C {
		return nil, fmt.Errorf("sdk: protocol must be %q or %q, not %q", registry.ProtocolHTTP1, registry.ProtocolH2C, p)
	}
	if cfg.ZKSessionTimeout <= 0 {
		cfg.ZKSessionTimeout = 10 * time.Second
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = time.Second
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = logrus.StandardLogger()
	}
	// Instructions are signed with this instance's own key.
	keys, err := signing.ParseKeys(registry.InstanceTokens(cfg.Token, cfg.ID))
	if err != nil {
		return nil, fmt.Errorf("sdk: a token is required to verify the controller's instructions: %w", err)
	}
	i := &Instance{cfg: cfg, paths: paths, verifier: signing.NewVerifier(keys, 0), done: make(chan struct{})}
	i.log = cfg.Log.WithFields(logrus.Fields{"instance": cfg.ID, "service": cfg.Service, "color": cfg.Color})
	i.status.Store(registry.StatusOutOfService)
	i.desired.Store(registry.StatusOutOfService)
	i.states.last = registry.StatusOutOfService
	return i, nil
}

// ID is the instance's id.
func (i *Instance) ID() string { return i.cfg.ID }

// Status is the status the registry last confirmed.
func (i *Instance) Status() registry.Status { return i.status.Load().(registry.Status) }

func (i *Instance) record() registry.Instance {
	return registry.Instance{
		ID: i.cfg.ID, Service: i.cfg.Service, Color: string(i.cfg.Color), Version: i.cfg.Version,
		Address: i.cfg.Address, Port: i.cfg.Port, Status: i.Status(), Protocol: i.cfg.Protocol,
		ControlPort: i.cfg.ControlPort,
	}
}

// Start registers the instance OUT_OF_SERVICE, creates its ephemeral node
// and keeps both alive until Shutdown. When it fails after the
// registration, it deregisters: the registration must not wait for its
// lease to run out.
func (i *Instance) Start(ctx context.Context) error {
	if err := i.cfg.Registry.Register(ctx, i.record()); err != nil {
		return fmt.Errorf("sdk: register %s: %w", i.cfg.ID, err)
	}
	undo := func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = i.cfg.Registry.Deregister(dctx, i.cfg.ID)
	}
	conn, events, err := zkstate.Connect(ctx, i.cfg.ZK, i.cfg.ZKSessionTimeout, i.cfg.ZKAuth, zkLogger{i.log})
	if err != nil {
		undo()
		return fmt.Errorf("sdk: %w", err)
	}
	i.zk = conn
	if err := i.ensureNode(); err != nil {
		conn.Close()
		undo()
		return err
	}
	bg, cancel := context.WithCancel(context.Background())
	i.stop = cancel
	go i.heartbeat(bg)
	go i.watchSession(bg, events)
	i.log.WithField("address", net.JoinHostPort(i.cfg.Address, fmt.Sprint(i.cfg.Port))).Info("instance registered OUT_OF_SERVICE and announced in ZooKeeper")
	return nil
}

func (i *Instance) nodeData() []byte {
	b, _ := json.Marshal(zkstate.InstanceNode{
		Service: i.cfg.Service, ID: i.cfg.ID, Address: i.cfg.Address, Port: i.cfg.Port,
		Version: i.cfg.Version, StartedAt: time.Now().UTC(), ControlPort: i.cfg.ControlPort,
	})
	return b
}

// ensureNode creates the ephemeral node unless this session has it.
func (i *Instance) ensureNode() error {
	for _, p := range i.paths.Persistent() {
		if err := zkstate.EnsurePath(i.zk, p, i.cfg.ZKAuth.ACL()); err != nil {
			return fmt.Errorf("sdk: %w", err)
		}
	}
	p := i.paths.Instance(i.cfg.Color, i.cfg.ID)
	_, err := i.zk.Create(p, i.nodeData(), zk.FlagEphemeral, i.cfg.ZKAuth.ACL())
	if errors.Is(err, zk.ErrNodeExists) {
		_, stat, gerr := i.zk.Get(p)
		if gerr == nil && stat.EphemeralOwner == i.zk.SessionID() {
			return nil
		}
		return fmt.Errorf("sdk: %s exists and belongs to another session (duplicate instance id?)", p)
	}
	if err != nil {
		return fmt.Errorf("sdk: create %s: %w", p, err)
	}
	return nil
}

// watchSession recreates the node after the session expired: the library
// reconnects with a new session, and the old ephemeral node is gone.
func (i *Instance) watchSession(ctx context.Context, events <-chan zk.Event) {
	expired := false
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			switch ev.State {
			case zk.StateExpired:
				expired = true
				i.log.Warn("ZooKeeper session expired; the node will be recreated on the new session")
			case zk.StateHasSession:
				if !expired || i.draining.Load() {
					continue
				}
				if err := i.ensureNode(); err != nil {
					i.log.WithError(err).Error("could not recreate the instance node")
					continue
				}
				expired = false
				i.log.Info("instance node recreated on the new ZooKeeper session")
			}
		}
	}
}

func (i *Instance) heartbeat(ctx context.Context) {
	first := time.NewTimer(i.untilFirstBeat(time.Now()))
	defer first.Stop()
	select {
	case <-ctx.Done():
		return
	case <-first.C:
	}
	t := time.NewTicker(i.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		i.beat(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// heartbeatBatcher is implemented by registry clients that send the
// heartbeats due at once in one request (registry.Client does).
type heartbeatBatcher interface{ BatchesHeartbeats() bool }

// processPhase is where in its interval every instance of this process
// beats when its registry client batches heartbeats. Instances that share
// a client then beat together and cost the registry one request, while
// each process draws its own phase, so a fleet still spreads its
// heartbeats over the interval.
var processPhase = mrand.Float64()

// untilFirstBeat is how long after now the first heartbeat is due: at the
// process's phase with a batching client, one interval later otherwise.
// Either way it is at most one interval, well within the lease.
func (i *Instance) untilFirstBeat(now time.Time) time.Duration {
	iv := i.cfg.HeartbeatInterval
	if b, ok := i.cfg.Registry.(heartbeatBatcher); !ok || !b.BatchesHeartbeats() {
		return iv
	}
	at := now.Truncate(iv).Add(time.Duration(processPhase * float64(iv)))
	for !at.After(now) {
		at = at.Add(iv)
	}
	return at.Sub(now)
}

// beat renews the lease once, registering again if the registry lost it.
func (i *Instance) beat(ctx context.Context) {
	hctx, cancel := context.WithTimeout(ctx, i.cfg.HeartbeatInterval*3)
	defer cancel()
	err := i.cfg.Registry.Heartbeat(hctx, i.cfg.ID)
	if errors.Is(err, registry.ErrNotFound) {
		// The registry lost us (a restart, or our lease ran out): register
		// again with the status it last confirmed, so routing is restored.
		i.regMu.Lock()
		err = i.cfg.Registry.Register(hctx, i.record())
		i.regMu.Unlock()
		if err == nil {
			i.log.WithField("status", i.Status()).Info("registered again after the registry forgot the instance")
		}
	}
	if err == nil {
		i.reportHealth(hctx)
	}
	if err != nil && ctx.Err() == nil {
		i.log.WithError(err).Warn("heartbeat failed; retrying")
	}
}

// healthChecker is implemented by registries that check instance health
// themselves (Consul's agent does), where the SDK must not report it.
type healthChecker interface{ ChecksHealth() bool }

// reportHealth keeps the registry status honest, as Eureka's health-check
// handler does: DOWN while the service's health function fails although
// the controller wants it UP, and UP again once it recovers.
func (i *Instance) reportHealth(ctx context.Context) {
	if i.cfg.Health == nil || i.draining.Load() {
		return
	}
	if hc, ok := i.cfg.Registry.(healthChecker); ok && hc.ChecksHealth() {
		return
	}
	herr := i.cfg.Health(ctx)
	i.regMu.Lock()
	defer i.regMu.Unlock()
	want := i.desired.Load().(registry.Status)
	if herr != nil && want == registry.StatusUp {
		want = registry.StatusDown
	}
	if want == i.Status() {
		return
	}
	if _, err := i.apply(ctx, want); err != nil {
		i.log.WithError(err).Warn("could not report health to the registry; retrying")
		return
	}
	if herr != nil {
		i.log.WithError(herr).Warn("health check failing; reported DOWN, out of routing until it recovers")
	} else {
		i.log.Info("health check passing again; reported UP")
	}
}

// SetStatus makes st the wanted status and applies it in the registry,
// returning the index at which it is visible. The registry's status is only
// remembered once the registry confirmed it.
func (i *Instance) SetStatus(ctx context.Context, st registry.Status) (uint64, error) {
	i.regMu.Lock()
	defer i.regMu.Unlock()
	i.desired.Store(st)
	return i.apply(ctx, st)
}

// apply writes st to the registry, for the switch ctx names if any;
// callers hold regMu.
func (i *Instance) apply(ctx context.Context, st registry.Status) (uint64, error) {
	idx, err := i.cfg.Registry.SetStatus(ctx, i.cfg.ID, st)
	if errors.Is(err, registry.ErrNotFound) {
		// Registering with st already makes the SetStatus below a no-op,
		// so the registration carries the switch itself: ctx names it.
		inst := i.record()
		inst.Status = st
		if err = i.cfg.Registry.Register(ctx, inst); err == nil {
			idx, err = i.cfg.Registry.SetStatus(ctx, i.cfg.ID, st)
		}
	}
	if err != nil {
		return 0, fmt.Errorf("set status of %s to %s: %w", i.cfg.ID, st, err)
	}
	i.status.Store(st)
	i.states.publish(st)
	return idx, nil
}

// Handler wraps a service's handler: it serves the control endpoints, sends
// Connection: close while the instance is out of service so keep-alive
// clients move elsewhere, and counts requests in flight for the drain.
func (i *Instance) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, ControlPrefix) {
			i.control(w, r)
			return
		}
		i.inflight.Add(1)
		defer i.inflight.Done()
		if i.Status() != registry.StatusUp || i.draining.Load() {
			w.Header().Set("Connection", "close")
		}
		next.ServeHTTP(w, r)
	})
}

// ControlHandler serves only the control endpoints, on a port of their own
// (Config.ControlPort), for a program that runs the SDK beside an
// application instead of inside it, as `switchyard agent` does.
func (i *Instance) ControlHandler() http.Handler { return http.HandlerFunc(i.control) }

func (i *Instance) control(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == HealthPath && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		i.health(w, r)
	case r.URL.Path == StatusPath && r.Method == http.MethodPut:
		i.instruction(w, r)
	case r.URL.Path == StatusPath && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, map[string]any{"id": i.cfg.ID, "color": i.cfg.Color, "status": i.Status()})
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such control endpoint"})
	}
}

func (i *Instance) health(w http.ResponseWriter, r *http.Request) {
	if i.draining.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "draining"})
		return
	}
	if i.cfg.Health != nil {
		if err := i.cfg.Health(r.Context()); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unhealthy", "error": err.Error()})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "id": i.cfg.ID, "color": i.cfg.Color, "registry_status": i.Status()})
}

// instruction applies a controller's PUT {"status": "UP"} and answers only
// once the registry confirmed it, with the index to wait for. It must be
// signed for this very instance, within the replay window, by a leader no
// older than the newest one heard from.
func (i *Instance) instruction(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4096))
	if err != nil {
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "instruction body over 4 KiB or unreadable"})
		return
	}
	claims, err := i.verifier.Verify(r, body)
	if err != nil {
		i.log.WithError(err).WithField("remote", r.RemoteAddr).Warn("refused an unauthenticated instruction")
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": err.Error()})
		return
	}
	if claims.Subject != i.cfg.ID {
		i.log.WithFields(logrus.Fields{"remote": r.RemoteAddr, "for": claims.Subject}).Warn("refused an instruction signed for another instance")
		writeJSON(w, http.StatusForbidden, map[string]string{"error": fmt.Sprintf("instruction is for instance %q, this is %q", claims.Subject, i.cfg.ID)})
		return
	}
	// An authentic instruction proves its leader exists, whatever its body:
	// from now on, older leaders are refused.
	if err := i.fence(claims.Epoch); err != nil {
		i.log.WithError(err).Warn("refused an instruction from an older leader")
		writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error()})
		return
	}
	var in struct {
		Status registry.Status `json:"status"`
	}
	if err := decodeStrict(body, &in); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "malformed JSON body: " + err.Error()})
		return
	}
	if in.Status != registry.StatusUp && in.Status != registry.StatusOutOfService {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("status must be UP or OUT_OF_SERVICE, not %q", in.Status)})
		return
	}
	// The instance checks its own health right before it goes UP: that is
	// as late as a check can be, and the controller saves a round trip per
	// instance. The answer is the health endpoint's, which the controller
	// takes as final: it skips the instance rather than retry.
	if in.Status == registry.StatusUp && i.draining.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "draining", "error": "instance is shutting down"})
		return
	}
	if in.Status == registry.StatusUp && i.cfg.Health != nil {
		if err := i.cfg.Health(r.Context()); err != nil {
			i.log.WithError(err).Warn("refused to go UP: health check failing")
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unhealthy", "error": err.Error()})
			return
		}
	}
	// The switch id rides in the context, as a trace id would, so that the
	// registry keeps it with the status it changes and the gateways' lines
	// about the change name the switch too.
	ctx := r.Context()
	sw, _ := strconv.ParseInt(r.Header.Get(registry.SwitchHeader), 10, 64)
	if sw > 0 {
		ctx = registry.WithSwitch(ctx, sw)
	}
	idx, err := i.applyInstruction(ctx, in.Status, claims.Epoch)
	var stale *staleEpochError
	if errors.As(err, &stale) {
		i.log.WithFields(logrus.Fields{"epoch": claims.Epoch, "newest": stale.newest}).Warn("refused an instruction from an older leader")
		writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error()})
		return
	}
	if err != nil {
		i.log.WithError(err).Warn("instruction not applied; the controller will retry")
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
		return
	}
	fields := logrus.Fields{"status": in.Status, "index": idx, "epoch": claims.Epoch}
	if sw > 0 {
		fields["switch"] = sw
	}
	i.log.WithFields(fields).Info("status applied on the controller's instruction")
	writeJSON(w, http.StatusOK, map[string]any{"status": in.Status, "index": idx})
}

// staleEpochError refuses an instruction from a leader older than one
// already heard from.
type staleEpochError struct{ epoch, newest int64 }

func (e *staleEpochError) Error() string {
	return fmt.Sprintf("leader epoch %d is older than %d", e.epoch, e.newest)
}

// fence records epoch as heard from, or refuses it when a newer leader was.
func (i *Instance) fence(epoch int64) error {
	i.regMu.Lock()
	defer i.regMu.Unlock()
	return i.fenceLocked(epoch)
}

func (i *Instance) fenceLocked(epoch int64) error {
	if newest := i.epoch.Load(); epoch < newest {
		return &staleEpochError{epoch: epoch, newest: newest}
	}
	i.epoch.Store(epoch)
	return nil
}

// applyInstruction applies a leader's instruction unless a newer leader was
// heard from meanwhile. The check and the registry write happen under one
// lock, so an older leader's instruction can never land after a newer one's.
func (i *Instance) applyInstruction(ctx context.Context, st registry.Status, epoch int64) (uint64, error) {
	i.regMu.Lock()
	defer i.regMu.Unlock()
	if err := i.fenceLocked(epoch); err != nil {
		return 0, err
	}
	i.desired.Store(st)
	return i.apply(ctx, st)
}

// decodeStrict decodes exactly one JSON value with known fields into v.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// Drain takes the instance out of traffic without stopping it: it goes
// OUT_OF_SERVICE, refuses to go UP again, and waits until every gateway has
// applied that (up to DrainTimeout), so that no new request is on its way
// here once it returns. It drains once; a later call, or Shutdown, returns
// the first drain's error.
func (i *Instance) Drain(ctx context.Context) error {
	i.drainMu.Lock()
	defer i.drainMu.Unlock()
	if i.drained {
		return i.drainErr
	}
	i.draining.Store(true)
	i.log.Info("draining: going OUT_OF_SERVICE and waiting for the gateways")
	idx, err := i.SetStatus(ctx, registry.StatusOutOfService)
	if err == nil {
		if werr := i.waitGateways(ctx, idx); werr != nil {
			i.log.WithError(werr).Warn("gateways did not confirm the drain in time; stopping anyway")
		}
	}
	i.drained, i.drainErr = true, err
	return err
}

// Shutdown takes the instance out of traffic before it stops: it drains
// (see Drain), lets srv finish the requests in flight, then deletes its
// node and deregisters.
func (i *Instance) Shutdown(ctx context.Context, srv *http.Server) error {
	if !i.stopping.CompareAndSwap(false, true) {
		return errors.New("sdk: already shutting down")
	}
	i.log.Info("shutting down: going OUT_OF_SERVICE and draining")
	var errs []error
	if err := i.Drain(ctx); err != nil {
		errs = append(errs, err)
	}
	if srv != nil {
		if err := srv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("finish requests in flight: %w", err))
		}
	}
	i.inflight.Wait()
	errs = append(errs, i.release(ctx)...)
	i.log.Info("instance stopped")
	return errors.Join(errs...)
}

// Leave removes the instance at once, without draining: for when what
// served its traffic is already gone (an agent's application died), so
// that waiting would only keep routing pointed at a dead address a little
// longer. Deregistering takes it out of every gateway's table.
func (i *Instance) Leave(ctx context.Context) error {
	if !i.stopping.CompareAndSwap(false, true) {
		return errors.New("sdk: already shutting down")
	}
	i.draining.Store(true)
	errs := i.release(ctx)
	i.log.Info("instance removed from ZooKeeper and the registry without draining")
	return errors.Join(errs...)
}

// release stops the heartbeats, deletes the node and deregisters.
func (i *Instance) release(ctx context.Context) []error {
	var errs []error
	if i.stop != nil {
		i.stop()
	}
	if i.zk != nil {
		if err := i.zk.Delete(i.paths.Instance(i.cfg.Color, i.cfg.ID), -1); err != nil && !errors.Is(err, zk.ErrNoNode) {
			errs = append(errs, fmt.Errorf("delete node: %w", err))
		}
		i.zk.Close()
	}
	if err := i.cfg.Registry.Deregister(ctx, i.cfg.ID); err != nil && !errors.Is(err, registry.ErrNotFound) {
		errs = append(errs, fmt.Errorf("deregister: %w", err))
	}
	return errs
}

// waitGateways waits until every live gateway has applied index for the
// service, so no new request is on its way here.
func (i *Instance) waitGateways(ctx context.Context, index uint64) error {
	// Polled, not a blocking query: many instances drain at once, and
	// every gateway report would wake each of them with all the reports.
	err := retry.Until(ctx, i.cfg.DrainTimeout, func() (bool, error) {
		reports, err := i.cfg.Registry.Gateways(ctx)
		return err == nil && applied(reports, i.cfg.Service, index), err
	})
	if err != nil {
		return fmt.Errorf("wait for gateways to apply index %d: %w", index, err)
	}
	return nil
}

// applied reports whether every gateway that routes service has applied
// index. A gateway that does not route it, or has no view of it yet, sends
// nothing here.
func applied(reports []registry.GatewayReport, service string, index uint64) bool {
	for _, r := range reports {
		if got, routes := r.Applied[service]; routes && got < index {
			return false
		}
	}
	return true
}

// Serve runs srv on ln with the instance started, until ctx ends, then
// shuts down gracefully. It is the whole life of a typical instance.
func (i *Instance) Serve(ctx context.Context, srv *http.Server, ln net.Listener) error {
	if err := i.Start(ctx); err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		_ = i.Shutdown(context.Background(), nil)
		return fmt.Errorf("sdk: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), i.cfg.DrainTimeout+30*time.Second)
	defer cancel()
	err := i.Shutdown(sctx, srv)
	<-errc
	return err
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

type zkLogger struct{ log logrus.FieldLogger }

func (l zkLogger) Printf(format string, a ...any) { l.log.Debugf("zk: "+format, a...) }
