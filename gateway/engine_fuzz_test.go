package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/registry"
)

// FuzzEngine holds the HTTP/1.1 engine (engine.go, h1raw.go) to the
// gateway's net/http path on the same bytes: each input is a raw client
// request and the raw bytes the instance answers it with, sent through two
// gateways that differ only in NoEngine. The instance must receive the
// same request from both (method, target, Host and every field but the
// generated X-Request-Id), and the client must get the same answer: the
// same interim and final statuses, fields and body. Two differences are
// by design and left out: the Date and X-Request-Id values, and the
// Content-Type net/http's server guesses for an answer that has none (the
// engine, like nginx, adds none).
func FuzzEngine(f *testing.F) {
	for _, s := range h1Seeds() {
		f.Add([]byte(s.req), []byte(s.resp))
	}
	f.Add([]byte("GET /a HTTP/1.1\r\nHost: gw\r\n\r\n"), []byte("HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	f.Add([]byte("GET /a HTTP/1.1\r\nHost: gw\r\n\r\n"), []byte("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nConnection: close\r\nX-Request-Id: theirs\r\nX-A: 1\r\nX-A: 2\r\n\r\nok"))
	f.Add([]byte("GET /a HTTP/1.1\r\nHost: gw\r\n\r\n"), []byte("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"))
	f.Add([]byte("HEAD /a HTTP/1.1\r\nHost: gw\r\n\r\n"), []byte("HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\nEtag: \"x\"\r\n\r\n"))
	f.Add([]byte("GET /a HTTP/1.1\r\nHost: gw\r\n\r\n"), []byte("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"))
	f.Add([]byte("GET /a HTTP/1.1\r\nHost: gw\r\n\r\n"), []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"))
	f.Add([]byte("GET /a HTTP/1.1\r\nHost: gw\r\n\r\n"), []byte("HTTP/1.1 299 Whatever\r\nContent-Length: 2\r\n\r\nok"))

	be := newFuzzBackend(f)
	engine := fuzzGateway(f, be.addr(), false)
	netHTTP := fuzzGateway(f, be.addr(), true)
	f.Fuzz(func(t *testing.T, rawReq, rawResp []byte) {
		in, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(rawReq)))
		if err != nil {
			return // incomplete or refused: no gateway passes it on
		}
		if in.Method != http.MethodGet && in.Method != http.MethodHead {
			return // the engine hands it to net/http: the same path twice
		}
		if _, err := io.ReadAll(in.Body); err != nil {
			return // a body cut short: both wait out the client body timeout
		}
		a := be.exchange(t, engine, rawReq, rawResp, in.Method)
		b := be.exchange(t, netHTTP, rawReq, rawResp, in.Method)
		if !reflect.DeepEqual(a.seen, b.seen) {
			t.Fatalf("the instance received\n%s\nthrough the engine and\n%s\nthrough net/http", seenText(a.seen), seenText(b.seen))
		}
		if resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(rawResp)), in); err == nil && resp.Header["Content-Type"] == nil {
			// An answer with no Content-Type of its own may get one guessed
			// by net/http's server (depending on how its first write and
			// the instance's close race); the engine adds none.
			for _, r := range [][]fuzzAnswer{a.answers, b.answers} {
				for i := range r {
					delete(r[i].header, "Content-Type")
				}
			}
		}
		if a.err == "body cut short" && len(b.answers) == 0 && b.err == "closed" {
			// The instance broke off an answer of known length: the engine
			// has sent its head and what came, net/http's server had not
			// flushed it yet; either way the client sees it fail.
			return
		}
		for i := range min(len(a.answers), len(b.answers)) {
			// An empty answer of unknown length: net/http's server says
			// Content-Length: 0 or nothing, by how the instance's close
			// and its handler's return race.
			x, y := a.answers[i], b.answers[i]
			if x.body == "" && y.body == "" && x.header.Get("Content-Length") != y.header.Get("Content-Length") {
				x.header.Del("Content-Length")
				y.header.Del("Content-Length")
			}
		}
		if !reflect.DeepEqual(a.answers, b.answers) || a.err != b.err {
			t.Fatalf("the client got\n%+v (%s)\nthrough the engine and\n%+v (%s)\nthrough net/http", a.answers, a.err, b.answers, b.err)
		}
	})
}

