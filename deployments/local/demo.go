package local

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/switchyard/switchyard/zkstate"
)

// DemoOptions shape `make demo`.
type DemoOptions struct {
	Bin             string
	GatewayAddr     string // 127.0.0.1:8088
	RegistryAddr    string // 127.0.0.1:8761
	ControllerAddrs []string
	// Once exits after the show instead of running until ctx ends.
	Once bool
}

// RunDemo starts the whole system in a temp dir, sends steady traffic
// through the gateway, flips /active_color with the real zkCli.sh and back,
// and prints what happened. Everything it started is stopped and the temp
// dir removed before it returns.
func RunDemo(ctx context.Context, o DemoOptions, out io.Writer) error {
	dir, err := os.MkdirTemp("", "switchyard-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	tok := hex.EncodeToString(b)
	// ZooKeeper is locked by default: only the switchyard identity may
	// switch or announce instances.
	_, _ = rand.Read(b)
	zkAuth := "switchyard:" + hex.EncodeToString(b)

	fmt.Fprintln(out, "switchyard demo: starting ZooKeeper, the registry, two controllers, the gateway and 2 blue + 2 green hello instances")
	c, err := Start(ctx, Options{
		Bin: o.Bin, Dir: dir, Token: tok, ZKAuth: zkAuth, Controllers: 2, Blue: 2, Green: 2, Fast: true,
		GatewayAddr: o.GatewayAddr, RegistryAddr: o.RegistryAddr, ControllerAddrs: o.ControllerAddrs,
	})
	if err != nil {
		return fmt.Errorf("start (logs were in %s): %w", dir, err)
	}
	defer func() {
		fmt.Fprintln(out, "stopping everything the demo started")
		c.Stop()
	}()
	fmt.Fprintf(out, "  zookeeper    %s (data and logs in %s)\n", c.ZK.Addr, dir)
	fmt.Fprintf(out, "  registry     %s\n", c.RegistryURL)
	fmt.Fprintf(out, "  gateway      %s  (route / -> hello)\n", c.GatewayURL)
	for _, in := range c.Instances {
		fmt.Fprintf(out, "  %-12s %s\n", in.ID, in.Addr)
	}

	load := StartLoad(ctx, c.GatewayURL+"/", 8, time.Millisecond)
	time.Sleep(time.Second)
	fmt.Fprintln(out, "\nsteady traffic: 8 keep-alive clients through the gateway")
	var total, failed int
	begin := time.Now()
	for _, color := range []zkstate.Color{zkstate.Green, zkstate.Blue} {
		fmt.Fprintf(out, "\n$ printf 'addauth digest $SWITCHYARD_ZK_AUTH\\nset /active_color %s\\n' | zkCli.sh -server %s\n", color, c.ZK.Addr)
		id, at, err := c.Flip(ctx, string(color))
		if err != nil {
			load.Stop()
			return err
		}
		rec, err := c.WaitRecord(ctx, 30*time.Second, func(r zkstate.Switch) bool {
			return r.ID >= id && r.Target == color && r.Phase.Finished()
		})
		if err != nil {
			load.Stop()
			return err
		}
		if err := c.WaitServing(ctx, color, 10*time.Second); err != nil {
			load.Stop()
			return err
		}
		time.Sleep(time.Second)
		rs := load.Stop()
		prop, _ := Propagation(rs, at, time.Now(), color)
		before := colorShare(rs, begin, at)
		after := colorShare(rs, at.Add(prop), time.Now())
		fs := Failures(rs)
		total += len(rs)
		failed += len(fs)
		fmt.Fprintf(out, "  before: %s\n  after:  %s\n", before, after)
		fmt.Fprintf(out, "  switch %s in %s (%d steps, make-before-break); every response from %s %s after the write; %d of %d requests failed\n",
			rec.Phase, rec.Duration().Round(time.Millisecond), len(rec.Steps), color, prop.Round(time.Millisecond), len(fs), len(rs))
		load = StartLoad(ctx, c.GatewayURL+"/", 8, time.Millisecond)
		begin = time.Now()
	}
	load.Stop()
	fmt.Fprintf(out, "\nresult: %d requests through two switches, %d failed\n", total, failed)
	if o.Once {
		return nil
	}
	fmt.Fprintf(out, `
the system keeps running; try it (Ctrl-C stops everything and removes %s):
  export SWITCHYARD_ZK=%s SWITCHYARD_REGISTRY=%s SWITCHYARD_TOKEN=%s SWITCHYARD_ZK_AUTH=%s
  %s status
  %s switch green --wait
  curl -si %s/
ZooKeeper is locked to the switchyard identity: a zkCli.sh write needs
"addauth digest $SWITCHYARD_ZK_AUTH" first in the same session.
`, dir, c.ZK.Addr, c.RegistryURL, tok, zkAuth, filepath.Join(o.Bin, "switchyard"), filepath.Join(o.Bin, "switchyard"), c.GatewayURL)
	<-ctx.Done()
	return nil
}

// colorShare describes which colors answered the requests started in [from, to).
func colorShare(rs []Result, from, to time.Time) string {
	n := map[zkstate.Color]int{}
	all := 0
	for _, r := range rs {
		if r.Start.Before(from) || !r.Start.Before(to) || r.Err != "" {
			continue
		}
		n[r.Color]++
		all++
	}
	if all == 0 {
		return "no requests"
	}
	s := ""
	for _, color := range zkstate.Colors {
		if n[color] > 0 {
			s += fmt.Sprintf("%s %.1f%% ", color, 100*float64(n[color])/float64(all))
		}
	}
	return fmt.Sprintf("%s(%d requests)", s, all)
}
