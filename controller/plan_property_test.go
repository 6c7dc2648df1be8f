package controller

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/zkstate"
)

// This property test drives the real Decide, Plan, upCount,
// unservedServices, zkstate.Join and the self-preservation hold through
// random event sequences, in the order reconcile, runSwitch, bringUp,
// takeOut and maintain call them, and checks after every step the
// invariants that controller/model/switch.pml checks with Spin:
//
//	(a) an instruction never takes the last UP instance of a service out;
//	(b) once everything is quiet and /active_color holds a color whose
//	    every service has a healthy member, each healthy member of that
//	    color is UP and each member of the other color OUT_OF_SERVICE;
//	(c) a leader never toggles: what it decides to serve is the last valid
//	    /active_color, unless no leader acted on that value yet (sent an
//	    instruction toward it as the target it had decided);
//	(d) an instance never applies an instruction of an older epoch than
//	    one it applied (the simulated handler checks and applies in one
//	    step; the model has the SDK's two).
//
// The simulated controller (simLeader) copies the step order of the real
// one function by function; ZooKeeper, the registry, the network and the
// instances (with the SDK's epoch check and health reports) are the
// simulated world. The environment acts between any two steps: writes to
// /active_color (blue, green or not a color), a new leader with a higher
// epoch, health changes, instances leaving and joining, planted nodes
// (duplicate ids, unregistered, misnamed, malformed), lost instructions
// and answers. As in the model, the default environment keeps the design's
// envelope (model/README.md, E1 to E3: records are written at once here);
// simMode lifts parts of it, or swaps in a deliberately broken copy of one
// piece of the logic, for TestPlanPropertyCanFail.

// simMode selects the environment and the logic of a run.
type simMode struct {
	lateDelivery    bool   // E1 lifted: an instruction may be applied long after it was sent
	healthMidSwitch bool   // E2 lifted: an UP instance may fail or leave in the middle of a pass
	quietOnBadValue bool   // (b) also when /active_color ends with a value that is not a color
	newAddress      bool   // an instance that restarts under the same id comes back at another address
	mutant          string // one of mutants, "" for the real logic
}

// simLogic is the logic the simulated controller calls: the real
// functions, or a broken copy of one of them.
type simLogic struct {
	decide          func(Observed) Decision
	plan            func(zkstate.Color, []Member) ([]Member, []Member)
	upCount         func([]Member, zkstate.Color) map[string]int
	unserved        func([]Member, map[string]int) []string
	join            func([]zkstate.Announced, []registry.Instance, func(string) error) ([]Member, []zkstate.Quarantined)
	breakBeforeMake bool // take the old color out before bringing the target up
	noLastUpGuard   bool // take out even the last UP instance
	toggle          bool // a new leader switches to the other color of the record
}

func realLogic() simLogic {
	return simLogic{decide: Decide, plan: Plan, upCount: upCount, unserved: unservedServices, join: zkstate.Join}
}

// mutants are broken copies of one piece of the logic each, and the
// invariant each must break.
var mutants = map[string]struct {
	breaks string
	apply  func(*simLogic)
}{
	"upcount-counts-down": {"(a)", func(l *simLogic) {
		l.upCount = func(ms []Member, color zkstate.Color) map[string]int {
			n := map[string]int{}
			for _, m := range ms {
				if m.Color == color && (m.Status == registry.StatusUp || m.Status == registry.StatusDown) {
					n[m.Service]++
				}
			}
			return n
		}
	}},
	"join-trusts-duplicates": {"(a)", func(l *simLogic) {
		l.join = func(nodes []zkstate.Announced, regs []registry.Instance, _ func(string) error) ([]Member, []zkstate.Quarantined) {
			byID := map[string]registry.Instance{}
			for _, in := range regs {
				byID[in.ID] = in
			}
			var ms []Member
			for _, a := range nodes {
				if in, ok := byID[a.Name]; ok && a.Err == nil {
					ms = append(ms, Member{ID: a.Name, Service: a.Node.Service, Color: a.Color,
						Address: a.Node.Address, Port: a.Node.Port, Status: in.Status})
				}
			}
			return ms, nil
		}
	}},
	"plan-keeps-down-standby": {"(b)", func(l *simLogic) {
		l.plan = func(target zkstate.Color, ms []Member) (ups, outs []Member) {
			ups, outs = Plan(target, ms)
			var kept []Member
			for _, m := range outs {
				if m.Status != registry.StatusDown {
					kept = append(kept, m)
				}
			}
			return ups, kept
		}
	}},
	"break-before-make":  {"(a)", func(l *simLogic) { l.breakBeforeMake = true }},
	"take-out-last-up":   {"(a)", func(l *simLogic) { l.noLastUpGuard = true }},
	"new-leader-toggles": {"(c)", func(l *simLogic) { l.toggle = true }},
}

