package registry

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strings"
)

// TokenOK checks a request's bearer token against want in constant time.
func TokenOK(r *http.Request, want string) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// ReadToken derives from the shared token the credential that may read the
// registry and report a gateway's progress, but change no instance: what a
// gateway needs. `switchyard token read` prints it.
func ReadToken(token string) string {
	if token == "" {
		return ""
	}
	h := hmac.New(sha256.New, []byte(token))
	h.Write([]byte("switchyard registry read"))
	return "read." + hex.EncodeToString(h.Sum(nil))
}
