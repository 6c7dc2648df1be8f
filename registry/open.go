package registry

import (
	"fmt"
	"net/url"
)

// Open returns the backend a registry URL names: http://host:port for the
// built-in server.
func Open(rawURL, token string) (Backend, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("registry: %q is not a URL like http://127.0.0.1:8761", rawURL)
	}
	switch u.Scheme {
	case "http", "https":
		return NewClient(u.Scheme+"://"+u.Host, token), nil
	}
	return nil, fmt.Errorf("registry: unsupported scheme %q in %q (want http or https)", u.Scheme, rawURL)
}