// simProc is one instance process. A process that left stays in the list,
// dead; one joining again with the same id is a new process.
type simProc struct {
	id      string
	service string
	color   zkstate.Color
	port    int
	alive   bool // runs, its node is announced, it is registered
	healthy bool
	status  registry.Status // in the registry
	desired registry.Status // the SDK's
	epoch   int64           // the SDK's newest accepted leader epoch
	applied int64           // ghost: the newest epoch it applied
}

// simMsg is an instruction on its way.
type simMsg struct {
	port   int
	id     string
	status registry.Status
	epoch  int64
}

const simAddress = "10.0.0.1"

type simWorld struct {
	t     *rapid.T
	mode  simMode
	logic simLogic

	procs    []*simProc
	planted  []zkstate.Announced
	active   []byte // /active_color
	zxid     int64
	rec      *zkstate.Switch
	epoch    int64   // the newest leader's
	late     *simMsg // an instruction still on its way after its sender stopped waiting
	inflight bool    // the leader's instruction is on its way
	loss     string  // "request" or "answer": the next one is lost
	now      time.Time
	index    uint64 // the registry's

	leader   *simLeader
	maxBatch int // the controllers' MaxBatch
	events   int // environment events left
	quiet    bool
	services []string
	nextID   int

	// ghosts
	want      zkstate.Color
	wantActed bool
	busy      bool
	trace     []string
}

func (w *simWorld) logf(format string, args ...any) {
	w.trace = append(w.trace, fmt.Sprintf(format, args...))
}

func (w *simWorld) fail(format string, args ...any) {
	w.t.Fatalf("%s\nevents:\n  %s", fmt.Sprintf(format, args...), strings.Join(w.trace, "\n  "))
}

func (w *simWorld) proc(id string) *simProc {
	for _, p := range w.procs {
		if p.alive && p.id == id {
			return p
		}
	}
	return nil
}

func (w *simWorld) procAt(port int) *simProc {
	for _, p := range w.procs {
		if p.alive && p.port == port {
			return p
		}
	}
	return nil
}

func (w *simWorld) alive() []*simProc {
	var out []*simProc
	for _, p := range w.procs {
		if p.alive {
			out = append(out, p)
		}
	}
	return out
}

// nodes are the instance nodes under /blue and /green, as members reads them.
func (w *simWorld) nodes() []zkstate.Announced {
	var out []zkstate.Announced
	for _, p := range w.alive() {
		out = append(out, zkstate.Announced{Color: p.color, Name: p.id, Node: zkstate.InstanceNode{
			Service: p.service, ID: p.id, Address: simAddress, Port: p.port}})
	}
	return append(out, w.planted...)
}

func (w *simWorld) nodeExists(color zkstate.Color, name string) bool {
	for _, a := range w.nodes() {
		if a.Color == color && a.Name == name {
			return true
		}
	}
	return false
}

// registrations are the registry's instances.
func (w *simWorld) registrations() []registry.Instance {
	var out []registry.Instance
	for _, p := range w.alive() {
		out = append(out, registry.Instance{ID: p.id, Service: p.service, Color: string(p.color),
			Address: simAddress, Port: p.port, Status: p.status})
	}
	return out
}

func (w *simWorld) upIn(service string) int {
	n := 0
	for _, p := range w.alive() {
		if p.service == service && p.status == registry.StatusUp {
			n++
		}
	}
	return n
}

// deliver is the SDK's instruction handler at msg.port.
func (w *simWorld) deliver(msg simMsg, late bool) (uint64, error) {
	p := w.procAt(msg.port)
	switch {
	case p == nil:
		return 0, errors.New("connection refused")
	case p.id != msg.id:
		return 0, errors.New("403: instruction is for another instance")
	case msg.epoch < p.epoch:
		w.logf("%s refuses %s of epoch %d (has seen %d)", p.id, msg.status, msg.epoch, p.epoch)
		return 0, errors.New("409: leader epoch is older")
	}
	p.epoch = msg.epoch
	if msg.status == registry.StatusUp && !p.healthy {
		// The SDK checks its health right before it goes UP.
		w.logf("%s refuses UP: unhealthy", p.id)
		return 0, errUnhealthy
	}
	wasUp := p.status == registry.StatusUp
	if msg.epoch < p.applied {
		w.fail("(d) %s applies %s of epoch %d after one of epoch %d", p.id, msg.status, msg.epoch, p.applied)
	}
	p.applied = msg.epoch
	p.desired, p.status = msg.status, msg.status
	w.index++
	how := ""
	if late {
		how = " (late)"
	}
	w.logf("%s applies %s of epoch %d%s; %s has %d UP", p.id, msg.status, msg.epoch, how, p.service, w.upIn(p.service))
	if wasUp && msg.status == registry.StatusOutOfService && w.upIn(p.service) == 0 {
		w.fail("(a) an instruction took the last UP instance of %s out (%s)", p.service, p.id)
	}
	return w.index, nil
}

