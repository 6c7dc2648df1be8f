package local

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/zkstate"
)

// Result is one request of a load run.
type Result struct {
	Start, End time.Time
	Method     string
	Color      zkstate.Color
	Instance   string
	Err        string // "" for a 200 whose body checked out
}

// Load sends steady keep-alive traffic from a fixed set of workers until
// stopped; a load run is bounded by its context. No request is ever sent
// twice: net/http's transport silently resends an idempotent request whose
// reused connection failed, and Load counts such a resend as a failure, so
// a dropped request can never pass for a success.
type Load struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	sent    atomic.Int64
	mu      sync.Mutex
	results []Result
}

// Sent is how many requests have been answered or failed so far.
func (l *Load) Sent() int { return int(l.sent.Load()) }

// LoadPostBody is the size of each POST body a load sends.
const LoadPostBody = 2048

// StartLoad starts workers that each alternate GET and POST (with a body
// the instance must echo the digest of) to url, pausing between requests.
func StartLoad(ctx context.Context, url string, workers int, pause time.Duration) *Load {
	return StartLoadMethods(ctx, url, workers, pause, http.MethodGet, http.MethodPost)
}

// StartLoadMethods is StartLoad with the methods each worker cycles through.
func StartLoadMethods(ctx context.Context, url string, workers int, pause time.Duration, methods ...string) *Load {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		MaxIdleConnsPerHost: workers,
		IdleConnTimeout:     30 * time.Second,
	}
	return StartLoadClient(ctx, &http.Client{Transport: tr, Timeout: 10 * time.Second}, url, workers, pause, methods...)
}

// StartLoadClient is StartLoadMethods through hc, e.g. HTTP/2 over TLS.
func StartLoadClient(ctx context.Context, hc *http.Client, url string, workers int, pause time.Duration, methods ...string) *Load {
	ctx, cancel := context.WithCancel(ctx)
	l := &Load{cancel: cancel}
	for w := range workers {
		l.wg.Go(func() {
			var local []Result
			defer func() {
				l.mu.Lock()
				l.results = append(l.results, local...)
				l.mu.Unlock()
			}()
			for n := w; ctx.Err() == nil; n++ {
				method := methods[n%len(methods)]
				start := time.Now()
				color, instance, err := Send(ctx, hc, method, url)
				if ctx.Err() != nil {
					return // the run ended, not the request
				}
				r := Result{Start: start, End: time.Now(), Method: method, Color: color, Instance: instance}
				if err != nil {
					r.Err = err.Error()
				}
				local = append(local, r)
				l.sent.Add(1)
				if pause > 0 {
					time.Sleep(pause)
				}
			}
		})
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

// ErrResent marks a request the HTTP transport sent more than once.
var ErrResent = errors.New("the client transport sent the request again on a new connection")

// Send makes one request through a hello instance and returns who
// answered. A POST carries a random body, and the answer must carry its
// SHA-256. A request the transport sent twice is an error, whatever the
// second attempt answered.
func Send(ctx context.Context, hc *http.Client, method, url string) (color zkstate.Color, instance string, err error) {
	var body []byte
	if method == http.MethodPost {
		body = make([]byte, LoadPostBody)
		_, _ = rand.Read(body)
	}
	var conns atomic.Int32
	trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { conns.Add(1) }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), method, url, bytes.NewReader(body))
	if err != nil {
		return "", "", err
	}
	if body == nil {
		req.Body, req.GetBody, req.ContentLength = http.NoBody, nil, 0
	}
	resp, err := hc.Do(req)
	if n := conns.Load(); n > 1 {
		return "", "", fmt.Errorf("%s %s: %w (%d connections used)", method, url, ErrResent, n)
	}
	if err != nil {
		return "", "", err
	}
	got, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(got)))
	}
	var who struct {
		Instance string `json:"instance"`
		SHA256   string `json:"sha256"`
		Bytes    int    `json:"bytes"`
	}
	if err := json.Unmarshal(got, &who); err != nil {
		return "", "", fmt.Errorf("%s: unreadable answer %q: %w", method, got, err)
	}
	if body != nil {
		sum := sha256.Sum256(body)
		if who.Bytes != len(body) || who.SHA256 != hex.EncodeToString(sum[:]) {
			return "", "", fmt.Errorf("POST body arrived damaged: %d bytes with sha256 %s, sent %d", who.Bytes, who.SHA256, len(body))
		}
	}
	return zkstate.Color(resp.Header.Get("X-Switchyard-Color")), who.Instance, nil
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

// Count counts the results of method.
func Count(rs []Result, method string) int {
	n := 0
	for _, r := range rs {
		if r.Method == method {
			n++
		}
	}
	return n
}

// Propagation is the time from a flip at `at` until every request started
// afterwards was answered by color: the start of the first request of color
// after the last one that was not. ok is false when color never took over.
func Propagation(rs []Result, at time.Time, until time.Time, color zkstate.Color) (time.Duration, bool) {
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
