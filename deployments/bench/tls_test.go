package bench

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// h2loadReport is h2load 1.52's report of a timing-based run over TLS.
const h2loadReport = `starting benchmark...
spawning thread #0: 16 total client(s). Timing-based test with 0s of warm-up time and 5s of main duration for measurements.
spawning thread #1: 16 total client(s). Timing-based test with 0s of warm-up time and 5s of main duration for measurements.
Warm-up started for thread #0.
progress: 50% of clients started
TLS Protocol: TLSv1.3
Cipher: TLS_AES_128_GCM_SHA256
Server Temp Key: X25519 253 bits
Application protocol: h2
Main benchmark duration is over for thread #0. Stopping all clients.

finished in 5.01s, 23522.40 req/s, 551.59KB/s
requests: 117612 total, 117932 started, 117612 done, 117605 succeeded, 7 failed, 3 errored, 1 timeout
status codes: 117605 2xx, 0 3xx, 0 4xx, 4 5xx
traffic: 2.69MB (2824300) total, 460.05KB (471088) headers (space savings 95.78%), 229.71KB (235224) data
                     min         max         mean         sd        +/- sd
time for request:       29us    459.08ms     13.47ms     12.20ms    99.50%
time for connect:     4.53ms      7.85ms      6.27ms      1.59ms    75.00%
time to 1st byte:     6.19ms     11.59ms      8.78ms      2.96ms   100.00%
req/s           :     650.53     830.25     735.07      28.31    70.00%
`

// requestLog is an h2load --log-file of 100 requests taking 1 ms to 100 ms
// (in a shuffled order, as two threads write it), plus a failed stream.
func requestLog() []byte {
	var b strings.Builder
	for i := range 100 {
		ms := (i*37)%100 + 1
		b.WriteString("1796069791683017\t200\t" + strconv.Itoa(ms*1000) + "\n")
	}
	b.WriteString("1796069791683999\t-1\t5000000\n")
	return []byte(b.String())
}

func TestParseH2load(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		desc, out string
		log       []byte
		want      LoadResult
		wantErr   string
	}{
		{desc: "reads req/s and failed requests from the report, percentiles from the request log",
			out: h2loadReport, log: requestLog(),
			want: LoadResult{RPS: 23522.40, P50: 50 * ms, P99: 99 * ms, Errors: 7, Proto: "h2", TLS: "TLSv1.3, TLS_AES_128_GCM_SHA256, X25519"}},
		{desc: "h2c has no TLS lines",
			out: strings.Replace(h2loadReport[strings.Index(h2loadReport, "Application"):], "protocol: h2", "protocol: h2c", 1), log: requestLog(),
			want: LoadResult{RPS: 23522.40, P50: 50 * ms, P99: 99 * ms, Errors: 7, Proto: "h2c"}},
		{desc: "a run that fell back to HTTP/1.1 is an error",
			out: strings.Replace(h2loadReport, "Application protocol: h2", "Application protocol: http/1.1", 1), log: requestLog(), wantErr: "no HTTP/2"},
		{desc: "a server without h2 in ALPN is an error",
			out: strings.Replace(h2loadReport, "Application protocol: h2", "No protocol negotiated. Fallback behaviour may be activated", 1), log: requestLog(), wantErr: "no HTTP/2"},
		{desc: "a report without its figures is an error",
			out: "starting benchmark...\nApplication protocol: h2\n", log: requestLog(), wantErr: "lacks req/s"},
		{desc: "a log of failed streams only is an error",
			out: h2loadReport, log: []byte("1796069791683999\t-1\t5000000\n"), wantErr: "no completed request"},
		{desc: "a garbled log line is an error",
			out: h2loadReport, log: []byte("1796069791683999\t200\tsoon\n"), wantErr: "request log line"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := parseH2load(tc.out, tc.log)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %+v, %v; want an error with %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestCertAndProtocolClients(t *testing.T) {
	certs, err := writeCert(t.TempDir(), "127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	kp, err := tls.LoadX509KeyPair(certs.Cert, certs.Key)
	if err != nil {
		t.Fatal(err)
	}
	blue := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Switchyard-Color", "blue")
		w.Header().Set("X-Proto", r.Proto)
	})
	srv := httptest.NewUnstartedServer(blue)
	srv.EnableHTTP2 = true
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake below
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{kp}}
	srv.StartTLS()
	defer srv.Close()
	ctx := context.Background()

	t.Run("the run's CA verifies the certificate for 127.0.0.1 in every TLS protocol", func(t *testing.T) {
		for proto, want := range map[string]string{"http/1.1": "HTTP/1.1", "h2": "HTTP/2.0"} {
			resp, err := protoClient(certs.Pool, proto).Get(srv.URL)
			if err != nil {
				t.Fatalf("%s: %v", proto, err)
			}
			resp.Body.Close()
			if got := resp.Header.Get("X-Proto"); got != want {
				t.Errorf("%s client spoke %s", proto, got)
			}
		}
		if err := checkProto(ctx, protoClient(certs.Pool, "h2"), srv.URL); err != nil {
			t.Error(err)
		}
	})
	t.Run("a certificate from elsewhere is refused", func(t *testing.T) {
		if err := getBlue(ctx, protoClient(nil, "http/1.1"), srv.URL); err == nil {
			t.Error("the system roots trusted the run's CA")
		}
	})
	t.Run("an h2c client does not fall back to HTTP/1.1", func(t *testing.T) {
		plain := httptest.NewServer(blue) // HTTP/1.1 only
		defer plain.Close()
		if err := getBlue(ctx, protoClient(nil, "h2c"), plain.URL); err == nil {
			t.Error("an HTTP/1.1-only server answered the h2c client")
		}
	})
	t.Run("a backend of the other color is not a target", func(t *testing.T) {
		green := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("X-Switchyard-Color", "green")
		}))
		defer green.Close()
		if err := getBlue(ctx, http.DefaultClient, green.URL); err == nil || !strings.Contains(err.Error(), "green") {
			t.Errorf("got %v", err)
		}
	})
}

func TestNginxTLSConfigPassesNginxCheck(t *testing.T) {
	if _, err := os.Stat(nginxBin()); err != nil {
		t.Fatalf("nginx is missing (%v); deployments/install/nginx.sh installs it", err)
	}
	dir := t.TempDir()
	certs, err := writeCert(dir, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	server := nginxTLSServer([]string{"127.0.0.1:2", "127.0.0.1:3"}, "127.0.0.1:4", "127.0.0.1:5", "127.0.0.1:6", certs)
	if err := os.WriteFile(dir+"/nginx.conf", []byte(nginxConf(dir, server)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(nginxBin(), nginxArgs(dir, "-t")...).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v: %s", err, out)
	}
}