// resolveLate delivers or loses the instruction still on its way.
func (w *simWorld) resolveLate() {
	if w.late == nil {
		return
	}
	msg := *w.late
	w.late = nil
	if !w.quiet && rapid.Bool().Draw(w.t, "late instruction lost") {
		w.logf("the late instruction to %s is lost", msg.id)
		return
	}
	_, _ = w.deliver(msg, true)
}

// upMayDrop is E2: an UP instance may not fail or leave while the leader
// is in the middle of a pass or an instruction is on its way.
func (w *simWorld) upMayDrop() bool {
	return w.mode.healthMidSwitch || (!w.busy && !w.inflight && w.late == nil)
}

// act lets the environment do one thing, or nothing, at a step of the leader.
func (w *simWorld) act(where string) {
	if w.quiet || w.events <= 0 {
		return
	}
	if w.mode.lateDelivery && w.late != nil && rapid.Bool().Draw(w.t, "late arrives at "+where) {
		w.resolveLate()
	}
	if !rapid.Bool().Draw(w.t, "event at "+where) {
		return
	}
	w.event()
}

// event is one event of the environment.
func (w *simWorld) event() {
	if w.events <= 0 || w.quiet {
		return
	}
	w.events--
	t := w.t
	// Writes, health and the watch come more often than the rest.
	kinds := []string{"write", "write", "write", "leader", "health", "health", "join", "plant", "lose", "watch", "watch"}
	if len(w.alive()) > 0 {
		kinds = append(kinds, "report", "report", "leave", "restart")
	}
	if len(w.planted) > 0 {
		kinds = append(kinds, "unplant")
	}
	switch rapid.SampledFrom(kinds).Draw(t, "event") {
	case "write":
		// mostly a flip to the other color, sometimes the same one again or a bad value
		w.active = []byte(rapid.SampledFrom([]string{string(w.want.Other()), string(w.want.Other()), string(w.want), "purple"}).Draw(t, "value"))
		w.zxid++
		if c, err := zkstate.ParseColor(w.active); err == nil && c != w.want {
			w.want, w.wantActed = c, false
		}
		w.logf("/active_color := %s (zxid %d)", w.active, w.zxid)
	case "leader":
		w.depose()
	case "watch":
		if w.leader != nil {
			if c, err := zkstate.ParseColor(w.active); err == nil {
				w.leader.asked = &c
			}
			w.logf("the leader's watch reads /active_color=%s", w.active)
		}
	case "health":
		ps := w.alive()
		if len(ps) == 0 {
			return
		}
		p := rapid.SampledFrom(ps).Draw(t, "instance")
		p.healthy = !p.healthy
		w.logf("%s healthy=%v", p.id, p.healthy)
	case "report": // the SDK's reportHealth
		p := rapid.SampledFrom(w.alive()).Draw(t, "instance")
		switch {
		case p.desired == registry.StatusUp && !p.healthy && p.status == registry.StatusUp && w.upMayDrop():
			p.status = registry.StatusDown
		case p.desired == registry.StatusUp && p.healthy && p.status == registry.StatusDown:
			p.status = registry.StatusUp
		default:
			return
		}
		w.index++
		w.logf("%s reports %s; %s has %d UP", p.id, p.status, p.service, w.upIn(p.service))
	case "leave":
		p := rapid.SampledFrom(w.alive()).Draw(t, "instance")
		if p.status == registry.StatusUp && !w.upMayDrop() {
			return
		}
		p.alive = false
		w.logf("%s leaves; %s has %d UP", p.id, p.service, w.upIn(p.service))
	case "restart": // the process ends and starts again under the same id and color
		p := rapid.SampledFrom(w.alive()).Draw(t, "instance")
		if p.status == registry.StatusUp && !w.upMayDrop() {
			return
		}
		p.alive = false
		w.logf("%s restarts", p.id)
		w.start(p.id, p.service, p.color, p.port, rapid.Bool().Draw(t, "healthy"), registry.StatusOutOfService)
	case "join":
		w.join(rapid.SampledFrom(w.services).Draw(t, "service"), rapid.SampledFrom(zkstate.Colors[:]).Draw(t, "color"),
			rapid.Bool().Draw(t, "healthy"), registry.StatusOutOfService)
	case "plant":
		w.plant()
	case "unplant":
		i := rapid.IntRange(0, len(w.planted)-1).Draw(t, "planted")
		w.logf("the planted node %s is removed", w.planted[i].Path())
		w.planted = append(w.planted[:i:i], w.planted[i+1:]...)
	case "lose":
		w.loss = rapid.SampledFrom([]string{"request", "answer"}).Draw(t, "lose")
	}
}

// join starts a process: a new id, or the id of one that left.
func (w *simWorld) join(service string, color zkstate.Color, healthy bool, st registry.Status) {
	var gone []*simProc
	for _, p := range w.procs {
		if !p.alive && p.service == service && w.proc(p.id) == nil {
			gone = append(gone, p)
		}
	}
	if len(gone) > 0 && !w.quiet && rapid.Bool().Draw(w.t, "same id again") {
		old := rapid.SampledFrom(gone).Draw(w.t, "id")
		w.start(old.id, service, color, old.port, healthy, st)
		return
	}
	w.start(fmt.Sprintf("%s-%d", service, w.nextID), service, color, 0, healthy, st)
	w.nextID++
}

