package server

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard/switchyard/registry"
)

// Store is the built-in registry's state: instances and gateway reports,
// each held under a lease, and a change index that blocking queries wait on.
// It is safe for concurrent use.
type Store struct {
	ttl  time.Duration
	now  func() time.Time
	base time.Time // lease expiries count from here, on the monotonic clock

	// mu guards the maps and indexes. A heartbeat changes only its lease's
	// expiry, an atomic, so heartbeats share mu's read side.
	mu        sync.RWMutex
	index     uint64
	svcIndex  map[string]uint64
	instances map[string]*lease[registry.Instance]
	// bySvc holds the same leases by service and id, so that a view of
	// one service, or the changes to a few, costs those services.
	bySvc    map[string]map[string]*lease[registry.Instance]
	gateways map[string]*lease[registry.GatewayReport]
	changed  chan struct{} // closed and replaced on every change
	// The gateway reports change on an index of their own, so that a
	// report wakes only those waiting for reports, not every watch of the
	// instances.
	gwIndex   uint64
	gwChanged chan struct{}
	readyAt   time.Time
	ready     bool
	// encoded caches each view's JSON until the next change, so a change
	// that wakes thousands of waiters encodes each view once; changes
	// does the same for the Changes after each index asked from.
	encoded map[string][]byte
	changes map[uint64][]byte
	// epoch names this store among every other, a registry before its
	// restart included: an index another store gave means nothing here,
	// whatever it compares to.
	epoch string
}

type lease[T any] struct {
	val     T
	expires atomic.Int64 // since Store.base
}

// renew makes a lease expiring at exp last ttl from now.
func (s *Store) renew(exp *atomic.Int64, now time.Time) {
	exp.Store(int64(now.Sub(s.base) + s.ttl))
}

// expired reports whether a lease expiring at exp has run out at now.
func (s *Store) expired(exp *atomic.Int64, now time.Time) bool {
	return int64(now.Sub(s.base)) > exp.Load()
}

// NewStore returns a store whose leases last ttl and which reports itself
// not Ready for warmup, the time its instances need to register again after
// a restart. now is the clock; nil means time.Now.
func NewStore(ttl, warmup time.Duration, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	t := now()
	return &Store{
		ttl:  ttl,
		now:  now,
		base: t,
		// Starting from the wall clock keeps indexes moving forward across a
		// restart, so a client's old index never hides new changes.
		index:     uint64(t.UnixMicro()),
		gwIndex:   uint64(t.UnixMicro()),
		gwChanged: make(chan struct{}),
		svcIndex:  map[string]uint64{},
		instances: map[string]*lease[registry.Instance]{},
		bySvc:     map[string]map[string]*lease[registry.Instance]{},
		gateways:  map[string]*lease[registry.GatewayReport]{},
		changed:   make(chan struct{}),
		encoded:   map[string][]byte{},
		changes:   map[uint64][]byte{},
		epoch:     rand.Text(),
		readyAt:   t.Add(warmup),
		ready:     warmup <= 0,
	}
}

// bump records a change to service and wakes every waiter. Callers hold mu.
func (s *Store) bump(service string) uint64 {
	s.index++
	s.svcIndex[service] = s.index
	s.wake()
	return s.index
}

// wake tells every waiter that views changed. Callers hold mu.
func (s *Store) wake() {
	clear(s.encoded)
	clear(s.changes)
	close(s.changed)
	s.changed = make(chan struct{})
}

// Register adds or replaces an instance with a fresh lease.
func (s *Store) Register(inst registry.Instance) (uint64, error) {
	if err := inst.Validate(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.instances[inst.ID]; ok && old.val.Service != inst.Service {
		s.remove(old.val)
		s.bump(old.val.Service)
	}
	l := &lease[registry.Instance]{val: inst}
	s.renew(&l.expires, s.now())
	s.instances[inst.ID] = l
	if s.bySvc[inst.Service] == nil {
		s.bySvc[inst.Service] = map[string]*lease[registry.Instance]{}
	}
	s.bySvc[inst.Service][inst.ID] = l
	return s.bump(inst.Service), nil
}

// Heartbeat renews an instance's lease.
func (s *Store) Heartbeat(id string) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	l, ok := s.instances[id]
	if !ok {
		return registry.ErrNotFound
	}
	s.renew(&l.expires, s.now())
	return nil
}

