package agent

import (
	"errors"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/registry"
)

// fakeRegistry only satisfies the type check: check never calls it.
type fakeRegistry struct{ registry.Backend }

func valid() Config {
	return Config{Service: "hello", Color: "blue", App: "http://127.0.0.1:8080", ZK: []string{"127.0.0.1:2181"},
		Registry: fakeRegistry{}, Token: "0123456789abcdef0123"}
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		desc  string
		tweak func(*Config)
		want  string // "" for a valid config
	}{
		{desc: "a full config is accepted", tweak: func(*Config) {}},
		{desc: "the service is required", tweak: func(c *Config) { c.Service = "" }, want: "--service"},
		{desc: "a color other than blue or green is refused", tweak: func(c *Config) { c.Color = "red" }, want: "--color"},
		{desc: "an app without a port is refused", tweak: func(c *Config) { c.App = "http://127.0.0.1" }, want: "with its port"},
		{desc: "an app that is not http is refused", tweak: func(c *Config) { c.App = "tcp://127.0.0.1:80" }, want: "--app"},
		{desc: "an app with a path is refused", tweak: func(c *Config) { c.App = "http://127.0.0.1:80/health" }, want: "--health"},
		{desc: "a health path must start with /", tweak: func(c *Config) { c.Health = "health" }, want: "--health"},
		{desc: "an unspecified address cannot be advertised", tweak: func(c *Config) { c.App = "http://0.0.0.0:8080" }, want: "unspecified"},
		{desc: "an advertised port out of range is refused", tweak: func(c *Config) { c.Advertise = "10.0.0.1:70000" }, want: "--advertise"},
		{desc: "a token is required", tweak: func(c *Config) { c.Token = "" }, want: "token"},
		{desc: "a notify URL must be http", tweak: func(c *Config) { c.Notify = "ftp://x" }, want: "--notify"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			c := valid()
			tc.tweak(&c)
			err := c.check()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("check() = %v, want ErrConfig saying %q", err, tc.want)
			}
		})
	}
	t.Run("the defaults advertise the app's address and listen beside it", func(t *testing.T) {
		c := valid()
		if err := c.check(); err != nil {
			t.Fatal(err)
		}
		if c.Advertise != "127.0.0.1:8080" || c.Listen != "127.0.0.1:0" || c.healthURL() != "http://127.0.0.1:8080/" {
			t.Errorf("advertise %q listen %q health %q", c.Advertise, c.Listen, c.healthURL())
		}
	})
}

func TestHooksFor(t *testing.T) {
	all := Config{OnUp: "up", OnOut: "out", Notify: "http://127.0.0.1:1/"}
	names := func(hs []hook) string {
		var s []string
		for _, h := range hs {
			s = append(s, h.name)
		}
		return strings.Join(s, " ")
	}
	for _, tc := range []struct {
		desc       string
		prev, next registry.Status
		want       string
	}{
		{desc: "the first state out runs --on-out and notifies", prev: "", next: registry.StatusOutOfService, want: "--on-out --notify"},
		{desc: "going UP runs --on-up", prev: registry.StatusOutOfService, next: registry.StatusUp, want: "--on-up --notify"},
		{desc: "going DOWN from UP runs --on-out", prev: registry.StatusUp, next: registry.StatusDown, want: "--on-out --notify"},
		{desc: "DOWN to OUT_OF_SERVICE stays out: only a notification", prev: registry.StatusDown, next: registry.StatusOutOfService, want: "--notify"},
		{desc: "an unchanged status runs nothing", prev: registry.StatusUp, next: registry.StatusUp, want: ""},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if got := names(hooksFor(all, tc.prev, tc.next)); got != tc.want {
				t.Errorf("hooks %q, want %q", got, tc.want)
			}
		})
	}
}
