package backends

import (
	"fmt"
	"net/url"
	"time"

	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/registry/consul"
)

// Open returns the backend a registry URL names: http://host:port (or
// https) for the built-in server, whose writes token signs, or
// consul://host:port for the local Consul agent. Consul authenticates with
// its own ACL token, from CONSUL_HTTP_TOKEN, not with token. A consul URL
// may tune the backend with query parameters: check_interval,
// check_timeout, deregister_after, warmup, gateway_ttl, status_timeout
// (durations like 1s) and kv_prefix.
func Open(rawURL, token string) (registry.Backend, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("registry: %q is not a URL like http://127.0.0.1:8761 or consul://127.0.0.1:8500", rawURL)
	}
	switch u.Scheme {
	case "http", "https":
		return registry.NewClient(u.Scheme+"://"+u.Host, token), nil
	case "consul":
		cfg, err := consulConfig(u)
		if err != nil {
			return nil, fmt.Errorf("registry: %q: %w", rawURL, err)
		}
		return consul.New(cfg)
	}
	return nil, fmt.Errorf("registry: unsupported scheme %q in %q (want http, https or consul)", u.Scheme, rawURL)
}

func consulConfig(u *url.URL) (consul.Config, error) {
	cfg := consul.Config{Address: u.Host}
	durations := map[string]*time.Duration{
		"check_interval":   &cfg.CheckInterval,
		"check_timeout":    &cfg.CheckTimeout,
		"deregister_after": &cfg.DeregisterAfter,
		"warmup":           &cfg.Warmup,
		"gateway_ttl":      &cfg.GatewayTTL,
		"status_timeout":   &cfg.StatusTimeout,
	}
	for name, vals := range u.Query() {
		v := vals[len(vals)-1]
		if name == "kv_prefix" {
			cfg.KVPrefix = v
			continue
		}
		d, ok := durations[name]
		if !ok {
			return cfg, fmt.Errorf("unknown parameter %q", name)
		}
		parsed, err := time.ParseDuration(v)
		if err != nil || parsed <= 0 {
			return cfg, fmt.Errorf("%s=%q is not a positive duration like 1s", name, v)
		}
		*d = parsed
	}
	return cfg, nil
}