// Heartbeats renews the leases of ids and returns those it does not know,
// which must register again.
func (s *Store) Heartbeats(ids []string) (missing []string) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	now := s.now()
	for _, id := range ids {
		if l, ok := s.instances[id]; ok {
			s.renew(&l.expires, now)
		} else {
			missing = append(missing, id)
		}
	}
	return missing
}

// SetStatus changes an instance's status and records sw, the switch on
// whose instruction it changes (0: none), as its Switch. Setting the
// status it already has changes nothing, Switch included, and returns the
// current index.
func (s *Store) SetStatus(id string, st registry.Status, sw int64) (uint64, error) {
	if _, err := registry.ParseStatus(string(st)); err != nil {
		return 0, err
	}
	if sw < 0 {
		return 0, errInvalid(fmt.Sprintf("switch id %d is negative", sw))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.instances[id]
	if !ok {
		return 0, registry.ErrNotFound
	}
	s.renew(&l.expires, s.now())
	if l.val.Status == st {
		return s.svcIndex[l.val.Service], nil
	}
	l.val.Status, l.val.Switch = st, sw
	return s.bump(l.val.Service), nil
}

// Deregister removes an instance.
func (s *Store) Deregister(id string) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.instances[id]
	if !ok {
		return 0, registry.ErrNotFound
	}
	s.remove(l.val)
	return s.bump(l.val.Service), nil
}

// remove forgets inst. Callers hold mu.
func (s *Store) remove(inst registry.Instance) {
	delete(s.instances, inst.ID)
	delete(s.bySvc[inst.Service], inst.ID)
	if len(s.bySvc[inst.Service]) == 0 {
		delete(s.bySvc, inst.Service)
	}
}

// ReportGateway stores a gateway's report under a lease.
func (s *Store) ReportGateway(r registry.GatewayReport) error {
	if r.ID == "" || len(r.ID) > 256 {
		return errInvalid("gateway id must be 1 to 256 characters")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l := &lease[registry.GatewayReport]{val: r}
	s.renew(&l.expires, s.now())
	s.gateways[r.ID] = l
	s.bumpGateways()
	return nil
}

// bumpGateways records a change to the gateway reports and wakes those
// waiting for one. Callers hold mu.
func (s *Store) bumpGateways() {
	s.gwIndex++
	close(s.gwChanged)
	s.gwChanged = make(chan struct{})
}

// Gateways lists the reports of gateways whose lease is current, with
// their index, first waiting up to wait for the index to pass waitIndex
// when waitIndex is not zero. An index other than the client's, a
// registry restarted with a clock behind included, answers at once.
func (s *Store) Gateways(ctx context.Context, waitIndex uint64, wait time.Duration) ([]registry.GatewayReport, uint64) {
	s.waitFor(ctx, waitIndex, wait, func() (uint64, chan struct{}) { return s.gwIndex, s.gwChanged })
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]registry.GatewayReport, 0, len(s.gateways))
	for _, l := range s.gateways {
		out = append(out, l.val)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, s.gwIndex
}

// Expire evicts every lease that has run out, and ends the warm-up once
// its time has come. It returns the evicted instances.
func (s *Store) Expire() []registry.Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var evicted []registry.Instance
	for _, l := range s.instances {
		if s.expired(&l.expires, now) {
			s.remove(l.val)
			evicted = append(evicted, l.val)
			s.bump(l.val.Service)
		}
	}
	for id, l := range s.gateways {
		if s.expired(&l.expires, now) {
			delete(s.gateways, id)
			s.bumpGateways()
		}
	}
	if !s.ready && !now.Before(s.readyAt) {
		s.ready = true
		// Every service's view just became authoritative: wake all waiters.
		s.index++
		for svc := range s.svcIndex {
			s.svcIndex[svc] = s.index
		}
		s.wake()
	}
	return evicted
}

// indexOf is service's index ("" for all); an unknown service still
// needs an index to wait from. Callers hold mu.
func (s *Store) indexOf(service string) uint64 {
	if idx := s.svcIndex[service]; service != "" && idx != 0 {
		return idx
	}
	return s.index
}

// snapshot reads service's view ("" for all). Callers hold mu.
func (s *Store) snapshot(service string) registry.Snapshot {
	snap := registry.Snapshot{Index: s.indexOf(service), Ready: s.ready, Instances: []registry.Instance{}}
	if service != "" {
		for _, l := range s.bySvc[service] {
			snap.Instances = append(snap.Instances, l.val)
		}
	} else {
		for _, l := range s.instances {
			snap.Instances = append(snap.Instances, l.val)
		}
	}
	sort.Slice(snap.Instances, func(i, j int) bool { return snap.Instances[i].ID < snap.Instances[j].ID })
	return snap
}

