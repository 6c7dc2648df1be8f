package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/internal/retry"
	"github.com/switchyard/switchyard/zkstate"
)

// propagationGoal is the target for every size.
const propagationGoal = 50 * time.Millisecond

// SizeRow is propagation with Consul at one size: PerColor instances of
// each color.
type SizeRow struct {
	PerColor int
	Row      *SwitchRow
}

// histEdges bound the buckets of Hist; the last bucket is everything above.
var histEdges = []time.Duration{10, 20, 30, 40, 50, 75, 100, 200}

// Hist counts the flips by propagation, in buckets up to histEdges (ms).
func (s *SizeRow) Hist() string {
	counts := make([]int, len(histEdges)+1)
	for _, p := range s.Row.Propagation {
		i := 0
		for i < len(histEdges) && p > histEdges[i]*time.Millisecond {
			i++
		}
		counts[i]++
	}
	var parts []string
	for i, n := range counts {
		if n == 0 {
			continue
		}
		if i < len(histEdges) {
			parts = append(parts, fmt.Sprintf("≤%d: %d", histEdges[i], n))
		} else {
			parts = append(parts, fmt.Sprintf(">%d: %d", histEdges[len(histEdges)-1], n))
		}
	}
	return strings.Join(parts, ", ")
}

// Met is the verdict against propagationGoal: every flip finished and p99
// is within it.
func (s *SizeRow) Met() bool {
	return len(s.Row.Propagation) > 0 && s.Row.Unfinished == 0 && pct(s.Row.Propagation, 99) <= propagationGoal
}

// sizeGoals judges each size against the goal.
func (r *Report) sizeGoals() []Goal {
	var gs []Goal
	for _, s := range r.ConsulSizes {
		p := s.Row.Propagation
		gs = append(gs, Goal{fmt.Sprintf("propagation p99 ≤ 50 ms (Consul, %d per color)", s.PerColor),
			fmt.Sprintf("%s over %d flips (p50 %s, max %s)", ms(pct(p, 99)), len(p), ms(pct(p, 50)), ms(pct(p, 100))), met(s.Met())})
	}
	return gs
}

// consulSizes measures propagation with Consul at each of ConsulSizes
// instances per color. The instances are simulated as in the scale
// section (real sdk.Instances in this process, each with its own listener
// that the gateway proxies to), since a hundred hello processes of each
// color would not fit the machine; each size gets a fresh agent and
// cluster.
func (b *bencher) consulSizes(ctx context.Context) error {
	for _, n := range b.ConsulSizes {
		row, err := b.consulSize(ctx, n)
		if err != nil {
			b.note("consul: %d per color: %v", n, err)
		} else {
			b.r.ConsulSizes = append(b.r.ConsulSizes, row)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

func (b *bencher) consulSize(ctx context.Context, perColor int) (*SizeRow, error) {
	name := fmt.Sprintf("consul-%d", perColor)
	agent, err := b.consulAgent(ctx, name+"-agent")
	if err != nil {
		return nil, err
	}
	defer agent.Stop()
	c, err := b.startCluster(ctx, name, agent.URL(), 0)
	if err != nil {
		return nil, err
	}
	defer c.Stop()
	reg, err := c.Backend()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(b.dir, name, "instances.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	log := logrus.New()
	log.SetOutput(logf)
	log.SetLevel(logrus.WarnLevel)
	begin := time.Now()
	_, stopFleet, err := startFleet(ctx, c, reg, b.token, log, perColor, perColor)
	defer stopFleet()
	if err == nil {
		err = waitUp(ctx, reg, zkstate.Blue, perColor, 2*perColor, 5*time.Minute)
	}
	if err == nil {
		err = waitColor(ctx, c.GatewayURL, zkstate.Blue, time.Minute)
	}
	if err != nil {
		return nil, err
	}
	b.logf("%s: %d blue UP and %d green standing by after %s", name, perColor, perColor, time.Since(begin).Round(100*time.Millisecond))
	r := &SwitchRow{Method: fmt.Sprintf("switchyard, Consul registry, %d per color", perColor), Name: fmt.Sprintf("Consul %d/color", perColor)}
	mem, err := b.flipUnderLoad(ctx, c, r, b.Flips)
	if err != nil {
		return nil, err
	}
	b.addMem(fmt.Sprintf("under the switch load with Consul, %d instances per color", perColor), mem, "gateway", "controller (leader)")
	b.logf("%s: %d flips, %d requests, %d failed; propagation p50 %s p90 %s p99 %s max %s",
		r.Name, r.Switches, r.Requests, r.Failed, pct(r.Propagation, 50), pct(r.Propagation, 90), pct(r.Propagation, 99), pct(r.Propagation, 100))
	return &SizeRow{PerColor: perColor, Row: r}, nil
}

// waitColor waits until the gateway answers twenty requests in a row from
// color, by the header, which the simulated instances set as hello does
// (their body is not hello's).
func waitColor(ctx context.Context, gatewayURL string, color zkstate.Color, within time.Duration) error {
	hc := &http.Client{Timeout: 5 * time.Second}
	var last string
	err := retry.Until(ctx, within, func() (bool, error) {
		for range 20 {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, gatewayURL+"/", nil)
			if err != nil {
				return false, err
			}
			resp, err := hc.Do(req)
			if err != nil {
				return false, err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if last = resp.Header.Get("X-Switchyard-Color"); resp.StatusCode != http.StatusOK || last != string(color) {
				last = fmt.Sprintf("%s from %q", resp.Status, last)
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("gateway did not serve only %s (last answer %s): %w", color, last, err)
	}
	return nil
}