// start starts a process. One that takes an id again comes back at its
// old address (port), unless newAddress.
func (w *simWorld) start(id, service string, color zkstate.Color, port int, healthy bool, st registry.Status) {
	if port == 0 || w.mode.newAddress {
		port = 10000 + len(w.procs)
	}
	if w.nodeExists(color, id) || w.procAt(port) != nil {
		return // the SDK cannot create its node, or the address is taken
	}
	w.procs = append(w.procs, &simProc{id: id, service: service, color: color, port: port,
		alive: true, healthy: healthy, status: st, desired: st})
	w.logf("%s starts under %s at port %d (healthy=%v, %s)", id, color, port, healthy, st)
}

// plant adds a node that is not an instance's own.
func (w *simWorld) plant() {
	t := w.t
	name := fmt.Sprintf("planted-%d", w.nextID)
	w.nextID++
	a := zkstate.Announced{Color: rapid.SampledFrom(zkstate.Colors[:]).Draw(t, "color"), Name: name,
		Node: zkstate.InstanceNode{Service: rapid.SampledFrom(w.services).Draw(t, "service"), ID: name, Address: simAddress, Port: 9}}
	ps := w.alive()
	kinds := []string{"unregistered", "malformed", "link-local"}
	if len(ps) > 0 {
		kinds = append(kinds, "duplicate", "misnamed")
	}
	switch kind := rapid.SampledFrom(kinds).Draw(t, "plant"); kind {
	case "duplicate": // a live instance's node copied under the other color
		p := rapid.SampledFrom(ps).Draw(t, "of")
		a = zkstate.Announced{Color: p.color.Other(), Name: p.id, Node: zkstate.InstanceNode{
			Service: p.service, ID: p.id, Address: simAddress, Port: p.port}}
	case "misnamed":
		a.Node.ID = rapid.SampledFrom(ps).Draw(t, "of").id
	case "malformed":
		a.Err = errors.New("instance node is not JSON")
	case "link-local":
		a.Node.Address = "169.254.169.254"
	}
	if w.nodeExists(a.Color, a.Name) {
		return
	}
	w.planted = append(w.planted, a)
	w.logf("node %s planted", a.Path())
}

// depose moves leadership: the leader stops at once (its context is
// cancelled); an instruction it had on its way goes on as a late one.
func (w *simWorld) depose() {
	w.epoch++
	if w.leader != nil {
		w.leader.cancel()
		w.leader = nil
	}
	w.logf("leadership moves: epoch %d", w.epoch)
}

// simLeader is the leading controller: reconcile, runSwitch, bringUp,
// takeOut, maintain, instruct and the record's outcomes, step for step as
// in reconcile.go, switch.go, instruct.go and record.go, with the I/O done
// on the simulated world. Each step may let the environment act.
type simLeader struct {
	w        *simWorld
	logic    simLogic
	ctx      context.Context
	cancel   context.CancelFunc
	epoch    int64
	asked    *zkstate.Color // c.asked
	preserve preservation
	first    bool
	maxBatch int
	decided  zkstate.Color // ghost: the target Decide chose this pass, "" while keeping the old color
}

const simHold = 4 * time.Second

func (c *simLeader) step(where string) { c.w.act(where) }

// reconcile mirrors Controller.reconcile.
func (c *simLeader) reconcile(ctx context.Context) error {
	w := c.w
	c.step("start of pass")
	if ctx.Err() != nil {
		return ctx.Err()
	}
	raw, mzxid := w.active, w.zxid
	obs := Observed{Zxid: mzxid}
	obs.Asked, _ = zkstate.ParseColor(raw)
	if w.rec != nil {
		rec := *w.rec
		obs.Record = &rec
	}
	if c.logic.decide(obs).Action == RefuseValue {
		rec := c.refuseValue(raw, mzxid, obs.Record)
		obs.Record = &rec
	}
	c.step("registry read")
	if ctx.Err() != nil {
		return ctx.Err()
	}
	obs.Ready = true
	d := c.logic.decide(obs)
	if c.logic.toggle && c.first && c.epoch > 1 && obs.Record != nil {
		d = Decision{Action: Switch, Target: obs.Record.Active.Other(), ID: mzxid}
	}
	c.first = false
	w.logf("leader (epoch %d) reads /active_color=%s: %s %s", c.epoch, raw, d.Action, d.Target)
	if d.Action >= Acknowledge && d.Target != w.want && w.wantActed {
		w.fail("(c) leader (epoch %d) decided %s toward %s, but the last valid /active_color is %s and was acted on", c.epoch, d.Action, d.Target, w.want)
	}
	if d.Action == Wait {
		return nil
	}
	members, quarantined, err := c.members()
	if errors.Is(err, errPreserving) {
		return nil
	}
	w.busy = true
	defer func() { w.busy = false }()
	c.decided = d.Target
	switch d.Action {
	case Acknowledge:
		c.acknowledge(d.Target, d.ID)
		c.maintain(ctx, d.Target, members)
	case Maintain:
		c.maintain(ctx, d.Target, members)
	case RetryRefused:
		if len(c.healthyTargets(ctx, d.Target, members, false)) == 0 {
			c.decided = ""
			c.maintain(ctx, obs.Record.Active, members)
			return nil
		}
		return c.runSwitch(ctx, d.Target, d.ID, obs.Record, members, quarantined)
	case Switch:
		return c.runSwitch(ctx, d.Target, d.ID, obs.Record, members, quarantined)
	}
	return nil
}