// await blocks, when waitIndex is not zero, until service's index is no
// longer waitIndex, wait passes or ctx ends. An index below the client's
// (a registry restarted with a clock behind) answers at once, so the
// client resets.
func (s *Store) await(ctx context.Context, service string, waitIndex uint64, wait time.Duration) {
	s.waitFor(ctx, waitIndex, wait, func() (uint64, chan struct{}) { return s.indexOf(service), s.changed })
}

// waitFor blocks, when waitIndex is not zero, until the index current
// reads (under mu's read side, with the channel a change closes) is no
// longer waitIndex, wait passes or ctx ends.
func (s *Store) waitFor(ctx context.Context, waitIndex uint64, wait time.Duration, current func() (uint64, chan struct{})) {
	if waitIndex == 0 || wait <= 0 {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		s.mu.RLock()
		index, ch := current()
		s.mu.RUnlock()
		if index != waitIndex {
			return
		}
		select {
		case <-ch:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// Instances returns service's view, first waiting up to wait for its index
// to pass waitIndex when waitIndex is not zero.
func (s *Store) Instances(ctx context.Context, service string, waitIndex uint64, wait time.Duration) registry.Snapshot {
	s.await(ctx, service, waitIndex, wait)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.snapshot(service)
}

// Encoded is Instances as JSON, with the view's index. Every waiter woken
// by one change shares one encoding.
func (s *Store) Encoded(ctx context.Context, service string, waitIndex uint64, wait time.Duration) (uint64, []byte, error) {
	s.await(ctx, service, waitIndex, wait)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.encode(service)
}

// encode is Encoded once waited. Callers hold mu.
func (s *Store) encode(service string) (uint64, []byte, error) {
	b, ok := s.encoded[service]
	if !ok {
		var err error
		if b, err = json.Marshal(s.snapshot(service)); err != nil {
			return 0, nil, fmt.Errorf("encode the view of %q: %w", service, err)
		}
		s.encoded[service] = b
	}
	return s.indexOf(service), b, nil
}

// Epoch names the store (see Store.epoch): what a client sends back with
// the index of the last view of all services it was given.
func (s *Store) Epoch() string { return s.epoch }

// EncodedSince is Encoded of all services (service ""), but as the
// registry.Changes after since when since is an index of this store's
// view of all (epoch is the store's Epoch and since not past its index):
// every service that changed after since, each with all its instances.
// Otherwise it is the whole view, from which the client starts over.
// Every waiter woken by one change from the same index shares one
// encoding.
func (s *Store) EncodedSince(ctx context.Context, epoch string, since, waitIndex uint64, wait time.Duration) (uint64, []byte, error) {
	s.await(ctx, "", waitIndex, wait)
	s.mu.Lock()
	defer s.mu.Unlock()
	if epoch != s.epoch || since == 0 || since > s.index {
		return s.encode("")
	}
	b, ok := s.changes[since]
	if !ok {
		var err error
		if b, err = json.Marshal(s.changesSince(since)); err != nil {
			return 0, nil, fmt.Errorf("encode the changes since %d: %w", since, err)
		}
		// Watchers woken by one change mostly ask from the same few
		// indexes; a client asking from many others is not cached.
		if len(s.changes) < maxCachedChanges {
			s.changes[since] = b
		}
	}
	return s.index, b, nil
}

// maxCachedChanges caps the encodings of changes kept until the next
// change.
const maxCachedChanges = 64

// changesSince lists every service whose index passed since, with its
// instances now. Callers hold mu.
func (s *Store) changesSince(since uint64) registry.Changes {
	c := registry.Changes{Index: s.index, Ready: s.ready, Since: since, Services: map[string][]registry.Instance{}}
	for svc, idx := range s.svcIndex {
		if idx <= since {
			continue
		}
		c.Services[svc] = s.snapshot(svc).Instances
	}
	return c
}

func errInvalid(msg string) error { return &invalidError{msg} }

type invalidError struct{ msg string }

func (e *invalidError) Error() string { return "registry: invalid request: " + e.msg }
func (e *invalidError) Unwrap() error { return registry.ErrInvalid }
