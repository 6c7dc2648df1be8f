package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/internal/testutil"
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

func TestParseFrame(t *testing.T) {
	long := strings.Repeat("a", registry.MaxNameLen)
	for _, tc := range []struct {
		desc  string
		frame string
		ping  bool
		ids   []string
		bad   string // part of the error; "" for a good frame
	}{
		{desc: "one id", frame: "a", ids: []string{"a"}},
		{desc: "several ids", frame: "a b.c d_e-f:g", ids: []string{"a", "b.c", "d_e-f:g"}},
		{desc: "a ping with ids", frame: "?a b", ping: true, ids: []string{"a", "b"}},
		{desc: "a ping alone", frame: "?", ping: true},
		{desc: "an id of the longest length", frame: long, ids: []string{long}},
		{desc: "an empty frame", frame: "", bad: "empty frame"},
		{desc: "a double space", frame: "a  b", bad: "1 to 128"},
		{desc: "a leading space", frame: " a", bad: "1 to 128"},
		{desc: "a trailing space", frame: "a ", bad: "trailing space"},
		{desc: "an id too long", frame: long + "a", bad: "1 to 128"},
		{desc: "a carriage return", frame: "a\r", bad: `'\r'`},
		{desc: "a tab", frame: "a\tb", bad: `'\t'`},
		{desc: "a slash", frame: "a/b", bad: `'/'`},
		{desc: "a second ping mark", frame: "??a", bad: `'?'`},
		{desc: "a ping mark after an id", frame: "a ?b", bad: `'?'`},
		{desc: "a NUL", frame: "a\x00", bad: `'\x00'`},
		{desc: "a byte of UTF-8", frame: "caf\xc3\xa9", bad: `'Ã'`},
		{desc: "JSON", frame: `{"ids":["a"]}`, bad: `'{'`},
		{desc: "an HTTP request line", frame: "PUT /v1/heartbeats HTTP/1.1", bad: `'/'`},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			prev := [][]byte{[]byte("kept")}
			ping, ids, err := parseFrame([]byte(tc.frame), prev)
			if tc.bad != "" {
				if err == nil || !strings.Contains(err.Error(), tc.bad) || !strings.HasPrefix(err.Error(), "malformed frame: ") {
					t.Fatalf("parseFrame(%q) = %v, want an error with %q", tc.frame, err, tc.bad)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseFrame(%q): %v", tc.frame, err)
			}
			var got []string
			for _, id := range ids[1:] {
				got = append(got, string(id))
			}
			if ping != tc.ping || string(ids[0]) != "kept" || fmt.Sprint(got) != fmt.Sprint(tc.ids) {
				t.Fatalf("parseFrame(%q) = %v %q, want %v %q appended", tc.frame, ping, got, tc.ping, tc.ids)
			}
		})
	}
}

// Every frame a client may send parses or is refused, and an accepted
// frame's ids are valid instance ids: what the store may be asked to renew.
func FuzzParseFrame(f *testing.F) {
	for _, s := range []string{"a", "?a b", "?", "", "a  b", "a ", "a\r", "caf\xc3\xa9", strings.Repeat("a", 129)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		_, ids, err := parseFrame(frame, nil)
		if err != nil {
			return
		}
		for _, id := range ids {
			if cerr := registry.CheckName("instance id", string(id)); cerr != nil {
				t.Fatalf("parseFrame(%q) accepted %q: %v", frame, id, cerr)
			}
		}
	})
}

func TestRenewStreamDoesNotAllocate(t *testing.T) {
	s := NewStore(time.Minute, 0, nil)
	if _, err := s.Register(inst("a", registry.StatusUp)); err != nil {
		t.Fatal(err)
	}
	frame := []byte("?a")
	ids := make([][]byte, 0, 4)
	allocs := testing.AllocsPerRun(100, func() {
		_, ids, _ = parseFrame(frame, ids[:0])
		s.renewStream(ids, func([]byte) { t.Fatal("a is registered") })
	})
	if allocs != 0 {
		t.Errorf("%v allocations per frame, want 0: every heartbeat of every stream pays them", allocs)
	}
}

