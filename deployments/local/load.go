package local

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/switchyard/switchyard/registry"
)

// Result is one request of a load run.
type Result struct {
	Start, End time.Time
	Color      string
	Instance   string
	Err        string // "" for a 200
}

// Load sends steady keep-alive traffic from a fixed set of workers until
// stopped; a load run is bounded by its context.
type Load struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	results []Result
}

// StartLoad starts workers that each GET url, pausing between requests.
func StartLoad(ctx context.Context, url string, workers int, pause time.Duration) *Load {
	ctx, cancel := context.WithCancel(ctx)
	l := &Load{cancel: cancel}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		MaxIdleConnsPerHost: workers,
		IdleConnTimeout:     30 * time.Second,
	}
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			var local []Result
			defer func() {
				l.mu.Lock()
				l.results = append(l.results, local...)
				l.mu.Unlock()
			}()
			for ctx.Err() == nil {
				start := time.Now()
				color, instance, err := Get(ctx, hc, url)
				if ctx.Err() != nil {
					return // the run ended, not the request
				}
				r := Result{Start: start, End: time.Now(), Color: color, Instance: instance}
				if err != nil {
					r.Err = err.Error()
				}
				local = append(local, r)
				if pause > 0 {
					time.Sleep(pause)
				}
			}
		}()
	}
	return l
}

// Stop ends the run and returns every result, ordered by start time.
func (l *Load) Stop() []Result {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	sort.Slice(l.results, func(i, j int) bool { return l.results[i].Start.Before(l.results[j].Start) })
	return l.results
}

// Failures lists the failed results.
func Failures(rs []Result) []Result {
	var out []Result
	for _, r := range rs {
		if r.Err != "" {
			out = append(out, r)
		}
	}
	return out
}

// Propagation is the time from a flip at `at` until every request started
// afterwards was answered by color: the start of the first request of color
// after the last one that was not. ok is false when color never took over.
func Propagation(rs []Result, at time.Time, until time.Time, color string) (time.Duration, bool) {
	var lastOther time.Time
	for _, r := range rs {
		if r.Start.Before(at) || !r.Start.Before(until) || r.Err != "" {
			continue
		}
		if r.Color != color {
			lastOther = r.Start
		}
	}
	for _, r := range rs {
		if r.Start.After(lastOther) && !r.Start.Before(at) && r.Start.Before(until) && r.Err == "" && r.Color == color {
			return r.Start.Sub(at), true
		}
	}
	return 0, false
}

// Probe watches the registry and records every view in which a service had
// no instance UP.
type Probe struct {
	cancel     context.CancelFunc
	done       chan struct{}
	mu         sync.Mutex
	Views      int
	Violations []string
}

// StartProbe watches service through l.
func StartProbe(ctx context.Context, l registry.Lister, service string) *Probe {
	ctx, cancel := context.WithCancel(ctx)
	p := &Probe{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for snap := range registry.Watch(ctx, l, service, registry.WatchOptions{Wait: 10 * time.Second}) {
			if !snap.Ready {
				continue
			}
			up := 0
			for _, in := range snap.Instances {
				if in.Status == registry.StatusUp {
					up++
				}
			}
			p.mu.Lock()
			p.Views++
			if up == 0 {
				p.Violations = append(p.Violations, fmt.Sprintf("index %d at %s: no %s instance UP among %d",
					snap.Index, time.Now().Format("15:04:05.000"), service, len(snap.Instances)))
			}
			p.mu.Unlock()
		}
	}()
	return p
}

// Stop ends the probe and returns what it saw.
func (p *Probe) Stop() (views int, violations []string) {
	p.cancel()
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.Views, p.Violations
}
