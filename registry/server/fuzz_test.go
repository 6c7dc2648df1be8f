package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/registry"
)

const fuzzToken = "fuzz-secret-0123456789"

// The Authorization header a fuzzed request carries, by tok % 6.
const (
	authNone  = iota // no header
	authWrite        // the shared token
	authRead         // the read token derived from it
	authNear         // the token with a suffix
	authBasic        // the token, but not as a bearer token
	authRaw          // the fuzzer's own header value
	authKinds
)

// seeded is what every fuzzed request finds in the registry.
var (
	seededInstance = registry.Instance{ID: "seeded-a", Service: "hello", Color: "blue", Address: "127.0.0.1", Port: 9, Status: registry.StatusOutOfService}
	seededGateway  = registry.GatewayReport{ID: "seeded-gw", Applied: map[string]uint64{"hello": 1}}
)

type apiSeed struct {
	method, target, auth string
	tok                  uint8
	chunked              bool
	body                 string
}

func apiSeeds() []apiSeed {
	valid := `{"id":"a","service":"hello","color":"green","address":"10.0.0.1","port":8080,"status":"UP","version":"v2"}`
	return []apiSeed{
		{method: "PUT", target: "/v1/instances/a", tok: authWrite, body: valid},
		{method: "PUT", target: "/v1/instances/a", tok: authWrite, chunked: true, body: valid},
		{method: "PUT", target: "/v1/instances/a", tok: authRead, body: valid},
		{method: "PUT", target: "/v1/instances/a", tok: authNone, body: valid},
		{method: "PUT", target: "/v1/instances/a", tok: authNear, body: valid},
		{method: "PUT", target: "/v1/instances/a", tok: authBasic, body: valid},
		{method: "PUT", target: "/v1/instances/a", tok: authRaw, auth: "Bearer ", body: valid},
		{method: "PUT", target: "/v1/instances/a", tok: authRaw, auth: "Bearer " + fuzzToken + " ", body: valid},
		{method: "PUT", target: "/v1/instances/seeded-a/status", tok: authWrite, body: `{"status":"UP"}`},
		{method: "PUT", target: "/v1/instances/seeded-a/status", tok: authRead, body: `{"status":"UP"}`},
		{method: "PUT", target: "/v1/instances/seeded-a/status", tok: authWrite, body: `{"status":"HAPPY"}`},
		{method: "PUT", target: "/v1/instances/seeded-a/status", tok: authWrite, body: `{"status":"UP"}{"status":"DOWN"}`},
		{method: "PUT", target: "/v1/instances/seeded-a/status", tok: authWrite, body: `{"status":"UP","switch":7}`},
		{method: "PUT", target: "/v1/instances/seeded-a/status", tok: authWrite, body: `{"status":"UP","switch":-7}`},
		{method: "PUT", target: "/v1/instances/seeded-a/status", tok: authWrite, body: `{"status":"UP","switch":"7"}`},
		{method: "PUT", target: "/v1/instances/seeded-a/heartbeat", tok: authWrite},
		{method: "PUT", target: "/v1/instances/seeded-a/heartbeat", tok: authNone},
		{method: "PUT", target: "/v1/heartbeats", tok: authWrite, body: `{"ids":["seeded-a","gone"]}`},
		{method: "PUT", target: "/v1/heartbeats", tok: authRead, body: `{"ids":["seeded-a"]}`},
		{method: "PUT", target: "/v1/heartbeats", tok: authNone, body: `{"ids":["seeded-a"]}`},
		{method: "PUT", target: "/v1/heartbeats", tok: authRaw, auth: "Bearer " + registry.InstanceToken(fuzzToken, "seeded-a"), body: `{"ids":["seeded-a"]}`},
		{method: "PUT", target: "/v1/heartbeats", tok: authRaw, auth: "Bearer " + registry.InstanceToken(fuzzToken, "a"), body: `{"ids":["a","seeded-a"]}`},
		{method: "PUT", target: "/v1/heartbeats", tok: authWrite, body: `{"ids":"seeded-a"}`},
		{method: "PUT", target: "/v1/heartbeats", tok: authWrite, chunked: true, body: `{"ids":["` + strings.Repeat("a", 65<<10) + `"]}`},
		{method: "DELETE", target: "/v1/instances/seeded-a", tok: authWrite},
		{method: "DELETE", target: "/v1/instances/seeded-a", tok: authRead},
		{method: "GET", target: "/v1/instances", tok: authRead},
		{method: "GET", target: "/v1/instances?service=hello", tok: authWrite},
		{method: "GET", target: "/v1/instances?service=hello", tok: authNone},
		{method: "GET", target: "/v1/instances?service=a/b", tok: authRead},
		{method: "GET", target: "/v1/instances?index=1&wait=1ms", tok: authRead},
		{method: "GET", target: "/v1/instances?index=x", tok: authRead},
		{method: "GET", target: "/v1/instances?index=1&wait=-1s", tok: authRead},
		{method: "GET", target: "/v1/instances?index=18446744073709551616", tok: authRead},
		{method: "GET", target: "/v1/gateways", tok: authRead},
		{method: "GET", target: "/v1/gateways", tok: authNone},
		{method: "PUT", target: "/v1/gateways/g1", tok: authRead, body: `{"applied":{"hello":42}}`},
		{method: "PUT", target: "/v1/gateways/g1", tok: authNone, body: `{"applied":{"hello":42}}`},
		{method: "PUT", target: "/v1/gateways/" + strings.Repeat("g", 300), tok: authRead, body: `{"applied":{}}`},
		{method: "PUT", target: "/v1/gateways/g1", tok: authRead, body: `{"id":"other","applied":{"hello":-1}}`},
		{method: "GET", target: "/healthz"},
		{method: "GET", target: "/metrics"},
		{method: "POST", target: "/v1/instances/a", tok: authWrite, body: valid},
		{method: "PATCH", target: "/v1/instances", tok: authWrite},
		{method: "GET", target: "/v1/../v1/instances", tok: authNone},
		{method: "GET", target: "/v1/instances/%2e%2e/gateways", tok: authNone},
		{method: "GET", target: "http://registry/v1/instances", tok: authNone},
		{method: "GET", target: "*", tok: authNone},
		// The bad values the project already tests.
		{method: "PUT", target: "/v1/instances/a", tok: authWrite, body: ""},
		{method: "PUT", target: "/v1/instances/a", tok: authWrite, body: "{"},
		{method: "PUT", target: "/v1/instances/a", tok: authWrite, body: "\xff\xfe\x00binary"},
		{method: "PUT", target: "/v1/instances/a", tok: authWrite, body: valid + valid},
		{method: "PUT", target: "/v1/instances/a", tok: authWrite, body: valid + " garbage"},
		{method: "PUT", target: "/v1/instances/a", tok: authWrite, body: `{"id":"a","colour":"blue"}`},
		{method: "PUT", target: "/v1/instances/a", tok: authWrite, body: `{"id":"b","service":"s","color":"blue","address":"h","port":1,"status":"UP"}`},
		{method: "PUT", target: "/v1/instances/a", tok: authWrite, body: `{"service":"s","color":"purple","address":"h","port":1,"status":"UP"}`},
		{method: "PUT", target: "/v1/instances/a", tok: authWrite, body: `{"service":"s","color":"GREEN","address":"h","port":1,"status":"UP"}`},
		{method: "PUT", target: "/v1/instances/a", tok: authWrite, body: `{"service":"s/t","color":"blue","address":"h","port":1,"status":"UP"}`},
		{method: "PUT", target: "/v1/instances/a", tok: authWrite, body: `{"service":"s","color":"blue","address":"h/../x","port":1,"status":"UP"}`},
		{method: "PUT", target: "/v1/instances/a", tok: authWrite, body: `{"service":"s","color":"blue","address":"h","port":70000,"status":"UP"}`},
		{method: "PUT", target: "/v1/instances/a", tok: authWrite, body: `{"service":"s","color":"blue","address":"h","port":1,"status":"UP","version":"v1\u0000"}`},
		{method: "PUT", target: "/v1/instances/a", tok: authWrite, body: `{"service":"s","color":"blue","address":"` + strings.Repeat("a", 900) + `","port":1,"status":"UP"}`},
		{method: "PUT", target: "/v1/instances/" + strings.Repeat("a", 200), tok: authWrite, body: `{"service":"s","color":"blue","address":"h","port":1,"status":"UP"}`},
		{method: "PUT", target: "/v1/instances/a%2Fb", tok: authWrite, body: `{"service":"s","color":"blue","address":"h","port":1,"status":"UP"}`},
		{method: "PUT", target: "/v1/instances/seeded-a", tok: authWrite, body: `{"service":"other","color":"green","address":"::1","port":1,"status":"DOWN"}`},
		{method: "PUT", target: "/v1/instances/a", tok: authWrite, body: `{"id":"` + strings.Repeat("a", 65<<10) + `"}`},
		{method: "PUT", target: "/v1/instances/a", tok: authWrite, chunked: true, body: `{"id":"` + strings.Repeat("a", 65<<10) + `"}`},
		{method: "PUT", target: "/v1/instances/a", tok: authWrite, body: valid + strings.Repeat(" ", 65<<10)},
		{method: "PUT", target: "/v1/instances/a", tok: authWrite, chunked: true, body: valid + strings.Repeat(" ", 65<<10)},
		{method: "PUT", target: "/v1/gateways/g1", tok: authRead, chunked: true, body: `{"applied":{"` + strings.Repeat("s", 65<<10) + `":1}}`},
	}
}