// readers runs test with the streams read as on Linux, in batches, and
// as elsewhere or over a connection that cannot be polled, by a goroutine
// each.
func readers(t *testing.T, test func(t *testing.T, polled bool)) {
	for _, polled := range []bool{true, false} {
		t.Run(map[bool]string{true: "polled", false: "a goroutine per stream"}[polled], func(t *testing.T) { test(t, polled) })
	}
}

// wrapped hides the *net.TCPConn of each connection, which the poller
// needs.
type wrapped struct{ net.Listener }

func (l wrapped) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	return struct{ net.Conn }{c}, err
}

// streamServer is a real registry on loopback holding instances a and b,
// whose leases last ttl; unless polled, its streams are not polled.
func streamServer(t *testing.T, ttl time.Duration, cfg Config, polled ...bool) (*Server, string) {
	t.Helper()
	log := logrus.New()
	log.Out = io.Discard
	cfg.Token, cfg.LeaseTTL, cfg.Log = streamToken, ttl, log
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b"} {
		if _, err := srv.store.Register(registry.Instance{ID: id, Service: "hello", Color: "blue", Address: "127.0.0.1", Port: 9, Status: registry.StatusUp}); err != nil {
			t.Fatal(err)
		}
	}
	var ln net.Listener
	ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if len(polled) > 0 && !polled[0] {
		ln = wrapped{ln}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.ServeListener(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return srv, addr
}

const streamToken = "stream-secret-0123456789"

// rawStream is a heartbeat stream spoken by hand, as a client of another
// language would.
type rawStream struct {
	conn net.Conn
	br   *bufio.Reader
}

// openRaw upgrades with token and returns the stream, or the answer when
// the registry refused.
func openRaw(t *testing.T, addr, token string, header map[string]string) (*rawStream, *http.Response) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+registry.HeartbeatStreamPath, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", registry.HeartbeatStreamProtocol)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return nil, resp
	}
	if got := resp.Header.Get(registry.LeaseTTLHeader); got == "" {
		t.Errorf("the upgrade does not announce the lease TTL")
	}
	return &rawStream{conn: conn, br: br}, resp
}

func (s *rawStream) send(t *testing.T, frames string) {
	t.Helper()
	if _, err := s.conn.Write([]byte(frames)); err != nil {
		t.Fatal(err)
	}
}

// line reads the registry's next line, or "" if the stream ended.
func (s *rawStream) line(t *testing.T) string {
	t.Helper()
	_ = s.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	l, err := s.br.ReadString('\n')
	if err != nil && l == "" {
		return ""
	}
	return strings.TrimSuffix(l, "\n")
}

func expiry(srv *Server, id string) int64 {
	srv.store.mu.RLock()
	defer srv.store.mu.RUnlock()
	if l, ok := srv.store.instances[id]; ok {
		return l.expires.Load()
	}
	return -1
}

func TestAHeartbeatStreamRenewsLeases(t *testing.T) { readers(t, testAHeartbeatStreamRenewsLeases) }

func testAHeartbeatStreamRenewsLeases(t *testing.T, polled bool) {
	srv, addr := streamServer(t, time.Minute, Config{}, polled)
	st, resp := openRaw(t, addr, streamToken, nil)
	if st == nil {
		t.Fatalf("upgrade answered %s", resp.Status)
	}
	index := srv.fuzzState().index
	for range 3 {
		a, b := expiry(srv, "a"), expiry(srv, "b")
		time.Sleep(2 * time.Millisecond)
		st.send(t, "?a b\n")
		if l := st.line(t); l != "." {
			t.Fatalf("a ping answered %q, want %q", l, ".")
		}
		if expiry(srv, "a") <= a || expiry(srv, "b") <= b {
			t.Fatalf("a frame naming a and b did not renew both leases")
		}
	}
	// Only the named leases, and no index change: a heartbeat changes no view.
	a, b := expiry(srv, "a"), expiry(srv, "b")
	time.Sleep(2 * time.Millisecond)
	st.send(t, "a\n?\n")
	if l := st.line(t); l != "." {
		t.Fatalf("a ping answered %q", l)
	}
	if expiry(srv, "a") <= a || expiry(srv, "b") != b {
		t.Errorf("a frame naming a renewed a: %v, b: %v; want only a", expiry(srv, "a") > a, expiry(srv, "b") != b)
	}
	if got := srv.fuzzState().index; got != index {
		t.Errorf("heartbeats moved the index from %d to %d", index, got)
	}
	// An id the registry does not hold is named back, as a PUT's 404 is,
	// and the stream goes on.
	st.send(t, "gone a\n?\n")
	if l := st.line(t); l != "missing gone" {
		t.Fatalf("an unknown id answered %q, want %q", l, "missing gone")
	}
	if l := st.line(t); l != "." {
		t.Fatalf("after an unknown id the stream answered %q, want the ping's %q", l, ".")
	}
}

