package gateway

import (
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard/switchyard/registry"
)

// A backend that accepts and never answers once held a request for good;
// now the client gets 504 once the response-header timeout passes, on the
// fast path (GET) and through http.Transport (POST) alike.
func TestABackendThatNeverAnswersGets504(t *testing.T) {
	addr := silentUpstream(t)
	host, port := splitHostPort(t, addr)
	log, hook := quietLog()
	g, url := runGateway(t, Config{ID: "gw-timeout", Listen: "127.0.0.1:0", Routes: parseRoutes(t, "/=hello"), Source: idleSource{},
		Timeouts: Timeouts{ResponseHeader: 300 * time.Millisecond}, Log: log})
	g.apply("hello", registry.Snapshot{Index: 1, Ready: true, Instances: []registry.Instance{
		{ID: "silent", Service: "hello", Color: "blue", Address: host, Port: port, Status: registry.StatusUp},
	}})
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		req, err := http.NewRequest(method, url+"/x", strings.NewReader(map[string]string{http.MethodPost: "body"}[method]))
		if err != nil {
			t.Fatal(err)
		}
		client := &http.Client{Timeout: time.Minute} // far beyond the gateway's own limit
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(string(b), "in time") {
			t.Errorf("%s to a silent backend: %d %s; want 504", method, resp.StatusCode, b)
		}
	}
	if !logged(hook, "did not answer in time") {
		t.Error("a 504 was not logged at warn with the upstream error")
	}
}

// silentUpstream accepts connections and never reads or answers.
func silentUpstream(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	return ln.Addr().String()
}