func FuzzAPI(f *testing.F) {
	for _, s := range apiSeeds() {
		f.Add(s.method, s.target, s.auth, s.tok, s.chunked, []byte(s.body))
	}
	log := logrus.New()
	log.Out = io.Discard
	f.Fuzz(func(t *testing.T, method, target, auth string, tok uint8, chunked bool, body []byte) {
		srv, err := New(Config{Token: fuzzToken, LeaseTTL: time.Minute, Log: log})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := srv.store.Register(seededInstance); err != nil {
			t.Fatal(err)
		}
		if err := srv.store.ReportGateway(seededGateway); err != nil {
			t.Fatal(err)
		}
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(rawRequest(method, target, tok, auth, chunked, body))))
		if err != nil {
			return // net/http refuses it before any handler sees it
		}
		req.RemoteAddr = "192.0.2.1:1234"
		// A blocking query on the current index would wait; it must end
		// with the request like any other.
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		req = req.WithContext(ctx)
		write, read := registry.TokenOK(req, fuzzToken), registry.TokenOK(req, registry.ReadToken(fuzzToken))
		own, inst := registry.InstanceOf(req, fuzzToken)

		before := srv.fuzzState()
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, req)
		after := srv.fuzzState()
		desc := fmt.Sprintf("%s %q (write=%v read=%v instance=%q) body %.200q: %d %.300s", req.Method, req.RequestURI, write, read, own, body, rec.Code, rec.Body)

		if rec.Code >= 500 || rec.Code < 100 {
			t.Fatalf("%s: a request must never cause a server error", desc)
		}
		if rec.Code >= 400 {
			var e struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" {
				t.Fatalf("%s: an error must be answered as {\"error\": ...} (%v)", desc, err)
			}
			if strings.HasPrefix(e.Error, "malformed JSON body: code=413") {
				t.Fatalf("%s: a body over the limit must be answered 413, not as malformed", desc)
			}
		}
		switch {
		case !write && !read && inst:
			// An instance token may change its own instance and nothing else.
			others, othersAfter := maps.Clone(before.instances), maps.Clone(after.instances)
			delete(others, own)
			delete(othersAfter, own)
			if !reflect.DeepEqual(others, othersAfter) || !reflect.DeepEqual(before.gateways, after.gateways) {
				t.Fatalf("%s: an instance token changed another instance or a gateway:\n%+v\n%+v", desc, before, after)
			}
		case !write && !read:
			if !reflect.DeepEqual(before, after) {
				t.Fatalf("%s: a request without a token changed the registry:\n%+v\n%+v", desc, before, after)
			}
			if rec.Code < 300 && (strings.Contains(rec.Body.String(), seededInstance.ID) || strings.Contains(rec.Body.String(), seededGateway.ID)) {
				t.Fatalf("%s: a request without a token read the registry", desc)
			}
		case !write:
			if before.index != after.index || !reflect.DeepEqual(before.instances, after.instances) {
				t.Fatalf("%s: the read token changed an instance:\n%+v\n%+v", desc, before, after)
			}
		}
		if rec.Code >= 300 && !reflect.DeepEqual(before, after) {
			// Every check comes before the first change.
			t.Fatalf("%s: a refused request changed the registry:\n%+v\n%+v", desc, before, after)
		}
		if err := srv.store.checkInvariants(); err != nil {
			t.Fatalf("%s: store inconsistent: %v", desc, err)
		}
		if n := srv.waiters.held(); n != 0 {
			t.Fatalf("%s: %d blocking queries still held after the answer", desc, n)
		}
	})
}

