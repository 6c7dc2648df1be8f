// Command seedapp stands in for the seed's Spring Boot jar in the nginx
// blue/green baseline: a plain HTTP server with no switchyard in it. It
// answers every GET with its color (the X-Switchyard-Color header the load
// generator reads) and a body holding "timestamp", which the seed's health
// check greps for, and on SIGTERM it shuts down gracefully as Spring Boot
// does with server.shutdown=graceful: it stops accepting, finishes the
// requests in flight, then exits.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on")
	color := flag.String("color", "blue", "color to report")
	grace := flag.Duration("grace", 30*time.Second, "longest wait for requests in flight at shutdown (Spring Boot's default)")
	flag.Parse()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "seedapp:", err)
		os.Exit(1)
	}
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("X-Switchyard-Color", *color)
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]string{"color": *color, "timestamp": time.Now().UTC().Format(time.RFC3339Nano)})
		}),
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Println("LISTEN " + ln.Addr().String())
	select {
	case err := <-errc:
		fmt.Fprintln(os.Stderr, "seedapp:", err)
		os.Exit(1)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), *grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		fmt.Fprintln(os.Stderr, "seedapp: shutdown:", err)
	}
}
