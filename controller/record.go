package controller

import (
	"context"
	"encoding/json"
	"sync"

	"github.com/go-zookeeper/zk"
	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/controller/layout"
)

// recorder writes the switch record in the background. Every ZooKeeper
// write is an fsync, and a switch must not wait on one per step: steps
// queue the newest record, which replaces any older one not yet written.
// Only outcomes are flushed. A stale record is harmless: a new leader
// re-plans from the registry, not from the steps.
type recorder struct {
	conn *zk.Conn
	path string
	log  logrus.FieldLogger

	mu      sync.Mutex
	pending *layout.Switch
	queued  uint64
	written uint64
	wrote   chan struct{} // closed and replaced after each write
	kick    chan struct{}
}

func newRecorder(conn *zk.Conn, path string, log logrus.FieldLogger) *recorder {
	return &recorder{conn: conn, path: path, log: log, wrote: make(chan struct{}), kick: make(chan struct{}, 1)}
}

// Queue makes rec the next record to write and returns its sequence. Its
// steps are only ever appended to, so the writer may encode it later.
func (r *recorder) Queue(rec layout.Switch) uint64 {
	r.mu.Lock()
	r.pending = &rec
	r.queued++
	seq := r.queued
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
	return seq
}

// Flush waits until the record with sequence seq, or a newer one, is written.
func (r *recorder) Flush(ctx context.Context, seq uint64) {
	for {
		r.mu.Lock()
		done, wrote := r.written >= seq, r.wrote
		r.mu.Unlock()
		if done {
			return
		}
		select {
		case <-wrote:
		case <-ctx.Done():
			return
		}
	}
}

// Run writes queued records until ctx ends; what is still queued then is
// dropped, since a controller that lost leadership must not write.
func (r *recorder) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		}
		r.mu.Lock()
		rec, seq := r.pending, r.queued
		r.mu.Unlock()
		if rec == nil || ctx.Err() != nil {
			continue
		}
		if _, err := r.conn.Set(r.path, encode(*rec), -1); err != nil {
			r.log.WithError(err).Warn("could not write the switch record; the next step writes it again")
			continue
		}
		r.mu.Lock()
		r.written = seq
		close(r.wrote)
		r.wrote = make(chan struct{})
		r.mu.Unlock()
	}
}

// maxRecordSteps bounds the steps kept in a record: ZooKeeper refuses nodes
// over 1 MB, and a switch of thousands of instances would pass that.
const maxRecordSteps = 256

// encode renders rec with at most its newest maxRecordSteps steps; the
// record keeps the full count.
func encode(rec layout.Switch) []byte {
	rec.StepsTotal = len(rec.Steps)
	if n := len(rec.Steps); n > maxRecordSteps {
		rec.Steps = rec.Steps[n-maxRecordSteps:]
	}
	b, _ := json.Marshal(rec)
	return b
}
