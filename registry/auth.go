package registry

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strings"
)

// Keys splits a token as SWITCHYARD_TOKEN holds it, "current[,previous]"
// during a key rotation; the first is the one to send.
func Keys(token string) []string {
	var out []string
	for _, k := range strings.Split(token, ",") {
		if k = strings.TrimSpace(k); k != "" {
			out = append(out, k)
		}
	}
	return out
}

// TokenOK checks a request's bearer token, in constant time, against each
// key of want.
func TokenOK(r *http.Request, want string) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	match := false
	for _, k := range Keys(want) {
		if subtle.ConstantTimeCompare([]byte(got), []byte(k)) == 1 {
			match = true
		}
	}
	return match
}

// ReadToken derives from the shared token the credential that may read the
// registry and report a gateway's progress, but change no instance: what a
// gateway needs. `switchyard token read` prints it.
// With several keys it derives from the first; ReadTokens gives them all.
func ReadToken(token string) string {
	keys := Keys(token)
	if len(keys) == 0 {
		return ""
	}
	h := hmac.New(sha256.New, []byte(keys[0]))
	h.Write([]byte("switchyard registry read"))
	return "read." + hex.EncodeToString(h.Sum(nil))
}

// ReadTokens is the read token of each key of token, comma-separated, as
// a server that accepts any of them checks with TokenOK.
func ReadTokens(token string) string {
	var out []string
	for _, k := range Keys(token) {
		out = append(out, ReadToken(k))
	}
	return strings.Join(out, ",")
}

// InstancePrefix marks an instance token.
const InstancePrefix = "instance."

// InstanceToken derives from the shared token the credential of one
// instance: it may register, heartbeat, set the status of and deregister
// that instance id and no other, and it is the key the controller signs
// that instance's instructions with. An instance given only its instance
// token (`switchyard token instance ID`) can neither act for another
// instance nor forge instructions to one. With several keys it derives
// from the first; InstanceTokens gives them all.
func InstanceToken(token, id string) string {
	keys := Keys(token)
	if len(keys) == 0 {
		return ""
	}
	if strings.HasPrefix(keys[0], InstancePrefix) {
		return keys[0] // already an instance's own token
	}
	h := hmac.New(sha256.New, []byte(keys[0]))
	h.Write([]byte("switchyard instance " + id))
	return InstancePrefix + id + "." + hex.EncodeToString(h.Sum(nil))
}

// InstanceOf returns the instance id whose valid instance token, derived
// from token, r carries as its bearer token.
func InstanceOf(r *http.Request, token string) (string, bool) {
	got, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	rest, ok := strings.CutPrefix(got, InstancePrefix)
	i := strings.LastIndexByte(rest, '.')
	if !ok || i <= 0 {
		return "", false
	}
	id := rest[:i]
	return id, TokenOK(r, InstanceTokens(token, id))
}

// InstanceTokens is the instance token of id for each key of token,
// comma-separated, as a verifier that accepts any of them takes them. An
// instance token list is returned as it is.
func InstanceTokens(token, id string) string {
	var out []string
	for _, k := range Keys(token) {
		out = append(out, InstanceToken(k, id))
	}
	return strings.Join(out, ",")
}
