// Package consul keeps the registry in Consul itself, so that Consul's
// own tools (the UI, `consul catalog`, DNS, /v1/health/service/<name>?passing)
// tell the same truth the gateways route on.
//
// Every instance is a Consul service registered with the local agent:
// service name = Instance.Service, service ID = Instance.ID, its address and
// port, Meta switchyard_color and switchyard_version, and the tags
// "switchyard" and its color. The agent probes
// GET http://address:port/_switchyard/health (200 healthy, 503 unhealthy or
// draining) every CheckInterval, and removes an instance whose check stayed
// critical for DeregisterAfter. The status maps onto Consul's mechanisms:
//
//	OUT_OF_SERVICE  service maintenance mode is on (so is node maintenance)
//	STARTING        the registration is still in progress, or a check is
//	                warning (the health endpoint answered 429)
//	DOWN            a check is critical: the health endpoint failed or has
//	                not passed yet since registration, or the node is failing
//	UP              maintenance off and every check passing, which is exactly
//	                the set /v1/health/service/<name>?passing returns
//
// The earlier rows win. Only UP and OUT_OF_SERVICE can be set, with
// Register or SetStatus; DOWN and STARTING are the health check's to decide.
// A check starts critical, so an instance is never UP before its health
// endpoint has answered 200 once.
package consul

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"github.com/switchyard/switchyard/registry"
)

// Config configures the Consul backend; the zero value works.
type Config struct {
	// Address is the local agent's HTTP API, host:port. Empty means
	// CONSUL_HTTP_ADDR, else 127.0.0.1:8500.
	Address string
	// Token is a Consul ACL token. Empty means CONSUL_HTTP_TOKEN.
	Token string
	// CheckInterval is how often the agent probes an instance's health
	// endpoint; default 1s, which is also the shortest Consul runs.
	CheckInterval time.Duration
	// CheckTimeout bounds one probe; default 1s.
	CheckTimeout time.Duration
	// DeregisterAfter is how long an instance may stay critical before its
	// agent removes it; default 1m, the shortest Consul honours.
	DeregisterAfter time.Duration
	// Warmup is how long views are not Ready after Consul lost its state,
	// while the instances register again; default 3s.
	Warmup time.Duration
	// GatewayTTL is how long a gateway report counts after it was written;
	// default 10s.
	GatewayTTL time.Duration
	// StatusTimeout bounds how long SetStatus waits for its change to show
	// in the catalog; default 5s.
	StatusTimeout time.Duration
	// KVPrefix roots switchyard's keys in Consul KV; default "switchyard/".
	KVPrefix string
	Log      logrus.FieldLogger
}

// Registry is the registry kept in a Consul cluster through the local agent.
// It is safe for concurrent use.
type Registry struct {
	cfg Config
	api *api.Client
	log logrus.FieldLogger

	mu    sync.Mutex
	gen   uint64              // bumped whenever Consul may have lost its state
	keys  map[string]keyState // what each listed service ("" for all) last answered
	epoch epoch
	mine  map[string]mine // by id, the instances registered here
	// views are the services readAll read last, by name, in generation
	// viewsGen; fullAt is when it last read every one.
	views    map[string]serviceView
	fullAt   time.Time
	viewsGen uint64
}

// serviceView is a service's instances as readAll last read them: at
// that read's index, when its checks summed up to sig.
type serviceView struct {
	sig       signature
	index     uint64
	instances []registry.Instance
}

// mine is what this backend last made of an instance it registered, which
// is the SDK's case: it spares SetStatus a look-up in the agent.
type mine struct {
	service string
	out     bool // in maintenance
}

// keyState is a service's last answered index, the generation it was
// answered in, and when.
type keyState struct {
	index, gen uint64
	at         time.Time
}

// epoch is the cluster's state as this backend last saw it.
type epoch struct {
	id      string
	readyAt time.Time
	seenAt  time.Time // when the read that saw it started
}

// epochRecord is the value of <KVPrefix>epoch: whoever finds it missing
// writes a new one, so a new id means Consul lost its data.
type epochRecord struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
}

// gatewayRecord is a gateway report as kept under <KVPrefix>gateways/.
type gatewayRecord struct {
	registry.GatewayReport
	Expires time.Time `json:"expires"`
}

const (
	metaColor   = "switchyard_color"
	metaVersion = "switchyard_version"
	metaProto   = "switchyard_protocol"
	// metaControl holds Instance.ControlPort when it is set.
	metaControl = "switchyard_control_port"
	tagOwned    = "switchyard"
	// healthPath is what the SDK serves as sdk.HealthPath.
	healthPath = "/_switchyard/health"
	// requestTimeout bounds a call that does not block by design.
	requestTimeout = 10 * time.Second
	// maintReason is the maintenance check's Notes; maintNotes adds the
	// switch behind it.
	maintReason = "switchyard: OUT_OF_SERVICE"
	// maxMine bounds what a backend remembers of the instances it
	// registered; past it, SetStatus looks the others up in the agent.
	maxMine = 100000
	// maxIdleConns is how many idle connections to the agent are kept.
	maxIdleConns = 128
	// allAbove is how many services a watcher follows with a watch each
	// before it watches them all at once (AllAbove): few enough to leave
	// most of the agent's 200 connections per client to the rest.
	allAbove = 16
	// maxReads bounds the services a view of all reads at once.
	maxReads = 16
	// fullReadEvery is how often a view of all reads every service, not
	// only those whose checks changed.
	fullReadEvery = 5 * time.Minute
)

