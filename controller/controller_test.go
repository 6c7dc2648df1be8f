package controller_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/controller"
	"github.com/switchyard/switchyard/deployments/local"
	"github.com/switchyard/switchyard/registry"
)

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
	url, _, err := local.ServeRegistry(ctx, registry.ServerConfig{Token: "secret", LeaseTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.NewClient(url, "secret")
	log := logrus.New()
	log.SetOutput(io.Discard)

	proxy, err := local.NewPartition(z.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
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
	first := start("first", proxy.Addr())
	waitFor(t, 30*time.Second, "the first controller to lead", first.Leading)
	standby := start("standby", z.Addr)
	time.Sleep(300 * time.Millisecond)
	if standby.Leading() {
		t.Fatal("two controllers lead at once")
	}

	proxy.Cut()
	// The cut leader cannot know whether its session survives, so it must
	// stop before anyone else can lead: at no moment may both lead.
	deadline := time.Now().Add(30 * time.Second)
	stopped := false
	for !standby.Leading() {
		if first.Leading() && stopped {
			t.Fatal("the cut controller leads again without ZooKeeper")
		}
		stopped = stopped || !first.Leading()
		if time.Now().After(deadline) {
			t.Fatalf("no takeover within 30s (cut leader stopped: %v)", stopped)
		}
		time.Sleep(time.Millisecond)
	}
	if first.Leading() {
		t.Fatal("the standby took over while the cut leader still acted: two leaders")
	}
}