// members mirrors Controller.members: the nodes joined with the registry,
// after the self-preservation hold.
func (c *simLeader) members() ([]Member, []zkstate.Quarantined, error) {
	nodes, regs := c.w.nodes(), c.w.registrations()
	if holding, _ := c.preserve.hold(len(nodes), c.w.now, simHold); holding {
		c.w.logf("self-preservation hold")
		return nil, nil, errPreserving
	}
	members, quarantined := c.logic.join(nodes, regs, zkstate.AddressPolicy(false))
	return members, quarantined, nil
}

// runSwitch mirrors Controller.runSwitch.
func (c *simLeader) runSwitch(ctx context.Context, target zkstate.Color, id int64, prev *zkstate.Switch, members []Member, quarantined []zkstate.Quarantined) error {
	rec := c.startRecord(target, id, prev, quarantined)
	healthy := c.healthyTargets(ctx, target, members, true)
	if err := c.checkTarget(ctx, target); err != nil {
		return ignorePreempted(err)
	}
	ups, outs := c.logic.plan(target, members)
	optimistic := c.logic.upCount(members, target)
	for _, m := range ups {
		if healthy[m.ID] {
			optimistic[m.Service]++
		}
	}
	if svcs := c.logic.unserved(outs, optimistic); len(svcs) > 0 {
		c.refuse(rec)
		return nil
	}
	targetUp := c.logic.upCount(members, target)
	if c.logic.breakBeforeMake {
		// the broken order: out first, counting on what should come up
		if err := c.takeOut(ctx, &rec, outs, optimistic); err != nil {
			return ignorePreempted(err)
		}
	}
	if err := c.bringUp(ctx, &rec, ups, healthy, targetUp); err != nil {
		return ignorePreempted(err)
	}
	if svcs := c.logic.unserved(outs, targetUp); len(svcs) > 0 && !c.logic.breakBeforeMake {
		c.refuse(rec)
		return nil
	}
	if !c.logic.breakBeforeMake {
		c.step("wait for gateways (make)")
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := c.takeOut(ctx, &rec, outs, targetUp); err != nil {
			return ignorePreempted(err)
		}
	}
	c.step("wait for gateways")
	if ctx.Err() != nil {
		return ctx.Err()
	}
	rec.Phase, rec.Active = zkstate.PhaseDone, target
	c.finishRecord(rec)
	return nil
}

// bringUp mirrors Controller.bringUp: a canary of one, then batches that
// double up to maxBatch. The instructions of a batch go out in a random
// order, one after the other: an interleaving of the real batch, whose
// instructions are independent (all of them UPs of the target).
func (c *simLeader) bringUp(ctx context.Context, rec *zkstate.Switch, ups []Member, healthy map[string]bool, targetUp map[string]int) error {
	var ready []Member
	for _, m := range ups {
		if healthy[m.ID] {
			ready = append(ready, m)
		}
	}
	b, canary := upBatcher(c.maxBatch), true
	for len(ready) > 0 {
		if err := c.checkTarget(ctx, rec.Target); err != nil {
			return err
		}
		var batch []Member
		batch, ready = b.take(ready)
		up := false
		var stop error
		for _, m := range rapid.Permutation(batch).Draw(c.w.t, "batch order") {
			_, _, err := c.instruct(ctx, rec.Target, m, registry.StatusUp, true)
			switch {
			case errors.Is(err, errPreempted) || ctx.Err() != nil:
				stop = cmp.Or(stop, err, ctx.Err())
			case err != nil:
			default:
				targetUp[m.Service]++
				up = true
			}
		}
		if stop != nil {
			return stop
		}
		if canary && up {
			canary = false
			c.step("wait for gateways (canary)")
		}
		b.grow(up)
	}
	return nil
}

