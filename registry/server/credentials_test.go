package server

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/registry"
)

func TestInstanceTokens(t *testing.T) {
	const key = "key-0123456789"
	valid := registry.InstanceToken(key, "a")
	mac := valid[strings.LastIndexByte(valid, '.')+1:]
	for _, tc := range []struct {
		desc   string
		keys   string
		header string
		id     string // the id it must be taken for; "" when refused
	}{
		{desc: "an instance's own token is taken for it", keys: key, header: "Bearer " + valid, id: "a"},
		{desc: "a token with a wrong MAC is refused", keys: key, header: "Bearer " + valid[:len(valid)-1] + "0"},
		{desc: "another instance's MAC under this id is refused", keys: key, header: "Bearer " + registry.InstancePrefix + "b." + mac},
		{desc: "a token derived from a key the registry does not hold is refused", keys: key, header: "Bearer " + registry.InstanceToken("other-key", "a")},
		{desc: "the token without its Bearer scheme is refused", keys: key, header: valid},
		{desc: "the token with a suffix is refused", keys: key, header: "Bearer " + valid + "0"},
		{desc: "the shared key is not an instance token", keys: key, header: "Bearer " + key},
		{desc: "during a rotation, a token derived from the previous key is taken", keys: "new-key," + key, header: "Bearer " + valid, id: "a"},
		{desc: "after the rotation, a token derived from the retired key is refused", keys: "new-key", header: "Bearer " + valid},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			c := newCredentials(tc.keys)
			// a and b have been seen with their current tokens, so what
			// their keys derive is remembered when the case's token comes.
			for _, id := range []string{"a", "b"} {
				r := httptest.NewRequest("PUT", "/", nil)
				r.Header.Set("Authorization", "Bearer "+registry.InstanceToken(tc.keys, id))
				if _, ok := c.instance(r); !ok {
					t.Fatalf("%s's current token refused", id)
				}
			}
			for round := range 2 {
				r := httptest.NewRequest("PUT", "/", nil)
				r.Header.Set("Authorization", tc.header)
				id, ok := c.instance(r)
				if ok != (tc.id != "") || ok && id != tc.id {
					t.Fatalf("round %d: instance() = %q, %v; want %q", round, id, ok, tc.id)
				}
			}
		})
	}
}

func TestOnlyInstancesWithAValidTokenAreRemembered(t *testing.T) {
	c := newCredentials("key-0123456789")
	for i := range 100 {
		r := httptest.NewRequest("PUT", "/", nil)
		r.Header.Set("Authorization", "Bearer "+registry.InstanceToken("guess", fmt.Sprintf("x%d", i)))
		if _, ok := c.instance(r); ok {
			t.Fatal("a guessed token was taken")
		}
	}
	if n := c.size.Load(); n != 0 {
		t.Fatalf("%d instances remembered after wrong tokens only", n)
	}
}

func TestRememberedInstanceTokensStayBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("derives tens of thousands of tokens")
	}
	const key = "key-0123456789"
	c := newCredentials(key)
	for i := range maxDerived + 100 {
		id := fmt.Sprintf("i%d", i)
		r := httptest.NewRequest("PUT", "/", nil)
		r.Header.Set("Authorization", "Bearer "+registry.InstanceToken(key, id))
		if got, ok := c.instance(r); !ok || got != id {
			t.Fatalf("instance %s refused", id)
		}
	}
	n := 0
	c.derived.Range(func(any, any) bool { n++; return true })
	if n > maxDerived || c.size.Load() > maxDerived {
		t.Fatalf("%d instances remembered (counted %d), want at most %d", n, c.size.Load(), maxDerived)
	}
	// What was forgotten is derived again, not refused.
	r := httptest.NewRequest("PUT", "/", nil)
	r.Header.Set("Authorization", "Bearer "+registry.InstanceToken(key, "i0"))
	if _, ok := c.instance(r); !ok {
		t.Fatal("an instance forgotten when the cache started over is refused")
	}
}

func TestSharedAndReadTokens(t *testing.T) {
	c := newCredentials("new-key-0123456789, old-key-0123456789")
	for _, tc := range []struct {
		desc         string
		header       string
		shared, read bool
	}{
		{desc: "the current key", header: "Bearer new-key-0123456789", shared: true},
		{desc: "the previous key", header: "Bearer old-key-0123456789", shared: true},
		{desc: "the read token of the previous key", header: "Bearer " + registry.ReadToken("old-key-0123456789"), read: true},
		{desc: "a key with a suffix", header: "Bearer new-key-0123456789X"},
		{desc: "the whole list", header: "Bearer new-key-0123456789, old-key-0123456789"},
		{desc: "no scheme", header: "new-key-0123456789"},
		{desc: "nothing", header: ""},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("Authorization", tc.header)
			if got := c.isShared(r); got != tc.shared {
				t.Errorf("isShared = %v, want %v", got, tc.shared)
			}
			if got := c.isRead(r); got != tc.read {
				t.Errorf("isRead = %v, want %v", got, tc.read)
			}
			// The same answers as the exported checks the server used before.
			if want := registry.TokenOK(r, "new-key-0123456789, old-key-0123456789"); want != tc.shared {
				t.Errorf("registry.TokenOK = %v, want %v", want, tc.shared)
			}
		})
	}
}