var (
	_ registry.Backend    = (*Registry)(nil)
	_ registry.ManyLister = (*Registry)(nil)
)

// AllAbove implements registry.ManyLister: a gateway that routes more
// than a few services follows them with one watch of all (readAll), since
// a watch each would hold a connection each.
func (c *Registry) AllAbove() int { return allAbove }

// ChecksHealth tells the SDK that the agent's HTTP check decides DOWN.
func (c *Registry) ChecksHealth() bool { return true }

// New returns a backend that talks to the Consul agent cfg names.
// It does not contact the agent yet.
func New(cfg Config) (*Registry, error) {
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = time.Second
	}
	if cfg.CheckTimeout <= 0 {
		cfg.CheckTimeout = time.Second
	}
	if cfg.DeregisterAfter <= 0 {
		cfg.DeregisterAfter = time.Minute
	}
	if cfg.Warmup <= 0 {
		cfg.Warmup = 3 * time.Second
	}
	if cfg.GatewayTTL <= 0 {
		cfg.GatewayTTL = 10 * time.Second
	}
	if cfg.StatusTimeout <= 0 {
		cfg.StatusTimeout = 5 * time.Second
	}
	if cfg.KVPrefix == "" {
		cfg.KVPrefix = "switchyard/"
	}
	if !strings.HasSuffix(cfg.KVPrefix, "/") {
		cfg.KVPrefix += "/"
	}
	if cfg.Log == nil {
		cfg.Log = logrus.StandardLogger()
	}
	ac := api.DefaultConfig()
	if cfg.Address != "" {
		ac.Address = cfg.Address
	}
	if cfg.Token != "" {
		ac.Token = cfg.Token
	}
	// The agent is local (or at least near): gzip costs both ends CPU on
	// every answer, a few hundred kilobytes for a service of a few hundred
	// instances, and saves no time on loopback. Status changes and
	// per-service watches run many at once: keep their connections rather
	// than close all but GOMAXPROCS+1 of them after each answer, below the
	// agent's limits.http_max_conns_per_client (200 by default).
	ac.Transport.DisableCompression = true
	ac.Transport.MaxIdleConnsPerHost = maxIdleConns
	client, err := api.NewClient(ac)
	if err != nil {
		return nil, fmt.Errorf("registry: consul client for %s: %w", ac.Address, err)
	}
	return &Registry{
		cfg:   cfg,
		api:   client,
		log:   cfg.Log.WithField("consul", ac.Address),
		keys:  map[string]keyState{},
		mine:  map[string]mine{},
		views: map[string]serviceView{},
	}, nil
}

