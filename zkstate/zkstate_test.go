package zkstate

import (
	"errors"
	"strings"
	"testing"
)

func TestParseColor(t *testing.T) {
	for _, tc := range []struct {
		desc  string
		in    []byte
		want  string
		quote string // what the refusal must say
	}{
		{desc: "blue", in: []byte("blue"), want: "blue"},
		{desc: "green with a newline, as echo writes it", in: []byte("green\n"), want: "green"},
		{desc: "empty", in: nil, quote: "an empty value"},
		{desc: "purple", in: []byte("purple"), quote: `"purple"`},
		{desc: "upper case is not a color", in: []byte("GREEN"), quote: `"GREEN"`},
		{desc: "binary", in: []byte{0xff, 0xfe, 0}, quote: "3 bytes of binary data"},
		{desc: "a megabyte", in: []byte(strings.Repeat("g", 1<<20)), quote: "(1048576 bytes)"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := ParseColor(tc.in)
			if tc.want != "" {
				if err != nil || string(got) != tc.want {
					t.Fatalf("ParseColor = %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			if !errors.Is(err, ErrBadColor) || !strings.Contains(err.Error(), tc.quote) {
				t.Fatalf("err = %v; want ErrBadColor mentioning %s", err, tc.quote)
			}
			if len(err.Error()) > 200 {
				t.Fatalf("refusal is %d bytes long", len(err.Error()))
			}
		})
	}
}

func TestPaths(t *testing.T) {
	for _, tc := range []struct {
		desc, root, active, leader string
		bad                        bool
	}{
		{desc: "the default root keeps paths literal", root: "/", active: "/active_color", leader: "/switchyard/leader"},
		{desc: "empty means the default", root: "", active: "/active_color", leader: "/switchyard/leader"},
		{desc: "a root prefixes everything", root: "/shop/cart", active: "/shop/cart/active_color", leader: "/shop/cart/switchyard/leader"},
		{desc: "a relative root is refused", root: "shop", bad: true},
		{desc: "a trailing slash is refused", root: "/shop/", bad: true},
		{desc: "dot segments are refused", root: "/shop/../x", bad: true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			p, err := NewPaths(tc.root)
			if tc.bad {
				if err == nil {
					t.Fatal("accepted")
				}
				return
			}
			if err != nil || p.ActiveColor() != tc.active || p.Leader() != tc.leader {
				t.Fatalf("%v: %s %s", err, p.ActiveColor(), p.Leader())
			}
		})
	}
}

func TestParseInstanceNode(t *testing.T) {
	for _, tc := range []struct {
		desc string
		in   string
		ok   bool
	}{
		{desc: "complete", in: `{"service":"hello","id":"a","address":"127.0.0.1","port":8080}`, ok: true},
		{desc: "not JSON", in: "hello", ok: false},
		{desc: "no port", in: `{"service":"hello","id":"a","address":"127.0.0.1"}`, ok: false},
		{desc: "port out of range", in: `{"service":"hello","id":"a","address":"127.0.0.1","port":99999}`, ok: false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if _, err := ParseInstanceNode([]byte(tc.in)); (err == nil) != tc.ok {
				t.Fatalf("err = %v", err)
			}
		})
	}
}
