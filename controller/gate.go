package controller

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"

	"github.com/switchyard/switchyard/internal/retry"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/zkstate"
)

// healthyTargets health-checks the target color's registered instances in
// parallel; with patience, each gets up to HealthTimeout to become healthy.
func (c *Controller) healthyTargets(ctx context.Context, target zkstate.Color, members []Member, patient bool) map[string]bool {
	var mu sync.Mutex
	var wg sync.WaitGroup
	out := map[string]bool{}
	for _, m := range members {
		if m.Color != target {
			continue
		}
		wg.Go(func() {
			ok := c.healthy(ctx, m)
			if patient && !ok {
				ok = retry.Until(ctx, c.cfg.HealthTimeout, func() (bool, error) { return c.healthy(ctx, m), nil }) == nil
			}
			if ok {
				mu.Lock()
				out[m.ID] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return out
}

// healthy asks the instance's own health endpoint, which the SDK serves
// (on the agent's port for an application run beside `switchyard agent`).
func (c *Controller) healthy(ctx context.Context, m Member) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+m.ControlHostPort()+"/_switchyard/health", nil)
	if err != nil {
		return false
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// waitGateways waits until every live gateway that routes a service has
// applied at least the given index for it. It returns a note when some did not
// within GatewayTimeout; the switch goes on, since a lagging gateway still
// routes to instances that serve.
func (c *Controller) waitGateways(ctx context.Context, indexes map[string]uint64) string {
	if len(indexes) == 0 {
		return ""
	}
	var lagging []string
	wctx, cancel := context.WithTimeout(ctx, c.cfg.GatewayTimeout)
	defer cancel()
	// A switch waits here up to three times (canary, make, done), and a
	// gateway applies a change within milliseconds: each report is seen as
	// it lands.
	err := registry.AwaitGateways(wctx, c.cfg.Registry, func(reports []registry.GatewayReport) bool {
		lagging = lagging[:0]
		for _, r := range reports {
			for svc, want := range indexes {
				// A gateway that does not route svc has nothing to apply.
				if got, routes := r.Applied[svc]; routes && got < want {
					lagging = append(lagging, r.ID)
					break
				}
			}
		}
		return len(lagging) == 0
	})
	if err == nil {
		return ""
	}
	if ctx.Err() != nil {
		return ""
	}
	sort.Strings(lagging)
	note := fmt.Sprintf("gateways %s did not confirm within %s", strings.Join(lagging, ", "), c.cfg.GatewayTimeout)
	if len(lagging) == 0 {
		note = fmt.Sprintf("gateway reports could not be read within %s: %v", c.cfg.GatewayTimeout, err)
	}
	c.log.WithField("switch", c.current.Load()).Warn(note)
	return note
}