// rawRequest writes a request as a client would put it on the wire; the
// fuzzer's strings may break it in any way, which net/http then judges.
func rawRequest(method, target string, tok uint8, auth string, chunked bool, body []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: registry\r\nContent-Type: application/json\r\n", method, target)
	switch tok % authKinds {
	case authWrite:
		b.WriteString("Authorization: Bearer " + fuzzToken + "\r\n")
	case authRead:
		b.WriteString("Authorization: Bearer " + registry.ReadToken(fuzzToken) + "\r\n")
	case authNear:
		b.WriteString("Authorization: Bearer " + fuzzToken + "X\r\n")
	case authBasic:
		b.WriteString("Authorization: Basic " + fuzzToken + "\r\n")
	case authRaw:
		b.WriteString("Authorization: " + auth + "\r\n")
	}
	if chunked {
		b.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		if len(body) > 0 {
			fmt.Fprintf(&b, "%x\r\n%s\r\n", len(body), body)
		}
		b.WriteString("0\r\n\r\n")
		return b.Bytes()
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n", len(body))
	b.Write(body)
	return b.Bytes()
}

// storeState is everything a request may change, leases included.
type storeState struct {
	index     uint64
	instances map[string]leaseState[registry.Instance]
	gateways  map[string]leaseState[registry.GatewayReport]
}

// leaseState is a lease as it was when read.
type leaseState[T any] struct {
	val     T
	expires int64
}

func (s *Server) fuzzState() storeState {
	st := s.store
	st.mu.Lock()
	defer st.mu.Unlock()
	out := storeState{index: st.index, instances: map[string]leaseState[registry.Instance]{}, gateways: map[string]leaseState[registry.GatewayReport]{}}
	for id, l := range st.instances {
		out.instances[id] = leaseState[registry.Instance]{l.val, l.expires.Load()}
	}
	for id, l := range st.gateways {
		g := leaseState[registry.GatewayReport]{l.val, l.expires.Load()}
		g.val.Applied = maps.Clone(g.val.Applied)
		out.gateways[id] = g
	}
	return out
}

// checkInvariants reports what breaks the store's invariants: every instance valid
// and filed under its id, every index at or below the current one, every
// cached view what the state encodes to.
func (s *Store) checkInvariants() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, l := range s.instances {
		if id != l.val.ID {
			return fmt.Errorf("instance %q filed under %q", l.val.ID, id)
		}
		if err := l.val.Validate(); err != nil {
			return fmt.Errorf("stored instance %+v is invalid: %w", l.val, err)
		}
		if idx := s.svcIndex[l.val.Service]; idx == 0 {
			return fmt.Errorf("service %q of instance %q has no index", l.val.Service, id)
		}
	}
	for svc, idx := range s.svcIndex {
		if idx > s.index {
			return fmt.Errorf("service %q at index %d, past the store's %d", svc, idx, s.index)
		}
	}
	for id, l := range s.gateways {
		if id != l.val.ID || id == "" || len(id) > 256 {
			return fmt.Errorf("gateway report %q filed under %q", l.val.ID, id)
		}
	}
	for svc, b := range s.encoded {
		want, err := json.Marshal(s.snapshot(svc))
		if err != nil || !bytes.Equal(b, want) {
			return fmt.Errorf("cached view of %q is stale:\n%s\nwant\n%s", svc, b, want)
		}
	}
	return nil
}
