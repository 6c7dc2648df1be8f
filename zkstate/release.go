package zkstate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"
)

// Release is how a deployment guards its switches, kept in Paths.Release
// beside /active_color so that it applies to every switch, a raw zkCli
// write included: checks to pass before any instance of the target goes
// UP, and the analysis that watches the new color after the flip. An empty
// node is the defaults: no checks, analysis on.
type Release struct {
	Checks   []Check  `json:"checks,omitempty"`
	Analysis Analysis `json:"analysis"`
}

// Check is one pre-switch check: an HTTP request with an expected status
// (and body), or a command with an expected exit code 0, each within its
// timeout. Exactly one of HTTP and Command is set.
type Check struct {
	Name    string     `json:"name"`
	HTTP    *HTTPCheck `json:"http,omitempty"`
	Command []string   `json:"command,omitempty"`
	// Timeout bounds the check; default 5s.
	Timeout Duration `json:"timeout,omitzero"`
}

// HTTPCheck is a request and what its answer must be.
type HTTPCheck struct {
	URL    string `json:"url"`
	Method string `json:"method,omitempty"` // default GET
	// Status is the status wanted; default 200.
	Status int `json:"status,omitempty"`
	// Body, when set, must occur in the answer's first 64 KiB.
	Body string `json:"body,omitempty"`
	// Header sets request headers, such as Switchyard-Color for a gateway
	// that trusts the controller.
	Header map[string]string `json:"header,omitempty"`
}

// Analysis bounds the new color after a flip: for Window, the controller
// compares its error rate and p99 latency, as the gateways saw them, with
// the old color's before the flip, and switches back when a bound is
// crossed.
type Analysis struct {
	Disabled bool `json:"disabled,omitempty"`
	// Window is how long the new color is watched; default 60s.
	Window Duration `json:"window,omitzero"`
	// MaxErrorRate is the share of 5xx above which the flip is rolled
	// back, once MinErrors errors were seen; defaults 0.05 and 20.
	MaxErrorRate float64 `json:"max_error_rate,omitempty"`
	MinErrors    uint64  `json:"min_errors,omitempty"`
	// MaxP99Ratio is how many times the old color's p99 the new one may
	// reach; default 2. It is judged once both colors answered
	// MinRequests requests (default 100), so that a handful of slow
	// answers decides nothing.
	MaxP99Ratio float64 `json:"max_p99_ratio,omitempty"`
	MinRequests uint64  `json:"min_requests,omitempty"`
}

// The defaults of Analysis and Check.
const (
	DefaultAnalysisWindow = 60 * time.Second
	DefaultMaxErrorRate   = 0.05
	DefaultMinErrors      = 20
	DefaultMaxP99Ratio    = 2.0
	DefaultMinRequests    = 100
	DefaultCheckTimeout   = 5 * time.Second
)

// Limits on what a Release may ask, since anyone who may write ZooKeeper
// could have written it.
const (
	maxReleaseBytes = 64 << 10
	maxChecks       = 20
	maxCheckTimeout = 5 * time.Minute
	maxWindow       = time.Hour
)

// Duration is a time.Duration that JSON spells as Go does, "60s".
type Duration time.Duration

// MarshalText spells d as "1m0s".
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText reads "60s", "1m30s" and the like.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("not a duration (such as 60s): %q", b)
	}
	*d = Duration(v)
	return nil
}

// WithDefaults fills in what a writer left out.
func (a Analysis) WithDefaults() Analysis {
	if a.Window == 0 {
		a.Window = Duration(DefaultAnalysisWindow)
	}
	if a.MaxErrorRate == 0 {
		a.MaxErrorRate = DefaultMaxErrorRate
	}
	if a.MinErrors == 0 {
		a.MinErrors = DefaultMinErrors
	}
	if a.MaxP99Ratio == 0 {
		a.MaxP99Ratio = DefaultMaxP99Ratio
	}
	if a.MinRequests == 0 {
		a.MinRequests = DefaultMinRequests
	}
	return a
}

