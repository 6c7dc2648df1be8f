package server

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/registry"
)

// BenchmarkHeartbeat is one heartbeat through the registry's handler, the
// part of its cost that is switchyard's own (net/http's is not in it),
// among 10,000 leases.
func BenchmarkHeartbeat(b *testing.B) {
	const token = "bench-secret-0123456789"
	for _, tc := range []struct {
		desc  string
		token func(id string) string
	}{
		{desc: "shared token", token: func(string) string { return token }},
		{desc: "instance token", token: func(id string) string { return registry.InstanceToken(token, id) }},
	} {
		b.Run(tc.desc, func(b *testing.B) {
			log := logrus.New()
			log.Out = io.Discard
			srv, err := New(Config{Token: token, LeaseTTL: time.Minute, Log: log})
			if err != nil {
				b.Fatal(err)
			}
			const n = 10000
			reqs := make([]*http.Request, n)
			for i := range n {
				id := fmt.Sprintf("lease-%05d", i)
				if _, err := srv.store.Register(registry.Instance{ID: id, Service: "lease", Color: "blue", Address: "127.0.0.1", Port: 9, Status: registry.StatusOutOfService}); err != nil {
					b.Fatal(err)
				}
				reqs[i] = httptest.NewRequest(http.MethodPut, "/v1/instances/"+id+"/heartbeat", nil)
				reqs[i].Header.Set("Authorization", "Bearer "+tc.token(id))
			}
			h := srv.Handler()
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				w.code = 0
				h.ServeHTTP(w, reqs[i%n])
				if w.code != http.StatusNoContent {
					b.Fatalf("heartbeat answered %d", w.code)
				}
			}
		})
	}
}

// discardWriter is a ResponseWriter that keeps only the status.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }
