// Package controller runs switchyard's leader-elected controller. The leader
// watches /active_color and the color nodes in ZooKeeper and reconciles the
// registry toward them: every instance of the active color UP, every other
// one OUT_OF_SERVICE, switching make-before-break (a canary of one, then
// growing batches), so that no instruction leaves a service with zero
// instances UP.
package controller

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
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

// Registry is what the controller reads from a registry backend. Status
// changes go through the instances themselves.
type Registry interface {
	Instances(ctx context.Context, service string, waitIndex uint64, wait time.Duration) (registry.Snapshot, error)
	Gateways(ctx context.Context) ([]registry.GatewayReport, error)
	WatchGateways(ctx context.Context, waitIndex uint64, wait time.Duration) ([]registry.GatewayReport, uint64, error)
}

// Config configures a controller.
type Config struct {
	ID             string // default hostname-random
	ZK             []string
	ZKRoot         string
	ZKAuth         zkstate.Auth  // digest credentials; set, they lock the nodes to this identity
	SessionTimeout time.Duration // default 10s
	Registry       Registry
	// Token is the shared secret, "current[,previous]" during a rotation;
	// each instruction is signed with the instance's key derived from the
	// first (registry.InstanceToken).
	Token  string
	Listen string // HTTP API address; "" for none
	// HealthTimeout bounds the health gate of one instance before it is
	// skipped; default 5s.
	HealthTimeout time.Duration
	// GatewayTimeout bounds the wait for gateways to apply a change; default 5s.
	GatewayTimeout time.Duration
	// MaxBatch caps how many instances a switch instructs at once, after
	// its canary of one; default DefaultMaxBatch, 1 for one at a time.
	MaxBatch int
	// Resync is how often the leader reconciles without an event; default 2s.
	Resync time.Duration
	// AllowLoopback lets instances live on loopback addresses, as on a
	// single host; otherwise a node pointing there is quarantined.
	AllowLoopback bool
	// PreservationHold is how long the leader holds every status when more
	// than half of the instance nodes vanish at once, as after a ZooKeeper
	// outage that expired every session, waiting for them to come back
	// (Eureka's self-preservation). Default 30s.
	PreservationHold time.Duration
	// AllowCommandChecks lets the release's pre-switch checks run
	// commands on this controller (with ZKAuth set only).
	AllowCommandChecks bool
	Log                logrus.FieldLogger
}

// Controller is one candidate; the elected one acts.
type Controller struct {
	cfg   Config
	paths zkstate.Paths
	log   logrus.FieldLogger
	http  *http.Client
	conn  *zk.Conn
	sess  *session
	rec   *recorder
	// current is the id of the newest switch this leader started; recMu
	// orders starting one against rewriting an older, finished record.
	current atomic.Int64
	recMu   sync.Mutex
	// asked is the last valid color the leader's watch read in
	// /active_color; each step checks it to give way to a newer target.
	asked atomic.Pointer[zkstate.Color]
	// rollback is the analysis's latest write of /active_color, set before
	// the write is sent (see guarded).
	rollback atomic.Pointer[rollbackWrite]
	// leading is true while this controller acts as leader.
	leading atomic.Bool
	// epoch fences this leader's instructions: the creation zxid of its
	// election node, which only grows from one leader to the next.
	epoch atomic.Int64
	// nodes caches instance node data by path; it is written once per
	// node, so only the leader's reconcile loop reads and prunes it, as it
	// does quarantined, the reason of each node last logged as quarantined.
	nodes       map[string]zkstate.Announced
	quarantined map[string]string
	preserve    preservation
	metrics     *metrics
	// traffic is what the gateways reported lately, for the baseline of a
	// post-switch analysis; history maps the newest switches to their
	// history nodes, where a verdict is filed.
	traffic trafficLog
	history historyNodes
}