// ParseRelease reads a Release and checks every field; an empty node is
// the defaults.
func ParseRelease(b []byte) (Release, error) {
	var r Release
	if len(bytes.TrimSpace(b)) == 0 {
		return r, nil
	}
	if len(b) > maxReleaseBytes {
		return r, fmt.Errorf("release settings are %d bytes, over %d", len(b), maxReleaseBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Release{}, fmt.Errorf("release settings (%s): %w", Describe(b), err)
	}
	if dec.More() {
		return Release{}, errors.New("release settings: more than one JSON value")
	}
	return r, r.Validate()
}

// Validate says what is wrong with r, if anything.
func (r Release) Validate() error {
	if len(r.Checks) > maxChecks {
		return fmt.Errorf("release settings: %d checks, at most %d", len(r.Checks), maxChecks)
	}
	names := map[string]bool{}
	for i, c := range r.Checks {
		if c.Name == "" || len(c.Name) > 64 || !printable(c.Name) {
			return fmt.Errorf("check %d: a name of 1 to 64 printable characters is required", i+1)
		}
		if names[c.Name] {
			return fmt.Errorf("check %q: two checks have that name", c.Name)
		}
		names[c.Name] = true
		if (c.HTTP == nil) == (len(c.Command) == 0) {
			return fmt.Errorf("check %q: set exactly one of http and command", c.Name)
		}
		if t := time.Duration(c.Timeout); t < 0 || t > maxCheckTimeout {
			return fmt.Errorf("check %q: timeout %s is not between 0 and %s", c.Name, t, maxCheckTimeout)
		}
		if h := c.HTTP; h != nil {
			u, err := url.Parse(h.URL)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("check %q: url %q is not an http:// or https:// URL", c.Name, h.URL)
			}
			if h.Method != "" && strings.ToUpper(h.Method) != h.Method {
				return fmt.Errorf("check %q: method %q must be upper case", c.Name, h.Method)
			}
			if h.Status != 0 && (h.Status < 100 || h.Status > 599) {
				return fmt.Errorf("check %q: status %d is not an HTTP status", c.Name, h.Status)
			}
		}
	}
	a := r.Analysis
	if w := time.Duration(a.Window); w < 0 || w > maxWindow {
		return fmt.Errorf("analysis window %s is not between 0 and %s", w, maxWindow)
	}
	if a.MaxErrorRate < 0 || a.MaxErrorRate > 1 {
		return fmt.Errorf("analysis max_error_rate %g is not between 0 and 1", a.MaxErrorRate)
	}
	if a.MaxP99Ratio < 0 || (a.MaxP99Ratio > 0 && a.MaxP99Ratio < 1) {
		return fmt.Errorf("analysis max_p99_ratio %g: want 1 or more", a.MaxP99Ratio)
	}
	return nil
}

// ReadRelease reads the release settings; a missing node is the defaults.
func ReadRelease(conn *zk.Conn, paths Paths) (Release, error) {
	b, _, err := conn.Get(paths.Release())
	if errors.Is(err, zk.ErrNoNode) {
		return Release{}, nil
	}
	if err != nil {
		return Release{}, fmt.Errorf("read %s: %w", paths.Release(), err)
	}
	return ParseRelease(b)
}

// WriteRelease checks r and stores it.
func WriteRelease(conn *zk.Conn, paths Paths, auth Auth, r Release) error {
	if err := r.Validate(); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := EnsurePath(conn, paths.Release(), auth.ACL()); err != nil {
		return err
	}
	if _, err := conn.Set(paths.Release(), b, -1); err != nil {
		if errors.Is(err, zk.ErrNoAuth) {
			return fmt.Errorf("write %s: %w (set SWITCHYARD_ZK_AUTH to the switchyard identity)", paths.Release(), err)
		}
		return fmt.Errorf("write %s: %w", paths.Release(), err)
	}
	return nil
}