// takeOut mirrors Controller.takeOut: batches of maxBatch, each guarded.
func (c *simLeader) takeOut(ctx context.Context, rec *zkstate.Switch, outs []Member, targetUp map[string]int) error {
	b, rest := outBatcher(c.maxBatch), outs
	for len(rest) > 0 {
		if err := c.checkTarget(ctx, rec.Target); err != nil {
			return err
		}
		var next, batch []Member
		next, rest = b.take(rest)
		for _, m := range next {
			if targetUp[m.Service] == 0 && !c.logic.noLastUpGuard {
				continue // never take out the last UP instance
			}
			batch = append(batch, m)
		}
		var stop error
		for _, m := range rapid.Permutation(batch).Draw(c.w.t, "batch order") {
			_, _, err := c.instruct(ctx, rec.Target, m, registry.StatusOutOfService, false)
			switch {
			case errors.Is(err, errPreempted) || ctx.Err() != nil:
				stop = cmp.Or(stop, err, ctx.Err())
			case errors.Is(err, errGone):
			case err != nil:
				stop = cmp.Or(stop, err)
			}
		}
		if stop != nil {
			return stop
		}
	}
	return nil
}

// maintain mirrors Controller.maintain.
func (c *simLeader) maintain(ctx context.Context, active zkstate.Color, members []Member) {
	ups, outs := c.logic.plan(active, members)
	if len(ups) == 0 && len(outs) == 0 {
		return
	}
	targetUp := c.logic.upCount(members, active)
	for _, m := range ups {
		if !c.healthy(m) {
			continue
		}
		if _, _, err := c.instruct(ctx, active, m, registry.StatusUp, true); err != nil {
			continue
		}
		targetUp[m.Service]++
	}
	for _, m := range outs {
		if targetUp[m.Service] == 0 && !c.logic.noLastUpGuard {
			continue
		}
		_, _, _ = c.instruct(ctx, active, m, registry.StatusOutOfService, true)
	}
}

// healthyTargets mirrors Controller.healthyTargets; patience is one more
// look after the environment had its turn.
func (c *simLeader) healthyTargets(ctx context.Context, target zkstate.Color, members []Member, patient bool) map[string]bool {
	out := map[string]bool{}
	for _, m := range members {
		if m.Color != target {
			continue
		}
		ok := c.healthy(m)
		if patient && !ok && ctx.Err() == nil {
			ok = c.healthy(m)
		}
		if ok {
			out[m.ID] = true
		}
	}
	return out
}

// healthy is GET /_switchyard/health at the member's address.
func (c *simLeader) healthy(m Member) bool {
	c.step("health check of " + m.ID)
	if c.ctx.Err() != nil {
		return false
	}
	p := c.w.procAt(m.Port)
	return p != nil && p.healthy
}

// instruct mirrors Controller.instruct: a limit makes it give up on an
// error when its deadline passed (a random choice here); without one it
// retries until the instance's node is gone.
func (c *simLeader) instruct(ctx context.Context, target zkstate.Color, m Member, st registry.Status, limited bool) (uint64, int, error) {
	for attempt := 1; ; attempt++ {
		if attempt > 40 {
			c.w.fail("(b) the pass never ends: instruct %s %s still retrying after 40 attempts", m.ID, st)
		}
		if err := c.checkTarget(ctx, target); err != nil {
			return 0, attempt - 1, err
		}
		idx, err := c.sendInstruction(ctx, target, m, st)
		if err == nil {
			return idx, attempt, nil
		}
		if ctx.Err() != nil {
			return 0, attempt, ctx.Err()
		}
		if errors.Is(err, errUnhealthy) {
			return 0, attempt, err
		}
		if !c.w.nodeExists(m.Color, m.ID) {
			return 0, attempt, errGone
		}
		if limited && rapid.Bool().Draw(c.w.t, "deadline passed") {
			return 0, attempt, fmt.Errorf("instance did not apply %s after %d attempts: %w", st, attempt, err)
		}
		c.step("backoff")
	}
}

// checkTarget mirrors Controller.checkTarget. (The pause while the
// ZooKeeper connection is down ends with the same leader going on, which
// is an interleaving, or with it deposed.)
func (c *simLeader) checkTarget(ctx context.Context, target zkstate.Color) error {
	c.step("check target")
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if c.asked != nil && *c.asked != target {
		c.w.logf("leader (epoch %d): preempted, /active_color asks %s", c.epoch, *c.asked)
		return errPreempted
	}
	return nil
}

// sendInstruction is one PUT to the instance: on its way, the environment
// acts; the leader may be deposed (the request goes on, late) or, with
// late delivery, its client may time out while the request goes on.
func (c *simLeader) sendInstruction(ctx context.Context, target zkstate.Color, m Member, st registry.Status) (uint64, error) {
	w := c.w
	if target == w.want && target == c.decided {
		w.wantActed = true
	}
	msg := simMsg{port: m.Port, id: m.ID, status: st, epoch: c.epoch}
	w.logf("leader (epoch %d) sends %s to %s (toward %s)", c.epoch, st, m.ID, target)
	w.inflight = true
	c.step("instruction on its way")
	w.inflight = false
	if ctx.Err() != nil {
		if w.late == nil {
			w.late = &msg
		}
		return 0, ctx.Err()
	}
	if w.mode.lateDelivery && w.late == nil && !w.quiet && rapid.Bool().Draw(w.t, "client times out") {
		w.logf("leader (epoch %d) times out; the instruction to %s goes on", c.epoch, m.ID)
		w.late = &msg
		return 0, errors.New("timeout")
	}
	if w.loss == "request" {
		w.loss = ""
		w.logf("the instruction to %s is lost", m.ID)
		return 0, errors.New("request lost")
	}
	idx, err := w.deliver(msg, false)
	if err == nil && w.loss == "answer" {
		w.loss = ""
		w.logf("the answer of %s is lost", m.ID)
		return 0, errors.New("answer lost")
	}
	c.step("answered")
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	return idx, err
}

