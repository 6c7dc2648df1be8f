package local

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/retry"
	"github.com/switchyard/switchyard/zkstate"
)

// The gateway trusts this loopback address as a proxy in front of it; the
// test's other client comes from 127.0.0.1.
const previewProxyIP = "127.0.0.2"

// clientFrom is an HTTP client whose connections come from ip.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: 10 * time.Second}
}

// previewAnswer is one answer through the gateway.
type previewAnswer struct {
	code    int
	color   zkstate.Color // X-Switchyard-Color, set by the hello that answered
	preview string        // Switchyard-Preview, set by the gateway
	body    string
}

func (a previewAnswer) String() string {
	return fmt.Sprintf("%d color=%q preview=%q body=%q", a.code, a.color, a.preview, a.body)
}

// fetch GETs url, with Switchyard-Color: color when color is set.
func fetch(ctx context.Context, hc *http.Client, url string, color zkstate.Color) (previewAnswer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return previewAnswer{}, err
	}
	if color != "" {
		req.Header.Set("Switchyard-Color", string(color))
	}
	resp, err := hc.Do(req)
	if err != nil {
		return previewAnswer{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return previewAnswer{code: resp.StatusCode, color: zkstate.Color(resp.Header.Get("X-Switchyard-Color")),
		preview: resp.Header.Get("Switchyard-Preview"), body: strings.TrimSpace(string(b))}, nil
}

// expectEvery sends n requests and fails t unless each answer is 200 from
// want (and, when preview is set, carries Switchyard-Preview: want). It
// returns how many instances answered.
func expectEvery(t *testing.T, ctx context.Context, hc *http.Client, url string, header, want zkstate.Color, preview bool, n int) int {
	t.Helper()
	instances := map[string]bool{}
	for i := range n {
		a, err := fetch(ctx, hc, url, header)
		if err != nil {
			t.Fatalf("request %d to %s: %v", i+1, url, err)
		}
		if a.code != http.StatusOK || a.color != want || preview && a.preview != string(want) || !preview && a.preview != "" {
			t.Fatalf("request %d to %s (Switchyard-Color %q): %s; want 200 from %s", i+1, url, header, a, want)
		}
		instances[a.body] = true
	}
	return len(instances)
}

// waitAnswer polls url until an answer satisfies ok.
func waitAnswer(t *testing.T, ctx context.Context, url, what string, ok func(previewAnswer) bool) previewAnswer {
	t.Helper()
	var last previewAnswer
	err := retry.Until(ctx, 30*time.Second, func() (bool, error) {
		a, err := fetch(ctx, http.DefaultClient, url, "")
		last = a
		return err == nil && ok(a), nil
	})
	if err != nil {
		t.Fatalf("%s: last answer %s: %v", what, last, err)
	}
	return last
}

func TestPreviewServesTheIdleColor(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		c, _ := startCluster(t, b, 2, 2, func(o *Options) {
			o.PreviewListen = true
			o.GatewayArgs = append(o.GatewayArgs, "--trusted-proxy", previewProxyIP)
		})
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		client, proxy := clientFrom("127.0.0.1"), clientFrom(previewProxyIP)
		live, preview := c.GatewayURL+"/", c.PreviewURL+"/"

		// The green instances register OUT_OF_SERVICE once they are up.
		waitAnswer(t, ctx, preview, "preview to serve green", func(a previewAnswer) bool { return a.code == http.StatusOK && a.color == zkstate.Green })

		t.Run("preview traffic reaches only green while blue is live", func(t *testing.T) {
			if n := expectEvery(t, ctx, client, preview, "", zkstate.Green, true, 40); n != 2 {
				t.Errorf("preview answered from %d green instances; want both", n)
			}
			expectEvery(t, ctx, client, live, "", zkstate.Blue, false, 40)
		})
		t.Run("Switchyard-Color is honoured from the trusted proxy only", func(t *testing.T) {
			expectEvery(t, ctx, proxy, live, zkstate.Green, zkstate.Green, true, 20)
			expectEvery(t, ctx, client, live, zkstate.Green, zkstate.Blue, false, 20)
			a, err := fetch(ctx, proxy, live, "purple")
			if err != nil {
				t.Fatal(err)
			}
			if a.code != http.StatusBadRequest || !strings.Contains(a.body, "Switchyard-Color must be given once, as blue or green") {
				t.Fatalf("Switchyard-Color: purple from the trusted proxy: %s; want 400 naming the header", a)
			}
		})

		flipAndMeasure(t, ctx, c, zkstate.Green)

		t.Run("after the flip the preview serves blue", func(t *testing.T) {
			waitAnswer(t, ctx, preview, "preview to serve blue", func(a previewAnswer) bool { return a.code == http.StatusOK && a.color == zkstate.Blue })
			if n := expectEvery(t, ctx, client, preview, "", zkstate.Blue, true, 40); n != 2 {
				t.Errorf("preview answered from %d blue instances; want both", n)
			}
			expectEvery(t, ctx, client, live, "", zkstate.Green, false, 40)
		})
		t.Run("with no idle instance the preview answers 503 and says why", func(t *testing.T) {
			c.mu.Lock()
			instances := append([]*Instance(nil), c.Instances...)
			c.mu.Unlock()
			for _, in := range instances {
				if in.Color == zkstate.Blue {
					in.Stop(10 * time.Second)
				}
			}
			want := `no instance of the idle color to preview: service "hello" has no OUT_OF_SERVICE instance of blue (green is live)`
			a := waitAnswer(t, ctx, preview, "preview to answer 503", func(a previewAnswer) bool { return a.code == http.StatusServiceUnavailable })
			if a.body != want || a.preview != "blue" {
				t.Fatalf("preview answer %s; want body %q and Switchyard-Preview: blue", a, want)
			}
			expectEvery(t, ctx, client, live, "", zkstate.Green, false, 20)
		})
	})
}