func TestAKilledStreamsLeasesExpireAfterTheTTL(t *testing.T) {
	readers(t, testAKilledStreamsLeasesExpireAfterTheTTL)
}

func testAKilledStreamsLeasesExpireAfterTheTTL(t *testing.T, polled bool) {
	const ttl = time.Second
	srv, addr := streamServer(t, ttl, Config{}, polled)
	live := func(id string) bool { return expiry(srv, id) >= 0 }
	dying, _ := openRaw(t, addr, streamToken, nil)
	staying, _ := openRaw(t, addr, streamToken, nil)
	if dying == nil || staying == nil {
		t.Fatal("upgrade refused")
	}
	stop := make(chan struct{})
	beating := make(chan struct{})
	go func() {
		defer close(beating)
		for {
			select {
			case <-stop:
				return
			case <-time.After(ttl / 8):
				_, _ = staying.conn.Write([]byte("b\n"))
			}
		}
	}()
	defer func() { close(stop); <-beating }()
	// Kept alive over several leases by the stream alone.
	for range 3 * 8 {
		dying.send(t, "a\n")
		time.Sleep(ttl / 8)
	}
	if !live("a") || !live("b") {
		t.Fatalf("leases renewed over streams expired: a %v, b %v", live("a"), live("b"))
	}
	killed := time.Now()
	_ = dying.conn.Close()
	testutil.Eventually(t, 10*time.Second, "a's lease to expire", func() bool { return !live("a") })
	if d := time.Since(killed); d < ttl-ttl/8 {
		t.Errorf("a's lease expired %s after its stream ended, before its TTL of %s", d, ttl)
	}
	if !live("b") {
		t.Errorf("b's lease expired with another client's stream")
	}
	// A stream that stays open but silent is closed once its leases
	// could have lapsed.
	silent, _ := openRaw(t, addr, streamToken, nil)
	opened := time.Now()
	if l := silent.line(t); l != "" {
		t.Fatalf("a silent stream got %q", l)
	}
	if d := time.Since(opened); d < ttl || d > 10*ttl {
		t.Errorf("a silent stream was closed after %s, want after its lease of %s", d, ttl)
	}
	testutil.Eventually(t, 5*time.Second, "the silent stream to be forgotten", func() bool { return srv.streams.held() == 1 })
}

func TestAStreamIsRefusedWithoutTheRightToken(t *testing.T) {
	srv, addr := streamServer(t, time.Minute, Config{})
	for _, tc := range []struct {
		desc   string
		token  string
		header map[string]string
		code   int
	}{
		{desc: "no token", code: 401},
		{desc: "a wrong token", token: streamToken + "X", code: 401},
		{desc: "the read token", token: registry.ReadToken(streamToken), code: 401},
		{desc: "another key's instance token", token: registry.InstanceToken("other-secret-0123456789", "a"), code: 401},
		{desc: "no upgrade asked", token: streamToken, header: map[string]string{"Connection": "keep-alive"}, code: 426},
		{desc: "another protocol asked", token: streamToken, header: map[string]string{"Upgrade": "websocket"}, code: 426},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			before := srv.fuzzState()
			st, resp := openRaw(t, addr, tc.token, tc.header)
			if st != nil {
				t.Fatalf("upgraded, want %d", tc.code)
			}
			var e struct {
				Error string `json:"error"`
			}
			if resp.StatusCode != tc.code || json.NewDecoder(resp.Body).Decode(&e) != nil || e.Error == "" {
				t.Fatalf("answered %s %q, want %d with an error", resp.Status, e.Error, tc.code)
			}
			if after := srv.fuzzState(); !reflect.DeepEqual(before, after) {
				t.Errorf("a refused upgrade changed the registry")
			}
		})
	}
}

