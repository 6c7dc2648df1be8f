package server_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/internal/testutil"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/registry/server"
)

// maxServerRead is what the server may read of a refused body: the 64 KiB
// limit, the 256 KiB net/http drains before it gives up on a connection,
// and buffers.
const maxServerRead = 512 << 10

func TestA50MBBodyIsRefusedWithoutBeingRead(t *testing.T) {
	log := logrus.New()
	log.Out = io.Discard
	srv, err := server.New(server.Config{Token: "secret", LeaseTTL: time.Minute, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &testutil.CountingListener{Listener: ln}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.ServeListener(ctx, cl); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	base := "http://" + ln.Addr().String()

	for _, tc := range []struct {
		desc, method, path, token string
		chunked                   bool
		want                      []int // answers that refuse it; a closed connection does too
		limit                     int64 // the route's body limit, if not 64 KiB
	}{
		{desc: "a registration with its length announced", method: "PUT", path: "/v1/instances/a", token: "secret", want: []int{413}},
		{desc: "a registration sent in chunks", method: "PUT", path: "/v1/instances/a", token: "secret", chunked: true, want: []int{413}},
		{desc: "a status change sent in chunks", method: "PUT", path: "/v1/instances/a/status", token: "secret", chunked: true, want: []int{413}},
		{desc: "a gateway report sent in chunks", method: "PUT", path: "/v1/gateways/g", token: registry.ReadToken("secret"), chunked: true, want: []int{413}, limit: 2 << 20},
		{desc: "a heartbeat, which reads no body, sent in chunks", method: "PUT", path: "/v1/instances/a/heartbeat", token: "secret", chunked: true, want: []int{404, 413}},
		{desc: "a registration without a token sent in chunks", method: "PUT", path: "/v1/instances/a", chunked: true, want: []int{401, 413}},
		{desc: "a read with a body", method: "GET", path: "/v1/instances", token: "secret", chunked: true, want: []int{200, 413}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			body := testutil.NewHugeJSON(`{"id":"`)
			req, err := http.NewRequest(tc.method, base+tc.path, body.Reader())
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = testutil.FiftyMB
			if tc.chunked {
				req.ContentLength = -1
			}
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			start := cl.Read.Load()
			client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Minute}
			defer client.CloseIdleConnections()
			resp, err := client.Do(req)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				ok := false
				for _, code := range tc.want {
					ok = ok || resp.StatusCode == code
				}
				if !ok {
					t.Errorf("answered %d, want one of %v or a closed connection", resp.StatusCode, tc.want)
				}
			} else {
				t.Logf("the server closed the connection: %v", err)
			}
			testutil.Eventually(t, 10*time.Second, "the server to close the connection", func() bool { return cl.Open() == 0 })
			n := cl.Read.Load() - start
			t.Logf("the server read %d bytes; the client produced %d", n, body.Read.Load())
			if most := maxServerRead + tc.limit; n > most {
				t.Errorf("the server read %d bytes of a 50 MB body before refusing it; want at most %d", n, most)
			}
			if n := body.Read.Load(); n >= testutil.FiftyMB {
				t.Errorf("the client sent all %d bytes: nothing stopped it", n)
			}
		})
	}
}