// New checks cfg.
func New(cfg Config) (*Controller, error) {
	if len(cfg.ZK) == 0 || cfg.Registry == nil {
		return nil, errors.New("controller: ZooKeeper servers and a registry are required")
	}
	if _, err := signing.ParseKeys(cfg.Token); err != nil {
		return nil, fmt.Errorf("controller: a token is required to sign instructions (SWITCHYARD_TOKEN or --token): %w", err)
	}
	paths, err := zkstate.NewPaths(cfg.ZKRoot)
	if err != nil {
		return nil, fmt.Errorf("controller: %w", err)
	}
	if cfg.ID == "" {
		host, _ := os.Hostname()
		b := make([]byte, 3)
		_, _ = rand.Read(b)
		cfg.ID = host + "-" + hex.EncodeToString(b)
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = 10 * time.Second
	}
	if cfg.HealthTimeout <= 0 {
		cfg.HealthTimeout = 5 * time.Second
	}
	if cfg.GatewayTimeout <= 0 {
		cfg.GatewayTimeout = 5 * time.Second
	}
	if cfg.MaxBatch < 0 {
		return nil, fmt.Errorf("controller: max batch %d: want 1 or more (0 for the default, %d)", cfg.MaxBatch, DefaultMaxBatch)
	}
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 2 * time.Second
	}
	if cfg.PreservationHold <= 0 {
		cfg.PreservationHold = 30 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = logrus.StandardLogger()
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = (&net.Dialer{Timeout: time.Second}).DialContext
	// A switch health-checks every target instance, then checks and
	// instructs each again: keeping one idle connection per instance (not
	// the default 100 in all) lets the second call reuse the first's.
	// runSwitch closes them when it ends.
	tr.MaxIdleConns = 0
	return &Controller{
		cfg: cfg, paths: paths,
		log: cfg.Log.WithField("controller", cfg.ID),
		// A health check may take up to HealthTimeout; an instruction
		// waits for the registry's confirmation.
		http:    &http.Client{Transport: tr, Timeout: max(2*time.Second, cfg.HealthTimeout)},
		sess:    newSession(cfg.SessionTimeout),
		nodes:   map[string]zkstate.Announced{},
		metrics: newMetrics(),
	}, nil
}

// Run campaigns for leadership and, while leading, reconciles, until ctx
// ends. It also serves the HTTP API when cfg.Listen is set.
func (c *Controller) Run(ctx context.Context) error {
	conn, _, err := zk.Connect(c.cfg.ZK, c.cfg.SessionTimeout,
		zk.WithLogInfo(false), zk.WithLogger(zkLogger{c.log}), zk.WithEventCallback(c.sess.onEvent))
	if err != nil {
		return fmt.Errorf("controller: connect to zookeeper: %w", err)
	}
	defer conn.Close()
	c.conn = conn
	c.sess.bind(conn)
	c.rec = newRecorder(conn, c.paths.Switch(), c.log)

	if c.cfg.ZKAuth == "" {
		c.log.Warn("ZooKeeper is open: anyone who reaches it can switch or announce instances; set SWITCHYARD_ZK_AUTH to lock switchyard's nodes")
	}
	var api string
	if c.cfg.Listen != "" {
		ln, err := net.Listen("tcp", c.cfg.Listen)
		if err != nil {
			return fmt.Errorf("controller: listen: %w", err)
		}
		api = "http://" + ln.Addr().String()
		go c.serveAPI(ctx, ln)
	}
	el := &election{conn: conn, sess: c.sess, dir: c.paths.Leader(), acl: c.cfg.ZKAuth.ACL(), me: zkstate.Candidate{ID: c.cfg.ID, API: api}}
	defer el.Resign()

	backoff := retry.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	for ctx.Err() == nil {
		if err := c.sess.Wait(ctx); err != nil {
			break
		}
		if err := c.ensureLayout(); err != nil {
			c.log.WithError(err).Warn("could not prepare the ZooKeeper layout; retrying")
			_ = backoff.Wait(ctx)
			continue
		}
		c.log.Info("campaigning for leadership")
		if err := el.Campaign(ctx); err != nil {
			if ctx.Err() == nil {
				c.log.WithError(err).Warn("campaign interrupted; campaigning again once the session is back")
				_ = backoff.Wait(ctx)
			}
			continue
		}
		backoff.Reset()
		epoch, err := el.Epoch()
		if err != nil {
			c.log.WithError(err).Warn("could not read the leader epoch; campaigning again")
			continue
		}
		c.epoch.Store(epoch)
		c.lead(ctx)
	}
	return nil
}