// Register adds or replaces an instance with its health check. An instance
// registered OUT_OF_SERVICE enters maintenance before it can ever pass: a
// critical "registering" check holds it out until maintenance is on.
func (c *Registry) Register(ctx context.Context, inst registry.Instance) error {
	if err := inst.Validate(); err != nil {
		return fmt.Errorf("register %s: %w", inst.ID, err)
	}
	if err := settable(inst.Status); err != nil {
		return fmt.Errorf("register %s: %w", inst.ID, err)
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	out := inst.Status == registry.StatusOutOfService
	// A new instance starts critical until its first check passes. An
	// instance registered UP is a live one registering again (the agent
	// restarted and forgot it): critical until its first check, up to an
	// interval later, it would read DOWN, and a gateway would drop it
	// from routing for that long. It starts passing, and its next check
	// says otherwise if it must.
	initial := api.HealthCritical
	if inst.Status == registry.StatusUp {
		initial = api.HealthPassing
	}
	checks := api.AgentServiceChecks{{
		CheckID:                        healthCheckID(inst.ID),
		Name:                           "switchyard health",
		Notes:                          registrationNotes(inst),
		HTTP:                           "http://" + inst.ControlHostPort() + healthPath,
		Method:                         "GET",
		Interval:                       c.cfg.CheckInterval.String(),
		Timeout:                        c.cfg.CheckTimeout.String(),
		Status:                         initial,
		DeregisterCriticalServiceAfter: c.cfg.DeregisterAfter.String(),
	}}
	if out {
		checks = append(checks, &api.AgentServiceCheck{
			CheckID: gateCheckID(inst.ID),
			Name:    "switchyard registration in progress",
			Notes:   "Removed once the instance is in maintenance; should it stay, the instance is removed after " + c.cfg.DeregisterAfter.String() + " and registers again.",
			TTL:     c.cfg.DeregisterAfter.String(),
			Status:  api.HealthCritical,
			// A registration that died halfway must not pin the instance.
			DeregisterCriticalServiceAfter: c.cfg.DeregisterAfter.String(),
		})
	}
	meta := map[string]string{metaColor: inst.Color, metaVersion: inst.Version, metaProto: inst.Protocol}
	if inst.ControlPort != 0 {
		meta[metaControl] = strconv.Itoa(inst.ControlPort)
	}
	tags := []string{tagOwned}
	if inst.Color != "" {
		tags = append(tags, inst.Color)
	}
	reg := &api.AgentServiceRegistration{
		ID:      inst.ID,
		Name:    inst.Service,
		Tags:    tags,
		Address: inst.Address,
		Port:    inst.Port,
		Meta:    meta,
		Checks:  checks,
	}
	// Replacing the checks also drops an earlier maintenance check, so an
	// instance registered UP is never left in maintenance.
	opts := api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(ctx)
	if err := c.api.Agent().ServiceRegisterOpts(reg, opts); err != nil {
		return fmt.Errorf("register %s with the consul agent: %w", inst.ID, consulError(err))
	}
	c.remember(inst.ID, inst.Service, out)
	if !out {
		return nil
	}
	q := (&api.QueryOptions{}).WithContext(ctx)
	if err := c.api.Agent().EnableServiceMaintenanceOpts(inst.ID, maintNotes(max(inst.Switch, registry.SwitchOf(ctx))), q); err != nil {
		return fmt.Errorf("register %s: enter maintenance: %w", inst.ID, consulError(err))
	}
	if err := c.api.Agent().CheckDeregisterOpts(gateCheckID(inst.ID), q); err != nil {
		return fmt.Errorf("register %s: remove the registration check: %w", inst.ID, consulError(err))
	}
	return nil
}

// Heartbeat checks that the local agent still knows the instance; the
// agent's own health check is what keeps it alive. An agent that lost it
// (a restart without its data) answers ErrNotFound, and the SDK registers
// again.
func (c *Registry) Heartbeat(ctx context.Context, id string) error {
	if _, err := c.agentService(ctx, id); err != nil {
		return fmt.Errorf("heartbeat %s: %w", id, err)
	}
	return nil
}

// SetStatus turns maintenance on (OUT_OF_SERVICE) or off (UP) and waits
// until a consistent read of the instance shows the status, up to
// StatusTimeout. UP needs the health check passing too; when it does not
// pass in time, maintenance goes back on if it was on, so an error always
// means nothing changed.
//
// A status change is on the switch's critical path, once per instance, so
// it costs as few round trips as Consul allows: the agent applies the
// toggle to its local state and syncs it to the catalog at once (a partial
// anti-entropy sync), and by the time the read that confirms it arrives,
// the catalog almost always shows it. That read asks for this one instance
// only: the whole service is hundreds of kilobytes with a few hundred
// instances.
func (c *Registry) SetStatus(ctx context.Context, id string, st registry.Status) (uint64, error) {
	if _, err := registry.ParseStatus(string(st)); err != nil {
		return 0, fmt.Errorf("set status of %s: %w", id, err)
	}
	if err := settable(st); err != nil {
		return 0, fmt.Errorf("set status of %s: %w", id, err)
	}
	if err := registry.CheckName("instance id", id); err != nil {
		return 0, fmt.Errorf("set status of %s: %w", id, err)
	}
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	q := (&api.QueryOptions{}).WithContext(rctx)
	if st == registry.StatusOutOfService {
		service, err := c.serviceOf(rctx, id)
		if err != nil {
			return 0, fmt.Errorf("set status of %s to %s: %w", id, st, err)
		}
		// An id the agent lost answers 404 here: ErrNotFound, as the lookup
		// would. An instance already in maintenance keeps its Notes, so
		// the switch that took it out stays its label, as in the built-in
		// registry.
		if err := c.api.Agent().EnableServiceMaintenanceOpts(id, maintNotes(registry.SwitchOf(ctx)), q); err != nil {
			return 0, fmt.Errorf("set status of %s to %s: enter maintenance: %w", id, st, consulError(err))
		}
		idx, service, err := c.awaitStatus(ctx, service, id, st)
		if err != nil {
			return 0, fmt.Errorf("set status of %s to %s: %w", id, st, err)
		}
		c.remember(id, service, true)
		return idx, nil
	}
	// An UP that fails must put back the maintenance it lifted. That this
	// backend left the instance in maintenance is enough to know it; should
	// someone else have lifted it since, a failed UP leaves it in
	// maintenance, which routes no more than the DOWN it was.
	c.mu.Lock()
	m, known := c.mine[id]
	c.mu.Unlock()
	if !known || !m.out {
		_, info, err := c.api.Agent().AgentHealthServiceByIDOpts(id, q)
		if err == nil && (info == nil || info.Service == nil) {
			err = fmt.Errorf("%w: the consul agent has no service %s", registry.ErrNotFound, id)
		}
		if err != nil {
			return 0, fmt.Errorf("set status of %s to %s: look it up in the consul agent: %w", id, st, consulError(err))
		}
		m.service = info.Service.Service
		m.out = slices.ContainsFunc(info.Checks, func(ch *api.HealthCheck) bool { return ch.CheckID == maintCheckID(id) })
	}
	if m.out {
		if err := c.api.Agent().DisableServiceMaintenanceOpts(id, q); err != nil {
			return 0, fmt.Errorf("set status of %s to %s: leave maintenance: %w", id, st, consulError(err))
		}
	}
	idx, service, err := c.awaitStatus(ctx, m.service, id, st)
	if err == nil {
		c.remember(id, service, false)
		return idx, nil
	}
	err = fmt.Errorf("set status of %s to %s: %w", id, st, err)
	if m.out {
		// The caller still believes the instance is out: make it so.
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), requestTimeout)
		defer cancel()
		back := (&api.QueryOptions{}).WithContext(bctx)
		// The instance may have been UP for a moment, on this switch's
		// instruction: its return is labelled with the same switch.
		if rerr := c.api.Agent().EnableServiceMaintenanceOpts(id, maintNotes(registry.SwitchOf(ctx)), back); rerr != nil {
			return 0, errors.Join(err, fmt.Errorf("put %s back into maintenance: %w", id, consulError(rerr)))
		}
		if check, ok := c.healthOutput(bctx, id); ok {
			err = fmt.Errorf("%w; it stays OUT_OF_SERVICE (health check: %s)", err, check)
		}
	}
	return 0, err
}

