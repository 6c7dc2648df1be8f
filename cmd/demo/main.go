// Command demo runs switchyard's whole topology on this machine and shows
// a switch and a rollback under load; `make demo` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/switchyard/switchyard/deployments/local"
)

func main() {
	var o local.DemoOptions
	flag.StringVar(&o.Bin, "bin", "bin", "directory holding switchyard and hello")
	flag.StringVar(&o.GatewayAddr, "gateway", "127.0.0.1:8088", "gateway address")
	flag.StringVar(&o.RegistryAddr, "registry", "127.0.0.1:8761", "registry address")
	flag.BoolVar(&o.Once, "once", false, "exit after the show")
	flag.Parse()
	o.ControllerAddrs = []string{"127.0.0.1:8090", "127.0.0.1:8091"}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := local.RunDemo(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}
