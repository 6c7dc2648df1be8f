package local

import (
	"context"
	"syscall"
	"testing"
	"time"
)

const sigUSR1 = syscall.SIGUSR1

// registries lists the registries the end-to-end suite runs against: the
// built-in server, and a real Consul agent that the suite starts itself.
func registries() []backend { return []backend{builtin(), consul()} }

func consul() backend {
	return backend{name: "consul", start: func(t *testing.T) (string, func() error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		c, err := StartConsul(ctx, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Stop)
		return c.URL(), func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			return c.Restart(ctx)
		}
	}}
}