// remember records what this backend made of an instance it registered.
func (c *Registry) remember(id, service string, out bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.mine[id]; ok || len(c.mine) < maxMine {
		c.mine[id] = mine{service: service, out: out}
	}
}

// serviceOf names id's service: as this backend registered it, else as
// the agent knows it.
func (c *Registry) serviceOf(ctx context.Context, id string) (string, error) {
	c.mu.Lock()
	m, ok := c.mine[id]
	c.mu.Unlock()
	if ok {
		return m.service, nil
	}
	svc, err := c.agentService(ctx, id)
	if err != nil {
		return "", err
	}
	return svc.Service, nil
}

// awaitStatus reads the instance consistently until it shows st, and
// returns the index of that read and the service it is in. Every read
// asks for the instance alone; the first does not block. Should the
// catalog not show st yet (many instances changing at once queue in the
// agent's sync), blocking queries follow, kept off the agent's streaming
// backend by ?near: there, a filter of their own would make the agent
// keep one more view of the service, fed with every change, per instance.
func (c *Registry) awaitStatus(ctx context.Context, service, id string, st registry.Status) (uint64, string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.StatusTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	var index uint64
	seen := registry.Status("absent")
	for {
		q := &api.QueryOptions{RequireConsistent: true, Filter: fmt.Sprintf("Service.ID == %q", id)}
		if index > 0 {
			q.WaitIndex, q.WaitTime, q.Near = index, max(time.Until(deadline), time.Millisecond), "_agent"
		}
		entries, meta, err := c.healthService(service, q.WithContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return 0, service, fmt.Errorf("the catalog still shows it %s after %s: %w", seen, c.cfg.StatusTimeout, ctx.Err())
			}
			return 0, service, fmt.Errorf("read %s from consul: %w", service, consulError(err))
		}
		var maint uint64 // the modify index of its maintenance check
		for i := range entries {
			if e := &entries[i]; e.Service != nil && e.Service.ID == id {
				seen = statusOf(e)
				for _, ch := range e.Checks {
					if ch.CheckID == maintCheckID(id) {
						maint = ch.ModifyIndex
					}
				}
			}
		}
		if seen == st && st == registry.StatusOutOfService && maint > 0 {
			return maint, service, nil
		}
		if seen == st {
			// Leaving maintenance deleted a check: no check holds the
			// change's index. The service's index may also have moved
			// since, by a write to the service alone, which a view of all
			// services (on the checks' index) would not reach until some
			// check changed. The smaller of the two is one that every
			// watcher reaches, and no smaller than the change.
			checks, err := c.checksIndex(ctx, service)
			if err != nil {
				return 0, service, fmt.Errorf("read the checks' index from consul: %w", consulError(err))
			}
			return min(meta.LastIndex, checks), service, nil
		}
		if index == 0 && seen == "absent" {
			// Registered again since, under another name?
			if svc, err := c.agentService(ctx, id); err == nil && svc.Service != service {
				service = svc.Service
				continue
			}
		}
		index = meta.LastIndex
	}
}

// checksIndex is Consul's index of all checks, read consistently: past
// every check change a consistent read has seen.
func (c *Registry) checksIndex(ctx context.Context, service string) (uint64, error) {
	var none []struct{}
	q := &api.QueryOptions{RequireConsistent: true, Filter: `CheckID == ""`} // no check has an empty id
	meta, err := c.api.Raw().Query("/v1/health/checks/"+service, &none, q.WithContext(ctx))
	if err != nil {
		return 0, err
	}
	return meta.LastIndex, nil
}

