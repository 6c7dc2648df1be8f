package gateway

import (
	"errors"
	"reflect"
	"testing"
)

func TestParseRoute(t *testing.T) {
	tests := []struct {
		desc string
		in   string
		want Route
		err  bool
	}{
		{desc: "root route", in: "/=hello", want: Route{Prefix: "/", Service: "hello"}},
		{desc: "prefix route", in: "/api=api", want: Route{Prefix: "/api", Service: "api"}},
		{desc: "nested prefix", in: "/api/v2=api-v2", want: Route{Prefix: "/api/v2", Service: "api-v2"}},
		{desc: "trailing slash is dropped", in: "/api/=api", want: Route{Prefix: "/api", Service: "api"}},
		{desc: "spaces around parts are trimmed", in: " /api = api ", want: Route{Prefix: "/api", Service: "api"}},
		{desc: "service containing = is refused", in: "/a=b=c", err: true},
		{desc: "missing =", in: "/api", err: true},
		{desc: "empty input", in: "", err: true},
		{desc: "empty prefix", in: "=hello", err: true},
		{desc: "prefix without leading slash", in: "api=api", err: true},
		{desc: "empty service", in: "/api=", err: true},
		{desc: "prefix with query", in: "/api?x=1=api", err: true},
		{desc: "prefix with double slash", in: "/a//b=api", err: true},
		{desc: "prefix with dot-dot", in: "/a/../b=api", err: true},
		{desc: "control prefix is reserved", in: "/_switchyard=hello", err: true},
		{desc: "path under control prefix is reserved", in: "/_switchyard/status=hello", err: true},
		{desc: "service with slash", in: "/=a/b", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			got, err := ParseRoute(tt.in)
			if tt.err {
				if err == nil {
					t.Fatalf("ParseRoute(%q) = %+v, want an error", tt.in, got)
				}
				if !errors.Is(err, ErrInvalidRoute) {
					t.Fatalf("ParseRoute(%q) error %v does not wrap ErrInvalidRoute", tt.in, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRoute(%q): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseRoute(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestIsControlPath(t *testing.T) {
	tests := []struct {
		desc string
		path string
		want bool
	}{
		{desc: "status endpoint", path: "/_switchyard/status", want: true},
		{desc: "health endpoint", path: "/_switchyard/health", want: true},
		{desc: "bare control prefix", path: "/_switchyard", want: true},
		{desc: "double slash is cleaned", path: "//_switchyard/status", want: true},
		{desc: "dot-dot is cleaned", path: "/x/../_switchyard/status", want: true},
		{desc: "dot segment is cleaned", path: "/./_switchyard/health", want: true},
		{desc: "longer first segment is not control", path: "/_switchyardx/status", want: false},
		{desc: "control name deeper in the path is not control", path: "/app/_switchyard/status", want: false},
		{desc: "root", path: "/", want: false},
		{desc: "asterisk", path: "*", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			if got := isControlPath(tt.path); got != tt.want {
				t.Fatalf("isControlPath(%q) = %v, want %v", tt.path, got, tt.want)
			}
		})
	}
}
