package signing

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func signed(t *testing.T, k Keyring, path, body string, c Claims) *http.Request {
	t.Helper()
	r := httptest.NewRequest(http.MethodPut, path, strings.NewReader(body))
	if err := k.Sign(r, []byte(body), c); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestVerify(t *testing.T) {
	current, _ := ParseKeys("current-key-0123456789")
	old, _ := ParseKeys("old-key-0123456789abc")
	rotating, _ := ParseKeys("current-key-0123456789,old-key-0123456789abc")
	body := `{"status":"UP"}`
	claims := Claims{Subject: "hello-green-1", Epoch: 7}
	for _, tc := range []struct {
		desc   string
		req    func() *http.Request
		verify Keyring
		why    string // "" when it must pass
	}{
		{desc: "a request signed with the current key passes", verify: current,
			req: func() *http.Request { return signed(t, current, "/_switchyard/status", body, claims) }},
		{desc: "during a rotation the previous key still passes", verify: rotating,
			req: func() *http.Request { return signed(t, old, "/_switchyard/status", body, claims) }},
		{desc: "after the rotation the previous key fails", verify: current, why: "wrong signature",
			req: func() *http.Request { return signed(t, old, "/_switchyard/status", body, claims) }},
		{desc: "no signature fails", verify: current, why: "no SWITCHYARD-HMAC-SHA256 signature",
			req: func() *http.Request {
				return httptest.NewRequest(http.MethodPut, "/_switchyard/status", strings.NewReader(body))
			}},
		{desc: "a bearer token is not a signature", verify: current, why: "no SWITCHYARD-HMAC-SHA256 signature",
			req: func() *http.Request {
				r := httptest.NewRequest(http.MethodPut, "/_switchyard/status", strings.NewReader(body))
				r.Header.Set("Authorization", "Bearer current-key-0123456789")
				return r
			}},
		{desc: "a changed body fails", verify: current, why: "wrong signature",
			req: func() *http.Request {
				r := signed(t, current, "/_switchyard/status", body, claims)
				r.Body = http.NoBody
				return r
			}},
		{desc: "a changed subject fails: a captured instruction cannot be sent to another instance", verify: current, why: "wrong signature",
			req: func() *http.Request {
				r := signed(t, current, "/_switchyard/status", body, claims)
				r.Header.Set(HeaderSubject, "hello-green-2")
				return r
			}},
		{desc: "a raised epoch fails", verify: current, why: "wrong signature",
			req: func() *http.Request {
				r := signed(t, current, "/_switchyard/status", body, claims)
				r.Header.Set(HeaderEpoch, "99")
				return r
			}},
		{desc: "another path fails", verify: current, why: "wrong signature",
			req: func() *http.Request {
				r := signed(t, current, "/_switchyard/status", body, claims)
				r.URL.Path = "/v1/instances/x/status"
				return r
			}},
		{desc: "an old request fails", verify: current, why: "outside the",
			req: func() *http.Request {
				r := httptest.NewRequest(http.MethodPut, "/_switchyard/status", strings.NewReader(body))
				date := time.Now().Add(-time.Minute)
				if err := current.signAt(r, []byte(body), claims, date); err != nil {
					t.Fatal(err)
				}
				return r
			}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			r := tc.req()
			b := new(bytes.Buffer)
			_, _ = b.ReadFrom(r.Body)
			got, err := NewVerifier(tc.verify, 0).Verify(r, b.Bytes())
			if tc.why == "" {
				if err != nil || got != claims {
					t.Fatalf("Verify = %+v, %v; want %+v", got, err, claims)
				}
				return
			}
			if !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), tc.why) {
				t.Fatalf("Verify = %v; want a refusal saying %q", err, tc.why)
			}
		})
	}
}

func TestReplayIsRefused(t *testing.T) {
	k, _ := ParseKeys("current-key-0123456789")
	v := NewVerifier(k, 0)
	r := signed(t, k, "/_switchyard/status", "{}", Claims{Subject: "a"})
	if _, err := v.Verify(r, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(r, []byte("{}")); !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), "replayed") {
		t.Fatalf("the same request twice: %v; want refused as replayed", err)
	}
}

func TestParseKeys(t *testing.T) {
	for _, bad := range []string{"", " , ", "short"} {
		if _, err := ParseKeys(bad); err == nil {
			t.Errorf("ParseKeys(%q) accepted", bad)
		}
	}
	if k, err := ParseKeys("aaaaaaaaaaaaaaaa, bbbbbbbbbbbbbbbb"); err != nil || len(k.keys) != 2 {
		t.Fatalf("two keys: %v %v", k, err)
	}
}
