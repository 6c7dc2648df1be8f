package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard/switchyard/deployments/local"
)

// LoadConfig shapes a load run.
type LoadConfig struct {
	Addr  string // host:port
	Path  string // default "/"
	Conns int
	// Pause is each connection's think time between requests.
	Pause time.Duration
	// MaxDuration and MaxRequests bound the run whatever the caller does.
	MaxDuration time.Duration
	MaxRequests int64
}

// load is a keep-alive load generator that, unlike net/http's client,
// never retries a request on its own: http.Transport silently resends an
// idempotent request whose reused connection was closed under it, which
// would hide exactly the failures a switch is judged by. Each connection
// writes a request, reads the response, and counts every error, as wrk
// does; after an error or a "Connection: close" it dials again.
type load struct {
	cfg    LoadConfig
	cancel context.CancelFunc
	wg     sync.WaitGroup
	sent   atomic.Int64
	mu     sync.Mutex
	rs     []local.Result
}

// startLoad begins a run; Stop ends it.
func startLoad(ctx context.Context, cfg LoadConfig) *load {
	if cfg.Path == "" {
		cfg.Path = "/"
	}
	if cfg.MaxDuration <= 0 {
		cfg.MaxDuration = 10 * time.Minute
	}
	if cfg.MaxRequests <= 0 {
		cfg.MaxRequests = 20_000_000
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.MaxDuration)
	l := &load{cfg: cfg, cancel: cancel}
	req := []byte("GET " + cfg.Path + " HTTP/1.1\r\nHost: " + cfg.Addr + "\r\nUser-Agent: switchyard-bench\r\nAccept: */*\r\n\r\n")
	for range cfg.Conns {
		l.wg.Go(func() { l.worker(ctx, req) })
	}
	return l
}

func (l *load) worker(ctx context.Context, req []byte) {
	var (
		conn   net.Conn
		br     *bufio.Reader
		reused bool
		mine   []local.Result
	)
	defer func() {
		if conn != nil {
			conn.Close()
		}
		l.mu.Lock()
		l.rs = append(l.rs, mine...)
		l.mu.Unlock()
	}()
	d := net.Dialer{Timeout: 2 * time.Second}
	for ctx.Err() == nil && l.sent.Add(1) <= l.cfg.MaxRequests {
		r := local.Result{Start: time.Now()}
		if conn == nil {
			c, err := d.DialContext(ctx, "tcp", l.cfg.Addr)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				r.End, r.Err = time.Now(), "dial: "+errText(err)
				mine = append(mine, r)
				pause(ctx, max(l.cfg.Pause, time.Millisecond))
				continue
			}
			conn, br, reused = c, bufio.NewReaderSize(c, 8<<10), false
		}
		_ = conn.SetDeadline(r.Start.Add(10 * time.Second))
		_, err := conn.Write(req)
		var resp *http.Response
		if err == nil {
			resp, err = http.ReadResponse(br, nil)
		}
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		r.End = time.Now()
		switch {
		case err != nil && ctx.Err() != nil:
			return // the run ended, not the request
		case err != nil:
			where := "new connection"
			if reused {
				where = "reused connection"
			}
			r.Err = where + ": " + errText(err)
			conn.Close()
			conn = nil
		default:
			r.Color = resp.Header.Get("X-Switchyard-Color")
			if resp.StatusCode != http.StatusOK {
				r.Err = "HTTP " + resp.Status
			}
			if resp.Close {
				conn.Close()
				conn = nil
			} else {
				reused = true
			}
		}
		mine = append(mine, r)
		if l.cfg.Pause > 0 {
			pause(ctx, l.cfg.Pause)
		}
	}
}

// errText shortens network errors to what tells them apart.
func errText(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && strings.Contains(s, "127.0.0.1") {
		s = s[i+2:]
	}
	return s
}

func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// Stop ends the run and returns every result ordered by start.
func (l *load) Stop() []local.Result {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	sort.Slice(l.rs, func(i, j int) bool { return l.rs[i].Start.Before(l.rs[j].Start) })
	return l.rs
}

// between returns the results that started in [from, to).
func between(rs []local.Result, from, to time.Time) []local.Result {
	i := sort.Search(len(rs), func(i int) bool { return !rs[i].Start.Before(from) })
	j := sort.Search(len(rs), func(i int) bool { return !rs[i].Start.Before(to) })
	return rs[i:j]
}

// errorKinds summarises failures as "n× kind", most common first.
func errorKinds(fs []local.Result) string {
	counts := map[string]int{}
	for _, f := range fs {
		counts[f.Err]++
	}
	kinds := make([]string, 0, len(counts))
	for k := range counts {
		kinds = append(kinds, k)
	}
	sort.Slice(kinds, func(i, j int) bool {
		if counts[kinds[i]] != counts[kinds[j]] {
			return counts[kinds[i]] > counts[kinds[j]]
		}
		return kinds[i] < kinds[j]
	})
	parts := make([]string, 0, len(kinds))
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%d× %s", counts[k], k))
	}
	return strings.Join(parts, "; ")
}
