// Package signing authenticates switchyard's state-changing HTTP calls
// without sending a secret: the sender signs the request with HMAC-SHA256
// over its method, path, subject (the instance it addresses), leader epoch,
// time, a nonce and the body; the receiver checks the signature with any
// key of its keyring, the time against a short window, and the nonce
// against the ones it has seen. A captured request can be replayed neither
// later nor to another instance, and the key never leaves the process.
package signing

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The headers of a signed request.
const (
	HeaderSignature = "Authorization" // "SWITCHYARD-HMAC-SHA256 <hex>"
	HeaderSubject   = "X-Switchyard-Subject"
	HeaderEpoch     = "X-Switchyard-Epoch"
	HeaderDate      = "X-Switchyard-Date" // Unix milliseconds
	HeaderNonce     = "X-Switchyard-Nonce"
	scheme          = "SWITCHYARD-HMAC-SHA256 "
)

// Errors a Verifier returns; each wraps ErrUnauthenticated.
var (
	ErrUnauthenticated = errors.New("signing: request not authenticated")
	ErrNoKeys          = errors.New("signing: no key configured")
)

// Keyring is the keys a process knows: it signs with the first and accepts
// a signature by any. During a rotation every process holds "new,old"
// until all have the new key, then "new" alone.
type Keyring struct{ keys [][]byte }

// ParseKeys reads a comma-separated list of keys, the first the current
// one. Each must be at least 16 bytes long.
func ParseKeys(s string) (Keyring, error) {
	var k Keyring
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if len(part) < 16 {
			return Keyring{}, fmt.Errorf("signing: a key must be at least 16 characters, got %d", len(part))
		}
		k.keys = append(k.keys, []byte(part))
	}
	if len(k.keys) == 0 {
		return Keyring{}, ErrNoKeys
	}
	return k, nil
}

// Empty reports whether the keyring has no key.
func (k Keyring) Empty() bool { return len(k.keys) == 0 }

// Claims are what a signed request asserts beyond its method, path and body.
type Claims struct {
	// Subject is the instance the request is for; the receiver must be it.
	Subject string
	// Epoch fences leaders: a receiver refuses an epoch older than the
	// newest it has accepted. Zero means no epoch.
	Epoch int64
}

func canonical(method, path string, c Claims, date, nonce string, body []byte) []byte {
	sum := sha256.Sum256(body)
	return []byte(strings.Join([]string{method, path, c.Subject, strconv.FormatInt(c.Epoch, 10), date, nonce, hex.EncodeToString(sum[:])}, "\n"))
}

func mac(key, msg []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write(msg)
	return h.Sum(nil)
}

// Sign adds the signature headers to r, whose body is body.
func (k Keyring) Sign(r *http.Request, body []byte, c Claims) error {
	return k.signAt(r, body, c, time.Now())
}

func (k Keyring) signAt(r *http.Request, body []byte, c Claims, at time.Time) error {
	if k.Empty() {
		return ErrNoKeys
	}
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return fmt.Errorf("signing: nonce: %w", err)
	}
	date := strconv.FormatInt(at.UnixMilli(), 10)
	n := hex.EncodeToString(nonce)
	r.Header.Set(HeaderSubject, c.Subject)
	r.Header.Set(HeaderEpoch, strconv.FormatInt(c.Epoch, 10))
	r.Header.Set(HeaderDate, date)
	r.Header.Set(HeaderNonce, n)
	r.Header.Set(HeaderSignature, scheme+hex.EncodeToString(mac(k.keys[0], canonical(r.Method, r.URL.EscapedPath(), c, date, n, body))))
	return nil
}

// Verifier checks signed requests. It is safe for concurrent use.
type Verifier struct {
	keys   Keyring
	window time.Duration
	now    func() time.Time

	mu     sync.Mutex
	nonces map[string]time.Time // nonce -> when it may be forgotten
	swept  time.Time
}

// DefaultWindow is how far a request's time may be from the receiver's.
const DefaultWindow = 30 * time.Second

// NewVerifier accepts signatures by any key of keys, dated within window
// (DefaultWindow when 0) of now.
func NewVerifier(keys Keyring, window time.Duration) *Verifier {
	if window <= 0 {
		window = DefaultWindow
	}
	return &Verifier{keys: keys, window: window, now: time.Now, nonces: map[string]time.Time{}}
}

// Verify checks r, whose body is body, and returns its claims. It fails
// with an error wrapping ErrUnauthenticated that says why: no or a wrong
// signature, a time outside the window, or a nonce seen before.
func (v *Verifier) Verify(r *http.Request, body []byte) (Claims, error) {
	fail := func(why string) (Claims, error) { return Claims{}, fmt.Errorf("%w: %s", ErrUnauthenticated, why) }
	sig, ok := strings.CutPrefix(r.Header.Get(HeaderSignature), scheme)
	if !ok {
		return fail("no " + strings.TrimSpace(scheme) + " signature")
	}
	got, err := hex.DecodeString(sig)
	if err != nil || len(got) != sha256.Size {
		return fail("malformed signature")
	}
	epoch, err := strconv.ParseInt(r.Header.Get(HeaderEpoch), 10, 64)
	if err != nil || epoch < 0 {
		return fail("malformed epoch")
	}
	date, nonce := r.Header.Get(HeaderDate), r.Header.Get(HeaderNonce)
	ms, err := strconv.ParseInt(date, 10, 64)
	if err != nil {
		return fail("malformed date")
	}
	if len(nonce) < 16 || len(nonce) > 64 {
		return fail("malformed nonce")
	}
	c := Claims{Subject: r.Header.Get(HeaderSubject), Epoch: epoch}
	msg := canonical(r.Method, r.URL.EscapedPath(), c, date, nonce, body)
	valid := false
	for _, k := range v.keys.keys {
		if hmac.Equal(got, mac(k, msg)) {
			valid = true
		}
	}
	if !valid {
		return fail("wrong signature")
	}
	now := v.now()
	at := time.UnixMilli(ms)
	if d := now.Sub(at); d > v.window || d < -v.window {
		return fail(fmt.Sprintf("dated %s, outside the %s window", at.UTC().Format(time.RFC3339Nano), v.window))
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if now.Sub(v.swept) > v.window {
		for n, until := range v.nonces {
			if now.After(until) {
				delete(v.nonces, n)
			}
		}
		v.swept = now
	}
	if _, seen := v.nonces[nonce]; seen {
		return fail("replayed: nonce seen before")
	}
	// Only signed requests reach here, so the cache grows only with what
	// key holders send within two windows.
	v.nonces[nonce] = now.Add(2 * v.window)
	return c, nil
}
