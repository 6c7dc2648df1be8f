package server

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/registry"
)

func TestHeartbeatBatch(t *testing.T) {
	const token = "batch-secret-0123456789"
	ids := func(ids ...string) string {
		b, _ := json.Marshal(registry.HeartbeatBatch{IDs: ids})
		return string(b)
	}
	for _, tc := range []struct {
		desc    string
		token   string
		body    string
		code    int
		missing []string // on 200
		renewed []string // the leases it must renew; none unless 200
	}{
		{desc: "the shared token renews every lease and names the unknown ids", token: token,
			body: ids("a", "b", "gone"), code: 200, missing: []string{"gone"}, renewed: []string{"a", "b"}},
		{desc: "an empty batch renews nothing", token: token, body: ids(), code: 200, missing: []string{}},
		{desc: "an instance token renews its own lease", token: registry.InstanceToken(token, "a"),
			body: ids("a"), code: 200, missing: []string{}, renewed: []string{"a"}},
		{desc: "an instance token with another instance in the batch renews none", token: registry.InstanceToken(token, "a"),
			body: ids("a", "b"), code: 401},
		{desc: "the read token renews none", token: registry.ReadToken(token), body: ids("a"), code: 401},
		{desc: "no token renews none", body: ids("a"), code: 401},
		{desc: "a wrong token renews none", token: token + "X", body: ids("a"), code: 401},
		{desc: "a batch over the cap is refused", token: token,
			body: ids(strings.Split(strings.Repeat("a,", registry.MaxHeartbeatBatch)+"b", ",")...), code: 400},
		{desc: "unknown fields are refused", token: token, body: `{"ids":["a"],"ttl":"1h"}`, code: 400},
		{desc: "trailing data is refused", token: token, body: ids("a") + ids("b"), code: 400},
		{desc: "a body that is not a batch is refused", token: token, body: `["a"]`, code: 400},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			log := logrus.New()
			log.Out = io.Discard
			srv, err := New(Config{Token: token, LeaseTTL: time.Minute, Log: log})
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range []string{"a", "b"} {
				if _, err := srv.store.Register(registry.Instance{ID: id, Service: "hello", Color: "blue", Address: "127.0.0.1", Port: 9, Status: registry.StatusUp}); err != nil {
					t.Fatal(err)
				}
			}
			before := srv.fuzzState()
			time.Sleep(time.Millisecond) // so that a renewal moves the expiry
			r := httptest.NewRequest(http.MethodPut, "/v1/heartbeats", strings.NewReader(tc.body))
			r.Header.Set("Content-Type", "application/json")
			if tc.token != "" {
				r.Header.Set("Authorization", "Bearer "+tc.token)
			}
			rec := httptest.NewRecorder()
			srv.Handler().ServeHTTP(rec, r)
			if rec.Code != tc.code {
				t.Fatalf("answered %d %s, want %d", rec.Code, rec.Body, tc.code)
			}
			if tc.code == 200 {
				var res registry.HeartbeatResult
				if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil || !reflect.DeepEqual(res.Missing, tc.missing) {
					t.Fatalf("answered %s (%v), want missing %q", rec.Body, err, tc.missing)
				}
			}
			after := srv.fuzzState()
			if before.index != after.index {
				t.Errorf("a heartbeat moved the index from %d to %d", before.index, after.index)
			}
			for _, id := range []string{"a", "b"} {
				renewed := after.instances[id].expires > before.instances[id].expires
				if want := slices.Contains(tc.renewed, id); renewed != want {
					t.Errorf("lease of %s renewed = %v, want %v", id, renewed, want)
				}
			}
		})
	}
}

func TestHeartbeatsRenewKnownLeasesOnly(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	s := NewStore(10*time.Second, 0, c.now)
	for _, id := range []string{"a", "b"} {
		if _, err := s.Register(inst(id, registry.StatusUp)); err != nil {
			t.Fatal(err)
		}
	}
	c.advance(8 * time.Second)
	if missing := s.Heartbeats([]string{"a", "x", "y"}); !reflect.DeepEqual(missing, []string{"x", "y"}) {
		t.Fatalf("missing = %q, want [x y]", missing)
	}
	c.advance(8 * time.Second)
	s.Expire()
	var live []string
	for _, in := range s.Instances(t.Context(), "hello", 0, 0).Instances {
		live = append(live, in.ID)
	}
	if fmt.Sprint(live) != "[a]" {
		t.Fatalf("live after 16 s = %v, want [a]: only a was renewed", live)
	}
}