// Leading reports whether this controller is acting as leader now: it won
// the election and is connected to ZooKeeper. A leader whose connection
// dropped does nothing until it is back on the same session.
func (c *Controller) Leading() bool { return c.leading.Load() && c.sess.Connected() }

// ensureLayout logs in, creates the persistent nodes and a default
// /active_color, and in digest mode locks them to the switchyard identity.
func (c *Controller) ensureLayout() error {
	if err := c.cfg.ZKAuth.Login(c.conn); err != nil {
		return err
	}
	acl := c.cfg.ZKAuth.ACL()
	for _, p := range append(c.paths.Persistent(), c.paths.Switch()) {
		if err := zkstate.EnsurePath(c.conn, p, acl); err != nil {
			return err
		}
	}
	_, err := c.conn.Create(c.paths.ActiveColor(), []byte(zkstate.Blue), 0, acl)
	if err != nil && !errors.Is(err, zk.ErrNodeExists) {
		return fmt.Errorf("create %s: %w", c.paths.ActiveColor(), err)
	}
	if c.cfg.ZKAuth == "" {
		return nil
	}
	for _, p := range c.paths.Locked() {
		if _, err := c.conn.SetACL(p, acl, -1); err != nil {
			return fmt.Errorf("lock %s to the switchyard identity: %w", p, err)
		}
	}
	return nil
}

// lead acts as leader until the session is lost or ctx ends. Losing the
// session stops every action at once: another controller may lead now.
func (c *Controller) lead(parent context.Context) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	c.leading.Store(true)
	c.metrics.leading.Set(1)
	defer func() { c.leading.Store(false); c.metrics.leading.Set(0) }()
	lost := c.sess.Lost()
	go func() {
		select {
		case <-lost:
			c.leading.Store(false)
			c.log.Warn("ZooKeeper session lost (expired, or disconnected past its timeout); stopping all leader actions")
			cancel()
		case <-ctx.Done():
		}
	}()
	c.log.Info("elected leader; reconciling")
	go c.rec.Run(ctx)
	go c.recordTraffic(ctx)
	c.resumeAnalysis(ctx)

	// A burst of events collapses into one pass.
	trigger := make(chan struct{}, 1)
	kick := func() {
		select {
		case trigger <- struct{}{}:
		default:
		}
	}
	c.asked.Store(nil)
	go c.watchZK(ctx, kick, func() (<-chan zk.Event, error) {
		b, _, ch, err := c.conn.GetW(c.paths.ActiveColor())
		if color, perr := zkstate.ParseColor(b); err == nil && perr == nil {
			c.asked.Store(&color)
		}
		return ch, err
	})
	for _, color := range zkstate.Colors {
		go c.watchZK(ctx, kick, func() (<-chan zk.Event, error) {
			_, _, ch, err := c.conn.ChildrenW(c.paths.Color(color))
			return ch, err
		})
	}
	// The registry is not watched: during a switch every step changes it,
	// and decoding the whole view each time would cost more than the step.
	// Instances keep their registry status themselves; ZooKeeper events and
	// the resync cover the rest.
	tick := time.NewTicker(c.cfg.Resync)
	defer tick.Stop()
	kick()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-trigger:
		}
		if err := c.reconcile(ctx); err != nil && ctx.Err() == nil {
			c.log.WithError(err).Warn("reconcile failed; retrying")
		}
	}
}

// watchZK re-arms a one-shot ZooKeeper watch and kicks on every event.
func (c *Controller) watchZK(ctx context.Context, kick func(), arm func() (<-chan zk.Event, error)) {
	for ctx.Err() == nil {
		ch, err := arm()
		if err != nil {
			_ = retry.Sleep(ctx, 200*time.Millisecond)
			continue
		}
		select {
		case <-ch:
			kick()
		case <-ctx.Done():
			return
		}
	}
}

type zkLogger struct{ log logrus.FieldLogger }

func (l zkLogger) Printf(format string, a ...any) { l.log.Debugf("zk: "+format, a...) }
