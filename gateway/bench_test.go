package gateway

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/switchyard/switchyard/registry"
)

// bigSnapshot is one service with n instances, three in four UP.
func bigSnapshot(service string, index uint64, n int) registry.Snapshot {
	snap := registry.Snapshot{Index: index, Ready: true, Instances: make([]registry.Instance, n)}
	for i := range n {
		st := registry.StatusUp
		if i%4 == 3 {
			st = registry.StatusOutOfService
		}
		snap.Instances[i] = registry.Instance{
			ID: fmt.Sprintf("%s-%05d", service, i), Service: service, Color: "green",
			Address: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), Port: 8080, Status: st,
		}
	}
	return snap
}

func BenchmarkTableBuild10000(b *testing.B) {
	routes := []Route{{Prefix: "/", Service: "hello"}, {Prefix: "/api", Service: "api"}}
	snaps := map[string]registry.Snapshot{"hello": bigSnapshot("hello", 1, 10000), "api": bigSnapshot("api", 1, 10)}
	b.Run("new", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			NewTable(routes, snaps)
		}
	})
	// What the gateway does on a switch: rebuild the changed service,
	// carrying its endpoints over.
	b.Run("apply", func(b *testing.B) {
		prev := NewTable(routes, snaps)
		next := bigSnapshot("hello", 2, 10000)
		for i := range next.Instances {
			if next.Instances[i].Status == registry.StatusUp {
				next.Instances[i].Status = registry.StatusOutOfService
			} else {
				next.Instances[i].Status = registry.StatusUp
			}
		}
		b.ReportAllocs()
		for b.Loop() {
			prev.with("hello", next)
		}
	})
	// What the gateway does for each step of a switch that goes one
	// instance at a time, or for each batch: a snapshot of 10,000 in which
	// one instance changed.
	b.Run("apply-one", func(b *testing.B) {
		tables := [2]*Table{NewTable(routes, snaps), nil}
		next := [2]registry.Snapshot{bigSnapshot("hello", 2, 10000), bigSnapshot("hello", 3, 10000)}
		next[1].Instances[5000].Status = registry.StatusOutOfService
		tables[1] = tables[0].with("hello", next[1])
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			tables[i%2].with("hello", next[(i+1)%2])
			i++
		}
	})
}

func BenchmarkLookup(b *testing.B) {
	var routes []Route
	snaps := map[string]registry.Snapshot{}
	for i := range 20 {
		svc := fmt.Sprintf("svc%d", i)
		routes = append(routes, Route{Prefix: fmt.Sprintf("/svc%d/v1", i), Service: svc})
		snaps[svc] = bigSnapshot(svc, 1, 8)
	}
	routes = append(routes, Route{Prefix: "/", Service: "svc0"})
	table := NewTable(routes, snaps)
	paths := []string{"/svc7/v1/users/42", "/svc19/v1", "/other/page", "/svc3/v2/x"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			p, ok := table.Lookup(paths[i%len(paths)])
			if !ok || p.Next() == nil {
				b.Fatal("no endpoint")
			}
			i++
		}
	})
}

// discardWriter is a ResponseWriter that costs nothing, so the benchmark
// counts the proxy's own work.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}

func BenchmarkProxy(b *testing.B) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "hello")
	}))
	defer backend.Close()
	host, port := splitHostPort(b, backend.Listener.Addr().String())
	log, _ := quietLog()
	g, err := New(Config{Routes: []Route{{Prefix: "/", Service: "hello"}}, Source: newFakeSource(), Log: log})
	if err != nil {
		b.Fatal(err)
	}
	g.apply("hello", snapOf(1, registry.Instance{ID: "a", Service: "hello", Address: host, Port: port, Status: registry.StatusUp}))
	req := httptest.NewRequest(http.MethodGet, "/hello", nil)

	b.Run("serial", func(b *testing.B) {
		w := &discardWriter{h: http.Header{}}
		b.ReportAllocs()
		for b.Loop() {
			clear(w.h)
			g.ServeHTTP(w, req)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			w := &discardWriter{h: http.Header{}}
			for pb.Next() {
				clear(w.h)
				g.ServeHTTP(w, req)
			}
		})
	})
}