// fuzzBackend answers each connection's first request with the input's
// answer bytes, then closes it.
type fuzzBackend struct {
	ln   net.Listener
	mu   sync.Mutex // one input at a time
	resp []byte
	seen chan *http.Request
}

func newFuzzBackend(tb testing.TB) *fuzzBackend {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	b := &fuzzBackend{ln: ln, seen: make(chan *http.Request, 16)}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go b.serve(c)
		}
	}()
	return b
}

func (b *fuzzBackend) addr() string { return b.ln.Addr().String() }

func (b *fuzzBackend) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	req, err := http.ReadRequest(bufio.NewReader(c))
	if err != nil {
		return
	}
	req.Header.Del("X-Request-Id")
	b.seen <- &http.Request{Method: req.Method, RequestURI: req.RequestURI, Host: req.Host, Header: req.Header}
	b.mu.Lock()
	resp := b.resp
	b.mu.Unlock()
	_, _ = c.Write(resp)
}

// fuzzAnswer is what a client read.
type fuzzAnswer struct {
	status int
	header http.Header
	body   string
}

type fuzzResult struct {
	seen    []*http.Request
	answers []fuzzAnswer
	err     string // how reading the last answer failed; "" if it did not
}

// exchange sends rawReq through the gateway at addr while the backend
// answers rawResp, and reads the interim and final answers.
func (b *fuzzBackend) exchange(t *testing.T, gw *fuzzGW, rawReq, rawResp []byte, method string) fuzzResult {
	// Each input starts on new connections to the instance: bytes an
	// earlier answer left unread must not answer this one (see FuzzH1's
	// reusedUnread).
	for _, up := range gw.g.upstreamList() {
		up.closeIdle()
	}
	b.mu.Lock()
	b.resp = rawResp
	b.mu.Unlock()
	for len(b.seen) > 0 {
		<-b.seen
	}
	var r fuzzResult
	c, err := net.Dial("tcp", gw.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(rawReq); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for {
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			r.err = "no answer"
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				r.err = "closed"
			}
			break
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			r.err = "body cut short"
		}
		resp.Header.Del("Date")
		resp.Header.Del("X-Request-Id")
		r.answers = append(r.answers, fuzzAnswer{resp.StatusCode, resp.Header, string(body)})
		if resp.StatusCode >= 200 || err != nil {
			break
		}
	}
	// A request that reached the instance did so before the answer.
	for len(b.seen) > 0 {
		r.seen = append(r.seen, <-b.seen)
	}
	return r
}

// fuzzGateway runs a gateway routing everything to one instance at addr.
func fuzzGateway(tb testing.TB, addr string, noEngine bool) *fuzzGW {
	log := logrus.New()
	log.Out = io.Discard
	g, err := New(Config{Routes: []Route{{Prefix: "/", Service: "web"}}, Source: idleSource{}, Log: log, NoEngine: noEngine,
		ClientHeaderTimeout: time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Serve(ctx, ln, nil) }()
	tb.Cleanup(func() { cancel(); <-done })
	host, port, _ := net.SplitHostPort(addr)
	var p int
	for _, d := range port {
		p = p*10 + int(d-'0')
	}
	g.apply("web", registry.Snapshot{Index: 1, Ready: true, Instances: []registry.Instance{
		{ID: "web-1", Service: "web", Color: "blue", Address: host, Port: p, Status: registry.StatusUp},
	}})
	return &fuzzGW{g: g, addr: ln.Addr().String()}
}

type fuzzGW struct {
	g    *Gateway
	addr string
}

func seenText(rs []*http.Request) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "%s %s Host=%s %v\n", r.Method, r.RequestURI, r.Host, r.Header)
	}
	return b.String()
}
