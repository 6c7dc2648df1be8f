package server

import (
	"crypto/subtle"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/switchyard/switchyard/registry"
)

// maxDerived bounds the instances whose tokens credentials keeps derived,
// a few hundred bytes each.
const maxDerived = 1 << 15

// credentials checks bearer tokens against the keys the server started
// with. Those never change while it runs (a key rotation restarts the
// registry with the new list), so what is derived from them is computed
// once: the keys themselves, the read tokens, and each instance's tokens,
// which cost an HMAC per key and would otherwise be derived again on every
// heartbeat. What is kept is what the keys derive for an instance id, so
// a presented token is still compared with it, in constant time, on every
// request, and a wrong one is refused however often its id was seen.
type credentials struct {
	secret string   // the configured token list, to derive instance tokens from
	shared [][]byte // the keys
	read   [][]byte // the read token of each key

	// derived maps an instance id to its tokens, one per key. Only ids that
	// presented a valid token are kept, so filling it takes the secret; at
	// maxDerived it starts over.
	derived sync.Map // string -> [][]byte
	size    atomic.Int64
}

func newCredentials(secret string) *credentials {
	c := &credentials{secret: secret}
	for _, k := range registry.Keys(secret) {
		c.shared = append(c.shared, []byte(k))
		c.read = append(c.read, []byte(registry.ReadToken(k)))
	}
	return c
}

// bearer is r's bearer token, or false.
func bearer(r *http.Request) (string, bool) {
	return strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
}

// anyOf compares got with every key, in constant time, and never stops
// at the first match, as registry.TokenOK does.
func anyOf(got string, keys [][]byte) bool {
	match := 0
	for _, k := range keys {
		match |= subtle.ConstantTimeCompare([]byte(got), k)
	}
	return match == 1
}

// isShared reports whether r carries one of the keys.
func (c *credentials) isShared(r *http.Request) bool {
	got, ok := bearer(r)
	return ok && anyOf(got, c.shared)
}

// isRead reports whether r carries one of the read tokens.
func (c *credentials) isRead(r *http.Request) bool {
	got, ok := bearer(r)
	return ok && anyOf(got, c.read)
}

// instance returns the id whose valid instance token r carries; as
// registry.InstanceOf does.
func (c *credentials) instance(r *http.Request) (string, bool) {
	got, ok := bearer(r)
	if !ok {
		return "", false
	}
	rest, ok := strings.CutPrefix(got, registry.InstancePrefix)
	i := strings.LastIndexByte(rest, '.')
	if !ok || i <= 0 {
		return "", false
	}
	id := rest[:i]
	if v, ok := c.derived.Load(id); ok {
		return id, anyOf(got, v.([][]byte))
	}
	var want [][]byte
	for _, t := range registry.Keys(registry.InstanceTokens(c.secret, id)) {
		want = append(want, []byte(t))
	}
	if !anyOf(got, want) {
		return id, false
	}
	if _, loaded := c.derived.LoadOrStore(strings.Clone(id), want); !loaded && c.size.Add(1) >= maxDerived {
		// Start over rather than track ages: a fleet this large pays one
		// derivation per instance again, not one per heartbeat.
		c.derived.Clear()
		c.size.Store(0)
	}
	return id, true
}