func TestAStreamRefusesBadFramesAndNothingElseChanges(t *testing.T) {
	readers(t, testAStreamRefusesBadFramesAndNothingElseChanges)
}

func testAStreamRefusesBadFramesAndNothingElseChanges(t *testing.T, polled bool) {
	srv, addr := streamServer(t, time.Minute, Config{}, polled)
	own, _ := openRaw(t, addr, registry.InstanceToken(streamToken, "a"), nil)
	other, _ := openRaw(t, addr, streamToken, nil)
	if own == nil || other == nil {
		t.Fatal("upgrade refused")
	}
	// An instance token renews its own lease over its stream.
	a := expiry(srv, "a")
	time.Sleep(2 * time.Millisecond)
	own.send(t, "?a\n")
	if l := own.line(t); l != "." || expiry(srv, "a") <= a {
		t.Fatalf("instance a renewing its own lease: answered %q, renewed %v", l, expiry(srv, "a") > a)
	}
	for _, tc := range []struct {
		desc, token, frames, reason string
	}{
		{desc: "an instance token renewing another's lease", token: registry.InstanceToken(streamToken, "a"),
			frames: "a b\n", reason: `the token of instance "a" may not renew "b"`},
		{desc: "an instance token renewing another's lease alone", token: registry.InstanceToken(streamToken, "a"),
			frames: "b\n", reason: `may not renew "b"`},
		{desc: "garbage", token: streamToken, frames: "\x16\x03\x01\x02\x00\n", reason: "malformed frame"},
		{desc: "an empty frame", token: streamToken, frames: "\n", reason: "empty frame"},
		{desc: "an HTTP request", token: streamToken, frames: "PUT /v1/instances/a/heartbeat HTTP/1.1\r\n", reason: "malformed frame"},
		{desc: "a frame over the limit", token: streamToken, frames: strings.Repeat("a ", registry.MaxHeartbeatFrame), reason: "longer than 512 bytes"},
		{desc: "a frame over the limit without a newline", token: streamToken, frames: strings.Repeat("a", registry.MaxHeartbeatFrame+1), reason: "longer than 512 bytes"},
		{desc: "good ids before a bad one in one frame", token: streamToken, frames: "a b c/d\n", reason: `'/'`},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			st, _ := openRaw(t, addr, tc.token, nil)
			if st == nil {
				t.Fatal("upgrade refused")
			}
			before := srv.fuzzState()
			time.Sleep(2 * time.Millisecond)
			st.send(t, tc.frames)
			l := st.line(t)
			if !strings.HasPrefix(l, "error ") || !strings.Contains(l, tc.reason) {
				t.Fatalf("answered %q, want an error with %q", l, tc.reason)
			}
			if l := st.line(t); l != "" {
				t.Fatalf("the stream went on after its error with %q", l)
			}
			if after := srv.fuzzState(); !reflect.DeepEqual(before, after) {
				t.Errorf("a refused frame changed the registry:\n%+v\n%+v", before, after)
			}
			// The other streams go on.
			for _, s := range []*rawStream{own, other} {
				s.send(t, "?a\n")
				if l := s.line(t); l != "." {
					t.Fatalf("another stream answered %q after a refused frame", l)
				}
			}
		})
	}
}

func TestStreamsAreCappedPerClient(t *testing.T) {
	_, addr := streamServer(t, time.Minute, Config{MaxStreams: 3, MaxStreamsPerClient: 2})
	for range 2 {
		if st, resp := openRaw(t, addr, streamToken, nil); st == nil {
			t.Fatalf("upgrade within the caps answered %s", resp.Status)
		}
	}
	if st, resp := openRaw(t, addr, streamToken, nil); st != nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatal("a third stream of one address was not refused 429")
	}
	// An instance token counts as its own client, within the total.
	if st, resp := openRaw(t, addr, registry.InstanceToken(streamToken, "a"), nil); st == nil {
		t.Fatalf("an instance's stream answered %s", resp.Status)
	}
	if st, resp := openRaw(t, addr, registry.InstanceToken(streamToken, "b"), nil); st != nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatal("a stream beyond the total was not refused 429")
	}
}
