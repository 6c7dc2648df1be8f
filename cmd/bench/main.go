// Command bench runs switchyard's side-by-side benchmarks (`make bench`)
// and writes the tables into BENCHMARKS.md.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/deployments/bench"
)

func main() {
	var o bench.Options
	only := flag.String("only", "", "comma-separated sections to run (default all): "+strings.Join(bench.AllSections, ","))
	sizes := flag.String("scale", "10,100,1000", "total instances (half blue, half green) of the scale switches")
	consulSizes := flag.String("consul-sizes", "1,10,100", "instances per color of the Consul propagation runs (section consul); empty for none")
	flag.StringVar(&o.Out, "out", "BENCHMARKS.md", "file to write the results into, between its markers; empty for none")
	flag.IntVar(&o.Flips, "flips", 30, "ZooKeeper flips per registry backend")
	flag.IntVar(&o.Switches, "seed-switches", 20, "switches of the seed's nginx method")
	flag.IntVar(&o.Leases, "leases", 10000, "heartbeating leases held by the registry")
	flag.DurationVar(&o.LeaseRun, "lease-run", 15*time.Second, "how long the leases heartbeat while measured")
	fleet := flag.String("fleet", "1000/10,5000/50,10000/100", "INSTANCES/SERVICES of the fleet switches (half blue, half green), comma-separated")
	flag.IntVar(&o.FleetGateways, "fleet-gateways", 20, "gateway processes of the fleet switches")
	flag.DurationVar(&o.FleetLimit, "fleet-limit", 3*time.Minute, "how long a fleet switch may take before it is reported unfinished")
	flag.Parse()
	if *only != "" {
		o.Only = strings.Split(*only, ",")
	}
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 2 {
			fmt.Fprintf(os.Stderr, "bench: -scale wants instance counts of at least 2, not %q\n", s)
			os.Exit(2)
		}
		o.ScaleSizes = append(o.ScaleSizes, n)
	}
	var err error
	if o.FleetSizes, err = bench.ParseFleetSizes(*fleet); err != nil || o.FleetGateways < 1 {
		fmt.Fprintf(os.Stderr, "bench: -fleet %q -fleet-gateways %d: %v\n", *fleet, o.FleetGateways, cmp.Or(err, errors.New("want at least one gateway")))
		os.Exit(2)
	}
	for s := range strings.SplitSeq(*consulSizes, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "bench: -consul-sizes wants instance counts of at least 1, not %q\n", s)
			os.Exit(2)
		}
		o.ConsulSizes = append(o.ConsulSizes, n)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := bench.Run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
