package zkstate

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// Refusals end up in log lines, run records and /v1/status: whatever a node
// holds, the reason stays short. A color's reason is at most 200 bytes; an
// instance node's carries a bounded decoder message too.
const (
	maxColorReason = 200
	maxNodeReason  = 256
)

// fuzzSeeds are values the project's tests and operators have met: valid data,
// empty, binary, oversized, near misses.
var fuzzSeeds = [][]byte{
	nil,
	[]byte("blue"),
	[]byte("green"),
	[]byte("green\n"),
	[]byte(" \tblue\r\n"),
	[]byte("purple"),
	[]byte("GREEN"),
	[]byte("Blue"),
	[]byte("blue green"),
	[]byte("blue\x00"),
	{0xff, 0xfe, 0},
	[]byte("\u00a0blue\u2003"), // Unicode spaces, which TrimSpace trims too
	[]byte(strings.Repeat("\x01", 40)),
	[]byte(strings.Repeat("é", 40)),
	bytes.Repeat([]byte("g"), 1<<20),
	[]byte(`{"service":"hello","id":"a","address":"127.0.0.1","port":8080}`),
	[]byte(`{"service":"hello","id":"a","address":"127.0.0.1","port":8080,"version":"v1","started_at":"2024-01-02T03:04:05Z"}`),
	[]byte(`{"service":"hello","id":"a","address":"127.0.0.1"}`),
	[]byte(`{"service":"hello","id":"a","address":"127.0.0.1","port":99999}`),
	[]byte(`{"service":"hello","id":"a","address":"127.0.0.1","port":0}`),
	[]byte(`{"service":"hello","id":"a","address":"127.0.0.1","port":-1}`),
	[]byte(`{"service":"hello","id":"a","address":"127.0.0.1","port":8080.5}`),
	[]byte(`{"service":"hello","id":"a","address":"127.0.0.1","port":"8080"}`),
	[]byte(`{"service":"hello","id":"a","address":"127.0.0.1","port":8080}{}`),
	[]byte(`{"service":"hello","id":"a","address":"127.0.0.1","port":8080,"colour":"blue"}`),
	[]byte(`{"service":"","id":"a","address":"127.0.0.1","port":8080}`),
	[]byte(`{"service":"hello","id":"a","address":"127.0.0.1","port":1` + strings.Repeat("1", 4096) + `}`),
	[]byte(`{"service":"hello","id":"a","address":"127.0.0.1","port":8080,"started_at":"` + strings.Repeat("x", 4096) + `"}`),
	[]byte(`{"service":"hello","id":"` + strings.Repeat("a", 1<<16) + `","address":"127.0.0.1","port":8080}`),
	[]byte(`null`),
	[]byte(`[]`),
	[]byte(`"blue"`),
	[]byte("hello"),
}

func FuzzParseColor(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseColor(b)
		want := Color(strings.TrimSpace(string(b)))
		if err == nil {
			if c != Blue && c != Green {
				t.Fatalf("ParseColor(%q) accepted %q", b, c)
			}
			if c != want {
				t.Fatalf("ParseColor(%q) = %q, want the trimmed value %q", b, c, want)
			}
			return
		}
		if want == Blue || want == Green {
			t.Fatalf("ParseColor(%q) refused %q: %v", b, want, err)
		}
		if c != "" {
			t.Fatalf("ParseColor(%q) refused but returned %q", b, c)
		}
		if !errors.Is(err, ErrBadColor) {
			t.Fatalf("ParseColor(%q) refusal %v does not wrap ErrBadColor", b, err)
		}
		checkReason(t, err.Error(), maxColorReason)
	})
}

func FuzzParseInstanceNode(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := ParseInstanceNode(b)
		if err != nil {
			checkReason(t, err.Error(), maxNodeReason)
			return
		}
		if n.Service == "" || n.ID == "" || n.Address == "" || n.Port < 1 || n.Port > 65535 {
			t.Fatalf("ParseInstanceNode(%q) accepted %+v", b, n)
		}
	})
}

// checkReason checks that a refusal is short and printable on one line.
func checkReason(t *testing.T, s string, limit int) {
	t.Helper()
	if len(s) > limit {
		t.Fatalf("reason is %d bytes long, over %d: %.300q", len(s), limit, s)
	}
	if !utf8.ValidString(s) || strings.ContainsAny(s, "\r\n\x00") {
		t.Fatalf("reason is not one printable line: %q", s)
	}
}