// The record's outcomes, as record.go writes them (synchronously: E3).

func (c *simLeader) startRecord(target zkstate.Color, id int64, prev *zkstate.Switch, quarantined []zkstate.Quarantined) zkstate.Switch {
	rec := zkstate.Switch{ID: id, Target: target, Goal: target, Phase: zkstate.PhaseSwitching, Quarantined: quarantined}
	if prev != nil {
		rec.Active, rec.From = prev.Active, prev.Active
		if prev.Phase == zkstate.PhaseSwitching && prev.Target == target {
			rec.From = prev.From
		}
	}
	if rec.From == target {
		rec.From = ""
	}
	c.w.rec = &rec
	return rec
}

func (c *simLeader) refuse(rec zkstate.Switch) {
	rec.Phase = zkstate.PhaseRefused
	c.finishRecord(rec)
}

func (c *simLeader) refuseValue(raw []byte, id int64, prev *zkstate.Switch) zkstate.Switch {
	rec := zkstate.Switch{ID: id, Target: zkstate.Color(zkstate.Describe(raw)), Phase: zkstate.PhaseRefused}
	if prev != nil {
		rec.Active, rec.Goal = prev.Active, prev.GoalColor()
	}
	c.finishRecord(rec)
	return rec
}

func (c *simLeader) acknowledge(color zkstate.Color, id int64) {
	c.finishRecord(zkstate.Switch{ID: id, Target: color, Goal: color, Active: color, Phase: zkstate.PhaseDone})
}

func (c *simLeader) finishRecord(rec zkstate.Switch) {
	if c.ctx.Err() != nil {
		return // a deposed leader writes nothing
	}
	c.w.rec = &rec
	c.w.logf("record: %s toward %s, active %s", rec.Phase, rec.Goal, rec.Active)
}

// pass runs one reconcile pass of the current leader, electing one first
// if there is none.
func (w *simWorld) pass() {
	if w.leader == nil {
		if !w.mode.lateDelivery {
			w.resolveLate() // E1: it arrives before the next leader starts
		}
		ctx, cancel := context.WithCancel(context.Background())
		w.leader = &simLeader{w: w, logic: w.logic, ctx: ctx, cancel: cancel, epoch: w.epoch, first: true, maxBatch: w.maxBatch}
	}
	c := w.leader
	_ = c.reconcile(c.ctx)
	w.now = w.now.Add(2 * time.Second)
}

// settle stops the environment, lets the controller converge and checks (b).
func (w *simWorld) settle() {
	w.quiet, w.loss = true, ""
	w.resolveLate()
	if w.leader != nil {
		if c, err := zkstate.ParseColor(w.active); err == nil {
			w.leader.asked = &c // the watch fires
		}
	}
	w.logf("quiet")
	for range 16 {
		w.pass()
	}
	goal, err := zkstate.ParseColor(w.active)
	if err != nil {
		if !w.mode.quietOnBadValue || w.rec == nil {
			return
		}
		goal = w.rec.GoalColor()
	}
	if goal == "" {
		return
	}
	members, _ := zkstate.Join(w.nodes(), w.registrations(), zkstate.AddressPolicy(false))
	healthyGoal := map[string]bool{}
	for _, m := range members {
		if p := w.procAt(m.Port); m.Color == goal && p != nil && p.healthy {
			healthyGoal[m.Service] = true
		}
	}
	for _, m := range members {
		if !healthyGoal[m.Service] {
			return // this service has no healthy instance of the goal: the switch is refused, by design
		}
	}
	for _, m := range members {
		p := w.procAt(m.Port)
		switch {
		case m.Color == goal && p.healthy && p.status != registry.StatusUp:
			w.fail("(b) after settling toward %s, healthy %s is %s", goal, m.ID, p.status)
		case m.Color != goal && p.status != registry.StatusOutOfService:
			w.fail("(b) after settling toward %s, %s of %s is %s", goal, m.ID, m.Color, p.status)
		}
	}
}

