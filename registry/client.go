package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Client talks to the built-in registry server over HTTP.
type Client struct {
	base   string
	token  string
	http   *http.Client
	beats  heartbeats
	stream leaseStream
	// all is the last view of all services the registry gave, from which
	// the next list of all asks only what changed (see Changes).
	all atomic.Pointer[View]
}

// NewClient returns a client for the server at base, e.g.
// http://127.0.0.1:8761, that signs writes with token.
func NewClient(base, token string, opts ...ClientOption) *Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 16
	var key string
	if keys := Keys(token); len(keys) > 0 {
		key = keys[0] // during a rotation, the current key
	}
	c := &Client{base: base, token: key, http: &http.Client{Transport: tr}}
	c.beats.c = c
	c.stream.init(c)
	for _, o := range opts {
		o(c)
	}
	return c
}

var _ Backend = (*Client)(nil)

func (c *Client) do(ctx context.Context, method, path string, body, out any) (http.Header, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	if _, ok := ctx.Deadline(); !ok {
		// A registry that accepts but never answers must not hang a caller.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	// The switch a call is made for travels in a header, not in the body:
	// a registry older than the label ignores it, where its strict
	// decoding would refuse an unknown field, and the call would fail.
	if sw := SwitchOf(ctx); sw > 0 {
		req.Header.Set(SwitchHeader, strconv.FormatInt(sw, 10))
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(raw, &e) != nil || e.Error == "" {
			// Not the registry's own answer (a proxy's page, say): show it.
			e.Error = strings.TrimSpace(string(raw[:min(len(raw), 200)]))
		}
		e.Error = strings.TrimPrefix(e.Error, "registry: invalid request: ")
		switch resp.StatusCode {
		case http.StatusNotFound:
			err = fmt.Errorf("%w: %s", ErrNotFound, e.Error)
		case http.StatusUnauthorized:
			err = fmt.Errorf("%w: %s", ErrUnauthorized, e.Error)
		case http.StatusBadRequest:
			err = fmt.Errorf("%w: %s", ErrInvalid, e.Error)
		default:
			err = fmt.Errorf("registry: %s %s: %s: %s", method, path, resp.Status, e.Error)
		}
		return nil, &statusError{code: resp.StatusCode, err: err}
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return nil, fmt.Errorf("registry: decode %s: %w", path, err)
		}
	} else {
		_, _ = io.Copy(io.Discard, resp.Body)
	}
	return resp.Header, nil
}

// Register implements Backend.
func (c *Client) Register(ctx context.Context, inst Instance) error {
	_, err := c.do(ctx, http.MethodPut, "/v1/instances/"+url.PathEscape(inst.ID), inst, nil)
	return err
}

// Heartbeat implements Backend. It renews the lease over the client's
// heartbeat stream, or, while there is none, with a PUT; heartbeats that
// callers send while another is on the wire go out together.
func (c *Client) Heartbeat(ctx context.Context, id string) error {
	if err := c.stream.beat(ctx, id); !errors.Is(err, errNoStream) {
		return err
	}
	return c.beats.beat(ctx, id)
}

// BatchesHeartbeats tells the SDK that heartbeats due at the same moment
// cost the registry one request, so its instances may beat together. A
// client with an instance token acts for one instance and has nothing to
// batch.
func (c *Client) BatchesHeartbeats() bool { return !strings.HasPrefix(c.token, InstancePrefix) }

// heartbeat renews one lease in a request of its own.
func (c *Client) heartbeat(ctx context.Context, id string) error {
	_, err := c.do(ctx, http.MethodPut, "/v1/instances/"+url.PathEscape(id)+"/heartbeat", nil, nil)
	return err
}

// heartbeatBatch renews the leases of ids in one request and returns those
// the registry does not know.
func (c *Client) heartbeatBatch(ctx context.Context, ids []string) ([]string, error) {
	var out HeartbeatResult
	_, err := c.do(ctx, http.MethodPut, "/v1/heartbeats", HeartbeatBatch{IDs: ids}, &out)
	return out.Missing, err
}

// SetStatus implements Backend. The switch ctx names goes along in
// SwitchHeader (see do), for the registry to keep in Instance.Switch.
func (c *Client) SetStatus(ctx context.Context, id string, st Status) (uint64, error) {
	var out struct {
		Index uint64 `json:"index"`
	}
	_, err := c.do(ctx, http.MethodPut, "/v1/instances/"+url.PathEscape(id)+"/status", StatusChange{Status: st}, &out)
	return out.Index, err
}

// Deregister implements Backend.
func (c *Client) Deregister(ctx context.Context, id string) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/instances/"+url.PathEscape(id), nil, nil)
	return err
}

// Instances implements Backend. The view of all services (service "")
// is asked as the changes since the last one this client was given, and
// assembled from it: what the registry sends on each change is what
// changed, not the whole fleet.
func (c *Client) Instances(ctx context.Context, service string, waitIndex uint64, wait time.Duration) (Snapshot, error) {
	q := url.Values{}
	if service != "" {
		q.Set("service", service)
	}
	ctx, cancel := blockingQuery(ctx, q, waitIndex, wait)
	defer cancel()
	if service != "" {
		var snap Snapshot
		_, err := c.do(ctx, http.MethodGet, "/v1/instances?"+q.Encode(), nil, &snap)
		return snap, err
	}
	v, err := c.view(ctx, c.all.Load(), q)
	if err != nil {
		c.all.Store(nil) // start over from a whole view
		return Snapshot{}, err
	}
	if v.epoch != "" {
		c.all.Store(v)
	}
	return v.Snapshot(), nil
}

