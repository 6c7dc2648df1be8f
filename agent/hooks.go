package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/switchyard/switchyard/internal/command"

	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/registry"
)

// hook is one thing to do on a state: a command or a notification.
type hook struct {
	name string
	run  func(ctx context.Context, s State) error
}

// hooksFor says what to do when the status moves from prev to next (prev
// is "" at the start): --on-up on entering UP, --on-out on leaving it and
// once at the start, --notify on every change.
func hooksFor(cfg Config, prev, next registry.Status) []hook {
	var hs []hook
	up := next == registry.StatusUp
	if up && prev != registry.StatusUp && cfg.OnUp != "" {
		hs = append(hs, hook{"--on-up", shell(cfg.OnUp)})
	}
	if !up && (prev == registry.StatusUp || prev == "") && cfg.OnOut != "" {
		hs = append(hs, hook{"--on-out", shell(cfg.OnOut)})
	}
	if cfg.Notify != "" && next != prev {
		hs = append(hs, hook{"--notify", notify(cfg.Notify)})
	}
	return hs
}

// runHooks runs the hooks of each state in order until states closes. A
// state that changes while its hooks run is coalesced: the hooks then see
// the newest one, which is what the application must act on.
func runHooks(cfg Config, id string, states <-chan registry.Status, log logrus.FieldLogger) {
	var prev registry.Status
	for st := range states {
		for _, h := range hooksFor(cfg, prev, st) {
			ctx, cancel := context.WithTimeout(context.Background(), cfg.HookTimeout)
			err := h.run(ctx, stateOf(cfg, id, st))
			cancel()
			l := log.WithFields(logrus.Fields{"hook": h.name, "status": st})
			if err != nil {
				l.WithError(err).Warn("hook failed; the state is still at GET /v1/state")
				continue
			}
			l.Info("hook ran")
		}
		prev = st
	}
}

// shell runs line with sh -c, the state in its environment.
func shell(line string) func(context.Context, State) error {
	return func(ctx context.Context, s State) error {
		env := append(os.Environ(), "SWITCHYARD_STATE="+string(s.Status), "SWITCHYARD_INSTANCE="+s.ID,
			"SWITCHYARD_SERVICE="+s.Service, "SWITCHYARD_COLOR="+s.Color)
		// Stopped at --hook-timeout with whatever it started: a hung
		// hook must not hold back the next state's hooks.
		if out, err := command.Run(ctx, []string{"/bin/sh", "-c", line}, env, 512); err != nil {
			return fmt.Errorf("%q: %w: %s", line, err, out)
		}
		return nil
	}
}

// notify POSTs the state as JSON to url and wants a 2xx.
func notify(url string) func(context.Context, State) error {
	return func(ctx context.Context, s State) error {
		body, _ := json.Marshal(s)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("POST %s: %w", url, err)
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			return fmt.Errorf("POST %s answered %s", url, resp.Status)
		}
		return nil
	}
}