// healthOutput is what the agent's last probe of id said.
func (c *Registry) healthOutput(ctx context.Context, id string) (string, bool) {
	checks, err := c.api.Agent().ChecksWithFilterOpts("", (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return "", false
	}
	ch, ok := checks[healthCheckID(id)]
	if !ok {
		return "", false
	}
	out := strings.TrimSpace(ch.Output)
	if len(out) > 200 {
		out = out[:200] + "..."
	}
	return ch.Status + ": " + out, true
}

// Deregister removes the instance from its agent.
func (c *Registry) Deregister(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	c.mu.Lock()
	delete(c.mine, id)
	c.mu.Unlock()
	if err := c.api.Agent().ServiceDeregisterOpts(id, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("deregister %s: %w", id, consulError(err))
	}
	return nil
}

func (c *Registry) agentService(ctx context.Context, id string) (*api.AgentService, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	svc, _, err := c.api.Agent().Service(id, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("look %s up in the consul agent: %w", id, consulError(err))
	}
	return svc, nil
}

// Instances lists service ("" for all of switchyard's services) with a
// blocking query on waitIndex for up to wait.
//
// Ready works like this. Consul restarted without its data (a -dev agent,
// a lost cluster) comes back empty, and the instances register again over
// about one heartbeat; until then its views are partial. The key
// <KVPrefix>epoch marks the data: whoever finds it missing writes a new
// random id with the time, so a new id means the data was lost. After
// every read this backend reads the epoch again and reports Ready only
// from Warmup after the epoch was written. Reading it after the read
// closes the gap where Consul restarts between the two. Two cheaper
// signals, a failed call and an index that went backwards, make the next
// blocking query check the index first: a query that waits on an index
// the restarted Consul has not reached would otherwise hold for all of
// wait.
func (c *Registry) Instances(ctx context.Context, service string, waitIndex uint64, wait time.Duration) (registry.Snapshot, error) {
	what := "all services"
	if service != "" {
		what = service
	}
	snap, err := c.instances(ctx, service, waitIndex, wait)
	if err != nil {
		return registry.Snapshot{}, fmt.Errorf("list instances of %s in consul: %w", what, err)
	}
	if snap.Ready, err = c.verifyEpoch(ctx); err != nil {
		return registry.Snapshot{}, fmt.Errorf("list instances of %s in consul: %w", what, err)
	}
	return snap, nil
}

func (c *Registry) instances(ctx context.Context, service string, waitIndex uint64, wait time.Duration) (registry.Snapshot, error) {
	if waitIndex == 0 || wait <= 0 {
		return c.read(ctx, service, 0, 0)
	}
	if c.mustCheckIndex(service, waitIndex) {
		snap, err := c.read(ctx, service, 0, 0)
		if err != nil || snap.Index != waitIndex {
			return snap, err
		}
	}
	// Return when the warm-up ends, so that the watch learns of Ready.
	if until := c.untilReady(); until > 0 {
		wait = min(wait, until+10*time.Millisecond)
	}
	return c.read(ctx, service, waitIndex, wait)
}

// read is one (blocking) query, recorded for the restart signals.
func (c *Registry) read(ctx context.Context, service string, waitIndex uint64, wait time.Duration) (registry.Snapshot, error) {
	timeout := requestTimeout
	if waitIndex > 0 {
		// Consul adds up to wait/16 of jitter; give up only well after.
		timeout = wait + wait/16 + 5*time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	q := (&api.QueryOptions{WaitIndex: waitIndex, WaitTime: wait}).WithContext(ctx)
	var snap registry.Snapshot
	var err error
	start := time.Now()
	if service != "" {
		snap, err = c.readService(service, q)
	} else {
		snap, err = c.readAll(ctx, q)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			c.gen++
		}
		return registry.Snapshot{}, consulError(err)
	}
	// Only a read that started after the last one had its answer must
	// answer at least its index: calls at once (a watch's and a
	// listing's) may end in any order.
	prev, ok := c.keys[service]
	switch after := !ok || start.After(prev.at); {
	case after && snap.Index < prev.index:
		c.gen++
		c.log.WithFields(logrus.Fields{"service": service, "was": prev.index, "now": snap.Index}).
			Info("consul index went backwards; checking whether consul lost its data")
		fallthrough
	case after || snap.Index >= prev.index:
		c.keys[service] = keyState{index: snap.Index, gen: c.gen, at: time.Now()}
	}
	return snap, nil
}

// mustCheckIndex tells whether waitIndex may be one Consul has not reached:
// it came from elsewhere, or Consul may have lost its data since.
func (c *Registry) mustCheckIndex(service string, waitIndex uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	k, ok := c.keys[service]
	return !ok || k.gen != c.gen || waitIndex > k.index
}

func (c *Registry) untilReady() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Until(c.epoch.readyAt)
}

func (c *Registry) readService(service string, q *api.QueryOptions) (registry.Snapshot, error) {
	entries, meta, err := c.healthService(service, q)
	if err != nil {
		return registry.Snapshot{}, err
	}
	snap := registry.Snapshot{Index: meta.LastIndex, Instances: []registry.Instance{}}
	for i := range entries {
		if inst, ok := instanceOf(&entries[i]); ok {
			snap.Instances = append(snap.Instances, inst)
		}
	}
	sortInstances(snap.Instances)
	return snap, nil
}

