package sdk

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// HTTPHealth returns a Config.Health that GETs url and passes on a 2xx
// answer, as Consul's HTTP checks do: for an application that serves its
// own health endpoint and does not embed the SDK (`switchyard agent`).
// Each check gives up after timeout (default 2s), so that a hung
// application counts as unhealthy instead of holding the controller.
func HTTPHealth(url string, timeout time.Duration) func(context.Context) error {
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	// A client of its own: no keep-alive, so that every check dials and a
	// restarted or dead application is seen at once, and no redirects,
	// since a health endpoint that redirects is not answering.
	hc := &http.Client{
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("health check %s: %w", url, err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return fmt.Errorf("health check %s: %w", url, err)
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			return fmt.Errorf("health check %s answered %s", url, resp.Status)
		}
		return nil
	}
}
