package server_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/procfs"

	"github.com/switchyard/switchyard/deployments/local"
	"github.com/switchyard/switchyard/internal/testutil"
	"github.com/switchyard/switchyard/registry"
)

// An unauthenticated client once held 5,000 blocking queries and, with a
// few registrations carrying huge addresses, took the registry to 5 GB.
// Now blocking queries are capped in total and per client, beyond the caps
// they get 429 at once, each view is encoded once per change, and
// registrations are bounded, so memory stays flat.
func TestFiveThousandBlockingQueriesAreCappedAndMemoryStaysBounded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := t.TempDir()
	if err := local.Build(ctx, bin); err != nil {
		t.Fatal(err)
	}
	port, err := local.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	const token, maxWaiters, perClient, queries, clients = "registry-token-0123456789", 1000, 400, 5000, 10
	cmd := exec.Command(filepath.Join(bin, "switchyard"), "registry", "--listen", addr, "--warmup", "0s",
		"--max-waiters", fmt.Sprint(maxWaiters), "--max-waiters-per-client", fmt.Sprint(perClient))
	cmd.Env = append(os.Environ(), "SWITCHYARD_TOKEN="+token)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	base := "http://" + addr
	admin := registry.NewClient(base, token)
	testutil.Eventually(t, 30*time.Second, "the registry to answer", func() bool {
		_, err := admin.Instances(ctx, "", 0, 0)
		return err == nil
	})
	rss := func() int {
		p, err := procfs.NewProc(cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		st, err := p.Stat()
		if err != nil {
			t.Fatal(err)
		}
		return st.ResidentMemory()
	}
	snap, err := admin.Instances(ctx, "hello", 0, 0)
	if err != nil {
		t.Fatal(err)
	}

	// 5,000 blocking queries from ten loopback addresses, 500 each.
	var ok, refused, other atomic.Int64
	var wg sync.WaitGroup
	read := registry.ReadToken(token)
	for c := range clients {
		tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(c+1))}}).DialContext,
			MaxIdleConnsPerHost: -1, DisableKeepAlives: true}
		hc := &http.Client{Transport: tr}
		for range queries / clients {
			wg.Go(func() {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet,
					fmt.Sprintf("%s/v1/instances?service=hello&index=%d&wait=2m", base, snap.Index), nil)
				req.Header.Set("Authorization", "Bearer "+read)
				resp, err := hc.Do(req)
				switch {
				case err != nil:
					other.Add(1)
				case resp.StatusCode == http.StatusOK:
					ok.Add(1)
				case resp.StatusCode == http.StatusTooManyRequests:
					refused.Add(1)
				default:
					other.Add(1)
				}
				if err == nil {
					resp.Body.Close()
				}
			})
		}
	}
	testutil.Eventually(t, time.Minute, "every query beyond the caps to be refused", func() bool {
		return refused.Load() == queries-maxWaiters
	})
	if held := waiters(t, base); held != maxWaiters {
		t.Errorf("the registry holds %d blocking queries; want its cap, %d", held, maxWaiters)
	}
	before := rss()

	// Changes wake every held query; the largest registrations allowed
	// are in the views they get.
	host := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61)
	for i := range 50 {
		if err := admin.Register(ctx, registry.Instance{ID: fmt.Sprintf("big-%02d", i), Service: "hello", Color: "blue",
			Version: strings.Repeat("v", registry.MaxVersionLen), Address: host, Port: 80, Status: registry.StatusOutOfService}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if ok.Load() != maxWaiters || other.Load() != 0 {
		t.Errorf("%d held queries answered 200, %d failed otherwise; want %d and 0", ok.Load(), other.Load(), maxWaiters)
	}
	after := rss()
	t.Logf("registry RSS %d MB holding %d queries, %d MB after waking them; %d refused with 429",
		before>>20, maxWaiters, after>>20, refused.Load())
	const bound = 200 << 20
	if before > bound || after > bound {
		t.Errorf("registry RSS %d MB holding, %d MB after: over %d MB", before>>20, after>>20, bound>>20)
	}
	if held := waiters(t, base); held != 0 {
		t.Errorf("%d blocking queries still counted after all returned", held)
	}
}

// waiters reads switchyard_registry_waiters from the registry's metrics.
func waiters(t *testing.T, base string) int {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "switchyard_registry_waiters "); ok {
			held, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return int(held)
		}
	}
	t.Fatal("no switchyard_registry_waiters in /metrics")
	return 0
}
