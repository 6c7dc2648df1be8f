package controller_test

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/controller"
	"github.com/switchyard/switchyard/deployments/local"
	"github.com/switchyard/switchyard/registry"
)

// cutProxy forwards TCP to target until cut; then it drops every
// connection and refuses new ones, as a network partition would.
type cutProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	cut   bool
	conns []net.Conn
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			u, derr := net.Dial("tcp", target)
			if p.cut || derr != nil {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(u, c); u.Close() }()
			go func() { _, _ = io.Copy(c, u); c.Close() }()
		}
	}()
	t.Cleanup(func() { ln.Close(); p.partition() })
	return p
}

func (p *cutProxy) partition() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for _, c := range p.conns {
		c.Close()
	}
}

func waitFor(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLeaderCutOffFromZooKeeperStopsAndTheStandbyTakesOver(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	z, err := local.StartZooKeeper(ctx, t.TempDir(), 250*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(z.Stop)
	srv, err := registry.NewServer(registry.ServerConfig{Token: "secret", LeaseTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.ServeListener(ctx, ln) }()
	reg := registry.NewClient("http://"+ln.Addr().String(), "secret")
	log := logrus.New()
	log.SetOutput(io.Discard)

	proxy := newCutProxy(t, z.Addr)
	start := func(id, zkAddr string) *controller.Controller {
		c, err := controller.New(controller.Config{ID: id, ZK: []string{zkAddr}, Registry: reg, Token: "secret",
			SessionTimeout: 2 * time.Second, Resync: 100 * time.Millisecond, Log: log})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = c.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
		return c
	}
	first := start("first", proxy.ln.Addr().String())
	waitFor(t, 30*time.Second, "the first controller to lead", first.Leading)
	standby := start("standby", z.Addr)
	time.Sleep(300 * time.Millisecond)
	if standby.Leading() {
		t.Fatal("two controllers lead at once")
	}

	proxy.partition()
	// The cut leader cannot know whether its session survives: it stops at
	// once, well before ZooKeeper expires the session (2s).
	waitFor(t, time.Second, "the cut leader to stop acting", func() bool { return !first.Leading() })
	waitFor(t, 30*time.Second, "the standby to take over once the session expired", standby.Leading)
	if first.Leading() {
		t.Fatal("the cut controller leads again without ZooKeeper")
	}
}