// View implements Viewer: the view of all services, asked as the changes
// since prev when prev came from this registry.
func (c *Client) View(ctx context.Context, prev *View, waitIndex uint64, wait time.Duration) (*View, error) {
	q := url.Values{}
	ctx, cancel := blockingQuery(ctx, q, waitIndex, wait)
	defer cancel()
	return c.view(ctx, prev, q)
}

// view lists all services with q, as the changes since prev when prev
// came from a registry that can give them.
func (c *Client) view(ctx context.Context, prev *View, q url.Values) (*View, error) {
	if prev != nil && prev.epoch != "" {
		q.Set("since", strconv.FormatUint(prev.Index, 10))
		q.Set("epoch", prev.epoch)
	}
	// A whole view is a Snapshot, the changes are Changes.
	var ans struct {
		Changes
		Instances []Instance `json:"instances"`
	}
	h, err := c.do(ctx, http.MethodGet, "/v1/instances?"+q.Encode(), nil, &ans)
	if err != nil {
		return nil, err
	}
	epoch := h.Get(EpochHeader)
	if ans.Since == 0 {
		v := ViewOf(Snapshot{Index: ans.Index, Ready: ans.Ready, Instances: ans.Instances})
		v.epoch = epoch
		return v, nil
	}
	if prev == nil || ans.Since != prev.Index || epoch != prev.epoch {
		return nil, fmt.Errorf("registry: answered the changes since index %d of %q to a client that holds %s", ans.Since, epoch, prev)
	}
	v := &View{Index: ans.Index, Ready: ans.Ready, Services: maps.Clone(prev.Services), Changed: make(map[string]bool, len(ans.Services)), epoch: epoch}
	for svc, insts := range ans.Services {
		for _, inst := range insts {
			if inst.Service != svc {
				return nil, fmt.Errorf("registry: the changes list instance %q of service %q under %q", inst.ID, inst.Service, svc)
			}
		}
		v.Changed[svc] = true
		if len(insts) == 0 {
			delete(v.Services, svc)
			continue
		}
		slices.SortFunc(insts, byID)
		v.Services[svc] = insts
	}
	return v, nil
}

// EpochHeader names the registry that answered a list of all services:
// what a client sends back, as the query's epoch, with the index of the
// view it holds, so that a registry answers the changes since an index
// only to views it gave itself, never to one from before its restart.
const EpochHeader = "X-Switchyard-Epoch"

// ListsAllAtOnce implements AllLister: the built-in registry answers the
// view of all services from one index and one cached encoding, so one
// watch of it follows any number of services.
func (c *Client) ListsAllAtOnce() bool { return true }

// ReportGateway implements Backend.
func (c *Client) ReportGateway(ctx context.Context, r GatewayReport) error {
	_, err := c.do(ctx, http.MethodPut, "/v1/gateways/"+url.PathEscape(r.ID), r, nil)
	return err
}

// blockingQuery makes q a blocking query from waitIndex for up to wait
// when waitIndex is not 0, with ctx bounded to match (see blocking).
func blockingQuery(ctx context.Context, q url.Values, waitIndex uint64, wait time.Duration) (context.Context, context.CancelFunc) {
	if waitIndex == 0 {
		return ctx, func() {}
	}
	q.Set("index", strconv.FormatUint(waitIndex, 10))
	q.Set("wait", wait.String())
	return blocking(ctx, wait)
}

// blocking bounds a blocking query that waits up to wait: the server
// answers first, and the client gives up only well after.
func blocking(ctx context.Context, wait time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, wait+wait/16+5*time.Second)
}

// IndexHeader carries the index of the registry's answer to a list, as
// X-Consul-Index does.
const IndexHeader = "X-Switchyard-Index"

// Gateways implements Backend.
func (c *Client) Gateways(ctx context.Context) ([]GatewayReport, error) {
	out, _, err := c.WatchGateways(ctx, 0, 0)
	return out, err
}

// WatchGateways implements Backend.
func (c *Client) WatchGateways(ctx context.Context, waitIndex uint64, wait time.Duration) ([]GatewayReport, uint64, error) {
	q := url.Values{}
	ctx, cancel := blockingQuery(ctx, q, waitIndex, wait)
	defer cancel()
	path := "/v1/gateways"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out []GatewayReport
	h, err := c.do(ctx, http.MethodGet, path, nil, &out)
	if err != nil {
		return nil, 0, err
	}
	// A registry older than the index answers without one: 0, which never
	// blocks.
	idx, _ := strconv.ParseUint(h.Get(IndexHeader), 10, 64)
	return out, idx, nil
}

// statusError is an answer other than 2xx; it wraps the sentinel that
// callers check.
type statusError struct {
	code int
	err  error
}

func (e *statusError) Error() string { return e.err.Error() }
func (e *statusError) Unwrap() error { return e.err }