// readAll is the view of all of switchyard's services in one blocking
// query: every check of their instances and every node's own checks
// (/v1/health/state/any), whose index is Consul's index of all checks.
// Each service's instances are then read only when its checks (those of
// its instances and of their nodes: every status this backend maps is a
// check) differ from when it was last read, and kept for the next call.
// A change to one service of a thousand costs the checks and one read, on
// one connection; a watch per service would hold a thousand, past the
// agent's limit of connections per client.
//
// The checks' modify indexes and number are what tells a change (see
// signature): a status change, a registration and a deregistration all
// add, delete or modify a check (Register writes a digest of the registration into its check's
// Notes: see registrationNotes). A registration changed by other hands
// that leaves its checks as they were is seen at the next full read,
// every fullReadEvery.
func (c *Registry) readAll(ctx context.Context, q *api.QueryOptions) (registry.Snapshot, error) {
	q.Filter = fmt.Sprintf("%q in ServiceTags or ServiceID == \"\"", tagOwned)
	var checks []checkRef
	meta, err := c.api.Raw().Query("/v1/health/state/"+api.HealthAny, &checks, q)
	if err != nil {
		return registry.Snapshot{}, err
	}
	sigs := signatures(checks)
	start := time.Now()
	c.mu.Lock()
	// Should Consul have lost its data (see Instances), views read before
	// must not stand for what holds checks of the same ids and indexes.
	gen := c.gen
	if c.viewsGen != gen {
		c.views, c.viewsGen, c.fullAt = map[string]serviceView{}, gen, time.Time{}
	}
	full := start.Sub(c.fullAt) >= fullReadEvery
	var stale []string
	kept := map[string][]registry.Instance{} // as they stand for these checks
	for name, sig := range sigs {
		if v, ok := c.views[name]; !full && ok && v.sig == sig {
			kept[name] = v.instances
		} else {
			stale = append(stale, name)
		}
	}
	c.mu.Unlock()
	read := make([]registry.Snapshot, len(stale))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(maxReads)
	for i, name := range stale {
		g.Go(func() error {
			var err error
			read[i], err = c.readService(name, (&api.QueryOptions{}).WithContext(gctx))
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return registry.Snapshot{}, err
	}
	snap := registry.Snapshot{Index: meta.LastIndex, Instances: []registry.Instance{}}
	c.mu.Lock()
	defer c.mu.Unlock()
	mine := c.viewsGen == gen
	for i, name := range stale {
		kept[name] = read[i].Instances
		// A call that read later may have stored a newer view already.
		if v, ok := c.views[name]; mine && (!ok || read[i].Index >= v.index) {
			c.views[name] = serviceView{sig: sigs[name], index: read[i].Index, instances: read[i].Instances}
		}
	}
	if mine && full && start.After(c.fullAt) {
		c.fullAt = start
	}
	for name := range c.views {
		if _, ok := sigs[name]; !ok && mine {
			delete(c.views, name) // no check left: gone, or to be read again
		}
	}
	for _, insts := range kept {
		snap.Instances = append(snap.Instances, insts...)
	}
	sortInstances(snap.Instances)
	return snap, nil
}

// checkRef is what readAll reads of a check.
type checkRef struct {
	Node, ServiceID, ServiceName string
	ModifyIndex                  uint64
}

// signature sums up a set of checks: the highest modify index among them,
// and how many they are. Within one generation Consul's indexes only
// grow, so a check added or modified raises the highest, and one deleted
// without another added lowers the count: a set whose signature is as it
// was is as it was.
type signature struct {
	max uint64
	n   int
}

func (s signature) with(o signature) signature { return signature{max(s.max, o.max), s.n + o.n} }

// signatures sums up, for each service, its instances' checks and the
// checks of the nodes they run on: a service whose sum is as it was has
// every status as it was.
func signatures(checks []checkRef) map[string]signature {
	nodes := map[string]signature{}
	for _, ch := range checks {
		if ch.ServiceID == "" {
			nodes[ch.Node] = nodes[ch.Node].with(signature{ch.ModifyIndex, 1})
		}
	}
	sigs := map[string]signature{}
	seen := map[[2]string]bool{} // service and node, once each
	for _, ch := range checks {
		if ch.ServiceID == "" || ch.ServiceName == "" {
			continue
		}
		sig := sigs[ch.ServiceName].with(signature{ch.ModifyIndex, 1})
		if k := [2]string{ch.ServiceName, ch.Node}; !seen[k] {
			seen[k] = true
			sig = sig.with(nodes[ch.Node])
		}
		sigs[ch.ServiceName] = sig
	}
	return sigs
}

// verifyEpoch reads the epoch, writing a new one when it is missing, and
// tells whether views are Ready.
func (c *Registry) verifyEpoch(ctx context.Context) (bool, error) {
	start := time.Now()
	rec, err := c.readEpoch(ctx)
	if err != nil {
		c.mu.Lock()
		c.gen++
		c.mu.Unlock()
		return false, fmt.Errorf("read the registry epoch: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !start.Before(c.epoch.seenAt) && rec.ID != c.epoch.id {
		// Warm up from when the epoch was written, but never longer than
		// from now: a clock behind the writer's must not stretch it.
		readyAt := rec.Created.Add(c.cfg.Warmup)
		if latest := start.Add(c.cfg.Warmup); latest.Before(readyAt) {
			readyAt = latest
		}
		fields := logrus.Fields{"epoch": rec.ID, "ready_in": time.Until(readyAt).Round(time.Millisecond)}
		switch {
		case c.epoch.id != "":
			c.gen++
			c.log.WithFields(fields).Warn("consul lost its data (restarted?); views are not Ready while instances register again")
		case readyAt.After(start):
			c.log.WithFields(fields).Info("consul holds a new registry; views are not Ready while instances register")
		}
		c.epoch = epoch{id: rec.ID, readyAt: readyAt, seenAt: start}
	} else if start.After(c.epoch.seenAt) {
		c.epoch.seenAt = start
	}
	return !time.Now().Before(c.epoch.readyAt), nil
}

func (c *Registry) readEpoch(ctx context.Context) (epochRecord, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	kv := c.api.KV()
	key := c.cfg.KVPrefix + "epoch"
	for range 3 {
		pair, _, err := kv.Get(key, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return epochRecord{}, consulError(err)
		}
		var rec epochRecord
		if pair != nil && json.Unmarshal(pair.Value, &rec) == nil && rec.ID != "" {
			return rec, nil
		}
		rec = epochRecord{ID: randomID(), Created: time.Now().UTC()}
		b, _ := json.Marshal(rec)
		p := &api.KVPair{Key: key, Value: b}
		if pair != nil {
			p.ModifyIndex = pair.ModifyIndex // replace a malformed value
		}
		ok, _, err := kv.CAS(p, (&api.WriteOptions{}).WithContext(ctx))
		if err != nil {
			return epochRecord{}, consulError(err)
		}
		if ok {
			return rec, nil
		}
		// Someone else wrote it first; theirs counts.
	}
	return epochRecord{}, fmt.Errorf("%s keeps changing", key)
}

// ReportGateway writes the report under <KVPrefix>gateways/<id>, valid for
// GatewayTTL.
func (c *Registry) ReportGateway(ctx context.Context, r registry.GatewayReport) error {
	if r.ID == "" || len(r.ID) > 256 {
		return fmt.Errorf("report gateway: %w: gateway id must be 1 to 256 characters", registry.ErrInvalid)
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	b, err := json.Marshal(gatewayRecord{GatewayReport: r, Expires: time.Now().Add(c.cfg.GatewayTTL).UTC()})
	if err != nil {
		return fmt.Errorf("report gateway %s: %w", r.ID, err)
	}
	p := &api.KVPair{Key: c.gatewayKey(r.ID), Value: b}
	if _, err := c.api.KV().Put(p, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("report gateway %s: %w", r.ID, consulError(err))
	}
	return nil
}

// Gateways lists the reports that have not expired. Expired ones are
// deleted on the way, unless they were renewed meanwhile; unreadable ones
// are skipped.
func (c *Registry) Gateways(ctx context.Context) ([]registry.GatewayReport, error) {
	out, _, err := c.WatchGateways(ctx, 0, 0)
	return out, err
}

// WatchGateways is Gateways with the index of the listing: with waitIndex
// > 0, a blocking query on the reports' prefix.
func (c *Registry) WatchGateways(ctx context.Context, waitIndex uint64, wait time.Duration) ([]registry.GatewayReport, uint64, error) {
	q := &api.QueryOptions{}
	timeout := requestTimeout
	if waitIndex > 0 {
		q.WaitIndex, q.WaitTime = waitIndex, wait
		timeout += wait + wait/16
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pairs, meta, err := c.api.KV().List(c.cfg.KVPrefix+"gateways/", q.WithContext(ctx))
	if err != nil {
		return nil, 0, fmt.Errorf("list gateways: %w", consulError(err))
	}
	now := time.Now()
	out := []registry.GatewayReport{}
	for _, p := range pairs {
		var rec gatewayRecord
		if err := json.Unmarshal(p.Value, &rec); err != nil || rec.ID == "" {
			c.log.WithField("key", p.Key).Debug("skipping an unreadable gateway report")
			continue
		}
		if now.After(rec.Expires) {
			_, _, _ = c.api.KV().DeleteCAS(p, (&api.WriteOptions{}).WithContext(ctx))
			continue
		}
		out = append(out, rec.GatewayReport)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, meta.LastIndex, nil
}

func (c *Registry) gatewayKey(id string) string {
	return c.cfg.KVPrefix + "gateways/" + url.PathEscape(id)
}

// entry is what this backend reads of an instance in Consul's answer to
// /v1/health/service/<name>, the answer every watch of a service decodes
// on each of its changes: with a few hundred instances it is hundreds of
// kilobytes, most of it fields no one here reads (the node's tagged
// addresses and meta, each check's output and definition, the service's
// proxy, connect and weights). Decoding into this instead of
// api.ServiceEntry takes half the time and a fifth of the memory.
type entry struct {
	Node    *struct{ Address string }
	Service *struct {
		ID, Service, Address string
		Port                 int
		Meta                 map[string]string
	}
	Checks []check
}

// check is what this backend reads of a health check.
type check struct {
	CheckID, Status, Notes string
	ModifyIndex            uint64
}

// healthService reads /v1/health/service/<service> as api.Health().Service
// does (every instance, passing or not), into entries.
func (c *Registry) healthService(service string, q *api.QueryOptions) ([]entry, *api.QueryMeta, error) {
	var out []entry
	meta, err := c.api.Raw().Query("/v1/health/service/"+service, &out, q)
	if err != nil {
		return nil, nil, err
	}
	return out, meta, nil
}

// instanceOf maps a health entry, when switchyard registered it.
func instanceOf(e *entry) (registry.Instance, bool) {
	if e.Service == nil {
		return registry.Instance{}, false
	}
	color, ok := e.Service.Meta[metaColor]
	if !ok {
		return registry.Instance{}, false
	}
	addr := e.Service.Address
	if addr == "" && e.Node != nil {
		addr = e.Node.Address
	}
	// A malformed value reads as 0, the traffic port, which the node's own
	// control port then contradicts: the controller quarantines it.
	control, _ := strconv.Atoi(e.Service.Meta[metaControl])
	st := statusOf(e)
	var sw int64
	if st == registry.StatusOutOfService {
		sw = switchOf(e.Checks, e.Service.ID)
	}
	return registry.Instance{
		ID:          e.Service.ID,
		Service:     e.Service.Service,
		Color:       color,
		Version:     e.Service.Meta[metaVersion],
		Protocol:    e.Service.Meta[metaProto],
		Address:     addr,
		Port:        e.Service.Port,
		ControlPort: control,
		Status:      st,
		Switch:      sw,
	}, true
}

// registrationNotes is the health check's Notes: a digest of what routes
// to the instance. An agent that registers a service again carries its
// check's status and output over, so a registration that changed only the
// address, port or meta would leave every check as it was, and a view of
// all services (readAll), which reads a service again when its checks
// change, would not see it. The digest changes the check with them.
func registrationNotes(inst registry.Instance) string {
	h := fnv.New64a()
	for _, v := range []string{inst.Service, inst.Address, strconv.Itoa(inst.Port), strconv.Itoa(inst.ControlPort), inst.Color, inst.Version, inst.Protocol} {
		_, _ = h.Write([]byte(v))
		_, _ = h.Write([]byte{0})
	}
	return fmt.Sprintf("switchyard registration %016x", h.Sum64())
}

// maintNotes is the maintenance check's Notes for an instance taken out
// of service on switch sw's instruction (0: none).
func maintNotes(sw int64) string {
	if sw <= 0 {
		return maintReason
	}
	return maintReason + " (switch " + strconv.FormatInt(sw, 10) + ")"
}

// switchOf reads the switch back from the Notes of id's maintenance
// check, as maintNotes wrote them: anything else (a maintenance someone
// turned on by hand, the node's) names no switch.
//
// Only OUT_OF_SERVICE carries a switch in Consul. UP is maintenance off,
// with no check left to hold Notes; writing the switch elsewhere (service
// Meta) would cost UP, on the switch's critical path, a re-registration
// and a second catalog sync. An UP instance reads Switch 0, and a gateway's
// line about the switch names it through the instances it took out.
func switchOf(checks []check, id string) int64 {
	for _, ch := range checks {
		if ch.CheckID != maintCheckID(id) {
			continue
		}
		n, ok := strings.CutPrefix(ch.Notes, maintReason+" (switch ")
		if !ok {
			return 0
		}
		if n, ok = strings.CutSuffix(n, ")"); !ok {
			return 0
		}
		sw, err := strconv.ParseInt(n, 10, 64)
		if err != nil || sw <= 0 || strconv.FormatInt(sw, 10) != n {
			return 0
		}
		return sw
	}
	return 0
}

// statusOf applies the mapping at the top of this file to an entry's
// service and node checks.
func statusOf(e *entry) registry.Status {
	var registering, critical, warning bool
	for _, ch := range e.Checks {
		switch {
		case ch.CheckID == api.NodeMaint || strings.HasPrefix(ch.CheckID, api.ServiceMaintPrefix):
			return registry.StatusOutOfService
		case strings.HasPrefix(ch.CheckID, gateCheckPrefix):
			registering = true
		case ch.Status == api.HealthCritical:
			critical = true
		case ch.Status == api.HealthWarning:
			warning = true
		}
	}
	switch {
	case registering:
		return registry.StatusStarting
	case critical:
		return registry.StatusDown
	case warning:
		return registry.StatusStarting
	}
	return registry.StatusUp
}

// settable rejects the statuses that Consul's health check decides.
func settable(st registry.Status) error {
	if st == registry.StatusUp || st == registry.StatusOutOfService {
		return nil
	}
	return fmt.Errorf("%w: status %q cannot be set in consul, whose health check decides DOWN and STARTING (want UP or OUT_OF_SERVICE)", registry.ErrInvalid, st)
}

const gateCheckPrefix = "switchyard-registering:"

func gateCheckID(id string) string   { return gateCheckPrefix + id }
func healthCheckID(id string) string { return "service:" + id }
func maintCheckID(id string) string  { return api.ServiceMaintPrefix + id }

func sortInstances(s []registry.Instance) {
	sort.Slice(s, func(i, j int) bool { return s[i].ID < s[j].ID })
}

func randomID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// consulError maps Consul's answers onto the registry's sentinels.
func consulError(err error) error {
	var se api.StatusError
	if !errors.As(err, &se) {
		return err
	}
	switch se.Code {
	case 400:
		return fmt.Errorf("%w: %w", registry.ErrInvalid, err)
	case 401, 403:
		return fmt.Errorf("%w: %w", registry.ErrUnauthorized, err)
	case 404:
		return fmt.Errorf("%w: %w", registry.ErrNotFound, err)
	}
	return err
}
