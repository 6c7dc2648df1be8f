package controller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/sirupsen/logrus"

	"github.com/switchyard/switchyard/controller"
	"github.com/switchyard/switchyard/deployments/local"
	"github.com/switchyard/switchyard/internal/testutil"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/registry/server"
	"github.com/switchyard/switchyard/zkstate"
)

func TestLeaderCutOffFromZooKeeperStopsAndTheStandbyTakesOver(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	z, err := local.StartZooKeeper(ctx, t.TempDir(), 250*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(z.Stop)
	url, _, err := local.ServeRegistry(ctx, server.Config{Token: "secret", LeaseTTL: time.Minute})
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
		c, err := controller.New(controller.Config{ID: id, ZK: []string{zkAddr}, Registry: reg, Token: "instruction-key-0123456789",
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
	testutil.Eventually(t, 30*time.Second, "the first controller to lead", first.Leading)
	standby := start("standby", z.Addr)
	testutil.EventuallyWhy(t, 30*time.Second, "the standby to stand in the election", candidate(t, z.Addr, "standby"))
	// A hold, not a wait: it shows the standby does not lead, an event
	// that must not come.
	time.Sleep(300 * time.Millisecond)
	if standby.Leading() {
		t.Fatal("two controllers lead at once")
	}

	proxy.Cut()
	// The cut leader cannot know whether its session survives, so it must
	// stop before anyone else can lead: at no moment may both lead.
	stopped := false
	testutil.EventuallyWhy(t, 30*time.Second, "the standby to take over", func() (bool, string) {
		if standby.Leading() {
			return true, ""
		}
		if first.Leading() && stopped {
			t.Fatal("the cut controller leads again without ZooKeeper")
		}
		stopped = stopped || !first.Leading()
		return false, fmt.Sprintf("no takeover (cut leader stopped: %v)", stopped)
	})
	if first.Leading() {
		t.Fatal("the standby took over while the cut leader still acted: two leaders")
	}
}

// candidate reports whether the controller id has a node in the leader
// election, that is, whether it campaigns.
func candidate(t *testing.T, zkAddr, id string) func() (bool, string) {
	t.Helper()
	conn, _, err := zk.Connect([]string{zkAddr}, 5*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	paths, err := zkstate.NewPaths("")
	if err != nil {
		t.Fatal(err)
	}
	return func() (bool, string) {
		nodes, _, err := conn.Children(paths.Leader())
		if err != nil {
			return false, err.Error()
		}
		var ids []string
		for _, n := range nodes {
			b, _, err := conn.Get(paths.Leader() + "/" + n)
			if err != nil {
				continue // gone since the listing
			}
			var c zkstate.Candidate
			if json.Unmarshal(b, &c) == nil {
				ids = append(ids, c.ID)
			}
		}
		return slices.Contains(ids, id), fmt.Sprintf("candidates %v", ids)
	}
}