// simProperty is one random run: a random fleet, random events between
// and inside the leader's passes, then quiet and convergence.
func simProperty(mode simMode) func(*rapid.T) {
	return func(t *rapid.T) {
		logic := realLogic()
		if mode.mutant != "" {
			mutants[mode.mutant].apply(&logic)
		}
		w := &simWorld{t: t, mode: mode, logic: logic, active: []byte("blue"), epoch: 1, want: zkstate.Blue, wantActed: true,
			now:    time.Unix(1000, 0),
			events: rapid.IntRange(0, 30).Draw(t, "events"), maxBatch: rapid.IntRange(1, 3).Draw(t, "max batch")}
		w.services = []string{"api", "web"}[:rapid.IntRange(1, 2).Draw(t, "services")]
		for _, svc := range w.services {
			for _, color := range zkstate.Colors {
				for range rapid.IntRange(1, 2).Draw(t, "instances") {
					// blue is live; now and then a green one is a stray, UP or DOWN
					st := rapid.SampledFrom([]registry.Status{registry.StatusOutOfService, registry.StatusOutOfService,
						registry.StatusOutOfService, registry.StatusUp, registry.StatusDown}).Draw(t, "status")
					if color == zkstate.Blue {
						st = rapid.SampledFrom([]registry.Status{registry.StatusUp, registry.StatusUp, registry.StatusDown,
							registry.StatusOutOfService}).Draw(t, "status")
					}
					w.join(svc, color, rapid.IntRange(0, 3).Draw(t, "healthy") > 0, st)
				}
			}
		}
		w.rec = &zkstate.Switch{ID: 0, Target: zkstate.Blue, Goal: zkstate.Blue, Active: zkstate.Blue, Phase: zkstate.PhaseDone}
		t.Repeat(map[string]func(*rapid.T){
			"pass":  func(*rapid.T) { w.pass() },
			"event": func(*rapid.T) { w.event() },
		})
		w.settle()
	}
}

func TestPlanProperty(t *testing.T) {
	// Each check is cheap: run more than rapid's default 100, unless
	// -rapid.checks says how many.
	if !flagSet("rapid.checks") {
		setFlag(t, "rapid.checks", "2000")
	}
	rapid.Check(t, simProperty(simMode{}))
}

func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// setFlag sets one of rapid's flags for this test only.
func setFlag(t *testing.T, name, value string) {
	old := flag.Lookup(name).Value.String()
	t.Cleanup(func() { _ = flag.Set(name, old) })
	if err := flag.Set(name, value); err != nil {
		t.Fatal(err)
	}
}

// TestPlanPropertyCanFail shows the property test is not blind: each
// mutant (a broken copy of one piece of the logic, never the code under
// test) and each lifted assumption of the envelope must be caught, with
// the invariant named.
func TestPlanPropertyCanFail(t *testing.T) {
	// Stop at the first failure, shrink it briefly, leave no fail file.
	setFlag(t, "rapid.nofailfile", "true")
	setFlag(t, "rapid.shrinktime", "200ms")
	setFlag(t, "rapid.checks", "20000")
	runs := map[string]struct {
		mode   simMode
		breaks string
	}{
		"gap/health-mid-switch":       {simMode{healthMidSwitch: true}, "(a)"},
		"gap/late-delivery":           {simMode{lateDelivery: true}, "(a)"},
		"gap/bad-value-stalls-leader": {simMode{quietOnBadValue: true}, "(b)"},
		"gap/restart-at-new-address":  {simMode{newAddress: true}, "(b)"},
	}
	for name, m := range mutants {
		runs["mutant/"+name] = struct {
			mode   simMode
			breaks string
		}{simMode{mutant: name}, m.breaks}
	}
	for name, r := range runs {
		t.Run(name, func(t *testing.T) {
			tb := &failureTB{name: t.Name()}
			rapid.Check(tb, simProperty(r.mode))
			if !tb.failed {
				t.Fatalf("the property test did not catch %s", name)
			}
			if !strings.Contains(tb.msg, "tests: "+r.breaks+" ") {
				t.Fatalf("caught %s, but not as %s:\n%s", name, r.breaks, tb.msg)
			}
			first, _, _ := strings.Cut(tb.msg, "\n")
			t.Logf("caught: %s", first)
		})
	}
}

// failureTB records the outcome of a rapid.Check that must fail.
type failureTB struct {
	name   string
	failed bool
	msg    string
}

func (f *failureTB) Helper()                        {}
func (f *failureTB) Name() string                   { return f.name }
func (f *failureTB) Logf(string, ...any)            {}
func (f *failureTB) Log(...any)                     {}
func (f *failureTB) Skipf(string, ...any)           {}
func (f *failureTB) Skip(...any)                    {}
func (f *failureTB) SkipNow()                       {}
func (f *failureTB) Errorf(format string, a ...any) { f.record(fmt.Sprintf(format, a...)) }
func (f *failureTB) Error(a ...any)                 { f.record(fmt.Sprint(a...)) }
func (f *failureTB) Fatalf(format string, a ...any) { f.record(fmt.Sprintf(format, a...)) }
func (f *failureTB) Fatal(a ...any)                 { f.record(fmt.Sprint(a...)) }
func (f *failureTB) FailNow()                       { f.failed = true }
func (f *failureTB) Fail()                          { f.failed = true }
func (f *failureTB) Failed() bool                   { return f.failed }

func (f *failureTB) record(msg string) {
	f.failed = true
	f.msg += msg + "\n"
}
